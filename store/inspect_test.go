package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// The operator reads: a number's sessions and SMS, the outbox's counts,
// and the audit log, on both engines.
func TestOperatorReads(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		n := phonebook.MSISDN("+8613800138000")
		storetest.Users(t, db, n)
		now := time.Now()
		for i, dev := range []string{"a", "b"} {
			s := store.Session{TokenHash: []byte(strings.Repeat(dev, 32)), Number: n, DeviceID: dev,
				CreatedAt: now.Add(time.Duration(i) * time.Second), ExpiresAt: now.Add(time.Hour)}
			if err := db.RecordLogin(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		expired := store.Session{TokenHash: []byte(strings.Repeat("c", 32)), Number: n, DeviceID: "c",
			CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}
		if err := db.RecordLogin(ctx, expired); err != nil {
			t.Fatal(err)
		}
		if _, err := db.RevokeSessions(ctx, n); err != nil {
			t.Fatal(err)
		}
		ss, err := db.Sessions(ctx, n, 10)
		if err != nil || len(ss) != 2 || ss[0].DeviceID != "b" || !ss[0].Revoked || ss[0].TokenHash != nil {
			t.Fatalf("sessions: %+v %v", ss, err)
		}

		ids := enqueue(t, db, 3) // to +8613800138000
		if _, err := db.EnqueueSMS(ctx, store.SMS{Dest: "+8613900139000", Text: "other", Kind: "verify", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		claimed, err := db.ClaimSMS(ctx, "n1", 2, time.Minute)
		if err != nil || len(claimed) != 2 {
			t.Fatalf("claim: %d %v", len(claimed), err)
		}
		o, err := db.SMSOverview(ctx, now.Add(-time.Hour))
		if err != nil || o.Queued != 4 || o.Submitted != 0 || o.Failed != 0 || o.Oldest.IsZero() {
			t.Fatalf("overview: %+v %v", o, err)
		}
		if _, err := db.RecordSMS(ctx, "n1", []store.SMSPart{part(ids[0], 1, 1, "m1")},
			[]store.SMSOutcome{{ID: ids[0], State: "submitted"}, {ID: ids[1], State: "failed", Error: "refused"}}); err != nil {
			t.Fatal(err)
		}
		o, err = db.SMSOverview(ctx, now.Add(-time.Hour))
		if err != nil || o.Queued != 2 || o.Submitted != 1 || o.Failed != 1 {
			t.Fatalf("overview after submit: %+v %v", o, err)
		}
		if o, _ := db.SMSOverview(ctx, time.Now().Add(time.Minute)); o.Failed != 0 {
			t.Fatalf("failures since a later time: %d", o.Failed)
		}
		recent, err := db.RecentSMS(ctx, n, 2)
		if err != nil || len(recent) != 2 || recent[0].ID != ids[2] || recent[1].ID != ids[1] || recent[1].State != "failed" {
			t.Fatalf("recent: %+v %v", recent, err)
		}
		recent, _ = db.RecentSMS(ctx, n, 10)
		if len(recent) != 3 || len(recent[2].Parts) != 1 || recent[2].Parts[0].MessageID != "m1" {
			t.Fatalf("recent with parts: %+v", recent)
		}
		if !store.SMSFinishedBadly("failed") || !store.SMSFinishedBadly("expired") || store.SMSFinishedBadly("submitted") {
			t.Fatal("SMSFinishedBadly")
		}

		for _, e := range []store.AuditEntry{
			{Actor: "ann", Remote: "127.0.0.1", Action: "block", Target: string(n), Detail: "2 sessions revoked"},
			{Actor: "bob", Action: "sign_in"},
			{Actor: strings.Repeat("é", 100), Action: "unblock", Target: string(n), Detail: strings.Repeat("x", 1000)},
		} {
			if err := db.AddAudit(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		all, err := db.Audit(ctx, "", 10)
		if err != nil || len(all) != 3 || all[0].Action != "unblock" || all[2].Actor != "ann" || all[2].At.IsZero() {
			t.Fatalf("audit: %+v %v", all, err)
		}
		// Cut to at most the columns' bytes, at a character boundary.
		if a := all[0].Actor; a != strings.Repeat("é", 32) || len(all[0].Detail) != 255 {
			t.Fatalf("long fields not cut to their columns: %q, %d bytes", a, len(all[0].Detail))
		}
		mine, err := db.Audit(ctx, string(n), 10)
		if err != nil || len(mine) != 2 {
			t.Fatalf("audit of %s: %+v %v", n, mine, err)
		}
	})
}
