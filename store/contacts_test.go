package store_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

const (
	alice phonebook.MSISDN = "+8613800138001"
	bob   phonebook.MSISDN = "+8613800138002"
	carol phonebook.MSISDN = "+8613800138003"
	dave  phonebook.MSISDN = "+8613800138004"
)

func entry(id, name string, nums ...phonebook.MSISDN) store.BookEntry {
	e := store.BookEntry{EntryID: id, Name: name}
	for _, n := range nums {
		e.Phones = append(e.Phones, store.BookPhone{Raw: string(n), Number: n})
	}
	return e
}

func flags(t *testing.T, db *store.DB, owner phonebook.MSISDN) map[phonebook.MSISDN]int {
	t.Helper()
	cs, err := db.Contacts(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	out := map[phonebook.MSISDN]int{}
	for _, c := range cs {
		out[c.Number] = c.Flag
	}
	return out
}

func apply(t *testing.T, db *store.DB, owner phonebook.MSISDN, ch store.BookChange) store.BookApplied {
	t.Helper()
	res, err := db.ApplyBookChange(context.Background(), owner, ch)
	if err != nil {
		t.Fatalf("apply %s: %v", owner, err)
	}
	return res
}

func TestBookFlagsBothWays(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		storetest.Users(t, db, alice, bob, carol)
		res := apply(t, db, alice, store.BookChange{Replace: true, Upsert: []store.BookEntry{
			entry("1", "Bob", bob), entry("2", "Carol", carol), entry("3", "Me", alice)}})
		if !reflect.DeepEqual(res.Added, []phonebook.MSISDN{bob, carol}) || len(res.NewMutual) != 0 || res.Contacts != 2 {
			t.Fatalf("first sync: %+v", res)
		}
		if got := flags(t, db, alice); !reflect.DeepEqual(got, map[phonebook.MSISDN]int{bob: 1, carol: 1}) {
			t.Fatalf("alice's flags %v", got)
		}
		// Bob adds Alice: both rows turn mutual.
		res = apply(t, db, bob, store.BookChange{Upsert: []store.BookEntry{entry("b1", "Alice", alice)}})
		if !reflect.DeepEqual(res.NewMutual, []phonebook.MSISDN{alice}) || res.Flags[alice] != store.FlagMutual {
			t.Fatalf("bob's sync NewMutual %v flags %v", res.NewMutual, res.Flags)
		}
		if got := flags(t, db, alice); got[bob] != store.FlagMutual || got[carol] != store.FlagOneWay {
			t.Fatalf("alice's flags after bob added her: %v", got)
		}
		if got := flags(t, db, bob); got[alice] != store.FlagMutual {
			t.Fatalf("bob's flags %v", got)
		}
		// Bob removes Alice: Alice's row drops back to one-way.
		res = apply(t, db, bob, store.BookChange{Remove: []string{"b1"}})
		if !reflect.DeepEqual(res.Removed, []phonebook.MSISDN{alice}) {
			t.Fatalf("removed %v", res.Removed)
		}
		if got := flags(t, db, alice); got[bob] != store.FlagOneWay {
			t.Fatalf("alice's flag for bob after removal: %v", got)
		}
		if got := flags(t, db, bob); len(got) != 0 {
			t.Fatalf("bob still has %v", got)
		}
		// Alice drops Bob from one entry while another entry still holds him:
		// he stays a contact.
		apply(t, db, alice, store.BookChange{Upsert: []store.BookEntry{entry("4", "Bob work", bob)}})
		res = apply(t, db, alice, store.BookChange{Remove: []string{"1"}})
		if len(res.Removed) != 0 {
			t.Fatalf("bob removed although entry 4 holds him: %+v", res)
		}
		cs, _ := db.Contacts(context.Background(), alice)
		if len(cs) != 2 || cs[0].Number != bob || cs[0].Name != "Bob work" || !cs[0].Registered {
			t.Fatalf("contacts %+v", cs)
		}
	})
}

func TestBookConcurrentMutualAdds(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		// Pairs add each other at the same moment; every pair must end mutual.
		const pairs = 8
		var wg sync.WaitGroup
		errs := make(chan error, 2*pairs)
		for i := range pairs {
			a := phonebook.MSISDN(fmt.Sprintf("+861390000%04d", 2*i))
			b := phonebook.MSISDN(fmt.Sprintf("+861390000%04d", 2*i+1))
			for _, p := range [][2]phonebook.MSISDN{{a, b}, {b, a}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := db.ApplyBookChange(context.Background(), p[0], store.BookChange{
						Upsert: []store.BookEntry{entry("x", "peer", p[1])}})
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i := range pairs {
			a := phonebook.MSISDN(fmt.Sprintf("+861390000%04d", 2*i))
			b := phonebook.MSISDN(fmt.Sprintf("+861390000%04d", 2*i+1))
			if fa, fb := flags(t, db, a)[b], flags(t, db, b)[a]; fa != store.FlagMutual || fb != store.FlagMutual {
				t.Fatalf("pair %d: flags %d/%d, want mutual", i, fa, fb)
			}
		}
	})
}

func TestBookRestoreRoundTrip(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		book := []store.BookEntry{
			{EntryID: "a", Name: "张伟", Group: "同事", Phones: []store.BookPhone{
				{Raw: "138 0013 8002", Label: "mobile", Number: bob},
				{Raw: "+86 10 1234 5678", Label: "work", Number: "+861012345678"},
				{Raw: "not a number", Label: "other"}}},
			{EntryID: "b", Name: "Bob again", Phones: []store.BookPhone{{Raw: "0086-138-0013-8002", Number: bob}}},
			{EntryID: "c", Name: "No phones"},
		}
		res := apply(t, db, alice, store.BookChange{Replace: true, Upsert: book})
		if res.Contacts != 2 || res.Entries != 3 {
			t.Fatalf("applied %+v", res)
		}
		got, err := db.AddressBook(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(book) {
			t.Fatalf("restored %d entries", len(got))
		}
		for i := range book {
			g, w := got[i], book[i]
			if g.EntryID != w.EntryID || g.Name != w.Name || g.Group != w.Group || !reflect.DeepEqual(g.Phones, w.Phones) {
				t.Fatalf("entry %d: got %+v want %+v", i, g, w)
			}
		}
		// Replacing with an empty book clears everything.
		res = apply(t, db, alice, store.BookChange{Replace: true})
		if res.Entries != 0 || len(res.Removed) != 2 {
			t.Fatalf("empty replace: %+v", res)
		}
		if got, _ := db.AddressBook(ctx, alice); len(got) != 0 {
			t.Fatalf("restore after clearing: %+v", got)
		}
	})
}

func TestBookLookupBudget(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		budget := store.LookupBudget{Capacity: 3, RefillPerSecond: 1.0 / 86400}
		ch := store.BookChange{Budget: budget, Upsert: []store.BookEntry{entry("1", "x", bob, carol)}}
		apply(t, db, alice, ch)
		// The same numbers again (another entry, a rename) cost nothing.
		ch.Upsert = []store.BookEntry{entry("1", "renamed", bob, carol), entry("2", "dup", bob)}
		apply(t, db, alice, ch)
		if n, _ := db.LookupTokens(ctx, alice, budget); n != 1 {
			t.Fatalf("tokens %d, want 1", n)
		}
		ch.Upsert = []store.BookEntry{entry("3", "two new", dave, "+8613800138005")}
		_, err := db.ApplyBookChange(ctx, alice, ch)
		var pe *phonebook.Error
		if phonebook.ErrorCode(err) != phonebook.ERateLimited || !asError(err, &pe) || pe.RetryAfter.IsZero() {
			t.Fatalf("over budget: %v", err)
		}
		// Nothing of the refused sync was kept.
		if got := flags(t, db, alice); len(got) != 2 {
			t.Fatalf("contacts after refusal %v", got)
		}
		if book, _ := db.AddressBook(ctx, alice); len(book) != 2 {
			t.Fatalf("book after refusal has %d entries", len(book))
		}
		// Another owner has a bucket of their own.
		apply(t, db, bob, store.BookChange{Budget: budget, Upsert: []store.BookEntry{entry("1", "x", alice, carol, dave)}})
	})
}

func TestBookMaxEntries(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		_, err := db.ApplyBookChange(context.Background(), alice, store.BookChange{MaxEntries: 1,
			Upsert: []store.BookEntry{entry("1", "a", bob), entry("2", "b", carol)}})
		if phonebook.ErrorCode(err) != phonebook.EInvalid {
			t.Fatalf("over the entry limit: %v", err)
		}
	})
}

func TestMatchAndHolders(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob, carol)
		apply(t, db, alice, store.BookChange{Upsert: []store.BookEntry{entry("1", "b", bob, dave)}})
		apply(t, db, bob, store.BookChange{Upsert: []store.BookEntry{entry("1", "a", alice)}})
		apply(t, db, carol, store.BookChange{Upsert: []store.BookEntry{entry("1", "b", bob)}})
		m, err := db.MatchNumbers(ctx, []phonebook.MSISDN{bob, carol, dave})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m[bob]; !ok || m[carol].Status != nil {
			t.Fatalf("match %+v", m)
		}
		if _, ok := m[dave]; ok {
			t.Fatalf("dave is not registered but matched")
		}
		all, _ := db.Holders(ctx, bob, false, false)
		if !reflect.DeepEqual(all, []phonebook.MSISDN{alice, carol}) {
			t.Fatalf("holders of bob %v", all)
		}
		mutual, _ := db.Holders(ctx, bob, false, true)
		if !reflect.DeepEqual(mutual, []phonebook.MSISDN{alice}) {
			t.Fatalf("mutual holders of bob %v", mutual)
		}
		if online, _ := db.Holders(ctx, bob, true, false); len(online) != 0 {
			t.Fatalf("online holders with nobody online: %v", online)
		}
		on := "online"
		if _, _, err := db.UpdateStatus(ctx, carol, store.StatusUpdate{IMStatus: &on}); err != nil {
			t.Fatal(err)
		}
		if online, _ := db.Holders(ctx, bob, true, false); !reflect.DeepEqual(online, []phonebook.MSISDN{carol}) {
			t.Fatalf("online holders %v", online)
		}
	})
}

func TestStatusPartialUpdates(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		st, err := db.UserStatus(ctx, alice)
		if err != nil || st.IMStatus != store.StatusOffline {
			t.Fatalf("unknown user's status %+v %v", st, err)
		}
		busy, text, nick := "busy", "in a meeting", "Ali"
		st, changed, err := db.UpdateStatus(ctx, alice, store.StatusUpdate{IMStatus: &busy, StatusText: &text})
		if err != nil || !changed || st.IMStatus != busy || st.StatusText != text {
			t.Fatalf("first update %+v %v %v", st, changed, err)
		}
		st, changed, _ = db.UpdateStatus(ctx, alice, store.StatusUpdate{Nickname: &nick})
		if !changed || st.IMStatus != busy || st.StatusText != text || st.Nickname != nick {
			t.Fatalf("partial update lost fields: %+v", st)
		}
		// Logging in does not overwrite a status chosen while online.
		on := "online"
		if _, changed, _ = db.UpdateStatus(ctx, alice, store.StatusUpdate{IMStatus: &on, IMStatusIfOffline: true}); changed {
			t.Fatal("login overwrote busy")
		}
		if _, changed, _ = db.UpdateStatus(ctx, alice, store.StatusUpdate{Nickname: &nick}); changed {
			t.Fatal("a no-op update reported a change")
		}
		got, _ := db.UserStatus(ctx, alice)
		if got != st {
			t.Fatalf("read back %+v, want %+v", got, st)
		}
	})
}

func asError(err error, target **phonebook.Error) bool {
	e, ok := err.(*phonebook.Error)
	if ok {
		*target = e
	}
	return ok
}

func TestForgetContacts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		apply(t, db, alice, store.BookChange{Upsert: []store.BookEntry{entry("1", "b", bob)}})
		apply(t, db, bob, store.BookChange{Upsert: []store.BookEntry{entry("1", "a", alice)}})
		busy := "busy"
		db.UpdateStatus(ctx, alice, store.StatusUpdate{IMStatus: &busy})
		if err := db.ForgetContacts(ctx, alice); err != nil {
			t.Fatal(err)
		}
		if got := flags(t, db, alice); len(got) != 0 {
			t.Fatalf("alice's contacts left: %v", got)
		}
		if got := flags(t, db, bob); got[alice] != store.FlagOneWay {
			t.Fatalf("bob's flag for alice %v", got)
		}
		if book, _ := db.AddressBook(ctx, alice); len(book) != 0 {
			t.Fatalf("book left: %+v", book)
		}
		if st, _ := db.UserStatus(ctx, alice); st.IMStatus != store.StatusOffline {
			t.Fatalf("status left: %+v", st)
		}
	})
}

func TestBookLookupBudgetRefills(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		budget := store.LookupBudget{Capacity: 2, RefillPerSecond: 100}
		apply(t, db, alice, store.BookChange{Budget: budget, Upsert: []store.BookEntry{entry("1", "x", bob, carol)}})
		ch := store.BookChange{Budget: budget, Upsert: []store.BookEntry{entry("2", "y", dave)}}
		poll.Until(t, "the bucket to refill", func() bool {
			_, err := db.ApplyBookChange(context.Background(), alice, ch)
			if err != nil && phonebook.ErrorCode(err) != phonebook.ERateLimited {
				t.Fatalf("waiting for the bucket to refill: %v", err)
			}
			return err == nil
		})
		if got := flags(t, db, alice); len(got) != 3 {
			t.Fatalf("contacts after refill %v", got)
		}
	})
}

func TestMatchManyNumbers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		var users, book []phonebook.MSISDN
		for i := range 1000 {
			n := phonebook.MSISDN(fmt.Sprintf("+86139%08d", i))
			book = append(book, n)
			if i%5 != 0 {
				users = append(users, n)
			}
		}
		storetest.Users(t, db, users...)
		if _, err := db.SQL().Exec("UPDATE users SET valid = 0 WHERE number = ?", users[0]); err != nil {
			t.Fatal(err)
		}
		m, err := db.MatchNumbers(context.Background(), book)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != len(users)-1 {
			t.Fatalf("matched %d of %d users (one blocked)", len(m), len(users))
		}
		if _, ok := m[users[0]]; ok {
			t.Fatal("a blocked user matched")
		}
		if _, ok := m[book[0]]; ok {
			t.Fatal("an unregistered number matched")
		}
	})
}
