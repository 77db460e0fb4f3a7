package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// next receives from ch; see poll.Next.
func next[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return poll.Next(t, ch, what)
}

func TestOnlineDeliveryWithReceipt(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	b := e.bob(client.Options{})
	if a.Number != alice || b.Number != bob {
		t.Fatalf("AuthOK numbers %s, %s", a.Number, b.Number)
	}
	// National format: normalised with the default region.
	p, err := a.Send("139 0013 9000", "hello 你好 😀")
	if err != nil {
		t.Fatal(err)
	}
	d := next(t, b.Deliveries(), "delivery")
	if d.From != string(alice) || d.Text != "hello 你好 😀" || d.Offline || d.ViaSms || d.Type != relaypb.MessageType_TEXT {
		t.Fatalf("delivery = %v", d)
	}
	select {
	case <-p.Done():
		t.Fatal("SendResult before the recipient acknowledged")
	default:
	}
	if err := b.Ack(d.ServerMsgId); err != nil {
		t.Fatal(err)
	}
	id, state := wait(t, p)
	if id != d.ServerMsgId || state != "DELIVERED" {
		t.Fatalf("SendResult = %s %s, want %s DELIVERED", id, state, d.ServerMsgId)
	}
	waitFor(t, "chat record", func() bool {
		rec, err := e.db.ChatRecord(context.Background(), id)
		return err == nil && rec.State == store.MsgDelivered && rec.Sender == alice && rec.Receiver == bob &&
			rec.Content == "hello 你好 😀" && !rec.ReceivedAt.IsZero() && !rec.Offline
	})
	// An invalid recipient is refused with a code, and the session carries on.
	p, _ = a.Send("12", "x")
	r, _ := p.Wait(context.Background())
	if r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.EInvalidNumber) {
		t.Fatalf("invalid recipient result = %v", r)
	}
}

func TestOfflineDeliveredInOrderAtLogin(t *testing.T) {
	storetest.Each(t, testOfflineDeliveredInOrder)
}

func testOfflineDeliveredInOrder(t *testing.T, db *store.DB) {
	e := start(t, testConfig(), db)
	a := e.alice(client.Options{})
	const n = 50
	ids := make([]string, n)
	for i := range n {
		p, err := a.Send(string(bob), fmt.Sprintf("msg %d", i))
		if err != nil {
			t.Fatal(err)
		}
		var state string
		ids[i], state = wait(t, p)
		if state != "STORED" {
			t.Fatalf("message %d: state %s, want STORED", i, state)
		}
	}
	b := e.bob(client.Options{})
	for i := range n {
		d := next(t, b.Deliveries(), "offline delivery")
		if d.ServerMsgId != ids[i] || d.Text != fmt.Sprintf("msg %d", i) || !d.Offline {
			t.Fatalf("delivery %d = %v, want %s", i, d, ids[i])
		}
		b.Ack(d.ServerMsgId)
	}
	// Each acknowledged message is deleted and its sender told.
	seen := map[string]bool{}
	for len(seen) < n {
		r := next(t, a.Receipts(), "DELIVERED receipt")
		if r.State != relaypb.MessageState_DELIVERED {
			t.Fatalf("receipt %v", r)
		}
		seen[r.ServerMsgId] = true
	}
	waitFor(t, "offline store empty", func() bool {
		k, err := e.db.CountOfflineMessages(context.Background(), bob)
		return err == nil && k == 0
	})
}

func TestUnacknowledgedOfflineMessagesStay(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	for i := range 3 {
		p, _ := a.Send(string(bob), fmt.Sprint(i))
		wait(t, p)
	}
	b := e.bob(client.Options{})
	first := next(t, b.Deliveries(), "delivery")
	b.Ack(first.ServerMsgId)
	next(t, b.Deliveries(), "second delivery") // not acknowledged
	waitFor(t, "first ack applied", func() bool {
		k, _ := e.db.CountOfflineMessages(context.Background(), bob)
		return k == 2
	})
	b.Close()
	b2 := e.bob(client.Options{AutoAck: true})
	for _, want := range []string{"1", "2"} {
		if d := next(t, b2.Deliveries(), "redelivery"); d.Text != want {
			t.Fatalf("redelivered %q, want %q", d.Text, want)
		}
	}
}

func TestDuplicateClientMsgID(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	send := func(c *client.Client, cid string) (string, string) {
		p, err := c.SendMsg(&relaypb.Send{ClientMsgId: cid, To: string(bob), Text: "once"})
		if err != nil {
			t.Fatal(err)
		}
		return wait(t, p)
	}
	// Offline: the retry gets the same result and nothing is stored twice.
	id1, s1 := send(a, "c-1")
	id2, s2 := send(a, "c-1")
	if id1 != id2 || s1 != "STORED" || s2 != "STORED" {
		t.Fatalf("retry = %s %s, first = %s %s", id2, s2, id1, s1)
	}
	// Also across a reconnect of the sender.
	a.Close()
	a2 := e.alice(client.Options{})
	if id3, _ := send(a2, "c-1"); id3 != id1 {
		t.Fatalf("retry after reconnect got %s, want %s", id3, id1)
	}
	if k, _ := e.db.CountOfflineMessages(context.Background(), bob); k != 1 {
		t.Fatalf("stored %d copies, want 1", k)
	}
	// Online: delivered once.
	b := e.bob(client.Options{AutoAck: true})
	if d := next(t, b.Deliveries(), "stored message"); d.ServerMsgId != id1 {
		t.Fatalf("got %s", d.ServerMsgId)
	}
	id4, s4 := send(a2, "c-2")
	id5, s5 := send(a2, "c-2")
	if id4 != id5 || s4 != "DELIVERED" || s5 != "DELIVERED" {
		t.Fatalf("online retry = %s %s, first %s %s", id5, s5, id4, s4)
	}
	if d := next(t, b.Deliveries(), "online message"); d.ServerMsgId != id4 {
		t.Fatalf("got %s", d.ServerMsgId)
	}
	// A third message proves nothing else arrived in between.
	id6, _ := send(a2, "c-3")
	if d := next(t, b.Deliveries(), "third message"); d.ServerMsgId != id6 {
		t.Fatalf("after duplicates got %s (%q), want %s", d.ServerMsgId, d.Text, id6)
	}
}

func TestSecondLoginReplacesFirst(t *testing.T) {
	e := start(t, testConfig(), nil)
	b1 := e.bob(client.Options{})
	b2 := e.bob(client.Options{AutoAck: true})
	select {
	case <-b1.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("first session still open")
	}
	if se, ok := b1.Err().(*client.ServerError); !ok || se.Code != phonebook.ESessionReplaced {
		t.Fatalf("first session ended with %v, want %s", b1.Err(), phonebook.ESessionReplaced)
	}
	conns := e.srv.Connections()
	if len(conns) != 1 || conns[0].SessionID != b2.SessionID || conns[0].Transport != "tcp" || conns[0].Node != "test" {
		t.Fatalf("connections = %+v", conns)
	}
	a := e.alice(client.Options{})
	p, _ := a.Send(string(bob), "to the new one")
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("state %s", state)
	}
}

func TestAuthRefused(t *testing.T) {
	e := start(t, testConfig(), nil)
	ctx := context.Background()
	_, err := client.Dial(ctx, e.addr, client.Options{Token: "nope", DeviceID: "x"})
	if se, ok := err.(*client.ServerError); !ok || se.Code != phonebook.EUnauthorized {
		t.Fatalf("bad token: %v", err)
	}
	_, err = client.Dial(ctx, e.addr, client.Options{Token: "tok-bob", DeviceID: "other-device"})
	if se, ok := err.(*client.ServerError); !ok || se.Code != phonebook.EUnauthorized {
		t.Fatalf("wrong device: %v", err)
	}
}

func TestConnectionsHandlerListsTable(t *testing.T) {
	e := start(t, testConfig(), nil)
	b := e.bob(client.Options{ClientVersion: "test/1"})
	rec := httptest.NewRecorder()
	e.srv.ConnectionsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/admin/relay/connections", nil))
	var body struct {
		Connections []relay.ConnInfo `json:"connections"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Connections) != 1 {
		t.Fatalf("connections = %+v", body.Connections)
	}
	c := body.Connections[0]
	if c.Number != bob || c.DeviceID != "dev-bob" || c.SessionID != b.SessionID || c.ClientVersion != "test/1" ||
		!strings.HasPrefix(c.RemoteAddr, "127.0.0.1:") || c.ConnectedAt.IsZero() {
		t.Fatalf("connection = %+v", c)
	}
}

func TestShutdownStoresUnacknowledged(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	b := e.bob(client.Options{}) // receives, never acknowledges
	p, _ := a.Send(string(bob), "in flight at shutdown")
	d := next(t, b.Deliveries(), "delivery")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("bob's connection still open after Shutdown")
	}
	if se, ok := b.Err().(*client.ServerError); !ok || se.Code != phonebook.EShuttingDown {
		t.Fatalf("bob's connection ended with %v", b.Err())
	}
	msgs, err := e.db.OfflineMessages(context.Background(), bob, 0, 10)
	if err != nil || len(msgs) != 1 || msgs[0].ID != d.ServerMsgId {
		t.Fatalf("offline store after shutdown = %+v, %v", msgs, err)
	}
	// Alice may or may not have got STORED before her connection closed;
	// either way the message is safe.
	_ = p
}

func TestRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.SendRate, cfg.SendBurst = 1, 2
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	b := e.bob(client.Options{AutoAck: true})
	p, _ := a.Send(string(bob), "first")
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("first message: %s", state)
	}
	next(t, b.Deliveries(), "first delivery")
	p, _ = a.Send(string(bob), "second fits the burst")
	wait(t, p)
	p, _ = a.Send(string(bob), "third is over the limit")
	r, err := p.Wait(context.Background())
	if err != nil || r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.ERateLimited) || r.Error.GetRetryAfterSecs() == 0 {
		t.Fatalf("over the limit: %v %v", r, err)
	}
}

func TestShutdownDoesNotWaitForUnauthenticated(t *testing.T) {
	cfg := testConfig()
	cfg.AuthTimeout = time.Hour
	e := start(t, cfg, nil)
	dialRaw(t, e.addr, 0) // connects, never sends Auth
	// Connections are accepted in order: once a later one has logged in,
	// the silent one is being served.
	e.alice(client.Options{}).Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a connection waiting for Auth: %v", err)
	}
}

func TestNewServerRejectsBadConfig(t *testing.T) {
	db := storetest.SQLite(t)
	auth := newTokenAuth()
	for name, cfg := range map[string]relay.Config{
		"idle not above heartbeat": {HeartbeatInterval: time.Minute, IdleTimeout: 30 * time.Second},
		"unknown fallback":         {Fallback: "sometimes"},
	} {
		if _, err := relay.NewServer(cfg, relay.Deps{Auth: auth, Store: db}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := relay.NewServer(relay.Config{}, relay.Deps{Store: db}); err == nil {
		t.Error("no Authenticator: accepted")
	}
}
