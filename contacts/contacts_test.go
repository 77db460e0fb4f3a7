package contacts_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/contacts"
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

// delivery is one recipient's copy of a pushed event.
type delivery struct {
	to phonebook.MSISDN
	ev contacts.Event
	at time.Time
}

// recorder is a Notifier that keeps every delivery; block, when set, holds
// each Notify call until it is closed, after signalling entered.
type recorder struct {
	mu      sync.Mutex
	got     []delivery
	entered chan struct{}
	block   chan struct{}
}

func (r *recorder) Notify(ctx context.Context, to []phonebook.MSISDN, ev contacts.Event) error {
	if r.block != nil {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range to {
		r.got = append(r.got, delivery{n, ev, now})
	}
	return nil
}

// to returns the events delivered to n, in order.
func (r *recorder) to(n phonebook.MSISDN) []contacts.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []contacts.Event
	for _, d := range r.got {
		if d.to == n {
			out = append(out, d.ev)
		}
	}
	return out
}

// waitFor polls cond until it holds or the test runs out of patience.
var waitFor = poll.Until

func newService(t *testing.T, db *store.DB, cfg contacts.Config) (*contacts.Service, *recorder) {
	t.Helper()
	rec := &recorder{}
	// Built without a notifier, as cmd does before the relay exists.
	svc, err := contacts.New(db, nil, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc.SetNotifier(rec)
	t.Cleanup(func() { svc.Close(context.Background()) })
	return svc, rec
}

func book(entries ...contacts.Entry) contacts.SyncRequest {
	return contacts.SyncRequest{Full: true, Entries: entries}
}

func card(id, name string, numbers ...string) contacts.Entry {
	e := contacts.Entry{ID: id, Name: name}
	for _, n := range numbers {
		e.Phones = append(e.Phones, contacts.Phone{Number: n})
	}
	return e
}

func mustSync(t *testing.T, svc *contacts.Service, owner phonebook.MSISDN, req contacts.SyncRequest) contacts.SyncResult {
	t.Helper()
	res, err := svc.Sync(context.Background(), owner, "", req)
	if err != nil {
		t.Fatalf("sync for %s: %v", owner, err)
	}
	return res
}

func TestSyncFullAndDelta(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob)
		svc, _ := newService(t, db, contacts.Config{})
		res := mustSync(t, svc, alice, book(
			card("1", "Bob", "138 0013 8002", "+86 10 1234 5678"),
			card("2", "Dave", "13800138004"),
			card("3", "Broken", "12"),
			card("4", "Me", "+86 138 0013 8001"),
		))
		if len(res.Entries) != 4 || res.Contacts != 3 || res.Book != 4 {
			t.Fatalf("result %+v", res)
		}
		b := res.Entries[0].Phones[0]
		if b.Number != bob || !b.Registered || b.Mutual || b.Presence != nil {
			t.Fatalf("bob %+v", b)
		}
		if p := res.Entries[0].Phones[1]; p.Number != "+861012345678" || p.Registered {
			t.Fatalf("landline %+v", p)
		}
		if d := res.Entries[1].Phones[0]; d.Number != dave || d.Registered {
			t.Fatalf("dave %+v", d)
		}
		if br := res.Entries[2]; br.Code != phonebook.EInvalidNumber || br.Reason == "" || br.Phones[0].Code != phonebook.EInvalidNumber {
			t.Fatalf("broken entry %+v", br)
		}
		if me := res.Entries[3].Phones[0]; !me.Self || me.Registered {
			t.Fatalf("own number %+v", me)
		}

		// Delta: Dave changes number, Broken goes, a new card arrives.
		res = mustSync(t, svc, alice, contacts.SyncRequest{
			Changed: []contacts.Entry{card("2", "Dave", "+86 138 0013 8003")},
			Removed: []string{"3", "no-such-id"},
			Added:   []contacts.Entry{card("5", "Zed", "00 86 139 0000 0000")},
		})
		if len(res.Entries) != 2 || res.Book != 4 || res.Contacts != 4 {
			t.Fatalf("delta result %+v", res)
		}
		cs, err := svc.Contacts(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		var got []phonebook.MSISDN
		for _, c := range cs {
			got = append(got, c.Number)
		}
		want := []phonebook.MSISDN{"+861012345678", bob, carol, "+8613900000000"}
		if !slices.Equal(got, want) {
			t.Fatalf("contacts %v, want %v", got, want)
		}

		// A full sync replaces: what it does not carry is gone.
		res = mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		if res.Contacts != 1 || res.Book != 1 {
			t.Fatalf("replace %+v", res)
		}
		if r, _ := svc.Restore(ctx, alice); len(r) != 1 || r[0].ID != "1" {
			t.Fatalf("restore after replace %+v", r)
		}
	})
}

func TestNormalisation(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		svc, _ := newService(t, db, contacts.Config{})
		cases := []struct {
			owner  phonebook.MSISDN
			region string
			raw    string
			want   phonebook.MSISDN // "" = invalid
		}{
			{alice, "", "13800138000", "+8613800138000"},              // national
			{alice, "", "138 0013 8000", "+8613800138000"},            // spaces
			{alice, "", "138-0013-8000", "+8613800138000"},            // dashes
			{alice, "", "+86 138 0013 8000", "+8613800138000"},        // international
			{alice, "", "008613800138000", "+8613800138000"},          // 00 prefix
			{alice, "", "(+86) 138-0013-8000", "+8613800138000"},      // brackets
			{alice, "", "tel:+86-138-0013-8000", "+8613800138000"},    // tel URI
			{alice, "", "+86 10 1234 5678 ext. 21", "+861012345678"},  // extension dropped
			{alice, "", "+44 20 7946 0958", "+442079460958"},          // foreign, international
			{alice, "", "0044 20 7946 0958", "+442079460958"},         // foreign, 00
			{"+442079460001", "", "020 7946 0958", "+442079460958"},   // the owner's region
			{alice, "GB", "020 7946 0958", "+442079460958"},           // an explicit region
			{"+16502530000", "", "(650) 253-0001", "+16502530001"},    // US national
			{alice, "", "12345", ""},                                  // too short
			{alice, "", "call me", ""},                                // not a number
			{alice, "", "", ""},                                       // empty
			{alice, "", "+999 1234 5678", ""},                         // no such country
			{alice, "", "138 0013 8000 0000 0000 0000 0000 0000", ""}, // too long
		}
		for i, c := range cases {
			res, err := svc.Sync(context.Background(), c.owner, c.region, book(card("x", "n", c.raw)))
			if err != nil {
				t.Fatalf("case %d %q: %v", i, c.raw, err)
			}
			p := res.Entries[0].Phones[0]
			if p.Number != c.want {
				t.Errorf("case %d: %q from %s/%q -> %q (%s), want %q", i, c.raw, c.owner, c.region, p.Number, p.Reason, c.want)
			}
			if c.want == "" && (p.Code != phonebook.EInvalidNumber || p.Reason == "") {
				t.Errorf("case %d: invalid %q reported as %+v", i, c.raw, p)
			}
		}
	})
}

func TestMutualFlagsAndPresencePrivacy(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob, carol)
		svc, rec := newService(t, db, contacts.Config{})
		// Alice and Bob have each other; Carol has Alice, Alice not Carol.
		mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		res := mustSync(t, svc, bob, book(card("1", "Alice", "13800138001")))
		if p := res.Entries[0].Phones[0]; !p.Mutual || !p.Registered {
			t.Fatalf("bob's view of alice %+v", p)
		}
		mustSync(t, svc, carol, book(card("1", "Alice", "13800138001")))
		for _, n := range []phonebook.MSISDN{bob, carol} {
			if err := svc.Online(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		busy, text := contacts.StatusBusy, "in a meeting"
		if _, err := svc.SetPresence(ctx, alice, contacts.PresenceUpdate{IMStatus: &busy, StatusText: &text}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob to see alice busy", func() bool {
			evs := rec.to(bob)
			return len(evs) > 0 && evs[len(evs)-1].Presence.IMStatus == busy
		})
		ps, _ := svc.ContactsPresence(ctx, bob)
		if len(ps) != 1 || ps[0].Number != alice || ps[0].StatusText != text {
			t.Fatalf("bob's contacts' presence %+v", ps)
		}
		// Carol is not Alice's contact: by default she sees nothing.
		if ps, _ := svc.ContactsPresence(ctx, carol); len(ps) != 0 {
			t.Fatalf("carol sees %+v", ps)
		}
		res = mustSync(t, svc, carol, book(card("1", "Alice", "13800138001")))
		if p := res.Entries[0].Phones[0]; p.Presence != nil || p.Mutual || !p.Registered {
			t.Fatalf("carol's sync shows %+v", p)
		}

		// Alice opens her presence to everyone who has her number.
		holders := string(contacts.VisibleContacts)
		mine, err := svc.SetPresence(ctx, alice, contacts.PresenceUpdate{Visibility: &holders})
		if err != nil || mine.Visibility != contacts.VisibleContacts || mine.IMStatus != busy {
			t.Fatalf("own presence %+v %v", mine, err)
		}
		waitFor(t, "carol to get alice's presence", func() bool { return len(rec.to(carol)) > 0 })
		if ps, _ := svc.ContactsPresence(ctx, carol); len(ps) != 1 || ps[0].IMStatus != busy {
			t.Fatalf("carol after holders %+v", ps)
		}
		if got := rec.to(carol)[0]; got.Kind != contacts.PresenceChanged || got.Number != alice || got.Presence.Visibility != "" {
			t.Fatalf("pushed to carol %+v", got)
		}

		// Bob drops Alice: no longer mutual, on both sides.
		mustSync(t, svc, bob, book())
		cs, _ := svc.Contacts(ctx, alice)
		if len(cs) != 1 || cs[0].Mutual || !cs[0].Registered {
			t.Fatalf("alice's contacts after bob dropped her %+v", cs)
		}
	})
}

func TestOnlineOfflinePushes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob)
		svc, rec := newService(t, db, contacts.Config{})
		mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		mustSync(t, svc, bob, book(card("1", "Alice", "13800138001")))
		svc.Online(ctx, bob)
		svc.Online(ctx, alice)
		waitFor(t, "alice online at bob", func() bool { return len(rec.to(bob)) == 1 })
		call := "in_call"
		svc.SetPresence(ctx, alice, contacts.PresenceUpdate{Activity: &call})
		waitFor(t, "alice in_call at bob", func() bool {
			evs := rec.to(bob)
			return len(evs) == 2 && evs[1].Presence.Activity == call
		})
		// Logging in again changes nothing, so pushes nothing.
		svc.Online(ctx, alice)
		svc.Offline(ctx, alice)
		waitFor(t, "alice offline at bob", func() bool { return len(rec.to(bob)) == 3 })
		last := rec.to(bob)[2]
		if last.Presence.IMStatus != contacts.StatusOffline || last.Presence.Activity != "" {
			t.Fatalf("offline push %+v", last.Presence)
		}
		// Alice is offline: she receives nothing when Bob changes.
		before := len(rec.to(alice))
		away := contacts.StatusAway
		svc.SetPresence(ctx, bob, contacts.PresenceUpdate{IMStatus: &away})
		svc.Close(ctx)
		if n := len(rec.to(alice)); n != before {
			t.Fatalf("offline alice got %d events", n-before)
		}
	})
}

func TestCoalescedBurst(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob)
		rec := &recorder{entered: make(chan struct{}, 1), block: make(chan struct{})}
		svc, err := contacts.New(db, rec, contacts.Config{PushWorkers: 1}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		mustSync(t, svc, bob, book(card("1", "Alice", "13800138001")))
		// Bob is online without an event of his own, so the first Notify
		// is Alice's.
		on := contacts.StatusOnline
		if _, _, err := db.UpdateStatus(ctx, bob, store.StatusUpdate{IMStatus: &on}); err != nil {
			t.Fatal(err)
		}
		svc.Online(ctx, alice)
		select { // the worker is delivering "alice online"
		case <-rec.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("alice's online event never reached the notifier")
		}
		var last string
		for i := range 50 {
			last = "burst " + string(rune('A'+i%26))
			text := last
			if _, err := svc.SetPresence(ctx, alice, contacts.PresenceUpdate{StatusText: &text}); err != nil {
				t.Fatal(err)
			}
		}
		close(rec.block)
		svc.Close(ctx)
		evs := rec.to(bob)
		if len(evs) != 2 || evs[1].Presence.StatusText != last {
			t.Fatalf("bob got %d events, last %+v; want the online event then only the burst's last state", len(evs), evs[len(evs)-1].Presence)
		}
	})
}

// A state read from the store before a newer change, and queued after it
// (the presence pushed when two users become mutual), does not replace the
// newer one while both wait: the newest by updated_at is what goes out.
func TestCoalescingKeepsTheNewerState(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob, carol)
		rec := &recorder{entered: make(chan struct{}, 1), block: make(chan struct{})}
		svc, err := contacts.New(db, rec, contacts.Config{PushWorkers: 1}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		mustSync(t, svc, bob, book(card("1", "Alice", "13800138001"), card("2", "Carol", "13800138003")))
		mustSync(t, svc, carol, book(card("1", "Bob", "13800138002")))
		on := contacts.StatusOnline
		if _, _, err := db.UpdateStatus(ctx, bob, store.StatusUpdate{IMStatus: &on}); err != nil {
			t.Fatal(err)
		}
		svc.Online(ctx, carol) // the one worker is busy delivering this
		select {
		case <-rec.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("carol's online event never reached the notifier")
		}
		stale := time.Now().UTC().Add(-time.Second)
		svc.PushStatusForTest(store.Status{Number: alice, IMStatus: contacts.StatusBusy, StatusText: "newer", UpdatedAt: stale.Add(500 * time.Millisecond)})
		svc.PushStatusForTest(store.Status{Number: alice, IMStatus: contacts.StatusOnline, StatusText: "older", UpdatedAt: stale})
		close(rec.block)
		svc.Close(ctx)
		var got []string
		for _, ev := range rec.to(bob) {
			if ev.Number == alice {
				got = append(got, ev.Presence.StatusText)
			}
		}
		if len(got) != 1 || got[0] != "newer" {
			t.Fatalf("bob got alice's states %q; want only the newer one", got)
		}
	})
}

func TestContactJoined(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob)
		svc, rec := newService(t, db, contacts.Config{})
		mustSync(t, svc, alice, book(card("1", "Dave", "138 0013 8004")))
		mustSync(t, svc, bob, book(card("1", "Dave", "+8613800138004")))
		svc.Online(ctx, alice) // bob stays offline
		storetest.Users(t, db, dave)
		svc.UserRegistered(ctx, dave)
		waitFor(t, "alice told dave joined", func() bool { return len(rec.to(alice)) == 1 })
		svc.Close(ctx)
		ev := rec.to(alice)[0]
		if ev.Kind != contacts.ContactJoined || ev.Number != dave {
			t.Fatalf("event %+v", ev)
		}
		if n := len(rec.to(bob)); n != 0 {
			t.Fatalf("offline bob got %d events", n)
		}
		// The next sync shows Dave registered.
		cs, _ := svc.Contacts(ctx, bob)
		if len(cs) != 1 || !cs[0].Registered {
			t.Fatalf("bob's contacts %+v", cs)
		}
	})
}

func TestEnumerationLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		svc, _ := newService(t, db, contacts.Config{LookupCapacity: 3, LookupRefillPerSecond: 1.0 / 86400})
		mustSync(t, svc, alice, book(card("1", "a", "13900000001", "13900000002"), card("2", "b", "13900000003")))
		// The same numbers under other names and formats are not new.
		mustSync(t, svc, alice, book(card("1", "a", "+86 139 0000 0001"), card("3", "c", "0086 139 0000 0002", "13900000003")))
		_, err := svc.Sync(ctx, alice, "", contacts.SyncRequest{Added: []contacts.Entry{card("4", "d", "13900000004")}})
		var pe *phonebook.Error
		if !errors.As(err, &pe) || pe.Code != phonebook.ERateLimited || !pe.RetryAfter.After(time.Now()) {
			t.Fatalf("fourth new number: %v", err)
		}
		// Invalid numbers cost nothing and are still reported.
		res := mustSync(t, svc, alice, contacts.SyncRequest{Added: []contacts.Entry{card("5", "e", "123")}})
		if res.Entries[0].Code != phonebook.EInvalidNumber {
			t.Fatalf("invalid entry %+v", res.Entries[0])
		}
	})
}

func TestRestoreRoundTrip(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		svc, _ := newService(t, db, contacts.Config{})
		in := []contacts.Entry{
			{ID: "a1", Name: "王芳", Group: "家人", Phones: []contacts.Phone{
				{Number: "138 0013 8002", Label: "mobile"}, {Number: "010-1234-5678", Label: "home"}, {Number: "unknown", Label: "other"}}},
			{ID: "a2", Name: "Wang Fang (work)", Phones: []contacts.Phone{{Number: "+86 138 0013 8002"}}},
			{ID: "a3", Name: "Nobody", Phones: []contacts.Phone{}},
		}
		mustSync(t, svc, alice, contacts.SyncRequest{Full: true, Entries: in})
		out, err := svc.Restore(context.Background(), alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(in) {
			t.Fatalf("restored %d entries", len(out))
		}
		for i := range in {
			if out[i].ID != in[i].ID || out[i].Name != in[i].Name || out[i].Group != in[i].Group || !slices.Equal(out[i].Phones, in[i].Phones) {
				t.Fatalf("entry %d: %+v, want %+v", i, out[i], in[i])
			}
		}
	})
}

func TestRejectsBadRequests(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		svc, _ := newService(t, db, contacts.Config{MaxPhonesPerEntry: 2})
		long := string(make([]rune, 101))
		bad := []contacts.SyncRequest{
			{Full: true, Entries: []contacts.Entry{card("1", "a"), card("1", "b")}},
			{Added: []contacts.Entry{card("1", "a")}, Removed: []string{"1"}},
			{Full: true, Added: []contacts.Entry{card("1", "a")}},
			{Entries: []contacts.Entry{card("1", "a")}},
			{Full: true, Entries: []contacts.Entry{card("", "a")}},
			{Full: true, Entries: []contacts.Entry{card("1", "a", "1", "2", "3")}},
			{Full: true, Entries: []contacts.Entry{card("1", "bad\x00name")}},
			{Full: true, Entries: []contacts.Entry{card("1", "\xff")}},
			{Full: true, Entries: []contacts.Entry{{ID: "1", Name: "a" + long}}},
		}
		for i, req := range bad {
			if _, err := svc.Sync(ctx, alice, "", req); phonebook.ErrorCode(err) != phonebook.EInvalid {
				t.Errorf("request %d: %v, want invalid_request", i, err)
			}
		}
		s := func(v string) *string { return &v }
		badPresence := []contacts.PresenceUpdate{
			{IMStatus: s("dancing")},
			{Activity: s("In Call")},
			{Site: s("javascript:alert(1)")},
			{Visibility: s("friends")},
			{StatusText: s(long)},
		}
		for i, u := range badPresence {
			if _, err := svc.SetPresence(ctx, alice, u); phonebook.ErrorCode(err) != phonebook.EInvalid {
				t.Errorf("presence %d: %v, want invalid_request", i, err)
			}
		}
		if _, err := contacts.New(db, nil, contacts.Config{Visibility: "friends"}, nil, nil); err == nil {
			t.Error("unknown default visibility accepted")
		}
	})
}

func TestNewMutualContactGetsPresence(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, alice, bob)
		on := contacts.StatusOnline
		for _, n := range []phonebook.MSISDN{alice, bob} {
			// Online without events of their own.
			if _, _, err := db.UpdateStatus(ctx, n, store.StatusUpdate{IMStatus: &on}); err != nil {
				t.Fatal(err)
			}
		}
		svc, rec := newService(t, db, contacts.Config{})
		mustSync(t, svc, alice, book(card("1", "Bob", "13800138002")))
		if n := len(rec.to(alice)); n != 0 {
			t.Fatalf("alice got %d events before bob added her", n)
		}
		// Bob adds Alice: they are mutual now, and Alice is told Bob's
		// presence without waiting for her next refresh.
		res := mustSync(t, svc, bob, book(card("1", "Alice", "13800138001")))
		if p := res.Entries[0].Phones[0]; !p.Mutual || p.Presence == nil || p.Presence.IMStatus != on {
			t.Fatalf("bob's sync shows alice as %+v", p)
		}
		waitFor(t, "alice to get bob's presence", func() bool {
			evs := rec.to(alice)
			return len(evs) == 1 && evs[0].Number == bob && evs[0].Presence.IMStatus == on
		})
	})
}
