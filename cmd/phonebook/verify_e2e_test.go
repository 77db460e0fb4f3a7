package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
)

// Method A end to end: the code travels through the outbox, the SMPP link
// and the simulator over TCP; the test reads it where a phone would.
func TestVerifyBySMSCodeEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	cfg.Verify.Template = "您的 Phonebook 验证码是 {code}，10分钟内有效。"
	m := startMain(t, cfg)
	ctx := t.Context()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	id := client.Identity{DeviceID: "imei-a", SIMID: "sim-a"}

	st, err := api.StartSMS(step(t, ctx), "139 0013 9000", id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Number != "+8613900139000" || st.NextResendAt.IsZero() {
		t.Fatalf("start: %+v", st)
	}
	subs, err := m.Sim.WaitSubmits(step(t, ctx), 1)
	if err != nil {
		t.Fatal(err)
	}
	sub := subs[0]
	if !strings.HasSuffix(sub.Dest, "8613900139000") || !strings.HasPrefix(sub.Text, "您的 Phonebook 验证码是 ") {
		t.Fatalf("SMS at the SMSC: dest %q text %q", sub.Dest, sub.Text)
	}
	code := regexp.MustCompile(`\d{6}`).FindString(sub.Text)

	// Resending at once is refused with the next allowed time.
	if _, err := api.StartSMS(step(t, ctx), "13900139000", id); err == nil || err.(*client.APIError).Code != "rate_limited" || err.(*client.APIError).RetryAfter.IsZero() {
		t.Fatalf("early resend: %v", err)
	}
	creds, err := api.CheckSMS(step(t, ctx), "+86 139 0013 9000", id, code)
	if err != nil || creds.DeviceKey == "" {
		t.Fatalf("check: %+v %v", creds, err)
	}
	if _, err := api.Login(step(t, ctx), "13900139000", id, creds.DeviceKey, ""); err != nil {
		t.Fatalf("login: %v", err)
	}
	if _, err := api.CheckSMS(step(t, ctx), "13900139000", id, code); err == nil {
		t.Fatal("a used code was accepted again")
	}
}

// Method C end to end: the handset texts the token to the short number; the
// simulator delivers it as an MO deliver_sm; the client's long poll returns
// the credentials.
func TestVerifyByInboundSMSEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	m := startMain(t, cfg)
	ctx := t.Context()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	id := client.Identity{DeviceID: "imei-c", SIMID: "sim-c"}

	tok, err := api.StartMO(step(t, ctx), id)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ShortNumber != cfg.Verify.ShortNumber {
		t.Fatalf("short number %q", tok.ShortNumber)
	}
	polled := make(chan client.Poll, 1)
	errs := make(chan error, 1)
	go func() {
		p, err := api.PollMO(step(t, ctx), tok, 25*time.Second)
		if err != nil {
			errs <- err
			return
		}
		polled <- p
	}()
	// The link binds in the background: an MO needs a bound receiver.
	bound := step(t, ctx)
	for m.Sim.Bound() == 0 {
		if bound.Err() != nil {
			t.Fatal("the server never bound to the simulator")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// National format source, lower case token with extra spacing.
	if err := m.Sim.InjectMO(step(t, ctx), "8613700137000", tok.ShortNumber, "  "+strings.ToLower(tok.Token)+" "); err != nil {
		t.Fatal(err)
	}
	var p client.Poll
	select {
	case p = <-polled:
	case err := <-errs:
		t.Fatal(err)
	case <-step(t, ctx).Done():
		t.Fatal("the poll never returned the credentials")
	}
	if p.State != "proven" || p.Number != "+8613700137000" || p.DeviceKey == "" {
		t.Fatalf("poll: %+v", p)
	}
	if _, err := api.Login(step(t, ctx), "13700137000", id, p.DeviceKey, ""); err != nil {
		t.Fatalf("login: %v", err)
	}
	// The token is spent: texting it again from another number proves nothing.
	if err := m.Sim.InjectMO(step(t, ctx), "8613600136000", tok.ShortNumber, tok.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := api.PollMO(step(t, ctx), tok, 0); err == nil {
		t.Fatal("credentials handed out twice")
	}
	if ok, _ := m.DB.UserExists(step(t, ctx), "+8613600136000"); ok {
		t.Fatal("a replayed token registered another number")
	}
}
