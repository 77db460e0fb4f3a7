package relay_test

import (
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store/storetest"
)

// After a NATS outage the cluster router reports each session again
// (Server.Resynced): with reassert, a user another node marked offline
// meanwhile is recorded online again and their contacts are told; every
// reported session gets a fresh presence list.
func TestResyncedReassertsPresence(t *testing.T) {
	db := storetest.SQLite(t)
	storetest.Users(t, db, alice, bob)
	router := relay.NewLocalRouter()
	e, svc := startPresenceWith(t, testConfig(), db, router)
	a := ready(t, e.alice(client.Options{}))
	syncBook(t, a, entry("1", "Bob", string(bob)))
	b := ready(t, e.bob(client.Options{}))
	syncBook(t, b, entry("1", "Alice", string(alice)))
	nextPresence(t, a, bob, "online", func(p *relaypb.Presence) bool { return p.ImStatus == "online" })

	// Another node purged bob's session while this one was cut off.
	if err := svc.Offline(ctxT(t), bob); err != nil {
		t.Fatal(err)
	}
	nextPresence(t, a, bob, "offline (marked by another node)", func(p *relaypb.Presence) bool { return p.ImStatus == "offline" })

	ep := router.Locate(bob)
	if ep == nil {
		t.Fatal("bob's session not in the router")
	}
	e.srv.Resynced(ep, true)
	nextPresence(t, a, bob, "online again", func(p *relaypb.Presence) bool { return p.ImStatus == "online" })
	if st, err := db.UserStatus(ctxT(t), bob); err != nil || st.IMStatus != "online" {
		t.Fatalf("bob in the store: %+v %v", st, err)
	}
	select {
	case list := <-b.PresenceLists():
		if len(list) != 1 || list[0].Number != string(alice) || list[0].ImStatus != "online" {
			t.Fatalf("bob's presence list after the resync: %v", list)
		}
	case <-ctxT(t).Done():
		t.Fatal("no presence list after the resync")
	}
}

// A node died holding carol's session (cluster.Router.OnGone): the relay
// records her offline, as that node would have at logout, and her contacts
// are told; bob, reported gone but connected here again meanwhile, stays
// online.
func TestGoneMarksOfflineUnlessReconnected(t *testing.T) {
	db := storetest.SQLite(t)
	storetest.Users(t, db, alice, bob, carol)
	router := relay.NewLocalRouter()
	e, svc := startPresenceWith(t, testConfig(), db, router)
	a := ready(t, e.alice(client.Options{}))
	syncBook(t, a, entry("1", "Carol", string(carol)), entry("2", "Bob", string(bob)))
	carolsBook := contacts.SyncRequest{Full: true, Entries: []contacts.Entry{{ID: "1", Name: "Alice", Phones: []contacts.Phone{{Number: string(alice)}}}}}
	if _, err := svc.Sync(ctxT(t), carol, "", carolsBook); err != nil {
		t.Fatal(err)
	}
	if err := svc.Online(ctxT(t), carol); err != nil { // on the node that died
		t.Fatal(err)
	}
	nextPresence(t, a, carol, "online", func(p *relaypb.Presence) bool { return p.ImStatus == "online" })
	e.srv.Gone(ctxT(t), carol)
	nextPresence(t, a, carol, "offline", func(p *relaypb.Presence) bool { return p.ImStatus == "offline" })
	if st, err := db.UserStatus(ctxT(t), carol); err != nil || st.IMStatus != "offline" {
		t.Fatalf("carol in the store: %+v %v", st, err)
	}

	ready(t, e.bob(client.Options{}))
	e.srv.Gone(ctxT(t), bob)
	if st, err := db.UserStatus(ctxT(t), bob); err != nil || st.IMStatus != "online" {
		t.Fatalf("bob, connected here, in the store: %+v %v", st, err)
	}
}

// Alone, a relay starts with nobody connected: users a crash left online
// are recorded offline. In a cluster (a router given) other nodes hold
// sessions, and presence stays as it is.
func TestRecoverPresenceOnlyAlone(t *testing.T) {
	for _, c := range []struct {
		name   string
		router relay.Router
		want   string
	}{
		{"alone", nil, "offline"},
		{"cluster", relay.NewLocalRouter(), "online"},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := storetest.SQLite(t)
			storetest.Users(t, db, alice, bob)
			svc, err := contacts.New(db, nil, contacts.Config{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []phonebook.MSISDN{alice, bob} {
				if err := svc.Online(ctxT(t), n); err != nil {
					t.Fatal(err)
				}
			}
			auth := newTokenAuth()
			srv, err := relay.NewServer(testConfig(), relay.Deps{Auth: auth, Store: db, Contacts: svc, Router: c.router})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Shutdown(ctxT(t)); svc.Close(ctxT(t)) })
			if err := srv.RecoverPresence(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			for _, n := range []phonebook.MSISDN{alice, bob} {
				if st, err := db.UserStatus(ctxT(t), n); err != nil || st.IMStatus != c.want {
					t.Fatalf("%s: %+v %v, want %s", n, st, err, c.want)
				}
			}
		})
	}
}
