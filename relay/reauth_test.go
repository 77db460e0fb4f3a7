package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
)

// waitClosed waits for c's connection to end and returns the server's reason.
func waitClosed(t *testing.T, c *client.Client, within time.Duration) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(within):
		t.Fatalf("connection still open after %s", within)
		return nil
	}
}

func wantUnauthorized(t *testing.T, err error) {
	t.Helper()
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != phonebook.EUnauthorized {
		t.Fatalf("closed with %v, want an Error frame %s", err, phonebook.EUnauthorized)
	}
}

// A live session whose token stops authenticating (logout, a new login
// elsewhere, a block, expiry) is closed within ReauthInterval; the others
// stay, and what is sent to the closed one is stored.
func TestRevokedSessionIsClosed(t *testing.T) {
	cfg := testConfig()
	cfg.ReauthInterval = 50 * time.Millisecond
	e := start(t, cfg, nil)
	a := e.alice(client.Options{AutoAck: true})
	b := e.bob(client.Options{AutoAck: true})
	e.auth.Revoke("tok-alice")
	wantUnauthorized(t, waitClosed(t, a, 5*time.Second))
	waitFor(t, "alice to leave the connection table", func() bool { return online(e.srv, alice) == 0 })
	if online(e.srv, bob) != 1 {
		t.Fatal("bob's session was closed too")
	}
	p, err := b.Send(string(alice), "are you there?")
	if err != nil {
		t.Fatal(err)
	}
	if _, state := wait(t, p); state != "STORED" {
		t.Fatalf("message to the closed session: %s, want STORED", state)
	}
	if got := e.counter("phonebook_relay_sessions_revoked_total"); got != 1 {
		t.Fatalf("phonebook_relay_sessions_revoked_total = %v, want 1", got)
	}
	// The token is refused at the next login too.
	if _, err := client.Dial(context.Background(), e.addr, client.Options{Token: "tok-alice"}); err == nil {
		t.Fatal("a revoked token logged in again")
	}
}

// Recheck closes a number's revoked sessions at once, without waiting for
// the next periodic check.
func TestRecheckClosesAtOnce(t *testing.T) {
	cfg := testConfig()
	cfg.ReauthInterval = time.Hour
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	e.bob(client.Options{})
	e.srv.Recheck(context.Background(), alice) // valid: nothing happens
	select {
	case <-a.Done():
		t.Fatalf("a valid session was closed: %v", a.Err())
	case <-time.After(100 * time.Millisecond):
	}
	e.auth.Revoke("tok-alice")
	e.auth.Revoke("tok-bob")
	e.srv.Recheck(context.Background(), alice)
	wantUnauthorized(t, waitClosed(t, a, 2*time.Second))
	if online(e.srv, bob) != 1 {
		t.Fatal("Recheck(alice) closed bob's session")
	}
}
