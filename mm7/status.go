package mm7

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Status is an MM7 request status: a code from TS 23.140's table, its text,
// and optional details.
type Status struct {
	Code    int    `json:"code"`
	Text    string `json:"text,omitempty"`
	Details string `json:"details,omitempty"`
}

// Status codes of TS 23.140 (REL-5 and REL-6).
const (
	StatusSuccess                    = 1000
	StatusPartialSuccess             = 1100
	StatusClientError                = 2000
	StatusOperationRestricted        = 2001
	StatusAddressError               = 2002
	StatusAddressNotFound            = 2003
	StatusContentRefused             = 2004
	StatusMessageIDNotFound          = 2005
	StatusLinkedIDNotFound           = 2006
	StatusMessageFormatCorrupt       = 2007
	StatusApplicationIDNotFound      = 2008
	StatusReplyApplicationIDNotFound = 2009
	StatusServerError                = 3000
	StatusNotPossible                = 3001
	StatusMessageRejected            = 3002
	StatusMultipleAddresses          = 3003
	StatusAppAddressingNotSupported  = 3004
	StatusGeneralServiceError        = 4000
	StatusImproperIdentification     = 4001
	StatusUnsupportedVersion         = 4002
	StatusUnsupportedOperation       = 4003
	StatusValidationError            = 4004
	StatusServiceError               = 4005
	StatusServiceUnavailable         = 4006
	StatusServiceDenied              = 4007
	StatusApplicationDenied          = 4008
)

var statusTexts = map[int]string{
	1000: "Success",
	1100: "Partial success",
	2000: "Client error",
	2001: "Operation restricted",
	2002: "Address Error",
	2003: "Address Not Found",
	2004: "Multimedia content refused",
	2005: "Message ID Not found",
	2006: "LinkedID not found",
	2007: "Message format corrupt",
	2008: "Application ID not found",
	2009: "Reply Application ID not found",
	3000: "Server Error",
	3001: "Not Possible",
	3002: "Message rejected",
	3003: "Multiple addresses not supported",
	3004: "Application Addressing not supported",
	4000: "General service error",
	4001: "Improper identification",
	4002: "Unsupported version",
	4003: "Unsupported operation",
	4004: "Validation error",
	4005: "Service error",
	4006: "Service unavailable",
	4007: "Service denied",
	4008: "Application denied",
}

// StatusText is the spec's text for code, "" for a code it does not list.
func StatusText(code int) string { return statusTexts[code] }

// NewStatus is code with the spec's text and the given details.
func NewStatus(code int, details string) Status {
	return Status{Code: code, Text: statusTexts[code], Details: details}
}

// Success reports a 1xxx status (1000 Success, 1100 Partial success).
func (s Status) Success() bool { return s.Code >= 1000 && s.Code < 2000 }

// Permanent reports a failure that sending the same request again will not
// cure: every 2xxx client error; of the 3xxx server errors those that reject
// this request (3001 Not possible, 3002 Message rejected, 3003 Multiple
// addresses not supported, 3004 Application addressing not supported); of
// the 4xxx service errors identification, version, operation, validation
// and denials (4001-4004, 4007, 4008). A code outside the spec's classes
// (0, 5xxx and up, vendors' own) is permanent too: we cannot know better.
func (s Status) Permanent() bool {
	switch {
	case s.Success():
		return false
	case s.Code >= 2000 && s.Code < 3000:
		return true
	case s.Code >= 3000 && s.Code < 4000:
		return s.Code >= 3001 && s.Code <= 3004
	case s.Code >= 4000 && s.Code < 5000:
		return slices.Contains([]int{4001, 4002, 4003, 4004, 4007, 4008}, s.Code)
	}
	return true
}

// Temporary reports a failure worth retrying later: 3000 Server error, 4000
// General service error, 4005 Service error, 4006 Service unavailable, and
// the other 3xxx/4xxx codes the spec does not list.
func (s Status) Temporary() bool { return !s.Success() && !s.Permanent() }

func (s Status) String() string {
	text := s.Text
	if text == "" {
		text = statusTexts[s.Code]
	}
	out := fmt.Sprintf("%d %s", s.Code, text)
	if s.Details != "" {
		out += ": " + s.Details
	}
	return out
}

// StatusError is an MM7 answer that is not a success: a response with a
// failure status, or a SOAP fault (RSErrorRsp/VASPErrorRsp). Transport
// failures (no answer, an HTTP error without SOAP, a reset connection) are
// other errors and always temporary.
type StatusError struct {
	Op         string // the request, e.g. "SubmitReq"
	Status     Status
	HTTPStatus int  // the HTTP status it came with (or goes out with, from ReadRequest)
	Fault      bool // it came as a SOAP fault
	// NotCapable: the recipient cannot receive MMS (see IsNotCapable).
	NotCapable bool
}

func (e *StatusError) Error() string {
	op := e.Op
	if op == "" {
		op = "request"
	}
	return fmt.Sprintf("mm7 %s: %s", op, e.Status)
}

// Temporary reports whether err is worth retrying: a transport error, or a
// StatusError whose status is temporary.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status.Temporary()
	}
	return true
}

// IsNotCapable reports whether err is the MMSC saying the recipient's phone
// cannot receive MMS. MMSCs have no dedicated code for it: a permanent
// StatusError counts when its code is one of ClientConfig.NotCapableCodes,
// or its text or details say so (see notCapableWords: "not MMS capable",
// "not capable", "incapable", "non-MMS", "MMS not supported", "unsupported
// terminal" ...).
// The simulator answers 2002 "Address Error" with details "recipient ... is
// not MMS capable".
func IsNotCapable(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.NotCapable
}

// notCapableWords are lower-case phrases MMSCs put in a status's text or
// details when the recipient's handset cannot take MMS. "capability"
// alone is not one: a VASP can lack a capability too.
var notCapableWords = []string{
	"not capable", "incapable", "non-capable", "no mms capability",
	"non-mms", "non mms", "no mms", "not mms", "mms not supported", "mms unsupported",
	"does not support mms", "doesn't support mms",
	"unsupported terminal", "unsupported handset", "unsupported device",
	"not supported by terminal", "not supported by handset", "not supported by device",
	"terminal not supported", "handset not supported", "device not supported",
}

// notCapable classifies a failure status; codes are the link's own
// "recipient not MMS-capable" codes.
func notCapable(s Status, codes []int) bool {
	if s.Success() || !s.Permanent() {
		return false
	}
	if slices.Contains(codes, s.Code) {
		return true
	}
	text := strings.ToLower(s.Text + " " + s.Details)
	for _, w := range notCapableWords {
		if strings.Contains(text, w) {
			return true
		}
	}
	return false
}
