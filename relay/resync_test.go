package relay_test

import (
	"testing"

	"github.com/phonebook/phonebook/client"
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
