package relay_test

import (
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// Behaviour docs/protocol.md promises client writers, pinned here.

// Copies of one client_msg_id make one message: copies that arrive while it
// is in flight share its one SendResult, a copy that arrives after it is
// answered with it again, so each copy gets at most one SendResult and all
// name the same server_msg_id. The id names the message: a copy with other
// content is a retry whose content is dropped.
func TestCopiesInFlightGetOneSendResult(t *testing.T) {
	e := start(t, testConfig(), nil)
	c := dialRaw(t, e.addr, 0)
	c.auth("tok-alice", "dev-alice")
	send := func(id, text string) []byte {
		b, err := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Send{Send: &relaypb.Send{ClientMsgId: id, To: string(bob), Text: text}}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Three copies in one write (bob is offline: the first is being stored
	// while the others arrive), then another message as a marker.
	burst := append(append(send("c-1", "first"), send("c-1", "first")...), send("c-1", "edited")...)
	c.writeBytes(append(burst, send("c-2", "marker")...))
	results := map[string]int{}
	ids := map[string]bool{}
	for results["c-2"] == 0 {
		f, err := c.read()
		if err != nil {
			t.Fatalf("read: %v (results so far %v)", err, results)
		}
		if r := f.GetSendResult(); r != nil {
			if r.State != relaypb.MessageState_STORED {
				t.Fatalf("result %v", r)
			}
			results[r.ClientMsgId]++
			if r.ClientMsgId == "c-1" {
				ids[r.ServerMsgId] = true
			}
		}
	}
	// c-1's result may come after the marker's: wait for it, then for any
	// other, with a final round trip.
	for results["c-1"] == 0 {
		f, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if r := f.GetSendResult(); r != nil {
			results[r.ClientMsgId]++
			if r.ClientMsgId == "c-1" {
				ids[r.ServerMsgId] = true
			}
		}
	}
	c.write(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{At: 7}}})
	for {
		f, err := c.read()
		if err != nil {
			t.Fatal(err)
		}
		if r := f.GetSendResult(); r != nil {
			results[r.ClientMsgId]++
			if r.ClientMsgId == "c-1" {
				ids[r.ServerMsgId] = true
			}
		}
		if f.GetHeartbeatAck().GetAt() == 7 {
			break
		}
	}
	if results["c-1"] < 1 || results["c-1"] > 3 || len(ids) != 1 {
		t.Fatalf("%d SendResults naming %d messages for three copies of c-1, want 1 to 3 naming one", results["c-1"], len(ids))
	}
	b := e.bob(client.Options{AutoAck: true})
	if d := next(t, b.Deliveries(), "stored message"); d.Text != "first" || d.ClientMsgId != "c-1" {
		t.Fatalf("bob got %q (%s), want the first copy's text", d.Text, d.ClientMsgId)
	}
	if d := next(t, b.Deliveries(), "marker"); d.ClientMsgId != "c-2" {
		t.Fatalf("bob got %v after c-1, want the marker: c-1 came twice", d)
	}
}

// A message answered DELIVERED is finished: no Receipt follows it. Receipts
// follow STORED messages.
func TestDeliveredGetsNoReceipt(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	b := e.bob(client.Options{AutoAck: true})
	p, _ := a.Send(string(bob), "live")
	live, state := wait(t, p)
	if state != "DELIVERED" {
		t.Fatalf("state %s", state)
	}
	next(t, b.Deliveries(), "live message")
	b.Close()
	p, _ = a.Send(string(bob), "stored")
	stored, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("state %s", state)
	}
	e.bob(client.Options{AutoAck: true})
	for {
		r := next(t, a.Receipts(), "receipt of the stored message")
		if r.ServerMsgId == live {
			t.Fatalf("a Receipt for the message answered DELIVERED: %v", r)
		}
		if r.ServerMsgId == stored && r.State == relaypb.MessageState_DELIVERED {
			return
		}
	}
}

// Only a complete first frame that is not a valid login counts toward
// relay.max_auth_failures_per_minute: malformed or oversized frames and
// silence do not.
func TestWhatCountsAsAFailedLogin(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAuthFailuresPerMinute = 2
	cfg.AuthTimeout = 200 * time.Millisecond
	cfg.MaxFrameSize = 1024
	e := start(t, cfg, nil)
	refusal := func(first []byte) string {
		t.Helper()
		c := dialRaw(t, e.addr, 0)
		if first != nil {
			c.writeBytes(first)
		}
		code, closed := c.expectError()
		if !closed {
			t.Fatalf("%s: connection left open", code)
		}
		return code
	}
	for range 3 {
		if code := refusal([]byte{0, 0, 0, 2, 0x0a, 0x7f}); code != string(phonebook.EProtocol) {
			t.Fatalf("garbage: %s", code)
		}
		if code := refusal([]byte{0, 1, 0, 0}); code != string(phonebook.ETooLarge) {
			t.Fatalf("oversize: %s", code)
		}
		if code := refusal(nil); code != string(phonebook.ETimeout) {
			t.Fatalf("silence: %s", code)
		}
	}
	// Nine refusals, none counted: the address may still log in.
	e.alice(client.Options{}).Close()
	heartbeat, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{}}}, 0)
	for range 2 {
		if code := refusal(heartbeat); code != string(phonebook.EUnauthorized) {
			t.Fatalf("not Auth first: %s", code)
		}
	}
	if code := refusal(nil); code != string(phonebook.ERateLimited) {
		t.Fatalf("after two frames that were not Auth: %s, want rate_limited", code)
	}
}
