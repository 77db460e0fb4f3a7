package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/store"
)

// A message that reaches the offline store with no wake-up for its
// connected recipient (as when the wake-up through NATS was lost: a
// partition, a NATS server's death) is delivered within relay.stored_recheck
// without a new login.
func TestStoredRecheckDeliversWithoutAWakeUp(t *testing.T) {
	cfg := testConfig()
	cfg.StoredRecheck = 200 * time.Millisecond
	e := start(t, cfg, nil)
	e.auth.add("tok-bob", bob, "dev-bob")
	b := e.bob(client.Options{AutoAck: true})
	waitFor(t, "bob online", func() bool { return online(e.srv, bob) == 1 })

	// Another node stored this and its wake-up never arrived: the row is
	// written straight into the store, so nobody on this node woke bob.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.db.StoreMessages(ctx, []store.Message{{ID: "lost-wake-1", Sender: alice, ClientMsgID: "c1",
		Recipient: bob, Text: "stored while the wake-up was lost", SentAt: time.Now()}})
	if err != nil || len(res) != 1 {
		t.Fatalf("store: %v %v", res, err)
	}
	select {
	case d := <-b.Deliveries():
		if d.Text != "stored while the wake-up was lost" || d.ServerMsgId != "lost-wake-1" {
			t.Fatalf("bob got %q (%s)", d.Text, d.ServerMsgId)
		}
	case <-ctx.Done():
		t.Fatal("the stored message never reached bob's live session")
	}
	waitFor(t, "the delivered message to leave the store", func() bool {
		n, err := e.db.CountOfflineMessages(ctx, bob)
		return err == nil && n == 0
	})
	if v := e.counter("phonebook_relay_stored_rechecks_total"); v < 1 {
		t.Fatalf("phonebook_relay_stored_rechecks_total = %v", v)
	}
}
