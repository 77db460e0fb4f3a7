package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/relaytest"
	"github.com/phonebook/phonebook/store/storetest"
)

var users = map[string][2]string{
	"tok-a": {"+8613800138000", "dev-a"},
	"tok-b": {"+8613900139000", "dev-b"},
}

func startRelay(t *testing.T) string {
	t.Helper()
	_, addr := newRelay(t)
	return addr
}

// newRelay starts a relay serving TCP on a loopback port; it knows users.
func newRelay(t *testing.T) (*relay.Server, string) {
	t.Helper()
	auth := relaytest.NewTokens() // over TCP and UDP
	for tok, u := range users {
		auth.Add(tok, phonebook.MSISDN(u[0]), u[1])
	}
	srv, err := relay.NewServer(relay.Config{NodeID: "t"}, relay.Deps{Auth: auth, Store: storetest.SQLite(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, ln.Addr().String()
}

func dial(t *testing.T, addr, token string, o client.Options) *client.Client {
	t.Helper()
	o.Token, o.DeviceID = token, users[token][1]
	c, err := client.Dial(context.Background(), addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientSendReceiveAndRetry(t *testing.T) {
	addr := startRelay(t)
	a := dial(t, addr, "tok-a", client.Options{ClientVersion: "test"})
	if a.Number != "+8613800138000" || a.SessionID == "" || a.Heartbeat != 20*time.Second {
		t.Fatalf("AuthOK: %s %q %s", a.Number, a.SessionID, a.Heartbeat)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// Offline recipient: STORED. A retry on a new connection with the same
	// id gets the same answer.
	m := &relaypb.Send{ClientMsgId: a.NewClientMsgID(), To: "13900139000", Text: "hi"}
	p, err := a.SendMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := p.Wait(ctx)
	if err != nil || r1.State != relaypb.MessageState_STORED {
		t.Fatalf("first: %v %v", r1, err)
	}
	a.Close()
	if _, err := a.Send("13900139000", "after close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("send after Close: %v", err)
	}
	a2 := dial(t, addr, "tok-a", client.Options{})
	p, _ = a2.SendMsg(m)
	if r2, err := p.Wait(ctx); err != nil || r2.ServerMsgId != r1.ServerMsgId {
		t.Fatalf("retry: %v %v, want %s", r2, err, r1.ServerMsgId)
	}
	// The recipient gets it once, acknowledges, and the sender hears of it.
	b := dial(t, addr, "tok-b", client.Options{AutoAck: true})
	select {
	case d := <-b.Deliveries():
		if d.ServerMsgId != r1.ServerMsgId || d.From != "+8613800138000" || !d.Offline {
			t.Fatalf("delivery %v", d)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	select {
	case r := <-a2.Receipts():
		if r.ServerMsgId != r1.ServerMsgId || r.State != relaypb.MessageState_DELIVERED {
			t.Fatalf("receipt %v", r)
		}
	case <-ctx.Done():
		t.Fatal("no receipt")
	}
}

func TestClientPendingFailsWhenConnectionEnds(t *testing.T) {
	addr := startRelay(t)
	a := dial(t, addr, "tok-a", client.Options{})
	b := dial(t, addr, "tok-b", client.Options{}) // never acknowledges
	p, err := a.Send("+8613900139000", "waiting")
	if err != nil {
		t.Fatal(err)
	}
	<-b.Deliveries()
	a.Close()
	if _, err := p.Wait(context.Background()); err == nil {
		t.Fatal("Wait succeeded after Close")
	}
	// A replaced login ends with the server's reason.
	a2 := dial(t, addr, "tok-a", client.Options{})
	dial(t, addr, "tok-a", client.Options{})
	<-a2.Done()
	var se *client.ServerError
	if !errors.As(a2.Err(), &se) || se.Code != phonebook.ESessionReplaced {
		t.Fatalf("replaced client ended with %v", a2.Err())
	}
}

func TestClientRefused(t *testing.T) {
	addr := startRelay(t)
	_, err := client.Dial(context.Background(), addr, client.Options{Token: "wrong"})
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != phonebook.EUnauthorized {
		t.Fatalf("err = %v", err)
	}
}

// An AutoAck client whose application stops reading Deliveries still
// acknowledges what it has received: the read loop writes its pending
// acknowledgements before it waits for room.
func TestClientAutoAckWhileDeliveriesFull(t *testing.T) {
	addr := startRelay(t)
	a := dial(t, addr, "tok-a", client.Options{})
	b := dial(t, addr, "tok-b", client.Options{AutoAck: true, Buffer: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var ps []*client.Pending
	for _, text := range []string{"one", "two", "three"} {
		p, err := a.Send("13900139000", text)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	// "one" waits in Deliveries, "two" holds the read loop: both were
	// received, so both are acknowledged.
	for i, p := range ps[:2] {
		r, err := p.Wait(ctx)
		if err != nil || r.State != relaypb.MessageState_DELIVERED {
			t.Fatalf("message %d: %v %v", i+1, r, err)
		}
	}
	// Reading Deliveries frees the read loop: "three" arrives in order
	// and is acknowledged too.
	for _, want := range []string{"one", "two", "three"} {
		select {
		case d := <-b.Deliveries():
			if d.Text != want {
				t.Fatalf("delivery %q, want %q", d.Text, want)
			}
		case <-ctx.Done():
			t.Fatalf("no delivery %q", want)
		}
	}
	if r, err := ps[2].Wait(ctx); err != nil || r.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("message 3: %v %v", r, err)
	}
}
