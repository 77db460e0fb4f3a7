package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// API is a client of Phonebook's HTTP API: registration, verification and
// login. The relay connection (Dial) takes the session token it returns.
type API struct {
	BaseURL string            // e.g. http://127.0.0.1:8080
	HTTP    *http.Client      // nil = a client with a 60 s timeout
	Header  map[string]string // extra headers on every request (e.g. an operator number header)
}

// APIError is an error answered by the server.
type APIError struct {
	Status     int
	Code       string    `json:"code"`
	Message    string    `json:"message"`
	RetryAfter time.Time `json:"retry_after"`
}

func (e *APIError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Identity is the handset's identity.
type Identity struct {
	DeviceID string `json:"device_id"`
	SIMID    string `json:"sim_id"`
}

// Credentials are returned once when a number is proven.
type Credentials struct {
	Number    string `json:"number"`
	DeviceKey string `json:"device_key"`
	Created   bool   `json:"created"`
}

// Session is a login session.
type Session struct {
	Number    string    `json:"number"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SMSStarted answers StartSMS.
type SMSStarted struct {
	Number       string    `json:"number"`
	ExpiresAt    time.Time `json:"expires_at"`
	NextResendAt time.Time `json:"next_resend_at"`
	ChecksLeft   int       `json:"checks_left"`
}

// TokenStarted answers StartMO.
type TokenStarted struct {
	ID          string    `json:"id"`
	PollSecret  string    `json:"poll_secret"`
	Token       string    `json:"token"`
	ShortNumber string    `json:"short_number"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Poll answers PollMO.
type Poll struct {
	State string `json:"state"`
	Credentials
}

func (a *API) do(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := a.send(req, token)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if err := checkStatus(res); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// RegisterHeader proves the number by method D; numberHeader names the
// operator header and number is its value.
func (a *API) RegisterHeader(ctx context.Context, numberHeader, number string, id Identity) (Credentials, error) {
	var c Credentials
	saved := a.Header
	a.Header = map[string]string{numberHeader: number}
	for k, v := range saved {
		a.Header[k] = v
	}
	defer func() { a.Header = saved }()
	err := a.do(ctx, "POST", "/v1/register/header", "", id, &c)
	return c, err
}

// RegisterClient proves the number by method B (when the server allows it).
func (a *API) RegisterClient(ctx context.Context, number string, id Identity) (Credentials, error) {
	var c Credentials
	err := a.do(ctx, "POST", "/v1/register/client", "", map[string]string{"number": number, "device_id": id.DeviceID, "sim_id": id.SIMID}, &c)
	return c, err
}

// StartSMS asks for an SMS code (method A).
func (a *API) StartSMS(ctx context.Context, number string, id Identity) (SMSStarted, error) {
	var s SMSStarted
	err := a.do(ctx, "POST", "/v1/verify/sms/start", "", map[string]string{"number": number, "device_id": id.DeviceID, "sim_id": id.SIMID}, &s)
	return s, err
}

// CheckSMS checks the code and returns the credentials.
func (a *API) CheckSMS(ctx context.Context, number string, id Identity, code string) (Credentials, error) {
	var c Credentials
	err := a.do(ctx, "POST", "/v1/verify/sms/check", "", map[string]string{"number": number, "device_id": id.DeviceID, "sim_id": id.SIMID, "code": code}, &c)
	return c, err
}

// StartMO asks for a token to text to the short number (method C).
func (a *API) StartMO(ctx context.Context, id Identity) (TokenStarted, error) {
	var t TokenStarted
	err := a.do(ctx, "POST", "/v1/verify/mo/start", "", id, &t)
	return t, err
}

// PollMO long-polls (up to wait) for the token's SMS to arrive.
func (a *API) PollMO(ctx context.Context, t TokenStarted, wait time.Duration) (Poll, error) {
	var p Poll
	err := a.do(ctx, "POST", "/v1/verify/mo/poll", "", map[string]any{"id": t.ID, "poll_secret": t.PollSecret, "wait_seconds": int(wait.Seconds())}, &p)
	return p, err
}

// Login logs in and returns a session token for the relay and the API.
func (a *API) Login(ctx context.Context, number string, id Identity, deviceKey, rescuePassword string) (Session, error) {
	var s Session
	body := map[string]string{"number": number, "device_id": id.DeviceID, "sim_id": id.SIMID, "device_key": deviceKey}
	if rescuePassword != "" {
		body["rescue_password"] = rescuePassword
	}
	err := a.do(ctx, "POST", "/v1/login", "", body, &s)
	return s, err
}

// Do calls any endpoint: in and out are JSON-encoded bodies (nil for none).
func (a *API) Do(ctx context.Context, method, path, token string, in, out any) error {
	return a.do(ctx, method, path, token, in, out)
}
