package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// A node is SIGKILLed while Bob is online on it: the surviving node marks
// him offline once it removes the dead node's sessions, and Alice, his
// mutual contact on the survivor, sees it.
func TestCrashedNodesUsersGoOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a server")
	}
	nats := testNATS(t)
	dsn := storetest.MySQLDSN(t)
	suffix := storetest.Name("")
	cfg := testConfig(t)
	cfg.Node = "a-" + suffix
	cfg.Database.Driver, cfg.Database.DSN = "mysql", dsn
	// A namespace of its own: other tests with the same numbers share the
	// test NATS.
	cfg.Cluster.NATSURL, cfg.Cluster.Namespace = nats, "t"+suffix
	cfg.Cluster.DeadAfter, cfg.Cluster.PurgeAfter = 2*time.Second, 2*time.Second
	a := startMain(t, cfg)

	cfgPath := filepath.Join(t.TempDir(), "b.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
node: %q
http: {addr: "127.0.0.1:0"}
relay: {tcp_addr: "127.0.0.1:0", udp_addr: ""}
admin: {addr: "127.0.0.1:0"}
smsc: {simulator: true}
database: {driver: mysql, dsn: %q}
registration: {header: {trusted_proxies: ["127.0.0.0/8"]}}
cluster: {nats_url: %q, namespace: %q, dead_after: 2s, purge_after: 2s}
`, "b-"+suffix, dsn, nats, "t"+suffix)), 0o600)
	b := startChild(t, cfgPath)

	ctx := t.Context()
	alice := phone(t, a, "13800138000")
	<-alice.PresenceLists()
	bob := phoneAt(t, b.http, b.relay, "13900139000")
	mutualContacts(t, ctx, alice, "13800138000", bob, "13900139000")
	if st, err := a.DB.UserStatus(step(t, ctx), "+8613900139000"); err != nil || st.IMStatus != "online" {
		t.Fatalf("bob before the crash: %+v %v", st, err)
	}
	// B registers bob's session asynchronously: A must have it before the
	// crash to remove it after.
	located := step(t, ctx)
	for a.relayRouter.Locate("+8613900139000") == nil {
		if located.Err() != nil {
			t.Fatal("A never saw bob's session on B")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.kill()
	wait := step(t, ctx)
	for {
		select {
		case pc := <-alice.PresenceChanges():
			if pc.Presence.Number == "+8613900139000" && pc.Presence.ImStatus == "offline" {
				if st, err := a.DB.UserStatus(step(t, ctx), "+8613900139000"); err != nil || st.IMStatus != store.StatusOffline {
					t.Fatalf("bob after the crash: %+v %v", st, err)
				}
				return
			}
		case <-wait.Done():
			t.Fatal("bob, on the crashed node, never went offline for alice")
		}
	}
}
