// Package phonebook holds the domain types shared by every part of the server:
// the error codes clients see, phone-number normalisation, and the identity a
// handset presents. It imports no driver, no framework and no transport.
package phonebook

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, documented, machine-readable error code. Clients switch on
// it; messages are for people and may change.
type Code string

// The error codes. docs/api.md lists each with the HTTP status it maps to.
const (
	EInvalid          Code = "invalid_request"     // malformed or semantically wrong input
	EInvalidJSON      Code = "invalid_json"        // body is not the JSON the endpoint takes
	EInvalidNumber    Code = "invalid_number"      // not a valid phone number
	ETooLarge         Code = "request_too_large"   // body over the size limit
	ENotFound         Code = "not_found"           // no such resource or route
	EMethod           Code = "method_not_allowed"  // route exists, method does not
	EConflict         Code = "conflict"            // state conflict (e.g. already exists)
	EUnauthorized     Code = "unauthorized"        // missing or invalid session token
	ECredentials      Code = "invalid_credentials" // wrong device key, password or code
	EIdentityChanged  Code = "identity_changed"    // known number, different device or SIM
	ERescueRequired   Code = "rescue_password_required"
	EBlocked          Code = "account_blocked"
	ERateLimited      Code = "rate_limited" // too many attempts; see RetryAfter
	EMethodDisabled   Code = "method_disabled"
	EUntrustedSource  Code = "untrusted_source" // header method from an untrusted peer
	ENumberNotAllowed Code = "number_not_allowed"
	EExpired          Code = "expired"
	EUnavailable      Code = "unavailable" // a dependency (database, SMSC) is down
	EInternal         Code = "internal"
)

// Error is an error with a code for machines and a message for people.
// RetryAfter, when set, tells the client the earliest time a retry can succeed.
type Error struct {
	Code       Code
	Message    string
	RetryAfter time.Time
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err, EInternal for errors without one, and ""
// for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the human message of err; internal errors are not
// described to clients.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Codes added with accounts.
const (
	ENotRegistered Code = "not_registered"         // no account for the number
	EMediaType     Code = "unsupported_media_type" // body is not application/json
	ENoRescue      Code = "rescue_password_not_set"
)
