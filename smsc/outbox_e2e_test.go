package smsc_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// stack is an outbox sending through a router over TCP to a simulator.
type stack struct {
	sim *smscsim.Sim
	r   *smsc.Router
	ob  *smsc.Outbox
	db  *store.DB
	reg *prometheus.Registry // the router's and the outbox's metrics
	run func() (stop func())
}

func newStack(t testing.TB, db *store.DB, sim *smscsim.Sim, window int, cfg smsc.OutboxConfig, tune ...func(*smsc.LinkConfig)) *stack {
	t.Helper()
	s := &stack{sim: sim, db: db, reg: prometheus.NewRegistry()}
	// The router needs the handler and the outbox needs the router: the
	// handler reaches the outbox through s, set before the router starts.
	h := func(ctx context.Context, d smsc.Deliver) error { return s.ob.HandleDeliver(ctx, d) }
	lc := linkCfg("a", sim.Addr())
	lc.Window = window
	for _, f := range tune {
		f(&lc)
	}
	r, err := smsc.NewRouter([]smsc.LinkConfig{lc}, h, nil, s.reg)
	if err != nil {
		t.Fatal(err)
	}
	s.r = r
	if s.ob, err = smsc.NewOutbox(db, r, cfg, nil, s.reg); err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	t.Cleanup(func() { r.Close() })
	waitBound(t, r, "a")
	s.run = func() func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.ob.Run(ctx); close(done) }()
		var once sync.Once
		stop := func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	return s
}

func e2eConfig() smsc.OutboxConfig {
	return smsc.OutboxConfig{NodeID: "e2e", Batch: 100, Workers: 100, Poll: 20 * time.Millisecond,
		RetryBase: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}
}

func (s *stack) enqueue(t testing.TB, texts ...string) []int64 {
	t.Helper()
	ids := make([]int64, len(texts))
	for i, text := range texts {
		id, err := s.ob.Enqueue(context.Background(), smsc.SMS{To: cnMobile, Text: text, Kind: "fallback", Ref: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %04d", prefix, i)
	}
	return out
}

func waitStates(t testing.TB, db *store.DB, ids []int64, states ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for {
			m, _, err := db.GetSMS(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(" "+strings.Join(states, " ")+" ", " "+m.State+" ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("message %d is %s (%s), want %v", id, m.State, m.Error, states)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// simCounts counts the simulator's accepted submits per text.
func simCounts(sim *smscsim.Sim) map[string][]smscsim.Submit {
	out := map[string][]smscsim.Submit{}
	for _, s := range sim.Submits() {
		out[s.Text] = append(out[s.Text], s)
	}
	return out
}

func TestE2EOutboxThrottledAllDeliveredOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		sim := startSim(t, smscsim.Config{ThrottleEvery: 10})
		s := newStack(t, db, sim, 20, e2eConfig(), patientLink) // exactly once: no retry of a slow answer
		s.run()
		texts := numbered("throttled", 300)
		ids := s.enqueue(t, texts...)
		waitStates(t, s.db, ids, smsc.StateDelivered)
		counts := simCounts(sim)
		for _, text := range texts {
			if n := len(counts[text]); n != 1 {
				t.Fatalf("%q accepted %d times", text, n)
			}
		}
		if sim.Stats().Throttled == 0 {
			t.Fatal("nothing was throttled")
		}
	})
}

// The simulator drops the link in the middle of a burst of 200. SMPP has no
// way to tell whether a submit_sm the SMSC read just before the drop was
// accepted, so those (at most a window's worth) may go out twice; any
// submit whose response we received is never sent again, and every message
// ends up submitted.
func TestE2EOutboxLinkDropInBurst(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		const window = 50
		sim := startSim(t, smscsim.Config{})
		s := newStack(t, db, sim, window, e2eConfig())
		texts := numbered("burst", 200)
		ids := s.enqueue(t, texts...)
		s.run()
		poll.Until(t, "50 submits", func() bool { return sim.Stats().Submits >= 50 })
		sim.DropLinks()
		waitStates(t, db, ids, smsc.StateSubmitted, smsc.StateDelivered)
		counts := simCounts(sim)
		dups := 0
		for i, text := range texts {
			subs := counts[text]
			if len(subs) == 0 {
				t.Fatalf("%q never reached the SMSC", text)
			}
			dups += len(subs) - 1
			// The id we keep is the one the SMSC gave the last submit: had
			// the response to an earlier one arrived, it would have been
			// recorded (the first record wins) and nothing resent.
			_, parts, _ := db.GetSMS(context.Background(), ids[i])
			if len(parts) != 1 || parts[0].MessageID != smsc.NormalizeMessageID(subs[len(subs)-1].MessageID) {
				t.Fatalf("%q: stored part %+v, simulator submits %+v", text, parts, subs)
			}
		}
		if b := sim.Stats().Binds; b != 2 {
			t.Fatalf("%d binds, want 2 (one drop)", b)
		}
		if dups > window {
			t.Fatalf("%d duplicates, more than the %d submits that can be in flight", dups, window)
		}
		t.Logf("%d of 200 messages were in flight at the drop and went out twice", dups)
	})
}

func TestE2EOutboxPermanentRefusal(t *testing.T) {
	sim := startSim(t, smscsim.Config{RejectPrefixes: []string{"+861390"}})
	s := newStack(t, storetest.SQLite(t), sim, 10, e2eConfig())
	var mu sync.Mutex
	var events []smsc.OutboxEvent
	s.ob.OnStateChange(func(_ context.Context, e smsc.OutboxEvent) { mu.Lock(); events = append(events, e); mu.Unlock() })
	s.run()
	id, err := s.ob.Enqueue(context.Background(), smsc.SMS{To: "+8613900139000", Text: "no such number", Kind: "fallback", Ref: "m-1"})
	if err != nil {
		t.Fatal(err)
	}
	waitStates(t, s.db, []int64{id}, smsc.StateFailed)
	m, _, _ := s.db.GetSMS(context.Background(), id)
	if m.Error != "ESME_RINVDSTADR" || m.Attempts != 1 {
		t.Fatalf("message %+v", m)
	}
	poll.Until(t, "failed event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == 1 && events[0].State == "failed" && events[0].Ref == "m-1" && events[0].Error == "ESME_RINVDSTADR"
	})
}

// A 300-character Chinese text with emoji arrives at the SMSC in parts that
// rejoin to the original.
func TestE2EOutboxLongUnicode(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	s := newStack(t, storetest.SQLite(t), sim, 10, e2eConfig())
	s.run()
	text := strings.Repeat("电话簿即时通讯😀短信", 30) // 300 characters, 30 emoji
	if n := len([]rune(text)); n != 300 {
		t.Fatalf("test text is %d characters", n)
	}
	ids := s.enqueue(t, text)
	waitStates(t, s.db, ids, smsc.StateDelivered)
	// Parts travel concurrently and may arrive in any order; the UDH orders them.
	subs := sim.Submits()
	bodies := make([][]byte, len(subs))
	for _, sub := range subs {
		b, c, err := smsc.SplitUDH(sub.Payload, sub.ESMClass&0x40 != 0)
		if err != nil || c == nil || int(c.Total) != len(subs) || bodies[c.Seq-1] != nil || sub.DataCoding != smsc.CodingUCS2 {
			t.Fatalf("part: concat %+v coding %d err %v", c, sub.DataCoding, err)
		}
		bodies[c.Seq-1] = b
	}
	var body []byte
	for _, b := range bodies {
		body = append(body, b...)
	}
	got, err := smsc.DecodeText(smsc.CodingUCS2, body)
	if err != nil || got != text {
		t.Fatalf("rejoined %q, %v", got, err)
	}
}

// Stop with 1,000 messages queued, close the store, reopen the same file
// and run again: all are sent, none twice.
func TestE2EOutboxRestart(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	path := filepath.Join(t.TempDir(), "restart.db")
	open := func() *store.DB {
		db, err := store.Open(context.Background(), store.Options{DSN: path})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	s := newStack(t, db, sim, 50, e2eConfig())
	texts := numbered("restart", 1000)
	ids := s.enqueue(t, texts...)
	stop := s.run()
	poll.Until(t, "some submits", func() bool { return sim.Stats().Submits >= 100 })
	stop()
	s.r.Close()
	db.Close()
	t.Logf("%d of 1000 sent before the restart", sim.Stats().Submits)

	db = open()
	defer db.Close()
	s = newStack(t, db, sim, 50, e2eConfig())
	s.run()
	waitStates(t, db, ids, smsc.StateSubmitted, smsc.StateDelivered)
	counts := simCounts(sim)
	for _, text := range texts {
		if n := len(counts[text]); n != 1 {
			t.Fatalf("%q accepted %d times", text, n)
		}
	}
}

// Receipts that write the id differently from submit_sm_resp still find
// their message.
func TestE2EOutboxReceiptIDForms(t *testing.T) {
	for _, tc := range []struct{ resp, receipt, format string }{
		{"hex-upper", "decimal", "text"},
		{"decimal", "hex-lower", "text"},
		{"hex-lower", "hex-upper", "tlv"},
		{"decimal", "decimal", "text+tlv"},
	} {
		t.Run(tc.resp+"-"+tc.receipt+"-"+tc.format, func(t *testing.T) {
			sim := startSim(t, smscsim.Config{MessageIDStyle: tc.resp, ReceiptIDStyle: tc.receipt, ReceiptFormat: tc.format})
			s := newStack(t, storetest.SQLite(t), sim, 10, e2eConfig())
			s.run()
			ids := s.enqueue(t, numbered("receipt", 30)...)
			waitStates(t, s.db, ids, smsc.StateDelivered)
		})
	}
	t.Run("undeliverable", func(t *testing.T) {
		sim := startSim(t, smscsim.Config{ReceiptStat: "UNDELIV", ReceiptErr: 11})
		s := newStack(t, storetest.SQLite(t), sim, 10, e2eConfig())
		s.run()
		ids := s.enqueue(t, "to a phone that is off")
		waitStates(t, s.db, ids, smsc.StateUndeliverable)
		m, _, _ := s.db.GetSMS(context.Background(), ids[0])
		if !strings.Contains(m.Error, "UNDELIV") {
			t.Fatalf("reason %q", m.Error)
		}
	})
}

func TestE2EOutboxMO(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	s := newStack(t, storetest.SQLite(t), sim, 10, e2eConfig())
	got := make(chan smsc.MO, 4)
	s.ob.HandleMO("PB ", func(_ context.Context, m smsc.MO) error { got <- m; return nil })
	s.run()
	text := "PB " + strings.Repeat("绑定我的号码😀", 20)
	if err := sim.InjectMO(context.Background(), "+8613800138000", "10690000", text); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Text != text || m.From != phonebook.MSISDN("+8613800138000") || m.Parts < 2 {
			t.Fatalf("MO %+v", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("MO never dispatched")
	}
}
