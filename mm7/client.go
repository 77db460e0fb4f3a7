package mm7

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ClientConfig configures a Client. Zero values are the defaults noted.
type ClientConfig struct {
	URL      string // the MMSC's MM7 endpoint, http:// or https://
	Username string // HTTP basic auth; "" = none
	Password string
	VASPID   string // SenderIdentification; a SubmitReq's own VASPID/VASID win
	VASID    string
	TLS      *tls.Config   // for https URLs; nil = the system's roots
	Timeout  time.Duration // per request, answer included; default 30s
	Version  string        // REL5 (default) or REL6
	// MaxConns bounds the connections to the MMSC; default 16.
	MaxConns int
	// NotCapableCodes are status codes this MMSC uses only to say the
	// recipient cannot receive MMS (see IsNotCapable); text is checked too.
	NotCapableCodes []int
}

// Validate reports what is wrong with the configuration.
func (c ClientConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("mm7 url %q: %w", c.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("mm7 url %q: want http://host/path or https://host/path", c.URL)
	}
	if !knownVersion(c.Version) {
		return fmt.Errorf("mm7 version %q: want %s or %s", c.Version, REL5, REL6)
	}
	if c.Timeout < 0 || c.MaxConns < 0 {
		return errors.New("mm7 timeout and max conns must not be negative")
	}
	return nil
}

// Client sends MM7 requests to one endpoint: SubmitReq to an MMSC (the VASP
// side), DeliverReq and DeliveryReportReq to a VASP (the simulator's side).
// It is safe for concurrent use.
type Client struct {
	cfg  ClientConfig
	http *http.Client
	err  error // from Validate: every call returns it
}

// NewClient returns a client; a configuration error is returned by every call.
func NewClient(cfg ClientConfig) *Client {
	if cfg.Version == "" {
		cfg.Version = REL5
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 16
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     cfg.TLS,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxConnsPerHost:     cfg.MaxConns,
		MaxIdleConnsPerHost: cfg.MaxConns,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{cfg: cfg, http: &http.Client{Transport: tr, Timeout: cfg.Timeout}, err: cfg.Validate()}
}

// Close drops the idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// maxResponseBytes bounds what we read of an answer.
const maxResponseBytes = 1 << 20

// Submit sends a SubmitReq. A failure status or SOAP fault from the MMSC is
// a *StatusError (and so is a request that cannot be sent as it is: 2007,
// HTTPStatus 0) (Status.Permanent tells whether to try again;
// IsNotCapable whether the recipient cannot take MMS); any other error
// (no connection, a timeout, an HTTP error without SOAP, an answer we cannot
// read) is temporary: the MMSC may or may not have the message.
func (c *Client) Submit(ctx context.Context, r *SubmitReq) (*SubmitRsp, error) {
	if c.err != nil {
		return nil, c.err
	}
	req := *r
	if req.TransactionID == "" {
		req.TransactionID = NewTransactionID()
	}
	if req.VASPID == "" {
		req.VASPID = c.cfg.VASPID
	}
	if req.VASID == "" {
		req.VASID = c.cfg.VASID
	}
	if len(req.To) == 0 {
		return nil, unsendable("SubmitReq", errors.New("no recipient"))
	}
	if err := checkSMILRefs(req.SMIL, req.Parts); err != nil {
		return nil, unsendable("SubmitReq", err)
	}
	now := time.Now()
	b, err := encodeMessage(func(href string) []byte { return encodeSubmitReq(schemaOf(c.cfg.Version), &req, now, href) }, req.Parts, req.SMIL)
	if err != nil {
		return nil, unsendable("SubmitReq", err)
	}
	env, err := c.post(ctx, "SubmitReq", b)
	if err != nil {
		return nil, err
	}
	rsp, st, err := c.answer(env, "SubmitReq", "SubmitRsp")
	if err != nil {
		return nil, err
	}
	return &SubmitRsp{TransactionID: req.TransactionID, MessageID: strings.TrimSpace(rsp.MessageID), Status: st}, nil
}

// DeliveryReport sends a DeliveryReportReq to a VASP (the MMSC's side).
func (c *Client) DeliveryReport(ctx context.Context, r *DeliveryReportReq) (Status, error) {
	if c.err != nil {
		return Status{}, c.err
	}
	req := *r
	if req.TransactionID == "" {
		req.TransactionID = NewTransactionID()
	}
	b := body{`text/xml; charset="utf-8"`, encodeDeliveryReportReq(schemaOf(c.cfg.Version), &req, time.Now())}
	env, err := c.post(ctx, "DeliveryReportReq", b)
	if err != nil {
		return Status{}, err
	}
	_, st, err := c.answer(env, "DeliveryReportReq", "DeliveryReportRsp")
	return st, err
}

// Deliver sends a DeliverReq to a VASP (the MMSC's side).
func (c *Client) Deliver(ctx context.Context, r *DeliverReq) (Status, error) {
	if c.err != nil {
		return Status{}, c.err
	}
	req := *r
	if req.TransactionID == "" {
		req.TransactionID = NewTransactionID()
	}
	if err := checkSMILRefs(req.SMIL, req.Parts); err != nil {
		return Status{}, unsendable("DeliverReq", err)
	}
	now := time.Now()
	b, err := encodeMessage(func(href string) []byte { return encodeDeliverReq(schemaOf(c.cfg.Version), &req, now, href) }, req.Parts, req.SMIL)
	if err != nil {
		return Status{}, unsendable("DeliverReq", err)
	}
	env, err := c.post(ctx, "DeliverReq", b)
	if err != nil {
		return Status{}, err
	}
	_, st, err := c.answer(env, "DeliverReq", "DeliverRsp")
	return st, err
}

// unsendable is a request that cannot be written as it is (no recipient,
// a presentation naming no part, a malformed content type): a permanent
// 2007 Message format corrupt, found before sending (HTTPStatus 0).
func unsendable(op string, err error) error {
	return &StatusError{Op: op, Status: NewStatus(StatusMessageFormatCorrupt, err.Error())}
}

// HTTPError is an HTTP answer without a SOAP envelope in it: a proxy's or
// a broken MMSC's error page. Temporary.
type HTTPError struct {
	Op         string
	StatusCode int
	Body       string // the start of it
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("mm7 %s: HTTP %d %s: %q", e.Op, e.StatusCode, http.StatusText(e.StatusCode), e.Body)
}

// post sends b and parses the SOAP envelope of the answer.
func (c *Client) post(ctx context.Context, op string, b body) (*envelopeIn, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(b.data))
	if err != nil {
		return nil, fmt.Errorf("mm7 %s: %w", op, err)
	}
	hreq.Header.Set("Content-Type", b.contentType)
	hreq.Header.Set("SOAPAction", `""`)
	if c.cfg.Username != "" {
		hreq.SetBasicAuth(c.cfg.Username, c.cfg.Password)
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("mm7 %s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("mm7 %s: reading the answer: %w", op, err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("mm7 %s: the answer is over %d bytes", op, maxResponseBytes)
	}
	mt, _, _ := parseMediaType(resp.Header.Get("Content-Type"))
	soapish := isXML(mt) || strings.HasPrefix(mt, "multipart/")
	if !soapish || len(bytes.TrimSpace(data)) == 0 {
		if resp.StatusCode == http.StatusRequestEntityTooLarge {
			return nil, &StatusError{Op: op, HTTPStatus: resp.StatusCode, Status: NewStatus(StatusContentRefused, "HTTP 413: the MMSC refused the message's size")}
		}
		return nil, &HTTPError{Op: op, StatusCode: resp.StatusCode, Body: truncate(string(data), 200)}
	}
	_, env, err := decodeMessage(resp.Header.Get("Content-Type"), data)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) {
			err = errors.New(se.Status.Details)
		}
		return nil, fmt.Errorf("mm7 %s: the answer (HTTP %d) is not MM7: %w", op, resp.StatusCode, err)
	}
	env.httpStatus = resp.StatusCode
	return env, nil
}

// answer reads the expected response (want) or an error response from env.
func (c *Client) answer(env *envelopeIn, op, want string) (*xRsp, Status, error) {
	fail := func(st Status, fault bool) error {
		return &StatusError{Op: op, Status: st, HTTPStatus: env.httpStatus, Fault: fault, NotCapable: notCapable(st, c.cfg.NotCapableCodes)}
	}
	b := env.x.Body
	if b.Fault != nil {
		f := b.Fault
		for i := range f.Detail.Rsp {
			if st, err := f.Detail.Rsp[i].status(); err == nil {
				return nil, st, fail(st, true)
			}
		}
		// A fault without an MM7 status: Client faults are the request's
		// fault (validation), Server faults temporary.
		code := StatusServerError
		if strings.HasSuffix(strings.TrimSpace(f.FaultCode), "Client") {
			code = StatusValidationError
		}
		st := Status{Code: code, Text: StatusText(code), Details: strings.TrimSpace(f.FaultString)}
		return nil, st, fail(st, true)
	}
	for i := range b.Rsp {
		x := &b.Rsp[i]
		switch x.XMLName.Local {
		case want, "RSErrorRsp", "VASPErrorRsp":
		default:
			continue
		}
		st, err := x.status()
		if err != nil {
			return nil, Status{}, fmt.Errorf("mm7 %s: the answer's %v", op, err)
		}
		if !st.Success() {
			return x, st, fail(st, x.XMLName.Local != want)
		}
		if x.XMLName.Local != want {
			return nil, Status{}, fmt.Errorf("mm7 %s: the MMSC answered %s with a success status", op, x.XMLName.Local)
		}
		return x, st, nil
	}
	return nil, Status{}, fmt.Errorf("mm7 %s: the answer (HTTP %d) is %s, not %s", op, env.httpStatus, truncate(env.op, 40), want)
}

// NewTransactionID is a random transaction id (crypto/rand), 24 hex digits.
func NewTransactionID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
