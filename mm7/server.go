package mm7

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// DefaultMaxBytes bounds a request body a Handler (or the simulator) reads.
const DefaultMaxBytes = 4 << 20

// ReadRequest reads and parses an MM7 request from r's body, reading at
// most maxBytes (0 = DefaultMaxBytes). Its errors are *StatusError with
// the HTTP status and MM7 status to answer with (WriteFault): 405 for a
// method other than POST, 413 for a body over the limit, 415 for a wrong
// Content-Type, 400 for malformed MIME or SOAP (2007 Message format corrupt),
// missing elements (4004 Validation error) or an operation this package
// does not read (4003 Unsupported operation). With an error, the request
// is returned too when its envelope could be read, so that the fault
// quotes its TransactionID and schema.
func ReadRequest(r *http.Request, maxBytes int64) (*Request, error) {
	if r.Method != http.MethodPost {
		return nil, decodeError(http.StatusMethodNotAllowed, StatusUnsupportedOperation, "MM7 requests are HTTP POST, not %s", r.Method)
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if r.ContentLength > maxBytes {
		return nil, decodeError(http.StatusRequestEntityTooLarge, StatusContentRefused, "the body is %d bytes, over the limit of %d", r.ContentLength, maxBytes)
	}
	data, err := readBounded(r.Body, r.ContentLength, maxBytes)
	if err != nil {
		return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "reading the body: %v", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, decodeError(http.StatusRequestEntityTooLarge, StatusContentRefused, "the body is over the limit of %d bytes", maxBytes)
	}
	return parseRequest(r.Header.Get("Content-Type"), data)
}

// readBounded reads a body into one buffer of its length when that is known
// (and within limit); else up to limit+1 bytes, to tell an oversized one.
func readBounded(r io.Reader, length, limit int64) ([]byte, error) {
	if length < 0 || length > limit {
		return io.ReadAll(io.LimitReader(r, limit+1))
	}
	buf := make([]byte, length) // net/http ends the body at Content-Length
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// parseRequest parses an MM7 request body (the fuzzed entry point).
func parseRequest(contentType string, data []byte) (*Request, error) {
	msg, env, err := decodeMessage(contentType, data)
	if err != nil {
		return nil, err
	}
	req := &Request{Op: env.op, Version: env.version, TransactionID: env.txID}
	invalid := func(format string, args ...any) error {
		return &StatusError{Op: env.op, HTTPStatus: http.StatusBadRequest, Status: NewStatus(StatusValidationError, fmt.Sprintf(format, args...))}
	}
	if req.TransactionID == "" {
		return req, invalid("the SOAP Header has no TransactionID")
	}
	b := env.x.Body
	switch {
	case b.SubmitReq != nil:
		x := b.SubmitReq
		req.MM7Version = strings.TrimSpace(x.MM7Version)
		s := &SubmitReq{
			TransactionID:  req.TransactionID,
			VASPID:         strings.TrimSpace(x.SenderIdentification.VASPID),
			VASID:          strings.TrimSpace(x.SenderIdentification.VASID),
			SenderAddress:  x.SenderIdentification.SenderAddress.first(),
			ServiceCode:    strings.TrimSpace(x.ServiceCode),
			LinkedID:       strings.TrimSpace(x.LinkedID),
			Subject:        strings.TrimSpace(x.Subject),
			DeliveryReport: parseBool(x.DeliveryReport),
			Parts:          msg.content,
			SMIL:           msg.smil,
		}
		s.To = x.Recipients.all()
		if len(s.To) == 0 {
			return req, invalid("SubmitReq has no recipient")
		}
		if exp := parseTime(x.ExpiryDate); !exp.IsZero() {
			if ts := parseTime(x.TimeStamp); !ts.IsZero() {
				s.Expiry = exp.Sub(ts)
			} else {
				s.Expiry = time.Until(exp)
			}
		}
		req.Submit = s
	case b.DeliverReq != nil:
		x := b.DeliverReq
		req.MM7Version = strings.TrimSpace(x.MM7Version)
		d := &DeliverReq{
			TransactionID: req.TransactionID,
			LinkedID:      strings.TrimSpace(x.LinkedID),
			Sender:        x.Sender.first(),
			Subject:       strings.TrimSpace(x.Subject),
			Received:      parseTime(x.TimeStamp),
			Parts:         msg.content,
			SMIL:          msg.smil,
		}
		d.Recipients = x.Recipients.all()
		if d.Sender == "" {
			return req, invalid("DeliverReq has no Sender")
		}
		req.Deliver = d
	case b.DeliveryReportReq != nil:
		x := b.DeliveryReportReq
		req.MM7Version = strings.TrimSpace(x.MM7Version)
		d := &DeliveryReportReq{
			TransactionID: req.TransactionID,
			MessageID:     strings.TrimSpace(x.MessageID),
			Recipient:     x.Recipient.first(),
			Sender:        x.Sender.first(),
			Date:          parseTime(x.Date),
			MMStatus:      strings.TrimSpace(x.MMStatus),
			StatusText:    strings.TrimSpace(x.StatusText),
		}
		if d.StatusText == "" {
			d.StatusText = strings.TrimSpace(x.MMStatusText)
		}
		switch {
		case d.MessageID == "":
			return req, invalid("DeliveryReportReq has no MessageID")
		case d.MMStatus == "":
			return req, invalid("DeliveryReportReq has no MMStatus")
		}
		req.DeliveryReport = d
	default:
		return req, &StatusError{Op: env.op, HTTPStatus: http.StatusBadRequest,
			Status: NewStatus(StatusUnsupportedOperation, fmt.Sprintf("%s is not a request this endpoint takes", truncate(env.op, 40)))}
	}
	return req, nil
}

// WriteResponse answers req with status st: a SubmitRsp (with messageID),
// DeliverRsp or DeliveryReportRsp in req's schema version, HTTP 200.
func WriteResponse(w http.ResponseWriter, req *Request, st Status, messageID string) {
	version := responseSchema(req)
	var b []byte
	switch req.Op {
	case "SubmitReq":
		b = encodeSubmitRsp(version, &SubmitRsp{TransactionID: req.TransactionID, MessageID: messageID, Status: st})
	case "DeliverReq":
		b = encodeStatusRsp(version, req.TransactionID, "DeliverRsp", st)
	default:
		b = encodeStatusRsp(version, req.TransactionID, "DeliveryReportRsp", st)
	}
	writeXML(w, http.StatusOK, b)
}

// WriteFault answers with a SOAP fault carrying an RSErrorRsp (the MMSC's
// error response). err is a *StatusError (its HTTPStatus, or 500, and its
// Status) or any other error (500, 3000 Server error). req may be nil when
// the request could not be read.
func WriteFault(w http.ResponseWriter, req *Request, err error) {
	writeFault(w, req, err, "RSErrorRsp")
}

func writeFault(w http.ResponseWriter, req *Request, err error, detail string) {
	httpStatus, st := http.StatusInternalServerError, NewStatus(StatusServerError, err.Error())
	var se *StatusError
	if errors.As(err, &se) {
		st = se.Status
		if se.HTTPStatus != 0 {
			httpStatus = se.HTTPStatus
		}
	}
	version, txID := schemaOf(REL5), ""
	if req != nil {
		version, txID = responseSchema(req), req.TransactionID
	}
	if httpStatus == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	writeXML(w, httpStatus, encodeFault(version, txID, detail, st))
}

// responseSchema answers in the request's schema namespace and
// MM7Version (REL5's when it had none).
func responseSchema(req *Request) schema {
	if req.Version == "" {
		return schemaOf(REL5)
	}
	sc := schemaOf(req.Version)
	if req.MM7Version != "" && len(req.MM7Version) <= 16 {
		sc.mm7v = req.MM7Version
	}
	return sc
}

func writeXML(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", `text/xml; charset="utf-8"`)
	w.WriteHeader(status)
	w.Write(b)
}

// Handler is the VASP's MM7 endpoint, where the MMSC sends delivery reports
// and mobile-originated messages. It checks HTTP basic auth when Username
// is set, parses the request (bounded by MaxBytes) and calls the matching
// function; what that returns goes back in the response. A malformed
// request is answered with a SOAP fault (VASPErrorRsp) and a 4xx status,
// an operation without a function with 4003 Unsupported operation.
type Handler struct {
	// DeliveryReport receives a DeliveryReportReq. Answer 1000 once it is
	// recorded (a zero Status means 1000), 2005 Message ID not found for an
	// id you never submitted, 3000 or 4006 to have the MMSC retry.
	DeliveryReport func(ctx context.Context, r *DeliveryReportReq) Status
	// Deliver receives a DeliverReq (an MMS to the short number).
	Deliver func(ctx context.Context, r *DeliverReq) Status

	Username, Password string // HTTP basic auth the MMSC must present; "" = none
	MaxBytes           int64  // request body limit; 0 = DefaultMaxBytes
	Log                *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.Username != "" && !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="mm7", charset="UTF-8"`)
		writeFault(w, nil, ErrUnauthorized, "VASPErrorRsp")
		return
	}
	req, err := ReadRequest(r, h.MaxBytes)
	if err != nil {
		h.logger().Warn("mm7: bad request from the MMSC", "remote", r.RemoteAddr, "err", err)
		writeFault(w, req, err, "VASPErrorRsp")
		return
	}
	var st Status
	switch {
	case req.DeliveryReport != nil && h.DeliveryReport != nil:
		st, err = h.call(func() Status { return h.DeliveryReport(r.Context(), req.DeliveryReport) })
	case req.Deliver != nil && h.Deliver != nil:
		st, err = h.call(func() Status { return h.Deliver(r.Context(), req.Deliver) })
	default:
		err = &StatusError{Op: req.Op, HTTPStatus: http.StatusBadRequest,
			Status: NewStatus(StatusUnsupportedOperation, req.Op+" is not taken here")}
	}
	if err != nil {
		writeFault(w, req, err, "VASPErrorRsp")
		return
	}
	if st.Code == 0 {
		st = NewStatus(StatusSuccess, "")
	}
	WriteResponse(w, req, st, "")
}

// call runs f, turning a panic into a 3000 fault rather than a dropped
// connection the MMSC would retry blindly.
func (h *Handler) call(f func() Status) (st Status, err error) {
	defer func() {
		if p := recover(); p != nil {
			h.logger().Error("mm7: handler panicked", "panic", p)
			err = &StatusError{HTTPStatus: http.StatusInternalServerError, Status: NewStatus(StatusServerError, "the VASP failed to process the request")}
		}
	}()
	return f(), nil
}

func (h *Handler) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	return ok && secretEqual(user, h.Username) && secretEqual(pass, h.Password)
}

// secretEqual compares in constant time, whatever the lengths.
func secretEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func (h *Handler) logger() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.New(slog.DiscardHandler)
}

// CheckBasicAuth reports whether r carries the user and password (constant
// time); true when user is "". For MMSC-side servers (the simulator).
func CheckBasicAuth(r *http.Request, user, password string) bool {
	if user == "" {
		return true
	}
	u, p, ok := r.BasicAuth()
	return ok && secretEqual(u, user) && secretEqual(p, password)
}

// ErrUnauthorized is the fault for a request without the right credentials.
var ErrUnauthorized error = decodeError(http.StatusUnauthorized, StatusImproperIdentification, "wrong or missing HTTP basic auth credentials")
