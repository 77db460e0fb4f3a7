package relay_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/wire"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// startPresence starts a relay serving contacts and presence from a real
// contacts service on db, wired as cmd/phonebook wires them.
func startPresence(t *testing.T, cfg relay.Config, db *store.DB) (*env, *contacts.Service) {
	t.Helper()
	return startPresenceWith(t, cfg, db, nil)
}

// startPresenceWith is startPresence with the relay's router given (nil:
// its own).
func startPresenceWith(t *testing.T, cfg relay.Config, db *store.DB, router relay.Router) (*env, *contacts.Service) {
	t.Helper()
	svc, err := contacts.New(db, nil, contacts.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, db: db, auth: newTokenAuth(), fallback: &recordingFallback{}}
	e.auth.add("tok-carol", carol, "dev-carol")
	e.auth.add("tok-bob2", bob, "dev-bob2")
	srv, err := relay.NewServer(cfg, relay.Deps{Auth: e.auth, Store: db, Directory: e.auth, Contacts: svc,
		Router: router, Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetNotifier(srv.Notifier())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Close(ctx)
	})
	e.serve(srv) // its cleanup, registered later, runs first: the server stops before svc
	return e, svc
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func entry(id, name string, numbers ...string) *relaypb.ContactEntry {
	e := &relaypb.ContactEntry{Id: id, Name: name}
	for _, n := range numbers {
		e.Phones = append(e.Phones, &relaypb.ContactPhone{Number: n})
	}
	return e
}

func syncBook(t *testing.T, c *client.Client, entries ...*relaypb.ContactEntry) *relaypb.ContactsSyncResult {
	t.Helper()
	res, err := c.SyncContacts(ctxT(t), &relaypb.ContactsSync{Full: true, Entries: entries})
	if err != nil {
		t.Fatalf("sync for %s: %v", c.Number, err)
	}
	return res
}

// nextPresence waits for a pushed presence of number that satisfies ok,
// skipping earlier states of it.
func nextPresence(t *testing.T, c *client.Client, number phonebook.MSISDN, what string, ok func(*relaypb.Presence) bool) *relaypb.Presence {
	t.Helper()
	ctx := ctxT(t)
	for {
		select {
		case pc := <-c.PresenceChanges():
			if p := pc.GetPresence(); p.GetNumber() == string(number) && ok(p) {
				return p
			}
		case <-ctx.Done():
			t.Fatalf("%s never saw %s: %s", c.Number, number, what)
		}
	}
}

func str(s string) *string { return &s }

// ready waits for the PresenceList that follows login: it comes once the
// store shows the user online, and so once pushes reach them.
func ready(t *testing.T, c *client.Client) *client.Client {
	t.Helper()
	select {
	case <-c.PresenceLists():
	case <-ctxT(t).Done():
		t.Fatalf("no PresenceList after %s's login", c.Number)
	}
	return c
}

// A user's contacts see them come online at login, change their status
// text and activity, and go offline at logout and when their connection is
// lost; a second device keeps them online.
func TestPresencePushedOverRelay(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		storetest.Users(t, db, alice, bob)
		cfg := testConfig()
		cfg.IdleTimeout, cfg.HeartbeatInterval = time.Second, 200*time.Millisecond
		e, _ := startPresence(t, cfg, db)
		hb := client.Options{Heartbeat: 100 * time.Millisecond}
		a := ready(t, e.alice(hb))
		syncBook(t, a, entry("1", "Bob", "139 0013 9000"))
		b := e.bob(hb)
		if res := syncBook(t, b, entry("1", "Alice", "+86 138 0013 8000")); !res.Entries[0].Phones[0].Mutual {
			t.Fatalf("bob's sync: %v", res)
		}

		// Alice was online before Bob logged in: she is in his PresenceList.
		select {
		case list := <-b.PresenceLists():
			_ = list // may predate the sync that made them mutual
		case <-ctxT(t).Done():
			t.Fatal("no PresenceList after AuthOK")
		}
		ps, err := b.QueryPresence(ctxT(t))
		if err != nil || len(ps) != 1 || ps[0].Number != string(alice) || ps[0].ImStatus != "online" {
			t.Fatalf("bob's query: %v %v", ps, err)
		}
		nextPresence(t, a, bob, "online", func(p *relaypb.Presence) bool { return p.ImStatus == "online" })

		me, err := b.SetPresence(ctxT(t), &relaypb.PresenceSet{StatusText: str("in a meeting"), Activity: str("in_call")})
		if err != nil || me.StatusText != "in a meeting" || me.Activity != "in_call" || me.ImStatus != "online" || me.Visibility != "mutual" {
			t.Fatalf("bob's own presence: %v %v", me, err)
		}
		nextPresence(t, a, bob, "status text and activity", func(p *relaypb.Presence) bool {
			return p.StatusText == "in a meeting" && p.Activity == "in_call" && p.ImStatus == "online"
		})

		// A second device: closing the first leaves Bob online.
		b2 := ready(t, e.dial("tok-bob2", "dev-bob2", hb))
		b.Close()
		waitFor(t, "bob's first device gone", func() bool { return online(e.srv, bob) == 1 })
		if _, err := b2.SetPresence(ctxT(t), &relaypb.PresenceSet{ImStatus: str("busy")}); err != nil {
			t.Fatal(err)
		}
		nextPresence(t, a, bob, "busy", func(p *relaypb.Presence) bool { return p.ImStatus == "busy" })

		// Logout of the last device: offline, activity cleared.
		b2.Close()
		p := nextPresence(t, a, bob, "offline at logout", func(p *relaypb.Presence) bool { return p.ImStatus == "offline" })
		if p.Activity != "" || p.StatusText != "in a meeting" {
			t.Fatalf("offline presence %v: activity must clear, text stays", p)
		}

		// Back (a busy choice does not survive logout: offline -> online),
		// then the phone vanishes without a word: idle timeout.
		b3 := e.bob(client.Options{Heartbeat: -1})
		nextPresence(t, a, bob, "online again", func(p *relaypb.Presence) bool { return p.ImStatus == "online" })
		nextPresence(t, a, bob, "offline after the connection was lost", func(p *relaypb.Presence) bool { return p.ImStatus == "offline" })
		<-b3.Done()
	})
}

// A connection that drops (reset, no goodbye) takes the user offline too.
func TestPresenceOfflineWhenConnectionDrops(t *testing.T) {
	db := storetest.SQLite(t)
	storetest.Users(t, db, alice, bob)
	e, svc := startPresence(t, testConfig(), db)
	ctx := ctxT(t)
	if _, err := svc.Sync(ctx, bob, "", contacts.SyncRequest{Full: true, Entries: []contacts.Entry{{ID: "1", Name: "A", Phones: []contacts.Phone{{Number: string(alice)}}}}}); err != nil {
		t.Fatal(err)
	}
	a := ready(t, e.alice(client.Options{}))
	syncBook(t, a, entry("1", "Bob", string(bob)))

	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "tok-bob", DeviceId: "dev-bob"}}}, 0)
	nc.Write(b)
	nextPresence(t, a, bob, "online", func(p *relaypb.Presence) bool { return p.ImStatus == "online" })
	nc.(*net.TCPConn).SetLinger(0) // RST
	nc.Close()
	nextPresence(t, a, bob, "offline", func(p *relaypb.Presence) bool { return p.ImStatus == "offline" })
}

// Someone online who has a number in their book is told when it joins;
// a book holder who is offline is not (they see it at their next sync).
func TestContactJoinedOverRelay(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		storetest.Users(t, db, alice)
		e, svc := startPresence(t, testConfig(), db)
		a := ready(t, e.alice(client.Options{}))
		res := syncBook(t, a, entry("1", "Carol", "137-0013-7000"))
		if p := res.Entries[0].Phones[0]; p.Registered || p.Number != string(carol) {
			t.Fatalf("carol before joining: %v", p)
		}
		storetest.Users(t, db, carol)
		svc.UserRegistered(ctxT(t), carol)
		select {
		case j := <-a.ContactJoins():
			if j.Number != string(carol) || j.At == 0 {
				t.Fatalf("joined %v", j)
			}
		case <-ctxT(t).Done():
			t.Fatal("alice was not told carol joined")
		}
	})
}

// The privacy default: a user who has my number but whom I do not have
// learns that I am registered, nothing more — no presence in sync
// results, queries or pushes.
func TestPresencePrivacyDefault(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		storetest.Users(t, db, alice, bob, carol)
		e, _ := startPresence(t, testConfig(), db)
		a := e.alice(client.Options{})
		b := ready(t, e.bob(client.Options{}))
		c := ready(t, e.dial("tok-carol", "dev-carol", client.Options{}))
		syncBook(t, a, entry("1", "Bob", string(bob))) // alice has bob only
		syncBook(t, b, entry("1", "Alice", string(alice)))
		res := syncBook(t, c, entry("1", "Alice", string(alice)))
		if p := res.Entries[0].Phones[0]; !p.Registered || p.Mutual || p.Presence != nil {
			t.Fatalf("carol's sync shows alice as %v", p)
		}

		if _, err := a.SetPresence(ctxT(t), &relaypb.PresenceSet{StatusText: str("gone fishing")}); err != nil {
			t.Fatal(err)
		}
		nextPresence(t, b, alice, "status text", func(p *relaypb.Presence) bool { return p.StatusText == "gone fishing" })
		// Carol's number sorts before Bob's, so a push to her would have
		// been queued before Bob's; the query's answer comes after it.
		ps, err := c.QueryPresence(ctxT(t))
		if err != nil || len(ps) != 0 {
			t.Fatalf("carol's query: %v %v", ps, err)
		}
		if n := len(c.PresenceChanges()); n != 0 {
			t.Fatalf("carol got %d presence pushes about a non-mutual contact", n)
		}
	})
}

// A sync over the relay reports every entry, invalid ones with reasons; a
// bad request fails alone with its request id; a long report comes in
// several frames that the client puts together.
func TestContactsSyncOverRelay(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		storetest.Users(t, db, alice, bob)
		cfg := testConfig()
		cfg.MaxFrameSize = 8 << 10
		e, svc := startPresence(t, cfg, db)
		a := e.alice(client.Options{MaxFrameSize: cfg.MaxFrameSize})
		res := syncBook(t, a,
			entry("1", "Bob", "139 0013 9000", "12"),
			entry("2", "Broken", "not a number"),
			entry("3", "Me", "+8613800138000"),
		)
		if len(res.Entries) != 3 || res.Contacts != 1 || res.BookEntries != 3 {
			t.Fatalf("result %v", res)
		}
		bobPhone, bad := res.Entries[0].Phones[0], res.Entries[0].Phones[1]
		if bobPhone.Number != string(bob) || !bobPhone.Registered || bobPhone.Mutual || bobPhone.Error != "" {
			t.Fatalf("bob's phone %v", bobPhone)
		}
		if bad.Error != string(phonebook.EInvalidNumber) || bad.Reason == "" || bad.Raw != "12" || res.Entries[0].Error != "" {
			t.Fatalf("invalid phone on a valid entry: %v / %v", bad, res.Entries[0])
		}
		if en := res.Entries[1]; en.Error != string(phonebook.EInvalidNumber) || en.Reason == "" || en.Phones[0].Error == "" {
			t.Fatalf("entry without a valid number: %v", en)
		}
		if me := res.Entries[2].Phones[0]; !me.Self || me.Registered {
			t.Fatalf("own number: %v", me)
		}

		// A delta carrying full-sync entries is malformed: an Error frame
		// with the request's id, and the connection carries on.
		_, err := a.SyncContacts(ctxT(t), &relaypb.ContactsSync{RequestId: "bad-1", Entries: []*relaypb.ContactEntry{entry("9", "X", "1")}})
		var se *client.ServerError
		if !asServerError(err, &se) || se.Code != phonebook.EInvalid {
			t.Fatalf("malformed delta: %v", err)
		}
		if _, err := a.SetPresence(ctxT(t), &relaypb.PresenceSet{ImStatus: str("sleepy")}); !asServerError(err, &se) || se.Code != phonebook.EInvalid {
			t.Fatalf("bad im_status: %v", err)
		}

		// 150 invalid entries: the report (a reason each) is far over 8 KiB.
		var many []*relaypb.ContactEntry
		for i := range 150 {
			many = append(many, entry(fmt.Sprint(i), "", "1"))
		}
		big := syncBook(t, a, many...)
		if len(big.Entries) != 150 || big.Entries[149].Id != "149" || big.More || big.BookEntries != 150 {
			t.Fatalf("long report: %d entries, last %v", len(big.Entries), big.Entries[len(big.Entries)-1])
		}
		book, err := svc.Restore(ctxT(t), alice)
		if err != nil || len(book) != 150 {
			t.Fatalf("restore: %d %v", len(book), err)
		}
	})
}

func asServerError(err error, se **client.ServerError) bool {
	e, ok := err.(*client.ServerError)
	*se = e
	return ok
}

// Presence at login: the PresenceList after AuthOK holds the contacts'
// current presence.
func TestPresenceListAtLogin(t *testing.T) {
	db := storetest.SQLite(t)
	storetest.Users(t, db, alice, bob)
	e, svc := startPresence(t, testConfig(), db)
	ctx := ctxT(t)
	for _, s := range [][2]phonebook.MSISDN{{alice, bob}, {bob, alice}} {
		if _, err := svc.Sync(ctx, s[0], "", contacts.SyncRequest{Full: true, Entries: []contacts.Entry{{ID: "1", Name: "x", Phones: []contacts.Phone{{Number: string(s[1])}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	b := e.bob(client.Options{})
	if _, err := b.SetPresence(ctx, &relaypb.PresenceSet{ImStatus: str("busy"), StatusText: str("driving")}); err != nil {
		t.Fatal(err)
	}
	a := e.alice(client.Options{})
	select {
	case list := <-a.PresenceLists():
		if len(list) != 1 || list[0].Number != string(bob) || list[0].ImStatus != "busy" || list[0].StatusText != "driving" || list[0].UpdatedAt == 0 {
			t.Fatalf("login list %v", list)
		}
	case <-ctx.Done():
		t.Fatal("no PresenceList after AuthOK")
	}
}

// A contact list whose presence does not fit in one frame comes as several
// PresenceList frames, at login and on query; the client puts them
// together.
func TestPresenceListSplitAcrossFrames(t *testing.T) {
	db := storetest.SQLite(t)
	cfg := testConfig()
	cfg.MaxFrameSize = 4 << 10
	e, svc := startPresence(t, cfg, db)
	ctx := ctxT(t)
	const n = 60
	storetest.Users(t, db, alice)
	var book []contacts.Entry
	text := strings.Repeat("long status text ", 5)
	for i := range n {
		num := phonebook.MSISDN(fmt.Sprintf("+861380000%04d", i))
		storetest.Users(t, db, num)
		if _, err := svc.Sync(ctx, num, "", contacts.SyncRequest{Full: true, Entries: []contacts.Entry{{ID: "a", Name: "Alice", Phones: []contacts.Phone{{Number: string(alice)}}}}}); err != nil {
			t.Fatal(err)
		}
		on := "online"
		if _, _, err := db.UpdateStatus(ctx, num, store.StatusUpdate{IMStatus: &on, StatusText: &text}); err != nil {
			t.Fatal(err)
		}
		book = append(book, contacts.Entry{ID: fmt.Sprint(i), Name: "x", Phones: []contacts.Phone{{Number: string(num)}}})
	}
	if _, err := svc.Sync(ctx, alice, "", contacts.SyncRequest{Full: true, Entries: book}); err != nil {
		t.Fatal(err)
	}
	a := e.alice(client.Options{MaxFrameSize: cfg.MaxFrameSize})
	select {
	case list := <-a.PresenceLists():
		if len(list) != n {
			t.Fatalf("login list holds %d of %d", len(list), n)
		}
	case <-ctx.Done():
		t.Fatal("no PresenceList at login")
	}
	list, err := a.QueryPresence(ctx)
	if err != nil || len(list) != n || list[0].StatusText != text {
		t.Fatalf("query: %d %v", len(list), err)
	}
}

// Requests pipelined on one connection are all answered, each with its
// own answer, while other frames keep arriving.
func TestContactsRequestsPipelined(t *testing.T) {
	db := storetest.SQLite(t)
	storetest.Users(t, db, alice)
	// A heartbeat every millisecond means a HeartbeatAck every
	// millisecond: on a loaded machine the writer can fall 256 frames (the
	// default queue) behind, which is the slow-consumer rule at work, not
	// what this test is about.
	cfg := testConfig()
	cfg.SendQueue = 8192
	e, _ := startPresence(t, cfg, db)
	a := e.alice(client.Options{Heartbeat: time.Millisecond})
	ctx := ctxT(t)
	errs := make(chan error, 20)
	for i := range 10 {
		go func() {
			text := fmt.Sprint("status ", i)
			p, err := a.SetPresence(ctx, &relaypb.PresenceSet{StatusText: &text})
			if err == nil && p.StatusText != text {
				err = fmt.Errorf("asked for %q, answer says %q", text, p.StatusText)
			}
			errs <- err
		}()
		go func() {
			_, err := a.SyncContacts(ctx, &relaypb.ContactsSync{Added: []*relaypb.ContactEntry{entry(fmt.Sprint(i), "x", "139 0013 9000")}})
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A relay without a contacts service answers contacts requests with
// unknown_frame, carrying the request id, and keeps the connection.
func TestContactsRequestsWithoutService(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	_, err := a.QueryPresence(ctxT(t))
	var se *client.ServerError
	if !asServerError(err, &se) || se.Code != phonebook.EUnknownFrame {
		t.Fatalf("query without a contacts service: %v", err)
	}
	p, err := a.Send(string(bob), "still connected")
	if err != nil {
		t.Fatal(err)
	}
	if _, state := wait(t, p); state != "STORED" {
		t.Fatalf("send after the refused request: %s", state)
	}
}

// BenchmarkPresenceSetFanOut: one user with 100 mutual contacts online
// changes their status text over the relay; an operation ends when the
// change is stored and answered (PresenceSetResult). The pushes to the 100
// are delivered meanwhile, off the answer's path; pushes per second are
// reported from what the contacts received.
func BenchmarkPresenceSetFanOut(b *testing.B) {
	const fans = 100
	db := storetest.SQLite(b)
	svc, err := contacts.New(db, nil, contacts.Config{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	auth := newTokenAuth()
	srv, err := relay.NewServer(testConfig(), relay.Deps{Auth: auth, Store: db, Directory: auth, Contacts: svc})
	if err != nil {
		b.Fatal(err)
	}
	svc.SetNotifier(srv.Notifier())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		svc.Close(ctx)
	}()
	ctx := context.Background()
	storetest.Users(b, db, alice)
	var book []contacts.Entry
	var received atomic.Int64
	for i := range fans {
		num := phonebook.MSISDN(fmt.Sprintf("+861380001%04d", i))
		storetest.Users(b, db, num)
		auth.add(fmt.Sprint("tok-", i), num, fmt.Sprint("dev-", i))
		if _, err := svc.Sync(ctx, num, "", contacts.SyncRequest{Full: true, Entries: []contacts.Entry{{ID: "a", Name: "A", Phones: []contacts.Phone{{Number: string(alice)}}}}}); err != nil {
			b.Fatal(err)
		}
		book = append(book, contacts.Entry{ID: fmt.Sprint(i), Name: "x", Phones: []contacts.Phone{{Number: string(num)}}})
		c, err := client.Dial(ctx, ln.Addr().String(), client.Options{Token: fmt.Sprint("tok-", i), DeviceID: fmt.Sprint("dev-", i)})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		<-c.PresenceLists()
		go func() {
			for {
				select {
				case <-c.PresenceChanges():
					received.Add(1)
				case <-c.Done():
					return
				}
			}
		}()
	}
	if _, err := svc.Sync(ctx, alice, "", contacts.SyncRequest{Full: true, Entries: book}); err != nil {
		b.Fatal(err)
	}
	a, err := client.Dial(ctx, ln.Addr().String(), client.Options{Token: "tok-alice", DeviceID: "dev-alice"})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	<-a.PresenceLists()
	start := received.Load()
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		text := fmt.Sprint("status ", i)
		if _, err := a.SetPresence(ctx, &relaypb.PresenceSet{StatusText: &text}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(received.Load()-start)/time.Since(t0).Seconds(), "pushes/s")
}
