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

// The retention policy, on both engines: at the time of writing nothing
// has expired and nothing goes; three days later expired sessions, codes
// (whose resend wait is over too) and tokens go, with the counters of past
// windows, and whatever is still valid stays.
func TestDeleteExpired(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		n := phonebook.MSISDN("+8613800138000")
		storetest.Users(t, db, n)
		t0 := time.Now()
		later := t0.Add(72 * time.Hour)
		hash := func(c string) []byte { return []byte(strings.Repeat(c, 32)) }
		for _, s := range []store.Session{
			{TokenHash: hash("a"), Number: n, DeviceID: "gone", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)},
			{TokenHash: hash("b"), Number: n, DeviceID: "kept", CreatedAt: t0, ExpiresAt: later.Add(time.Hour)},
		} {
			if err := db.RecordLogin(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		for _, v := range []store.VerifyCode{
			{Number: n, DeviceID: "gone", SIMID: "s", CodeMAC: hash("c"), CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), NextSendAt: t0.Add(time.Minute)},
			// Expired, but its resend wait outlasts it: kept until that ends.
			{Number: n, DeviceID: "kept", SIMID: "s", CodeMAC: hash("d"), CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), NextSendAt: later.Add(time.Hour)},
		} {
			if err := db.PutVerifyCode(ctx, v); err != nil {
				t.Fatal(err)
			}
		}
		for _, v := range []store.VerifyToken{
			{ID: "gone", TokenMAC: hash("e"), PollHash: hash("f"), DeviceID: "d", SIMID: "s", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), State: store.TokenPending},
			{ID: "kept", TokenMAC: hash("g"), PollHash: hash("h"), DeviceID: "d", SIMID: "s", CreatedAt: t0, ExpiresAt: later.Add(time.Hour), State: store.TokenPending},
		} {
			if err := db.PutVerifyToken(ctx, v); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := db.Hit(ctx, "test:retention", time.Hour); err != nil {
			t.Fatal(err)
		}

		if got, err := db.DeleteExpired(ctx, t0); err != nil || got != (store.Expired{}) {
			t.Fatalf("at t0: %+v %v, want nothing deleted", got, err)
		}
		if c, _, err := db.Count(ctx, "test:retention", time.Hour); err != nil || c != 1 {
			t.Fatalf("counter of the current window: %d %v", c, err)
		}

		got, err := db.DeleteExpired(ctx, later)
		if err != nil || got.Sessions != 1 || got.Verifications != 2 || got.Counters < 1 {
			t.Fatalf("three days later: %+v %v, want 1 session, 2 verifications, the counter", got, err)
		}
		if _, err := db.Session(ctx, hash("a")); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Errorf("expired session: %v", err)
		}
		if s, err := db.Session(ctx, hash("b")); err != nil || s.DeviceID != "kept" {
			t.Errorf("valid session: %+v %v", s, err)
		}
		if _, err := db.VerifyCode(ctx, n, phonebook.Identity{DeviceID: "gone", SIMID: "s"}); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Errorf("expired code: %v", err)
		}
		if _, err := db.VerifyCode(ctx, n, phonebook.Identity{DeviceID: "kept", SIMID: "s"}); err != nil {
			t.Errorf("code in its resend wait: %v", err)
		}
		if _, err := db.VerifyToken(ctx, "gone"); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Errorf("expired token: %v", err)
		}
		if _, err := db.VerifyToken(ctx, "kept"); err != nil {
			t.Errorf("valid token: %v", err)
		}
		if c, _, err := db.Count(ctx, "test:retention", time.Hour); err != nil || c != 0 {
			t.Fatalf("counter after the purge: %d %v", c, err)
		}
		if again, err := db.DeleteExpired(ctx, later); err != nil || again != (store.Expired{}) {
			t.Fatalf("second run: %+v %v, want nothing more", again, err)
		}
	})
}
