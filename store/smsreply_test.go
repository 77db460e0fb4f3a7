package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func sender(i int) phonebook.MSISDN { return phonebook.MSISDN(fmt.Sprintf("+86136%08d", i)) }

// A 3-digit space holds 1,000 live conversations of one recipient; the
// 1,001st is refused while all are live, and once some are idle it takes
// the least recently used one, never a live one.
func TestExtensionsThousandConversationsLRU(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		bob := phonebook.MSISDN("+8613700137000")
		idle := time.Hour
		t0 := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
		codes := map[string]phonebook.MSISDN{}
		// 1,000 senders, one a second.
		for i := range 1000 {
			ext, err := db.NoteSMSFallback(ctx, sender(i), bob, 3, idle, t0.Add(time.Duration(i)*time.Second))
			if err != nil {
				t.Fatalf("sender %d: %v", i, err)
			}
			if len(ext) != 3 {
				t.Fatalf("sender %d got code %q", i, ext)
			}
			if prev, ok := codes[ext]; ok {
				t.Fatalf("code %s given to %s and %s", ext, prev, sender(i))
			}
			codes[ext] = sender(i)
		}
		// The same pair keeps its code.
		if ext, err := db.NoteSMSFallback(ctx, sender(7), bob, 3, idle, t0.Add(1000*time.Second)); err != nil || codes[ext] != sender(7) {
			t.Fatalf("sender 7 again: %q %v", ext, err)
		}
		// Another recipient has a space of its own.
		if ext, err := db.NoteSMSFallback(ctx, sender(0), "+8613900139000", 3, idle, t0); err != nil || ext != "000" {
			t.Fatalf("other recipient: %q %v", ext, err)
		}
		// Everyone live (the first was used 1,000s ago, idle is an hour).
		late := t0.Add(1001 * time.Second)
		if _, err := db.NoteSMSFallback(ctx, sender(1000), bob, 3, idle, late); !errors.Is(err, store.ErrExtensionsExhausted) {
			t.Fatalf("1,001st conversation while all live: %v", err)
		}
		// Conversation 0 replies: it is live again, so conversation 1 is the
		// least recently used (7 was used again above).
		if c, found, err := db.SMSConversationByExt(ctx, bob, ext(t, codes, sender(0)), t0.Add(3600*time.Second)); err != nil || !found || c.Sender != sender(0) {
			t.Fatalf("reply lookup: %+v %v %v", c, found, err)
		}
		// Sender 1 has been idle for an hour at t0+3601s; sender 2 not yet.
		at := t0.Add(3601 * time.Second)
		e, err := db.NoteSMSFallback(ctx, sender(1000), bob, 3, idle, at)
		if err != nil {
			t.Fatal(err)
		}
		if codes[e] != sender(1) {
			t.Fatalf("reuse took %s's code %s, want the least recently used (%s)", codes[e], e, sender(1))
		}
		if _, err := db.NoteSMSFallback(ctx, sender(1001), bob, 3, idle, at); !errors.Is(err, store.ErrExtensionsExhausted) {
			t.Fatalf("sender 2 (idle 59m59s) is live: %v", err)
		}
		// The old holder lost its code: a reply to it finds the new one.
		if c, found, _ := db.SMSConversationByExt(ctx, bob, e, at); !found || c.Sender != sender(1000) {
			t.Fatalf("code %s belongs to %+v", e, c)
		}
		// Sender 1 writes again later: it gets a code back (sender 2's, idle by now).
		e1, err := db.NoteSMSFallback(ctx, sender(1), bob, 3, idle, t0.Add(3700*time.Second))
		if err != nil || codes[e1] != sender(2) {
			t.Fatalf("sender 1 again: %q (was %s's) %v", e1, codes[e1], err)
		}
	})
}

func ext(t *testing.T, codes map[string]phonebook.MSISDN, s phonebook.MSISDN) string {
	t.Helper()
	for e, v := range codes {
		if v == s {
			return e
		}
	}
	t.Fatalf("no code for %s", s)
	return ""
}

// Concurrent first messages to one recipient never share a code.
func TestExtensionsConcurrentAllocation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		bob := phonebook.MSISDN("+8613700137000")
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Go(func() {
				e, err := db.NoteSMSFallback(ctx, sender(i), bob, 2, time.Hour, time.Now())
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				seen[e]++
				mu.Unlock()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for e, n := range seen {
			if n != 1 {
				t.Fatalf("code %s given %d times", e, n)
			}
		}
		if len(seen) != 40 {
			t.Fatalf("%d codes for 40 conversations", len(seen))
		}
	})
}

func TestRecentSMSSendersAndOptOuts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		bob := phonebook.MSISDN("+8613700137000")
		t0 := time.Now().UTC()
		for i, s := range []phonebook.MSISDN{sender(1), sender(2), sender(3)} {
			if _, err := db.NoteSMSFallback(ctx, s, bob, 0, 0, t0.Add(time.Duration(i)*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := db.RecentSMSSenders(ctx, bob, t0.Add(30*time.Second), 10)
		if err != nil || len(got) != 2 || got[0].Sender != sender(3) || got[1].Sender != sender(2) || got[0].Ext != "" {
			t.Fatalf("recent senders: %+v %v", got, err)
		}

		for _, c := range []struct{ number, sender phonebook.MSISDN }{{bob, ""}, {bob, sender(1)}, {"+8613900139000", sender(2)}} {
			if added, err := db.AddSMSOptOut(ctx, c.number, c.sender, t0); err != nil || !added {
				t.Fatalf("add %v: %v %v", c, added, err)
			}
		}
		if added, err := db.AddSMSOptOut(ctx, bob, "", t0); err != nil || added {
			t.Fatalf("second add: %v %v", added, err)
		}
		for _, c := range []struct {
			number, sender phonebook.MSISDN
			want           bool
		}{{bob, sender(9), true}, {"+8613900139000", sender(2), true}, {"+8613900139000", sender(3), false}} {
			if out, err := db.SMSOptedOut(ctx, c.number, c.sender); err != nil || out != c.want {
				t.Fatalf("opted out %v: %v %v", c, out, err)
			}
		}
		if l, err := db.SMSOptOuts(ctx, bob, 10); err != nil || len(l) != 2 {
			t.Fatalf("list: %+v %v", l, err)
		}
		if n, err := db.RemoveSMSOptOut(ctx, bob, "", false); err != nil || n != 1 {
			t.Fatalf("remove all-senders opt-out: %d %v", n, err)
		}
		if out, _ := db.SMSOptedOut(ctx, bob, sender(9)); out {
			t.Fatal("still opted out from everyone")
		}
		if out, _ := db.SMSOptedOut(ctx, bob, sender(1)); !out {
			t.Fatal("the opt-out from sender 1 went too")
		}
		if n, err := db.RemoveSMSOptOut(ctx, bob, "", true); err != nil || n != 1 {
			t.Fatalf("remove every: %d %v", n, err)
		}
		if l, _ := db.SMSOptOuts(ctx, "", 10); len(l) != 1 {
			t.Fatalf("left: %+v", l)
		}
	})
}
