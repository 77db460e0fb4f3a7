package mms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// memMMSC is an in-process MMSC for the outbox's unit tests: it records
// submissions and answers as told. The acceptance tests use the MM7
// simulator over HTTP.
type memMMSC struct {
	mu     sync.Mutex
	subs   []*Submission
	answer func(s *Submission) (string, error)
	n      int
}

func (m *memMMSC) Submit(ctx context.Context, s *Submission) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.answer != nil {
		id, err := m.answer(s)
		if err != nil {
			return "", err
		}
		if id != "" {
			m.subs = append(m.subs, s)
			return id, nil
		}
	}
	m.n++
	m.subs = append(m.subs, s)
	return fmt.Sprintf("mid-%d", m.n), nil
}

func (m *memMMSC) submissions() []*Submission {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Submission(nil), m.subs...)
}

func (m *memMMSC) setAnswer(f func(s *Submission) (string, error)) {
	m.mu.Lock()
	m.answer = f
	m.mu.Unlock()
}

// memMedia serves media from memory and makes links.
type memMedia struct {
	parts map[string]Part
}

func (m memMedia) Parts(ctx context.Context, ids []string) ([]Part, error) {
	var out []Part
	for _, id := range ids {
		p, ok := m.parts[id]
		if !ok {
			return nil, phonebook.Errorf(phonebook.ENotFound, "no media %s", id)
		}
		out = append(out, p)
	}
	return out, nil
}

func (m memMedia) Link(ctx context.Context, ref string, to phonebook.MSISDN, ids []string, ttl time.Duration) (string, error) {
	return "https://pb.example/m/" + ref, nil
}

type sentSMS struct {
	ref      string
	from, to phonebook.MSISDN
	text     string
}

type memSMS struct {
	mu   sync.Mutex
	sent []sentSMS
	err  error
}

func (s *memSMS) SendFallback(ctx context.Context, ref string, from, to phonebook.MSISDN, text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.sent = append(s.sent, sentSMS{ref, from, to, text})
	return nil
}

func (s *memSMS) all() []sentSMS {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentSMS(nil), s.sent...)
}

type events struct {
	mu  sync.Mutex
	evs []Event
}

func (e *events) add(_ context.Context, ev Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) states(ref string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		if ev.Ref == ref {
			out = append(out, ev.State)
		}
	}
	return out
}

type rig struct {
	db   *store.DB
	mmsc *memMMSC
	sms  *memSMS
	ev   *events
	ob   *Outbox
	cfg  Config
}

func newRig(t *testing.T, db *store.DB, cfg Config) *rig {
	r := &rig{db: db, mmsc: &memMMSC{}, sms: &memSMS{}, ev: &events{}, cfg: cfg}
	r.start(t)
	return r
}

func (r *rig) start(t *testing.T) {
	t.Helper()
	if r.cfg.NodeID == "" {
		r.cfg.NodeID = "n1"
	}
	if r.cfg.RetryBase == 0 {
		r.cfg.RetryBase = 100 * time.Millisecond
	}
	if r.cfg.Poll == 0 {
		r.cfg.Poll = 50 * time.Millisecond
	}
	media := memMedia{parts: map[string]Part{
		"photo": {ContentType: "image/jpeg", Name: "p.jpg", Data: photo(t, 64, 48, 80)},
		"clip":  {ContentType: "video/mp4", Name: "c.mp4", Data: make([]byte, 400<<10)},
	}}
	ob, err := NewOutbox(r.cfg, Deps{Store: r.db, Links: []Link{{Name: "a", MaxMessageBytes: 300 << 10, Submitter: r.mmsc}},
		Media: media, SMS: r.sms})
	if err != nil {
		t.Fatal(err)
	}
	ob.OnStateChange(r.ev.add)
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.ob = ob
	t.Cleanup(func() { ob.Close(context.Background()) })
}

func (r *rig) send(t *testing.T, ref string, to phonebook.MSISDN, media ...string) {
	t.Helper()
	if _, err := r.ob.Enqueue(context.Background(), Message{Ref: ref, From: "+8613900139000", To: to, Text: "[+8613900139000] look", Media: media}); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) waitStates(t *testing.T, ref string, want ...string) {
	t.Helper()
	poll.Until(t, fmt.Sprintf("%s to go through %v", ref, want), func() bool {
		return strings.Join(r.ev.states(ref), ",") == strings.Join(want, ",")
	})
}

func TestOutboxSubmitsAndAppliesReports(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		r := newRig(t, db, Config{})
		r.send(t, "m1", "+8613800138000", "photo")
		r.waitStates(t, "m1", store.MMSSubmitted)
		subs := r.mmsc.submissions()
		if len(subs) != 1 || subs[0].To != "+8613800138000" || subs[0].Text != "[+8613900139000] look" || len(subs[0].Parts) != 1 ||
			subs[0].Parts[0].ContentType != "image/jpeg" || !subs[0].DeliveryReport || subs[0].Expiry <= 0 {
			t.Fatalf("submission %+v", subs)
		}
		ctx := context.Background()
		// An intermediate report changes nothing; Retrieved delivers it.
		if err := r.ob.HandleReport(ctx, "a", "mid-1", "Deferred", ""); err != nil {
			t.Fatal(err)
		}
		if err := r.ob.HandleReport(ctx, "a", "mid-1", "Retrieved", ""); err != nil {
			t.Fatal(err)
		}
		r.waitStates(t, "m1", store.MMSSubmitted, store.MMSDelivered)
		// A report for an id nobody has is kept, not an error.
		if err := r.ob.HandleReport(ctx, "a", "never-sent", "Retrieved", ""); err != nil {
			t.Fatal(err)
		}
	})
}

// Not capable, refused for good, or too large to adapt: the message goes
// as an SMS with the caption and a link, and a not-capable answer marks
// the number.
func TestOutboxFallsBackToSMS(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		r := newRig(t, db, Config{})
		r.mmsc.setAnswer(func(s *Submission) (string, error) {
			switch s.To {
			case "+8613800000001":
				return "", &SubmitError{Class: NotCapable, Err: errors.New("4008: recipient not MMS-capable")}
			case "+8613800000002":
				return "", &SubmitError{Class: Permanent, Err: errors.New("2002: address error")}
			}
			return "", nil
		})
		r.send(t, "nc", "+8613800000001", "photo")
		r.send(t, "perm", "+8613800000002", "photo")
		r.send(t, "big", "+8613800000003", "clip")
		for _, ref := range []string{"nc", "perm", "big"} {
			r.waitStates(t, ref, store.MMSToSMS, store.MMSSMS)
		}
		got := map[string]sentSMS{}
		for _, s := range r.sms.all() {
			got[s.ref] = s
		}
		if s := got["nc"]; s.to != "+8613800000001" || s.from != "+8613900139000" || s.text != "[+8613900139000] look https://pb.example/m/nc" {
			t.Fatalf("SMS instead of MMS: %+v", s)
		}
		if len(got) != 3 || len(r.mmsc.submissions()) != 0 {
			t.Fatalf("%d SMS, %d MMS", len(got), len(r.mmsc.submissions()))
		}
		v, err := r.ob.Capabilities().Capable(context.Background(), "+8613800000001")
		if err != nil || v.Capable || v.Source != store.CapabilityMMSC {
			t.Fatalf("not-capable answer not recorded: %+v %v", v, err)
		}
		ms, _ := db.MMSByRef(context.Background(), "fallback", "big")
		if len(ms) != 1 || !strings.Contains(ms[0].Error, "cannot be adapted") {
			t.Fatalf("big: %+v", ms)
		}
	})
}

// An SMS hand-over refused for good (the recipient opted out) fails the
// message; one refused for the moment is tried again.
func TestOutboxSMSHandOverErrors(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		r := newRig(t, db, Config{})
		r.sms.mu.Lock()
		r.sms.err = phonebook.Errorf(phonebook.EOptedOut, "opted out")
		r.sms.mu.Unlock()
		r.send(t, "o", "+8613800000003", "clip")
		r.waitStates(t, "o", store.MMSToSMS, store.MMSFailed)

		r.sms.mu.Lock()
		r.sms.err = phonebook.Errorf(phonebook.EUnavailable, "database down")
		r.sms.mu.Unlock()
		r.send(t, "u", "+8613800000004", "clip")
		r.waitStates(t, "u", store.MMSToSMS)
		r.sms.mu.Lock()
		r.sms.err = nil
		r.sms.mu.Unlock()
		r.waitStates(t, "u", store.MMSToSMS, store.MMSSMS)
	})
}

// Temporary failures are retried with backoff and count as attempts;
// requests that never reached the MMSC cost none; each message is
// submitted once when the MMSC is back.
func TestOutboxRetriesThroughAnOutage(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		r := newRig(t, db, Config{RetryMax: 300 * time.Millisecond})
		var down sync.Mutex
		calls := 0
		r.mmsc.setAnswer(func(s *Submission) (string, error) {
			down.Lock()
			defer down.Unlock()
			calls++
			if calls%2 == 0 {
				return "", &SubmitError{Class: Temporary, Err: errors.New("HTTP 503")}
			}
			return "", &SubmitError{Class: Temporary, NotSent: true, Err: errors.New("connection refused")}
		})
		const n = 20
		for i := 0; i < n; i++ {
			r.send(t, fmt.Sprint("o", i), phonebook.MSISDN(fmt.Sprintf("+86138%08d", i)), "photo")
		}
		poll.Until(t, "the outbox to try during the outage", func() bool {
			down.Lock()
			defer down.Unlock()
			return calls > 3*n
		})
		r.mmsc.setAnswer(nil)
		for i := 0; i < n; i++ {
			r.waitStates(t, fmt.Sprint("o", i), store.MMSSubmitted)
		}
		seen := map[phonebook.MSISDN]int{}
		for _, s := range r.mmsc.submissions() {
			seen[s.To]++
		}
		for to, c := range seen {
			if c != 1 {
				t.Fatalf("%s got %d MMS", to, c)
			}
		}
		if len(seen) != n {
			t.Fatalf("%d recipients got an MMS, want %d", len(seen), n)
		}
		ms, _ := db.MMSByRef(context.Background(), "fallback", "o0")
		if ms[0].Attempts < 1 || ms[0].Attempts >= calls {
			t.Fatalf("attempts %d after %d calls: only answered submits count", ms[0].Attempts, calls)
		}
	})
}

// A node that stops with messages claimed takes them back when it starts
// again; an expired message is never sent.
func TestOutboxRestartAndExpiry(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		// Claimed by a previous run of n1 that died.
		ids, err := db.EnqueueMMS(ctx, store.MMS{Dest: "+8613800000009", Sender: "+8613900139000", Media: []string{"photo"}, Kind: "fallback",
			Ref: "old", ExpiresAt: time.Now().Add(time.Hour)},
			store.MMS{Dest: "+8613800000008", Sender: "+8613900139000", Media: []string{"photo"}, Kind: "fallback",
				Ref: "stale", ExpiresAt: time.Now().Add(-time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := db.ClaimMMS(ctx, "n1", 10, time.Hour); err != nil || len(c) != 2 {
			t.Fatal(len(c), err)
		}
		r := newRig(t, db, Config{})
		r.waitStates(t, "old", store.MMSSubmitted)
		r.waitStates(t, "stale", store.MMSExpired)
		if m, _ := db.GetMMS(ctx, ids[1]); m.State != store.MMSExpired || m.Attempts != 0 {
			t.Fatalf("stale: %+v", m)
		}
	})
}

func TestRouteByPrefix(t *testing.T) {
	ob, err := NewOutbox(Config{}, Deps{Store: storetest.SQLite(t), Links: []Link{
		{Name: "default", Submitter: &memMMSC{}},
		{Name: "cn", Prefixes: []string{"+86"}, Submitter: &memMMSC{}},
		{Name: "cm", Prefixes: []string{"+86138", "+86139"}, Submitter: &memMMSC{}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for to, want := range map[phonebook.MSISDN]string{"+8613800138000": "cm", "+8615000000000": "cn", "+4479460000000": "default"} {
		if l := ob.Route(to); l == nil || l.Name != want {
			t.Errorf("%s routed to %+v, want %s", to, l, want)
		}
	}
	ob2, _ := NewOutbox(Config{}, Deps{Store: storetest.SQLite(t), Links: []Link{{Name: "cn", Prefixes: []string{"+86"}, Submitter: &memMMSC{}}}})
	if l := ob2.Route("+4479460000000"); l != nil {
		t.Errorf("routed to %s with no default link", l.Name)
	}
}

func TestReportState(t *testing.T) {
	for status, want := range map[string]string{"Retrieved": store.MMSDelivered, "Expired": store.MMSExpired, "Rejected": store.MMSToSMS,
		"Unrecognised": store.MMSToSMS, "Deferred": "", "Forwarded": "", "Indeterminate": ""} {
		if got, known := ReportState(status); got != want || !known {
			t.Errorf("%s -> %q %v, want %q", status, got, known, want)
		}
	}
	if _, known := ReportState("Exploded"); known {
		t.Error("an unknown MMStatus was known")
	}
}

// The fallback decision: capable and routed -> MMS; not capable, or no
// link for the number -> SMS with the text and a download link.
func TestSendChoosesMMSOrSMS(t *testing.T) {
	r := newRig(t, storetest.SQLite(t), Config{CapablePrefixes: []string{"+86138"}})
	ctx := context.Background()
	msg := func(ref string, to phonebook.MSISDN) Message {
		return Message{Ref: ref, From: "+8613900139000", To: to, Text: "[+8613900139000] look", Media: []string{"photo"}}
	}
	if via, err := r.ob.Send(ctx, msg("c", "+8613800000001")); err != nil || via != ViaMMS {
		t.Fatalf("capable: %s %v", via, err)
	}
	r.waitStates(t, "c", store.MMSSubmitted)
	if via, err := r.ob.Send(ctx, msg("n", "+8615000000001")); err != nil || via != ViaSMS {
		t.Fatalf("not capable: %s %v", via, err)
	}
	if err := r.ob.Capabilities().Report(ctx, "+8613800000002", store.CapabilityClient, false); err != nil {
		t.Fatal(err)
	}
	if via, err := r.ob.Send(ctx, msg("h", "+8613800000002")); err != nil || via != ViaSMS {
		t.Fatalf("the handset said no: %s %v", via, err)
	}
	sms := r.sms.all()
	if len(sms) != 2 || sms[0].ref != "n" || sms[0].text != "[+8613900139000] look https://pb.example/m/n" {
		t.Fatalf("SMS %+v", sms)
	}
	if _, err := r.ob.Send(ctx, Message{Ref: "x", From: "+8613900139000", To: "+8613800000001", Text: "no media"}); phonebook.ErrorCode(err) != phonebook.EInvalid {
		t.Fatalf("no media: %v", err)
	}
	// No link routes the number: SMS whatever the handset can do.
	ob, err := NewOutbox(Config{CapablePrefixes: []string{"+86"}}, Deps{Store: r.db, Media: memMedia{}, SMS: r.sms})
	if err != nil {
		t.Fatal(err)
	}
	if via, err := ob.Send(ctx, msg("nl", "+8613800000003")); err != nil || via != ViaSMS {
		t.Fatalf("no link: %s %v", via, err)
	}
}
