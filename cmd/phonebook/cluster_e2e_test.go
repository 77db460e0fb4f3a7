package main

import (
	"os"
	"testing"
	"time"

	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store/storetest"
)

// testNATS is the test NATS (with JetStream); the test is skipped without
// one, except in CI.
func testNATS(t *testing.T) string {
	t.Helper()
	nats := os.Getenv("PHONEBOOK_TEST_NATS_URL")
	if nats == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PHONEBOOK_TEST_NATS_URL is not set (scripts/test sets it)")
		}
		t.Skip("PHONEBOOK_TEST_NATS_URL not set")
	}
	return nats
}

// twoNodes starts two full servers in cluster mode sharing a fresh MariaDB
// database and the test NATS, in a namespace of their own (other tests,
// with the same phone numbers, share that NATS); opts adjust both
// configurations.
func twoNodes(t *testing.T, opts ...func(*config.Config)) (*Main, *Main) {
	t.Helper()
	nats := testNATS(t)
	dsn := storetest.MySQLDSN(t)
	ns := storetest.Name("t")
	node := func(name string) *Main {
		cfg := testConfig(t)
		cfg.Node = name + "-" + storetest.Name("")
		cfg.Database.Driver, cfg.Database.DSN = "mysql", dsn
		cfg.Cluster.NATSURL, cfg.Cluster.Namespace = nats, ns
		for _, o := range opts {
			o(&cfg)
		}
		return startMain(t, cfg)
	}
	return node("a"), node("b")
}

// Two full servers share MariaDB and NATS: a phone on node A chats with a
// phone on node B, and the connection table shows both.
func TestChatAcrossNodesEndToEnd(t *testing.T) {
	a, b := twoNodes(t)
	ctx := t.Context()
	alice := phone(t, a, "13800138000")
	bob := phone(t, b, "13900139000")

	// Registry updates travel through NATS: retry until node A knows Bob.
	var res *relaypb.SendResult
	wait := step(t, ctx)
	for {
		p, err := alice.Send("13900139000", "across the cluster")
		if err != nil {
			t.Fatal(err)
		}
		res, err = p.Wait(step(t, ctx))
		if err != nil {
			t.Fatal(err)
		}
		if res.State == relaypb.MessageState_DELIVERED {
			break
		}
		// Stored instead: Bob gets it from the offline store; drain it and retry.
		select {
		case <-bob.Deliveries():
		case <-time.After(2 * time.Second):
		}
		if wait.Err() != nil {
			t.Fatal("never delivered across nodes")
		}
	}
	select {
	case d := <-bob.Deliveries():
		if d.From != "+8613800138000" || d.Text != "across the cluster" {
			t.Fatalf("bob got %+v", d)
		}
	case <-step(t, ctx).Done():
		t.Fatal("bob got nothing")
	}
}
