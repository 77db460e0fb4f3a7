package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
)

func closedUnauthorized(t *testing.T, who string, c *client.Client, within time.Duration) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(within):
		t.Fatalf("%s is still connected after %s", who, within)
	}
	var se *client.ServerError
	if !errors.As(c.Err(), &se) || se.Code != phonebook.EUnauthorized {
		t.Fatalf("%s closed with %v, want %s", who, c.Err(), phonebook.EUnauthorized)
	}
}

// A relay connection does not outlive its session: proving the number on a
// new SIM, or logging out, closes it at once (the periodic check is an
// hour here, so it is the accounts service's call that does it).
func TestRevokedSessionsCloseTheirConnections(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.ReauthInterval = time.Hour
	m := startMain(t, cfg)
	ctx := context.Background()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	alice := phone(t, m, "13800138000")
	bob := phone(t, m, "13900139000")

	// Alice's number is proven on another phone and SIM: the old phone's
	// connection goes.
	if _, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", "13800138000",
		client.Identity{DeviceID: "imei-new", SIMID: "sim-new"}); err != nil {
		t.Fatal(err)
	}
	closedUnauthorized(t, "alice's old phone", alice, 2*time.Second)

	// Bob moves to a new phone (his first phone's connection goes), then
	// logs out through the API there (that connection goes too).
	id := client.Identity{DeviceID: "imei-bob2", SIMID: "sim-13900139000"}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", "13900139000", id)
	if err != nil {
		t.Fatal(err)
	}
	closedUnauthorized(t, "bob's first phone", bob, 2*time.Second)
	sess, err := api.Login(ctx, "13900139000", id, creds.DeviceKey, "")
	if err != nil {
		t.Fatal(err)
	}
	bob2, err := client.Dial(ctx, m.RelayAddr(), client.Options{Token: sess.Token, DeviceID: id.DeviceID})
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	if err := api.Do(ctx, "POST", "/v1/logout", sess.Token, nil, nil); err != nil {
		t.Fatal(err)
	}
	closedUnauthorized(t, "bob after logout", bob2, 2*time.Second)
}

// An operator's block, done by `phonebook admin user block` (on its own
// store connection, as from another process), reaches live connections
// through the periodic check.
func TestBlockedUserIsDisconnected(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.ReauthInterval = 100 * time.Millisecond
	m := startMain(t, cfg)
	alice := phone(t, m, "13800138000")
	bob := phone(t, m, "13900139000")
	if out, err := runCLI(t, "admin", "user", "block", "13800138000", "--database-dsn", cfg.Database.DSN); err != nil || !strings.Contains(out, "1 sessions revoked") {
		t.Fatalf("admin user block: %q %v", out, err)
	}
	closedUnauthorized(t, "blocked alice", alice, 5*time.Second)
	select {
	case <-bob.Done():
		t.Fatalf("bob was disconnected too: %v", bob.Err())
	case <-time.After(300 * time.Millisecond):
	}
}
