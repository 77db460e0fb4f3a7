package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func enqueue(t *testing.T, db *store.DB, n int) []int64 {
	t.Helper()
	msgs := make([]store.SMS, n)
	for i := range msgs {
		msgs[i] = store.SMS{Dest: "+8613800138000", Text: fmt.Sprintf("msg %d", i), Kind: "verify", Ref: fmt.Sprint("r", i),
			ExpiresAt: time.Now().Add(time.Hour)}
	}
	ids, err := db.EnqueueSMS(context.Background(), msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func state(t *testing.T, db *store.DB, id int64) (store.SMS, []store.SMSPart) {
	t.Helper()
	m, parts, err := db.GetSMS(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m, parts
}

func part(id int64, seq, total int, msgid string) store.SMSPart {
	return store.SMSPart{OutboxID: id, Seq: seq, Total: total, Link: "l1", MessageID: msgid, ReceiptID: msgid}
}

// exactIDs is the receipt_ids rule "exact".
func exactIDs(link, id string, age time.Duration) store.ReceiptForms {
	return store.ReceiptForms{Exact: id}
}

func TestOutboxLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 3)
		claimed, err := db.ClaimSMS(ctx, "n1", 10, time.Minute)
		if err != nil || len(claimed) != 3 {
			t.Fatalf("claimed %d, %v", len(claimed), err)
		}
		if c, _ := db.ClaimSMS(ctx, "n2", 10, time.Minute); len(c) != 0 {
			t.Fatalf("claimed messages were claimed again: %d", len(c))
		}
		if n, oldest, _ := db.SMSDepth(ctx); n != 3 || oldest.IsZero() {
			t.Fatalf("depth %d oldest %v", n, oldest)
		}
		retryAt := time.Now().Add(time.Hour)
		changes, err := db.RecordSMS(ctx, "n1",
			[]store.SMSPart{part(ids[0], 1, 1, "a1")},
			[]store.SMSOutcome{
				{ID: ids[0], Kind: "verify", Ref: "r0", State: "submitted"},
				{ID: ids[1], State: "failed", Error: "ESME_RINVDSTADR"},
				{ID: ids[2], State: "queued", NextAttemptAt: retryAt, Error: "ESME_RTHROTTLED"},
			})
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 2 || changes[0].State != "submitted" || changes[0].Ref != "r0" || changes[1].State != "failed" || changes[1].Error != "ESME_RINVDSTADR" {
			t.Fatalf("changes %+v", changes)
		}
		if m, parts := state(t, db, ids[0]); m.State != "submitted" || len(parts) != 1 || parts[0].MessageID != "a1" || m.Attempts != 1 {
			t.Fatalf("message %+v parts %+v", m, parts)
		}
		if m, _ := state(t, db, ids[2]); m.State != "queued" || m.Attempts != 1 || m.Error != "ESME_RTHROTTLED" {
			t.Fatalf("retried message %+v", m)
		}
		if c, _ := db.ClaimSMS(ctx, "n1", 10, time.Minute); len(c) != 0 {
			t.Fatalf("message due in an hour was claimed")
		}

		changes, unmatched, err := db.ApplyReceipts(ctx, []store.SMSReceipt{
			{Link: "l1", MessageID: "a1", State: "delivered"},
			{Link: "l1", MessageID: "zz", State: ""}, // unknown intermediate: dropped
		}, exactIDs)
		if err != nil || unmatched != 1 || len(changes) != 1 || changes[0].ID != ids[0] || changes[0].State != "delivered" {
			t.Fatalf("changes %+v unmatched %d err %v", changes, unmatched, err)
		}
		// The same receipt again changes nothing.
		if changes, _, _ := db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "a1", State: "undeliverable"}}, exactIDs); len(changes) != 0 {
			t.Fatalf("duplicate receipt changed %+v", changes)
		}
		if m, parts := state(t, db, ids[0]); m.State != "delivered" || parts[0].State != "delivered" || parts[0].DoneAt.IsZero() {
			t.Fatalf("message %+v parts %+v", m, parts)
		}
		if n, _, _ := db.SMSDepth(ctx); n != 1 {
			t.Fatalf("depth %d", n)
		}
		if n, err := db.PurgeSMS(ctx, time.Now().Add(time.Minute), 100); err != nil || n != 2 {
			t.Fatalf("purged %d, %v", n, err)
		}
	})
}

// Two nodes draining one outbox never get the same message.
func TestOutboxClaimRace(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 400
		enqueue(t, db, n)
		var mu sync.Mutex
		owner := map[int64]string{}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := range 4 {
			wg.Add(1)
			go func(node string) {
				defer wg.Done()
				for {
					c, err := db.ClaimSMS(ctx, node, 25, time.Minute)
					if err != nil {
						errs <- err
						return
					}
					if len(c) == 0 {
						return
					}
					mu.Lock()
					for _, m := range c {
						if o, dup := owner[m.ID]; dup {
							errs <- fmt.Errorf("message %d claimed by %s and %s", m.ID, o, node)
						}
						owner[m.ID] = node
					}
					mu.Unlock()
				}
			}(fmt.Sprint("node", w))
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(owner) != n {
			t.Fatalf("claimed %d of %d", len(owner), n)
		}
	})
}

// A dead node's claims come back when its lease ends, with the parts it had
// sent, and its late outcomes no longer count.
func TestOutboxLeaseExpiry(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 1)
		if c, _ := db.ClaimSMS(ctx, "dead", 10, time.Millisecond); len(c) != 1 {
			t.Fatal("not claimed")
		}
		// The dead node got part 1 of 2 accepted before it died.
		if _, err := db.RecordSMS(ctx, "dead", []store.SMSPart{part(ids[0], 1, 2, "p1")}, nil); err != nil {
			t.Fatal(err)
		}
		var c []store.SMS
		poll.Until(t, "the dead node's claim to lapse", func() bool {
			var err error
			if c, err = db.ClaimSMS(ctx, "alive", 10, time.Minute); err != nil {
				t.Fatal(err)
			}
			return len(c) > 0
		})
		if len(c) != 1 || !slices.Equal(c[0].SentParts, []int{1}) {
			t.Fatalf("reclaimed %+v", c)
		}
		changes, err := db.RecordSMS(ctx, "dead", nil, []store.SMSOutcome{{ID: ids[0], State: "failed", Error: "late"}})
		if err != nil || len(changes) != 0 {
			t.Fatalf("late outcome of a lost lease applied: %+v %v", changes, err)
		}
		// Part 1 again (a duplicate record) is harmless.
		changes, err = db.RecordSMS(ctx, "alive", []store.SMSPart{part(ids[0], 1, 2, "p1"), part(ids[0], 2, 2, "p2")},
			[]store.SMSOutcome{{ID: ids[0], State: "submitted"}})
		if err != nil || len(changes) != 1 || changes[0].State != "submitted" {
			t.Fatalf("changes %+v %v", changes, err)
		}
	})
}

func TestOutboxMultipartReceipts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 3)
		db.ClaimSMS(ctx, "n", 10, time.Minute)

		// Message 0: part 1 is delivered before part 2 is even accepted.
		db.RecordSMS(ctx, "n", []store.SMSPart{part(ids[0], 1, 2, "m0p1")}, nil)
		changes, _, err := db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "m0p1", State: "delivered"}}, exactIDs)
		if err != nil || len(changes) != 0 {
			t.Fatalf("message delivered with a part unsent: %+v %v", changes, err)
		}
		// Message 1: its receipt arrives before its part is recorded.
		changes, unmatched, err := db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "m1p1", State: "delivered"}}, exactIDs)
		if err != nil || unmatched != 1 || len(changes) != 0 {
			t.Fatalf("early receipt: %+v %d %v", changes, unmatched, err)
		}
		changes, err = db.RecordSMS(ctx, "n",
			[]store.SMSPart{part(ids[0], 2, 2, "m0p2"), part(ids[1], 1, 1, "m1p1"), part(ids[2], 1, 2, "m2p1"), part(ids[2], 2, 2, "m2p2")},
			[]store.SMSOutcome{{ID: ids[0], State: "submitted"}, {ID: ids[1], State: "submitted"}, {ID: ids[2], State: "submitted"}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]string{}
		for _, c := range changes {
			got[c.ID] = c.State // the last change wins
		}
		if got[ids[0]] != "submitted" || got[ids[1]] != "delivered" || got[ids[2]] != "submitted" {
			t.Fatalf("changes %+v", changes)
		}
		changes, _, _ = db.ApplyReceipts(ctx, []store.SMSReceipt{
			{Link: "l1", MessageID: "m0p2", State: "delivered"},
			{Link: "l1", MessageID: "m2p2", State: "undeliverable", Error: "err:011"},
		}, exactIDs)
		got = map[int64]string{}
		for _, c := range changes {
			got[c.ID] = c.State + " " + c.Error
		}
		if got[ids[0]] != "delivered " || got[ids[2]] != "undeliverable part 2 of 2 undeliverable: err:011" {
			t.Fatalf("changes %+v", changes)
		}
		// Part 1 of the failed message delivered later: the message stays undeliverable.
		if changes, _, _ := db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "m2p1", State: "delivered"}}, exactIDs); len(changes) != 0 {
			t.Fatalf("changes %+v", changes)
		}
	})
}

// A receipt matches the part under its exact id; of several parts with the
// same id (ids recycled by the SMSC), the one still waiting wins.
func TestOutboxReceiptMatching(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 3)
		db.ClaimSMS(ctx, "n", 10, time.Minute)
		db.RecordSMS(ctx, "n", []store.SMSPart{part(ids[0], 1, 1, "7b"), part(ids[1], 1, 1, "123")},
			[]store.SMSOutcome{{ID: ids[0], State: "submitted"}, {ID: ids[1], State: "submitted"}})
		withHex := func(link, id string, age time.Duration) store.ReceiptForms {
			return store.ReceiptForms{Exact: id, Others: []string{"7b"}}
		}
		changes, _, _ := db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "123", State: "delivered"}}, withHex)
		if len(changes) != 1 || changes[0].ID != ids[1] {
			t.Fatalf("changes %+v, want message %d by its exact id", changes, ids[1])
		}
		changes, _, _ = db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "123", State: "delivered"}}, withHex)
		if len(changes) != 0 {
			t.Fatalf("a repeated receipt moved another message: %+v", changes)
		}
		// Recycled id: message 2 gets "123" too; the new receipt is for it.
		db.RecordSMS(ctx, "n", []store.SMSPart{part(ids[2], 1, 1, "123")}, []store.SMSOutcome{{ID: ids[2], State: "submitted"}})
		changes, _, _ = db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "123", State: "expired"}}, exactIDs)
		if len(changes) != 1 || changes[0].ID != ids[2] || changes[0].State != "expired" {
			t.Fatalf("changes %+v", changes)
		}
		// The same id on another link is another message.
		changes, unmatched, _ := db.ApplyReceipts(ctx, []store.SMSReceipt{{Link: "l2", MessageID: "7b", State: "expired"}}, exactIDs)
		if len(changes) != 0 || unmatched != 1 {
			t.Fatalf("a receipt from link l2 changed a message sent over l1: %+v", changes)
		}
	})
}

// Another form of a receipt's id is used only when no part has the exact
// id and exactly one part has another form; an ambiguous receipt is kept,
// reported once, and applied when its exact part is recorded.
func TestOutboxReceiptOtherForms(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 4)
		db.ClaimSMS(ctx, "n", 10, time.Minute)
		// Message 0 went out as hex "10" (16); message 1 as "a" (10).
		// Parts recorded without a receipt id: the link's rule is unknown.
		noKey := func(p store.SMSPart) store.SMSPart { p.ReceiptID = ""; return p }
		db.RecordSMS(ctx, "n", []store.SMSPart{noKey(part(ids[0], 1, 1, "10")), noKey(part(ids[1], 1, 1, "a"))},
			[]store.SMSOutcome{{ID: ids[0], State: "submitted"}, {ID: ids[1], State: "submitted"}})
		// Receipt "16": the decimal of hex "10", or the exact id of a message
		// not recorded yet, or the hex of decimal 22.
		forms := func(link, id string, age time.Duration) store.ReceiptForms {
			m := map[string][]string{"16": {"10", "22"}}
			return store.ReceiptForms{Exact: id, Others: m[id]}
		}
		if err := db.AddReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "16", State: "undeliverable"}, {Link: "l1", MessageID: "a", State: "expired"}}); err != nil {
			t.Fatal(err)
		}
		res := applyPending(t, db, forms)
		// "16" fits "10" alone: applied. "a" fits "a" exactly.
		got := map[int64]string{}
		for _, c := range res.Changes {
			got[c.ID] = c.State
		}
		if len(res.Unmatched) != 0 || got[ids[0]] != "undeliverable" || got[ids[1]] != "expired" || len(got) != 2 {
			t.Fatalf("changes %+v unmatched %+v", res.Changes, res.Unmatched)
		}

		// Ambiguous: "aa" could be "x1" or "x2"; no part "aa" yet.
		db.RecordSMS(ctx, "n", []store.SMSPart{noKey(part(ids[2], 1, 1, "x1")), noKey(part(ids[3], 1, 1, "x2"))},
			[]store.SMSOutcome{{ID: ids[2], State: "submitted"}, {ID: ids[3], State: "submitted"}})
		ambiguous := func(link, id string, age time.Duration) store.ReceiptForms {
			return store.ReceiptForms{Exact: id, Others: []string{"x1", "x2"}}
		}
		db.AddReceipts(ctx, []store.SMSReceipt{{Link: "l1", MessageID: "aa", State: "delivered"}})
		res = applyPending(t, db, ambiguous)
		if len(res.Changes) != 0 || len(res.Unmatched) != 1 || res.Unmatched[0].Reason != store.ReceiptAmbiguous || len(res.Unmatched[0].Parts) != 2 {
			t.Fatalf("ambiguous receipt: changes %+v unmatched %+v", res.Changes, res.Unmatched)
		}
		// Looked at again later: not reported twice.
		db.RecordSMS(ctx, "n", []store.SMSPart{{OutboxID: ids[2], Seq: 1, Total: 1, Link: "l1", MessageID: "x1", ReceiptID: "aa"}}, nil)
		if m, _ := state(t, db, ids[2]); m.State != "delivered" {
			t.Fatalf("a part recorded with the receipt's exact id did not take it: %+v", m)
		}
		if m, _ := state(t, db, ids[3]); m.State != "submitted" {
			t.Fatalf("the other candidate was guessed: %+v", m)
		}
	})
}

// applyPending applies stored receipts until some were looked at (they
// wait store.ReceiptGrace first).
func applyPending(t *testing.T, db *store.DB, rules store.ReceiptRules) store.ReceiptResult {
	t.Helper()
	var res store.ReceiptResult
	poll.Until(t, "a stored receipt to come due", func() bool {
		var err error
		if res, err = db.ApplyPendingReceipts(context.Background(), 100, rules); err != nil {
			t.Fatal(err)
		}
		return res.Seen > 0
	})
	return res
}

func TestMOFragments(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		frag := func(seq int, body string) store.MOFragment {
			return store.MOFragment{Link: "l1", Source: "8613800138000", Dest: "10086", Ref: 300, Total: 3, Seq: seq, Body: []byte(body)}
		}
		for _, f := range []store.MOFragment{frag(3, "c"), frag(1, "a"), frag(3, "c")} {
			if got, err := db.AddMOFragment(ctx, f, time.Minute); err != nil || got != nil {
				t.Fatalf("incomplete message returned %v %v", got, err)
			}
		}
		got, err := db.AddMOFragment(ctx, frag(2, "b"), time.Minute)
		if err != nil || len(got) != 3 || string(got[0].Body)+string(got[1].Body)+string(got[2].Body) != "abc" {
			t.Fatalf("complete message %+v %v", got, err)
		}
		// While claimed, a repeated part does not hand it out twice.
		if again, _ := db.AddMOFragment(ctx, frag(2, "b"), time.Minute); again != nil {
			t.Fatal("claimed message handed out twice")
		}
		// Delivery failed: the next repeated part hands it out again.
		db.FinishMO(ctx, got[0], false)
		if again, _ := db.AddMOFragment(ctx, frag(1, "a"), time.Minute); len(again) != 3 {
			t.Fatal("released message not handed out again")
		}
		db.FinishMO(ctx, got[0], true)
		if again, _ := db.AddMOFragment(ctx, frag(3, "c"), time.Minute); again != nil {
			t.Fatal("delivered message handed out again")
		}
		if _, err := db.AddMOFragment(ctx, frag(4, "d"), time.Minute); err == nil {
			t.Fatal("part 4 of 3 accepted")
		}
		if n, err := db.ExpireMOFragments(ctx, time.Now().Add(time.Second)); err != nil || n != 3 {
			t.Fatalf("expired %d, %v", n, err)
		}
	})
}

// Receipts stored first and applied later in a batch: matched ones leave
// the table, unmatched ones wait and match once their part is recorded.
func TestOutboxPendingReceipts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 2)
		db.ClaimSMS(ctx, "n", 10, time.Minute)
		db.RecordSMS(ctx, "n", []store.SMSPart{part(ids[0], 1, 1, "aa")}, []store.SMSOutcome{{ID: ids[0], State: "submitted"}})
		if err := db.AddReceipts(ctx, []store.SMSReceipt{
			{Link: "l1", MessageID: "aa", State: "delivered"},
			{Link: "l1", MessageID: "bb", State: "expired", Error: "EXPIRED"},
			{Link: "l1", MessageID: "aa", State: "delivered"}, // the SMSC sent it twice
		}); err != nil {
			t.Fatal(err)
		}
		// Stored receipts wait store.ReceiptGrace before they are looked at.
		res := applyPending(t, db, exactIDs)
		if res.Seen != 2 || len(res.Changes) != 1 || res.Changes[0].ID != ids[0] || res.Changes[0].State != "delivered" {
			t.Fatalf("result %+v", res)
		}
		// "bb" waits (with backoff): not looked at again at once.
		if res, _ := db.ApplyPendingReceipts(ctx, 100, exactIDs); res.Seen != 0 {
			t.Fatalf("unmatched receipt looked at again at once (%d)", res.Seen)
		}
		// Its part is recorded: it applies then.
		changes, err := db.RecordSMS(ctx, "n", []store.SMSPart{part(ids[1], 1, 1, "bb")}, []store.SMSOutcome{{ID: ids[1], State: "submitted"}})
		if err != nil || len(changes) != 2 || changes[1].State != "expired" {
			t.Fatalf("changes %+v %v", changes, err)
		}
	})
}

// Purging deletes finished messages older than the cut-off, and submitted
// ones whose validity ended before it, nothing newer.
func TestOutboxPurge(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		old := time.Now().Add(-10 * 24 * time.Hour)
		var msgs []store.SMS
		for i := range 6 {
			created := old
			if i >= 3 {
				created = time.Now()
			}
			msgs = append(msgs, store.SMS{Dest: "+8613800138000", Text: fmt.Sprint(i), Kind: "k", CreatedAt: created, ExpiresAt: created.Add(time.Hour)})
		}
		ids, err := db.EnqueueSMS(ctx, msgs...)
		if err != nil {
			t.Fatal(err)
		}
		db.ClaimSMS(ctx, "n", 10, time.Minute)
		db.RecordSMS(ctx, "n", nil, []store.SMSOutcome{
			{ID: ids[0], State: "failed"}, {ID: ids[1], State: "submitted"}, {ID: ids[2], State: "queued", NextAttemptAt: time.Now()},
			{ID: ids[3], State: "failed"}, {ID: ids[4], State: "submitted"},
		})
		if _, err := db.SQL().ExecContext(ctx, "UPDATE sms_outbox SET updated_at = ? WHERE id IN (?, ?, ?)", old.UnixMicro(), ids[0], ids[1], ids[2]); err != nil {
			t.Fatal(err)
		}
		n, err := db.PurgeSMS(ctx, time.Now().Add(-7*24*time.Hour), 100)
		if err != nil || n != 2 {
			t.Fatalf("purged %d, %v; want the old failed and the old submitted message", n, err)
		}
		for i, id := range ids {
			_, _, err := db.GetSMS(ctx, id)
			if gone := err != nil; gone != (i < 2) {
				t.Fatalf("message %d: gone %v", i, gone)
			}
		}
	})
}

// Long reasons are cut to the column, on a character boundary.
func TestOutboxLongErrorClipped(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueue(t, db, 1)
		db.ClaimSMS(ctx, "n", 10, time.Minute)
		long := strings.Repeat("错", 200) // 600 bytes
		if _, err := db.RecordSMS(ctx, "n", nil, []store.SMSOutcome{{ID: ids[0], State: "failed", Error: long}}); err != nil {
			t.Fatal(err)
		}
		m, _ := state(t, db, ids[0])
		if len(m.Error) > 255 || !utf8.ValidString(m.Error) || !strings.HasPrefix(long, m.Error) || len(m.Error) < 250 {
			t.Fatalf("error of %d bytes: %q", len(m.Error), m.Error)
		}
	})
}
