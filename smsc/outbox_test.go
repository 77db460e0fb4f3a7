package smsc

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// fakeSMSC is a real Submitter kept in memory: it accepts parts, numbers
// them like an SMSC, remembers what it accepted, and refuses by rule.
type fakeSMSC struct {
	mu       sync.Mutex
	calls    int
	next     uint64
	accepted map[string]int    // payload -> times accepted
	ids      map[string]string // payload -> message id given
	refuse   func(call int, p Part) error
	onAccept func(id string, p Part)
}

func newFakeSMSC() *fakeSMSC {
	return &fakeSMSC{accepted: map[string]int{}, ids: map[string]string{}, next: 0xA0}
}

func (f *fakeSMSC) Submit(ctx context.Context, p Part) (SubmitResult, error) {
	if err := ctx.Err(); err != nil {
		return SubmitResult{}, &SubmitError{Link: "fake", Temporary: true, Err: err}
	}
	f.mu.Lock()
	f.calls++
	if f.refuse != nil {
		if err := f.refuse(f.calls, p); err != nil {
			f.mu.Unlock()
			return SubmitResult{}, err
		}
	}
	f.next++
	id := fmt.Sprintf("%08X", f.next) // hex with leading zeros, as many SMSCs answer
	key := string(p.Dest) + "|" + string(p.Payload)
	f.accepted[key]++
	f.ids[key] = id
	cb := f.onAccept
	f.mu.Unlock()
	if cb != nil {
		cb(id, p)
	}
	return SubmitResult{Link: "fake", MessageID: id}, nil
}

func (f *fakeSMSC) snapshot() (map[string]int, map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ids := map[string]int{}, map[string]string{}
	for k, v := range f.accepted {
		a[k] = v
	}
	for k, v := range f.ids {
		ids[k] = v
	}
	return a, ids
}

// waitFor polls cond until it holds or the test runs out of patience.
var waitFor = poll.Until

type eventLog struct {
	mu sync.Mutex
	ev []OutboxEvent
}

func (l *eventLog) add(_ context.Context, e OutboxEvent) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) states(id int64) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []string
	for _, e := range l.ev {
		if e.ID == id {
			s = append(s, e.State)
		}
	}
	return s
}

func testConfig() OutboxConfig {
	return OutboxConfig{NodeID: "test", Batch: 50, Workers: 8, Poll: 20 * time.Millisecond,
		RetryBase: time.Millisecond, RetryMax: 10 * time.Millisecond}
}

// runOutbox starts Run and stops it when the test ends.
func runOutbox(t *testing.T, o *Outbox) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func smsState(t *testing.T, db *store.DB, id int64) string {
	t.Helper()
	m, _, err := db.GetSMS(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m.State
}

func allIn(t *testing.T, db *store.DB, ids []int64, state string) func() bool {
	return func() bool {
		for _, id := range ids {
			if smsState(t, db, id) != state {
				return false
			}
		}
		return true
	}
}

func TestOutboxSubmitsAndReceiptsDeliver(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newFakeSMSC()
		o, err := NewOutbox(db, f, testConfig(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var events eventLog
		o.OnStateChange(events.add)
		runOutbox(t, o)
		long := strings.Repeat("长消息😀", 30) // 3 parts of UCS-2
		var ids []int64
		for i := range 40 {
			text := fmt.Sprintf("code %d", i)
			if i == 7 {
				text = long
			}
			id, err := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: text, Kind: "verify", Ref: fmt.Sprint("ref", i)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		waitFor(t, "every message submitted", allIn(t, db, ids, StateSubmitted))
		accepted, msgIDs := f.snapshot()
		if len(accepted) != 39+3 {
			t.Fatalf("%d distinct parts accepted, want 42", len(accepted))
		}
		for k, n := range accepted {
			if n != 1 {
				t.Fatalf("part %q accepted %d times", k, n)
			}
		}
		// Receipts name the ids as given, in either case, with or without
		// leading zeros (the link learns "exact" from the hex letters).
		i := 0
		for _, id := range msgIDs {
			var rid string
			switch i % 3 {
			case 0:
				rid = strings.ToLower(id)
			case 1:
				rid = id
			case 2:
				rid = strings.TrimLeft(id, "0")
			}
			i++
			d := Deliver{Link: "fake", ESMClass: 0x04, Payload: []byte("id:" + rid + " sub:001 dlvrd:001 submit date:2611251830 done date:2611251831 stat:DELIVRD err:000 text:")}
			if err := o.HandleDeliver(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "every message delivered", allIn(t, db, ids, StateDelivered))
		// Listeners run off the write path: wait for the last events.
		waitFor(t, "delivered events", func() bool {
			events.mu.Lock()
			defer events.mu.Unlock()
			return len(events.ev) == 2*len(ids)
		})
		if s := events.states(ids[7]); strings.Join(s, ",") != "submitted,delivered" {
			t.Fatalf("events of the long message: %v", s)
		}
		events.mu.Lock()
		for _, e := range events.ev {
			if e.Kind != "verify" || !strings.HasPrefix(e.Ref, "ref") {
				t.Fatalf("event %+v", e)
			}
		}
		events.mu.Unlock()
	})
}

// Throttling every 10th submit delays but does not lose or duplicate; a
// permanent refusal fails the message with the status name; a multi-part
// message retried after one part was refused resends only that part.
func TestOutboxRetryAndFailure(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		f := newFakeSMSC()
		f.refuse = func(call int, p Part) error {
			switch {
			case string(p.Dest) == "+8613900139000":
				return &SubmitError{Link: "fake", Status: 0x0B, Temporary: TemporaryStatus(0x0B)}
			case call%10 == 0:
				return &SubmitError{Link: "fake", Status: 0x58, Temporary: TemporaryStatus(0x58)}
			}
			return nil
		}
		o, _ := NewOutbox(db, f, testConfig(), nil, nil)
		var events eventLog
		o.OnStateChange(events.add)
		runOutbox(t, o)
		var ids []int64
		for i := range 100 {
			text := fmt.Sprintf("hello %d", i)
			if i%5 == 0 {
				text = strings.Repeat(fmt.Sprintf("long message %d. ", i), 30) // 4 GSM parts
			}
			id, err := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: text})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		bad, err := o.Enqueue(ctx, SMS{To: "+8613900139000", Text: "nobody"})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "all submitted", allIn(t, db, ids, StateSubmitted))
		waitFor(t, "bad destination failed", func() bool { return smsState(t, db, bad) == StateFailed })
		m, _, _ := db.GetSMS(ctx, bad)
		if m.Error != "ESME_RINVDSTADR" {
			t.Fatalf("failure reason %q", m.Error)
		}
		waitFor(t, "failed event", func() bool { return len(events.states(bad)) > 0 })
		if s := events.states(bad); len(s) != 1 || s[0] != StateFailed {
			t.Fatalf("events %v", s)
		}
		accepted, _ := f.snapshot()
		for k, n := range accepted {
			if n != 1 {
				t.Fatalf("part %q accepted %d times", k[:40], n)
			}
		}
		if len(accepted) != 80+20*4 {
			t.Fatalf("%d parts accepted, want 160", len(accepted))
		}
		retried := 0
		for _, id := range ids {
			if m, _, _ := db.GetSMS(ctx, id); m.Attempts > 1 {
				retried++
			}
		}
		if retried == 0 {
			t.Fatal("no message was retried: the throttling never happened")
		}
	})
}

func TestOutboxExpiresWhileRetrying(t *testing.T) {
	db := storetest.SQLite(t)
	f := newFakeSMSC()
	f.refuse = func(int, Part) error {
		return &SubmitError{Link: "fake", Temporary: true, Err: fmt.Errorf("no link bound")}
	}
	cfg := testConfig()
	cfg.RetryBase, cfg.RetryMax = 50*time.Millisecond, 50*time.Millisecond
	o, _ := NewOutbox(db, f, cfg, nil, nil)
	runOutbox(t, o)
	// Long enough for a first attempt on a loaded machine: a message whose
	// first claim comes after its validity expires without an error to keep.
	id, err := o.Enqueue(context.Background(), SMS{To: "+8613800138000", Text: "x", Validity: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "expired", func() bool { return smsState(t, db, id) == StateExpired })
	m, _, _ := db.GetSMS(context.Background(), id)
	if !strings.Contains(m.Error, "no link bound") || m.Attempts < 1 {
		t.Fatalf("message %+v", m)
	}
}

func TestOutboxEnqueueRefusesBadInput(t *testing.T) {
	db := storetest.SQLite(t)
	o, _ := NewOutbox(db, newFakeSMSC(), OutboxConfig{MaxParts: 2}, nil, nil)
	for name, s := range map[string]SMS{
		"not e164":    {To: "13800138000", Text: "x"},
		"bad utf8":    {To: "+8613800138000", Text: "\xff"},
		"empty":       {To: "+8613800138000", Text: ""},
		"too long":    {To: "+8613800138000", Text: strings.Repeat("x", 153*2+1)},
		"long source": {To: "+8613800138000", Text: "x", From: strings.Repeat("1", 22)},
	} {
		if _, err := o.Enqueue(context.Background(), s); err == nil || phonebook.ErrorCode(err) == phonebook.EInternal {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

// A receipt can beat the write of its submit_sm_resp; it is kept and
// applied when the part is recorded.
func TestOutboxReceiptBeforeRecord(t *testing.T) {
	db := storetest.SQLite(t)
	f := newFakeSMSC()
	var o *Outbox
	f.onAccept = func(id string, p Part) {
		o.HandleDeliver(context.Background(), Deliver{Link: "fake", ESMClass: 0x04, ReceiptedMessageID: id, MessageState: 2})
	}
	o, _ = NewOutbox(db, f, testConfig(), nil, nil)
	runOutbox(t, o)
	var ids []int64
	for i := range 20 {
		id, _ := o.Enqueue(context.Background(), SMS{To: "+8613800138000", Text: fmt.Sprint("fast ", i)})
		ids = append(ids, id)
	}
	waitFor(t, "delivered", allIn(t, db, ids, StateDelivered))
}

// Stop the outbox with 1,000 messages queued, reopen the same SQLite file,
// run again: every message is sent, none twice.
func TestOutboxRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	ctx := context.Background()
	open := func() *store.DB {
		db, err := store.Open(ctx, store.Options{DSN: path})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		return db
	}
	f := newFakeSMSC()
	db := open()
	o, _ := NewOutbox(db, f, testConfig(), nil, nil)
	var ids []int64
	wantParts := 0
	for i := range 1000 {
		text := fmt.Sprint("restart ", i)
		if i%100 == 0 {
			text = strings.Repeat(fmt.Sprint("multi ", i, " "), 40)
		}
		e, _ := Encode(text)
		p, _ := e.Parts(0, 0)
		wantParts += len(p)
		id, err := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: text})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	stop := runOutbox(t, o)
	waitFor(t, "some sent", func() bool { a, _ := f.snapshot(); return len(a) > 100 })
	stop()
	db.Close()
	sent, _ := f.snapshot()
	t.Logf("%d of %d parts sent before the stop", len(sent), wantParts)

	db = open()
	defer db.Close()
	o, _ = NewOutbox(db, f, testConfig(), nil, nil)
	runOutbox(t, o)
	waitFor(t, "all submitted after restart", allIn(t, db, ids, StateSubmitted))
	accepted, _ := f.snapshot()
	for k, n := range accepted {
		if n != 1 {
			t.Fatalf("part %q accepted %d times", k[:30], n)
		}
	}
	if len(accepted) != wantParts {
		t.Fatalf("%d parts accepted, want %d", len(accepted), wantParts)
	}
}

func TestOutboxMO(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		o, _ := NewOutbox(db, newFakeSMSC(), testConfig(), nil, nil)
		var mu sync.Mutex
		var got []MO
		fail := true
		o.HandleMO("ID ", func(_ context.Context, m MO) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, m)
			return nil
		})
		o.HandleMO("IDX", func(_ context.Context, m MO) error {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				fail = false
				return fmt.Errorf("database down")
			}
			got = append(got, MO{Text: "IDX:" + m.Text, Parts: m.Parts})
			return nil
		})
		take := func() []MO {
			mu.Lock()
			defer mu.Unlock()
			g := got
			got = nil
			return g
		}

		// Single SMS, national number (TON 2) read in the default region.
		if err := o.HandleDeliver(ctx, Deliver{Link: "l", SourceAddr: "13800138000", SourceTON: 2, DestAddr: "10086", Payload: []byte("id abc123")}); err != nil {
			t.Fatal(err)
		}
		if g := take(); len(g) != 1 || g[0].From != "+8613800138000" || g[0].Text != "id abc123" || g[0].To != "10086" {
			t.Fatalf("got %+v", g)
		}
		// No handler: acknowledged, nothing dispatched.
		if err := o.HandleDeliver(ctx, Deliver{Link: "l", SourceAddr: "8613800138000", SourceTON: 1, Payload: []byte("hello")}); err != nil || len(take()) != 0 {
			t.Fatalf("unknown MO: %v", err)
		}
		// Concatenated UCS-2 with a surrogate pair split across parts, out of
		// order, one part twice, 16-bit reference.
		text := "ID 你好😀世界"
		e, _ := Encode(text)
		b := e.Bytes
		cut := 3*2 + 2*2 + 2 // inside the emoji's surrogate pair
		mk := func(seq int, body []byte) Deliver {
			p := append([]byte{6, 8, 4, 0x01, 0x2C, 2, byte(seq)}, body...)
			return Deliver{Link: "l", SourceAddr: "8613800138000", SourceTON: 1, DataCoding: 8, ESMClass: 0x40, Payload: p}
		}
		for _, d := range []Deliver{mk(2, b[cut:]), mk(2, b[cut:])} {
			if err := o.HandleDeliver(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		if len(take()) != 0 {
			t.Fatal("dispatched before complete")
		}
		if err := o.HandleDeliver(ctx, mk(1, b[:cut])); err != nil {
			t.Fatal(err)
		}
		if g := take(); len(g) != 1 || g[0].Text != text || g[0].Parts != 2 || g[0].From != "+8613800138000" {
			t.Fatalf("got %+v", g)
		}
		// Every part again, later: not dispatched again.
		o.HandleDeliver(ctx, mk(1, b[:cut]))
		o.HandleDeliver(ctx, mk(2, b[cut:]))
		if g := take(); len(g) != 0 {
			t.Fatalf("dispatched twice: %+v", g)
		}
		// SAR TLVs, GSM, handler failing once: the error goes back to the
		// link (the SMSC redelivers), and the redelivery dispatches.
		sar := func(seq uint8, s string) Deliver {
			return Deliver{Link: "l", SourceAddr: "+8613800138000", SourceTON: 1, Payload: []byte(s), SARRef: 77, SARTotal: 2, SARSeq: seq}
		}
		if err := o.HandleDeliver(ctx, sar(1, "IDX 12")); err != nil {
			t.Fatal(err)
		}
		if err := o.HandleDeliver(ctx, sar(2, "34")); err == nil {
			t.Fatal("handler error not returned")
		}
		if err := o.HandleDeliver(ctx, sar(2, "34")); err != nil {
			t.Fatal(err)
		}
		if g := take(); len(g) != 1 || g[0].Text != "IDX:IDX 1234" {
			t.Fatalf("got %+v", g)
		}
		// Binary and broken UDH: acknowledged, dropped.
		for _, d := range []Deliver{
			{Link: "l", SourceAddr: "1", DataCoding: 4, Payload: []byte{1, 2, 3}},
			{Link: "l", SourceAddr: "1", ESMClass: 0x40, Payload: []byte{9, 0}},
			{Link: "l", SourceAddr: "1", DataCoding: 4, ESMClass: 0x40, Payload: []byte{5, 0, 3, 1, 2, 1, 0xFF}},
		} {
			if err := o.HandleDeliver(ctx, d); err != nil {
				t.Fatalf("invalid MO not acknowledged: %v", err)
			}
		}
	})
}

func TestMOSource(t *testing.T) {
	tests := []struct {
		addr string
		ton  uint8
		want phonebook.MSISDN
	}{
		{"8613800138000", 1, "+8613800138000"},
		{"+8613800138000", 1, "+8613800138000"},
		{"13800138000", 2, "+8613800138000"},
		{"13800138000", 0, "+8613800138000"},
		{"+8613800138000", 0, "+8613800138000"},
		{"ALERTS", 5, ""},
		{"123", 1, ""},
	}
	for _, tt := range tests {
		got, err := MOSource(tt.addr, tt.ton, "CN")
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("MOSource(%q, %d) = %q, %v; want %q", tt.addr, tt.ton, got, err, tt.want)
		}
	}
}

// Two nodes, each with its own SMSC connection, drain one outbox: every
// message is accepted exactly once across both.
func TestOutboxTwoNodes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		fakes := []*fakeSMSC{newFakeSMSC(), newFakeSMSC()}
		var obs []*Outbox
		for i, node := range []string{"node-a", "node-b"} {
			cfg := testConfig()
			cfg.NodeID, cfg.Batch = node, 20
			o, err := NewOutbox(db, fakes[i], cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			obs = append(obs, o)
		}
		var ids []int64
		for i := range 400 {
			id, err := obs[i%2].Enqueue(context.Background(), SMS{To: "+8613800138000", Text: fmt.Sprint("two nodes ", i)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		for _, o := range obs {
			runOutbox(t, o)
		}
		waitFor(t, "all submitted", allIn(t, db, ids, StateSubmitted))
		total := map[string]int{}
		for _, f := range fakes {
			a, _ := f.snapshot()
			for k, n := range a {
				total[k] += n
			}
		}
		if len(total) != 400 {
			t.Fatalf("%d messages accepted, want 400", len(total))
		}
		for k, n := range total {
			if n != 1 {
				t.Fatalf("%q accepted %d times", k, n)
			}
		}
	})
}

func TestSenderEnqueues(t *testing.T) {
	db := storetest.SQLite(t)
	o, _ := NewOutbox(db, newFakeSMSC(), testConfig(), nil, nil)
	if err := o.SenderFor("verify", 10*time.Minute).SendSMS(context.Background(), "+8613800138000", "Your code is 123456"); err != nil {
		t.Fatal(err)
	}
	m, _, err := db.GetSMS(context.Background(), 1)
	if err != nil || m.Kind != "verify" || m.State != StateQueued || m.ExpiresAt.Sub(m.CreatedAt) > 11*time.Minute {
		t.Fatalf("message %+v, %v", m, err)
	}
}

// A database that stops answering cannot hold shutdown forever.
func TestOutboxShutdownWithDeadStore(t *testing.T) {
	db := storetest.SQLite(t)
	f := newFakeSMSC()
	cfg := testConfig()
	cfg.DrainTimeout = 50 * time.Millisecond
	o, _ := NewOutbox(db, f, cfg, nil, nil)
	for i := range 50 {
		o.Enqueue(context.Background(), SMS{To: "+8613800138000", Text: fmt.Sprint("dead ", i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	waitFor(t, "a submit", func() bool { a, _ := f.snapshot(); return len(a) > 0 })
	db.Close()
	cancel()
	waitFor(t, "Run to return", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
}

func TestOutboxMetrics(t *testing.T) {
	db := storetest.SQLite(t)
	f := newFakeSMSC()
	f.refuse = func(_ int, p Part) error {
		if p.Dest == "+8613900139000" {
			return &SubmitError{Link: "fake", Status: 0x0B}
		}
		return nil
	}
	reg := prometheus.NewRegistry()
	o, err := NewOutbox(db, f, testConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewOutbox(db, f, testConfig(), nil, reg); err == nil {
		t.Fatal("registering the metrics twice is not reported")
	}
	runOutbox(t, o)
	ctx := context.Background()
	for i := range 4 {
		o.Enqueue(ctx, SMS{To: "+8613800138000", Text: fmt.Sprint("m", i)})
	}
	bad, _ := o.Enqueue(ctx, SMS{To: "+8613900139000", Text: "x"})
	waitFor(t, "failed", func() bool { return smsState(t, db, bad) == StateFailed })
	o.HandleDeliver(ctx, Deliver{SourceAddr: "8613800138000", SourceTON: 1, Payload: []byte("hi")})
	o.HandleDeliver(ctx, Deliver{ESMClass: 4, Payload: []byte("garbage")})
	o.HandleDeliver(ctx, Deliver{ESMClass: 4, ReceiptedMessageID: "1", MessageState: 1})
	m := o.m
	waitFor(t, "counters", func() bool {
		return testutil.ToFloat64(m.submits.WithLabelValues("ok")) == 4 &&
			testutil.ToFloat64(m.events.WithLabelValues(StateSubmitted)) == 4
	})
	for name, got := range map[string]float64{
		"permanent":    testutil.ToFloat64(m.submits.WithLabelValues("permanent")),
		"failed":       testutil.ToFloat64(m.events.WithLabelValues(StateFailed)),
		"mo unknown":   testutil.ToFloat64(m.mo.WithLabelValues("unknown")),
		"invalid":      testutil.ToFloat64(m.receipts.WithLabelValues("invalid")),
		"intermediate": testutil.ToFloat64(m.receipts.WithLabelValues("intermediate")),
	} {
		if got != 1 {
			t.Errorf("%s = %v, want 1", name, got)
		}
	}
}

// A node killed with messages claimed takes them back when it starts again
// under the same node id, without waiting for their lease.
func TestOutboxTakesBackItsOwnClaims(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	f := newFakeSMSC()
	o, _ := NewOutbox(db, f, testConfig(), nil, nil) // node id "test"
	var ids []int64
	for i := range 10 {
		id, _ := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: fmt.Sprint("claimed ", i)})
		ids = append(ids, id)
	}
	// The previous run of "test" claimed them for an hour, then died.
	if c, err := db.ClaimSMS(ctx, "test", 100, time.Hour); err != nil || len(c) != 10 {
		t.Fatalf("claimed %d, %v", len(c), err)
	}
	// Another node's claims are left alone.
	other, _ := o.Enqueue(ctx, SMS{To: "+8613800138000", Text: "other node"})
	if c, _ := db.ClaimSMS(ctx, "other", 100, time.Hour); len(c) != 1 {
		t.Fatal("not claimed by the other node")
	}
	runOutbox(t, o)
	waitFor(t, "own claims sent", allIn(t, db, ids, StateSubmitted))
	if s := smsState(t, db, other); s != StateQueued {
		t.Fatalf("another node's claim was taken: %s", s)
	}
}
