package relay_test

import (
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// A retry the relay cannot recognise (its id has left the dedup window, or
// it went through another node) is delivered again under a new
// server_msg_id but with the sender's client_msg_id, and the client drops
// it: the recipient sees each message once, and the sender hears DELIVERED.
func TestRetryBeyondTheDedupWindowIsDroppedByTheClient(t *testing.T) {
	cfg := testConfig()
	cfg.DedupWindow = 1
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	b := e.bob(client.Options{AutoAck: true})
	send := func(id, text string) string {
		t.Helper()
		p, err := a.SendMsg(&relaypb.Send{ClientMsgId: id, To: string(bob), Text: text})
		if err != nil {
			t.Fatal(err)
		}
		sid, state := wait(t, p)
		if state != "DELIVERED" {
			t.Fatalf("%s: %s", id, state)
		}
		return sid
	}
	first := send("id-1", "one")
	send("id-2", "two")
	if again := send("id-1", "one"); again == first {
		t.Fatal("the relay recognised the retry; the test needs it not to")
	}
	var got []*relaypb.Deliver
	timeout := time.After(500 * time.Millisecond)
	for len(got) < 3 {
		select {
		case d := <-b.Deliveries():
			got = append(got, d)
			continue
		case <-timeout:
		}
		break
	}
	if len(got) != 2 || got[0].Text != "one" || got[1].Text != "two" {
		t.Fatalf("bob got %v, want one and two once each", got)
	}
	if got[0].ClientMsgId != "id-1" || got[0].From != string(alice) || got[0].ServerMsgId != first {
		t.Fatalf("delivery %v", got[0])
	}
}
