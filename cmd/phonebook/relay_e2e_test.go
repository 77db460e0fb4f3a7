package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// phone registers number by method D, logs in and opens a relay connection.
func phone(t *testing.T, m *Main, number string) *client.Client {
	t.Helper()
	return phoneAt(t, m.HTTPAddr(), m.RelayAddr(), number)
}

// phoneAt is phone for a server at these addresses (another process).
func phoneAt(t *testing.T, httpAddr, relayAddr, number string) *client.Client {
	t.Helper()
	return loginAt(t, httpAddr, relayAddr, number)()
}

// loginAt registers number by method D and logs in; the function it
// returns opens a relay connection with that session, again each call.
func loginAt(t *testing.T, httpAddr, relayAddr, number string) func() *client.Client {
	t.Helper()
	token, device := account(t, httpAddr, number)
	return func() *client.Client { return dialRelay(t, relayAddr, token, device) }
}

// Two phones chat through the whole server; a message to a number with no
// account goes out by SMS with the sender shown, and the sender sees the
// SMS states as receipts.
func TestChatAndSMSFallbackEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := phone(t, m, "13800138000")
	bob := phone(t, m, "13900139000")

	p, err := alice.Send("139 0013 9000", "你好 Bob 👋")
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Wait(ctx)
	if err != nil || res.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("send result: %v %v", res, err)
	}
	select {
	case d := <-bob.Deliveries():
		if d.From != "+8613800138000" || d.Text != "你好 Bob 👋" {
			t.Fatalf("bob got %+v", d)
		}
	case <-ctx.Done():
		t.Fatal("bob got nothing")
	}

	p, err = alice.Send("13700137000", "are you on Phonebook yet?")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := p.Wait(ctx); err != nil || res.State == relaypb.MessageState_FAILED {
		t.Fatalf("fallback send result: %v %v", res, err)
	}
	subs, err := m.Sim.WaitSubmits(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var sms string
	for _, s := range subs {
		if strings.HasSuffix(s.Dest, "8613700137000") {
			sms = s.Text
		}
	}
	if !strings.Contains(sms, "+8613800138000") || !strings.Contains(sms, "are you on Phonebook yet?") {
		t.Fatalf("fallback SMS at the SMSC: %q (all: %+v)", sms, subs)
	}
	// The receipt from the SMSC comes back to the sender.
	for {
		select {
		case r := <-alice.Receipts():
			if r.State == relaypb.MessageState_SMS_DELIVERED {
				return
			}
		case <-ctx.Done():
			t.Fatal("no sms_delivered receipt reached the sender")
		}
	}
}

// A phone on UDP and a phone on TCP chat through the whole server.
func TestChatOverUDPEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	id := client.Identity{DeviceID: "imei-udp", SIMID: "sim-udp"}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", "13500135000", id)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := api.Login(ctx, "13500135000", id, creds.DeviceKey, "")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := client.DialUDP(ctx, m.RelayUDPAddr(), client.Options{Token: sess.Token, DeviceID: id.DeviceID, AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp := phone(t, m, "13800138000")

	p, err := tcp.Send("13500135000", "over UDP")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := p.Wait(ctx); err != nil || res.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("tcp -> udp: %v %v", res, err)
	}
	select {
	case d := <-udp.Deliveries():
		if d.Text != "over UDP" || d.From != "+8613800138000" {
			t.Fatalf("udp phone got %+v", d)
		}
	case <-ctx.Done():
		t.Fatal("nothing over UDP")
	}
	p, err = udp.Send("13800138000", "and back")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := p.Wait(ctx); err != nil || res.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("udp -> tcp: %v %v", res, err)
	}
}
