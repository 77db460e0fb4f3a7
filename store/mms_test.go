package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func enqueueMMS(t *testing.T, db *store.DB, n int) []int64 {
	t.Helper()
	msgs := make([]store.MMS, n)
	for i := range msgs {
		msgs[i] = store.MMS{Dest: fmt.Sprintf("+86138%08d", i), Sender: "+8613900139000", Caption: "看 photo", Media: []string{"m1", "m2"},
			Kind: "fallback", Ref: fmt.Sprint("r", i), ExpiresAt: time.Now().Add(time.Hour)}
	}
	ids, err := db.EnqueueMMS(context.Background(), msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func getMMS(t *testing.T, db *store.DB, id int64) store.MMS {
	t.Helper()
	m, err := db.GetMMS(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMMSOutboxLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueueMMS(t, db, 3)
		if m := getMMS(t, db, ids[0]); m.State != store.MMSQueued || len(m.Media) != 2 || m.Media[1] != "m2" || m.Caption != "看 photo" {
			t.Fatalf("stored %+v", m)
		}
		claimed, err := db.ClaimMMS(ctx, "n1", 10, time.Minute)
		if err != nil || len(claimed) != 3 {
			t.Fatalf("claimed %d, %v", len(claimed), err)
		}
		if c, _ := db.ClaimMMS(ctx, "n2", 10, time.Minute); len(c) != 0 {
			t.Fatalf("claimed messages were claimed again: %d", len(c))
		}
		if n, oldest, _ := db.MMSDepth(ctx); n != 3 || oldest.IsZero() {
			t.Fatalf("depth %d %v", n, oldest)
		}

		// Submitted, then delivered by its report.
		ch, err := db.RecordMMS(ctx, "n1", store.MMSOutcome{ID: ids[0], State: store.MMSSubmitted, Link: "a", MessageID: "M1"})
		if err != nil || len(ch) != 1 || ch[0].State != store.MMSSubmitted || ch[0].Ref != "r0" || ch[0].Attempts != 1 {
			t.Fatalf("record submitted: %+v %v", ch, err)
		}
		ch, ok, err := db.ApplyMMSReport(ctx, store.MMSReport{Link: "a", MessageID: "M1", State: store.MMSDelivered})
		if err != nil || !ok || len(ch) != 1 || ch[0].State != store.MMSDelivered || ch[0].Kind != "fallback" {
			t.Fatalf("report: %+v %v %v", ch, ok, err)
		}
		// The same report again changes nothing.
		if ch, ok, err := db.ApplyMMSReport(ctx, store.MMSReport{Link: "a", MessageID: "M1", State: store.MMSDelivered}); err != nil || !ok || len(ch) != 0 {
			t.Fatalf("report twice: %+v %v %v", ch, ok, err)
		}
		// A report for the same id on another link is not this message's.
		if _, ok, _ := db.ApplyMMSReport(ctx, store.MMSReport{Link: "b", MessageID: "M1", State: store.MMSFailed}); ok {
			t.Fatal("a report from another link matched")
		}

		// A temporary failure: back in the queue, due later, the attempt counted.
		next := time.Now().Add(time.Hour)
		if ch, err := db.RecordMMS(ctx, "n1", store.MMSOutcome{ID: ids[1], State: store.MMSQueued, NextAttemptAt: next, Error: "HTTP 503"}); err != nil || len(ch) != 0 {
			t.Fatalf("retry: %+v %v", ch, err)
		}
		if m := getMMS(t, db, ids[1]); m.State != store.MMSQueued || m.Attempts != 1 || m.Error != "HTTP 503" || m.NextAttemptAt.Before(next.Add(-time.Second)) {
			t.Fatalf("after retry %+v", m)
		}
		// An outcome from a node that no longer holds it is ignored.
		if ch, err := db.RecordMMS(ctx, "n2", store.MMSOutcome{ID: ids[2], State: store.MMSSubmitted, Link: "a", MessageID: "X"}); err != nil || len(ch) != 0 {
			t.Fatalf("stranger's outcome: %+v %v", ch, err)
		}
		// Refused as MMS: to_sms, claimed again, then handed to SMS.
		if ch, err := db.RecordMMS(ctx, "n1", store.MMSOutcome{ID: ids[2], State: store.MMSToSMS, Error: "not MMS-capable"}); err != nil || len(ch) != 1 {
			t.Fatalf("to_sms: %+v %v", ch, err)
		}
		c, err := db.ClaimMMS(ctx, "n1", 10, time.Minute)
		if err != nil || len(c) != 1 || c[0].ID != ids[2] || c[0].State != store.MMSToSMS {
			t.Fatalf("claim to_sms: %+v %v", c, err)
		}
		if ch, err := db.RecordMMS(ctx, "n1", store.MMSOutcome{ID: ids[2], State: store.MMSSMS, NoAttempt: true}); err != nil || len(ch) != 1 || ch[0].State != store.MMSSMS {
			t.Fatalf("sms: %+v %v", ch, err)
		}
		if m := getMMS(t, db, ids[2]); m.State != store.MMSSMS || m.Error != "not MMS-capable" || m.Attempts != 1 {
			t.Fatalf("after sms %+v", m)
		}
		if n, _, _ := db.MMSDepth(ctx); n != 1 {
			t.Fatalf("depth %d, want 1", n)
		}
		if ms, err := db.MMSByRef(ctx, "fallback", "r2"); err != nil || len(ms) != 1 || ms[0].ID != ids[2] {
			t.Fatalf("by ref: %+v %v", ms, err)
		}
		if _, err := db.GetMMS(ctx, 999999); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("unknown id: %v", err)
		}
	})
}

// A delivery report that arrives before the SubmitRsp is recorded is kept
// and applied when it is.
func TestMMSReportBeforeRecord(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		ids := enqueueMMS(t, db, 1)
		if _, err := db.ClaimMMS(ctx, "n1", 10, time.Minute); err != nil {
			t.Fatal(err)
		}
		ch, ok, err := db.ApplyMMSReport(ctx, store.MMSReport{Link: "a", MessageID: "early", State: store.MMSDelivered})
		if err != nil || ok || len(ch) != 0 {
			t.Fatalf("early report: %+v %v %v", ch, ok, err)
		}
		ch, err = db.RecordMMS(ctx, "n1", store.MMSOutcome{ID: ids[0], State: store.MMSSubmitted, Link: "a", MessageID: "early"})
		if err != nil || len(ch) != 2 || ch[0].State != store.MMSSubmitted || ch[1].State != store.MMSDelivered {
			t.Fatalf("record: %+v %v", ch, err)
		}
		if _, _, err := db.ApplyMMSReport(ctx, store.MMSReport{Link: "a"}); phonebook.ErrorCode(err) != phonebook.EInvalid {
			t.Fatalf("report without id: %v", err)
		}
		// Unknown ids are kept until purged.
		if _, ok, err := db.ApplyMMSReport(ctx, store.MMSReport{Link: "a", MessageID: "nobody", State: store.MMSFailed}); err != nil || ok {
			t.Fatal(ok, err)
		}
		if _, err := db.PurgeMMS(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Second), 100); err != nil {
			t.Fatal(err)
		}
		var n int
		db.SQL().QueryRow(`SELECT COUNT(*) FROM mms_reports_pending`).Scan(&n)
		if n != 0 {
			t.Fatalf("%d kept reports after the purge", n)
		}
		if n, err := db.PurgeMMS(ctx, time.Now().Add(time.Second), time.Now(), 100); err != nil || n != 1 {
			t.Fatalf("purge delivered: %d %v", n, err)
		}
	})
}

// Claims are leases: a dead node's messages come back after the lease, or
// at once when it starts again; concurrent claimers never share one.
func TestMMSClaims(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		enqueueMMS(t, db, 40)
		var mu sync.Mutex
		seen := map[int64]string{}
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(node string) {
				defer wg.Done()
				for {
					c, err := db.ClaimMMS(ctx, node, 3, time.Hour)
					if err != nil {
						t.Error(err)
						return
					}
					if len(c) == 0 {
						return
					}
					mu.Lock()
					for _, m := range c {
						if other, dup := seen[m.ID]; dup {
							t.Errorf("mms %d claimed by %s and %s", m.ID, other, node)
						}
						seen[m.ID] = node
					}
					mu.Unlock()
				}
			}(fmt.Sprint("n", w))
		}
		wg.Wait()
		if len(seen) != 40 {
			t.Fatalf("%d claimed, want 40", len(seen))
		}
		n, err := db.ReleaseMMSClaims(ctx, "n0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := db.ClaimMMS(ctx, "n9", 100, 10*time.Millisecond)
		if err != nil || int64(len(c)) != n {
			t.Fatalf("after release: claimed %d, released %d, %v", len(c), n, err)
		}
		got := 0
		poll.Until(t, "the lapsed claims to come back", func() bool {
			c2, err := db.ClaimMMS(ctx, "n8", 100, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			got += len(c2)
			return got == len(c)
		})
	})
}

func TestMMSCapabilityStore(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		n := phonebook.MSISDN("+8613800138000")
		if err := db.SetMMSCapability(ctx,
			store.MMSCapability{Number: n, Source: store.CapabilityClient, Capable: true},
			store.MMSCapability{Number: n, Source: store.CapabilityOperator, Capable: false},
			store.MMSCapability{Number: n, Source: store.CapabilityOperator, Capable: true}, // the last one counts
		); err != nil {
			t.Fatal(err)
		}
		cs, err := db.MMSCapabilities(ctx, n)
		if err != nil || len(cs) != 2 || cs[0].Source != store.CapabilityClient || !cs[1].Capable || cs[1].UpdatedAt.IsZero() {
			t.Fatalf("capabilities %+v %v", cs, err)
		}
		if err := db.SetMMSCapability(ctx, store.MMSCapability{Number: n, Source: store.CapabilityClient, Capable: false}); err != nil {
			t.Fatal(err)
		}
		if cs, _ := db.MMSCapabilities(ctx, n); cs[0].Capable {
			t.Fatalf("not replaced: %+v", cs)
		}
		if err := db.SetMMSCapability(ctx, store.MMSCapability{Number: n, Source: "guess"}); phonebook.ErrorCode(err) != phonebook.EInvalid {
			t.Fatalf("unknown source: %v", err)
		}
		if ok, err := db.DeleteMMSCapability(ctx, n, store.CapabilityOperator); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if ok, err := db.DeleteMMSCapability(ctx, n, ""); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if cs, _ := db.MMSCapabilities(ctx, n); len(cs) != 0 {
			t.Fatalf("left %+v", cs)
		}
		// A large import goes in chunks.
		big := make([]store.MMSCapability, 450)
		for i := range big {
			big[i] = store.MMSCapability{Number: phonebook.MSISDN(fmt.Sprintf("+86139%08d", i)), Source: store.CapabilityOperator, Capable: i%2 == 0}
		}
		if err := db.SetMMSCapability(ctx, big...); err != nil {
			t.Fatal(err)
		}
		if cs, _ := db.MMSCapabilities(ctx, "+8613900000449"); len(cs) != 1 || cs[0].Capable {
			t.Fatalf("imported %+v", cs)
		}
	})
}
