package smsc

import (
	"context"
	"testing"

	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// TestEnqueueWhileRunningSkipsTheClaim: while Run runs, Enqueue stores a
// message already claimed by this node and hands it over, so it is sent
// although no claim looks for it (the poll is an hour, and Enqueue does
// not wake the claimers then); with Run stopped the message is stored
// unclaimed for any node.
func TestEnqueueWhileRunningSkipsTheClaim(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newFakeSMSC()
		release := make(chan struct{})
		f.refuse = func(int, Part) error { <-release; return nil }
		cfg := testConfig()
		cfg.Poll = 1 << 62
		o, err := NewOutbox(db, f, cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		stop := runOutbox(t, o)
		waitFor(t, "Run to start", func() bool {
			o.rmu.RLock()
			defer o.rmu.RUnlock()
			return o.running
		})
		var ids []int64
		for i := range 20 {
			id, err := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: "direct " + string(rune('a'+i)), Kind: "verify"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		// Held by the SMSC: each is claimed by this node, and was stored
		// so (a claim would have updated it after it was created).
		for _, id := range ids {
			var by string
			var created, updated, until, due int64
			if err := db.SQL().QueryRowContext(ctx, `SELECT claimed_by, created_at, updated_at, claimed_until, next_attempt_at FROM sms_outbox WHERE id = ?`,
				id).Scan(&by, &created, &updated, &until, &due); err != nil {
				t.Fatal(err)
			}
			if by != "test" || updated != created || until == 0 || due != until {
				t.Fatalf("message %d: claimed by %q until %d, due %d, created %d, updated %d; want stored claimed by test",
					id, by, until, due, created, updated)
			}
		}
		close(release)
		waitFor(t, "every message submitted", allIn(t, db, ids, StateSubmitted))
		accepted, _ := f.snapshot()
		if len(accepted) != 20 {
			t.Fatalf("%d texts accepted, want 20", len(accepted))
		}
		for k, n := range accepted {
			if n != 1 {
				t.Fatalf("%q accepted %d times", k, n)
			}
		}
		stop()

		id, err := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: "after stop", Kind: "verify"})
		if err != nil {
			t.Fatal(err)
		}
		var by string
		var until int64
		if err := db.SQL().QueryRowContext(ctx, `SELECT claimed_by, claimed_until FROM sms_outbox WHERE id = ?`, id).Scan(&by, &until); err != nil {
			t.Fatal(err)
		}
		if by != "" || until != 0 {
			t.Fatalf("enqueued with Run stopped: claimed by %q until %d; want unclaimed", by, until)
		}
	})
}
