package main

import (
	"context"
	"testing"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/contacts"
)

// TestContactsEndToEnd runs the served binary's contacts endpoints: two
// users find each other through their address books, one sees the other's
// status, and the book survives a restart for restore.
func TestContactsEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	m := startMain(t, cfg)
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	login := func(number, dev string) string {
		id := client.Identity{DeviceID: dev, SIMID: "sim-" + dev}
		creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", number, id)
		if err != nil {
			t.Fatalf("register %s: %v", number, err)
		}
		sess, err := api.Login(ctx, creds.Number, id, creds.DeviceKey, "")
		if err != nil {
			t.Fatalf("login %s: %v", number, err)
		}
		return sess.Token
	}
	alice, bob := login("138 0013 8001", "imei-a"), login("138 0013 8002", "imei-b")

	var res contacts.SyncResult
	book := contacts.SyncRequest{Full: true, Entries: []contacts.Entry{
		{ID: "7", Name: "Bob", Group: "friends", Phones: []contacts.Phone{{Number: "138-0013-8002", Label: "mobile"}}}}}
	if err := api.Do(ctx, "POST", "/v1/contacts/sync", alice, book, &res); err != nil {
		t.Fatal(err)
	}
	if p := res.Entries[0].Phones[0]; p.Number != "+8613800138002" || !p.Registered || p.Mutual {
		t.Fatalf("alice's sync: %+v", p)
	}
	back := contacts.SyncRequest{Added: []contacts.Entry{{ID: "1", Name: "Alice", Phones: []contacts.Phone{{Number: "+86 138 0013 8001"}}}}}
	if err := api.Do(ctx, "POST", "/v1/contacts/sync", bob, back, &res); err != nil || !res.Entries[0].Phones[0].Mutual {
		t.Fatalf("bob's sync: %+v %v", res, err)
	}
	busy := contacts.StatusBusy
	var me contacts.Presence
	if err := api.Do(ctx, "PUT", "/v1/presence", bob, contacts.PresenceUpdate{IMStatus: &busy}, &me); err != nil || me.IMStatus != busy {
		t.Fatalf("bob busy: %+v %v", me, err)
	}
	var ps struct{ Presence []contacts.Presence }
	if err := api.Do(ctx, "GET", "/v1/contacts/presence", alice, nil, &ps); err != nil || len(ps.Presence) != 1 || ps.Presence[0].IMStatus != busy {
		t.Fatalf("alice's view: %+v %v", ps, err)
	}

	// Restart: the book is still there to restore.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = startMain(t, cfg)
	api.BaseURL = "http://" + m.HTTPAddr()
	var restored struct{ Entries []contacts.Entry }
	if err := api.Do(ctx, "GET", "/v1/contacts/restore", alice, nil, &restored); err != nil {
		t.Fatal(err)
	}
	if len(restored.Entries) != 1 || restored.Entries[0].Group != "friends" || restored.Entries[0].Phones[0] != (contacts.Phone{Number: "138-0013-8002", Label: "mobile"}) {
		t.Fatalf("restored %+v", restored.Entries)
	}

	// Deleting Alice's account deletes her book; Bob keeps her number, no
	// longer mutual.
	del := newRootCmd()
	del.SetOut(discard{})
	del.SetArgs([]string{"admin", "user", "delete", "+8613800138001", "--database-dsn", cfg.Database.DSN})
	if err := del.Execute(); err != nil {
		t.Fatal(err)
	}
	if book, err := m.DB.AddressBook(ctx, "+8613800138001"); err != nil || len(book) != 0 {
		t.Fatalf("alice's book after delete: %+v %v", book, err)
	}
	var list struct{ Contacts []contacts.Contact }
	if err := api.Do(ctx, "GET", "/v1/contacts", bob, nil, &list); err != nil || len(list.Contacts) != 1 || list.Contacts[0].Mutual || list.Contacts[0].Registered {
		t.Fatalf("bob's contacts after alice's deletion: %+v %v", list, err)
	}
}
