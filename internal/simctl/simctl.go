// Package simctl holds what the simulators' HTTP control APIs share (the
// SMSC's and the MMSC's): response delays given as one duration or a range,
// and the JSON request and error conventions.
package simctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// DelayRange is a response delay: fixed when Min == Max, else random in
// between, so that responses overtake each other.
type DelayRange struct{ Min, Max time.Duration }

// NewDelayRange is [lo, hi], negatives taken as 0 and hi at least lo.
func NewDelayRange(lo, hi time.Duration) *DelayRange {
	lo = max(lo, 0)
	return &DelayRange{Min: lo, Max: max(lo, hi)}
}

// Pick is one delay.
func (r *DelayRange) Pick() time.Duration {
	if r.Max <= r.Min {
		return r.Min
	}
	return r.Min + rand.N(r.Max-r.Min+1)
}

func (r *DelayRange) String() string {
	if r.Max <= r.Min {
		return r.Min.String()
	}
	return r.Min.String() + "-" + r.Max.String()
}

// ParseDelayRange reads a response delay as the simulators' --resp-delay
// and their HTTP APIs take it: one duration ("5ms") or a range ("1ms-20ms").
func ParseDelayRange(v string) (lo, hi time.Duration, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(v), "-")
	if lo, err = time.ParseDuration(strings.TrimSpace(a)); err != nil || lo < 0 {
		return 0, 0, fmt.Errorf("response delay %q: want a duration like 5ms, or a range like 1ms-20ms", v)
	}
	hi = lo
	if isRange {
		if hi, err = time.ParseDuration(strings.TrimSpace(b)); err != nil || hi < lo {
			return 0, 0, fmt.Errorf("response delay %q: want a range like 1ms-20ms, the second no shorter than the first", v)
		}
	}
	return lo, hi, nil
}

// ReadJSON decodes r's body (at most limit bytes, no unknown fields) into
// v, or answers 400 (413 when too large) and returns false.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body is over %d bytes", limit))
			return false
		}
		WriteError(w, http.StatusBadRequest, "invalid_json", "body is not the JSON this endpoint takes: "+err.Error())
		return false
	}
	return true
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// WriteError answers {"error":{"code":code,"message":msg}}.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// SetRespDelay is the handler of POST /resp-delay: {"delay":"5ms"} or
// {"delay":"1ms-20ms"} ("0s" = answer at once) stored into p.
func SetRespDelay(p *atomic.Pointer[DelayRange]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Delay *string `json:"delay"`
		}
		if !ReadJSON(w, r, &req, 64<<10) {
			return
		}
		if req.Delay == nil {
			WriteError(w, http.StatusBadRequest, "invalid_request", `"delay" is required: "5ms", or a range "1ms-20ms" ("0s" = answer at once)`)
			return
		}
		lo, hi, err := ParseDelayRange(*req.Delay)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		p.Store(NewDelayRange(lo, hi))
		WriteJSON(w, http.StatusOK, map[string]string{"delay": p.Load().String()})
	}
}
