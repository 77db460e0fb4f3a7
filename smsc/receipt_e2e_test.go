package smsc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/store/storetest"
)

// receiptOutcome is the outbox state a receipt stat leads to.
var receiptOutcome = map[string]string{"DELIVRD": smsc.StateDelivered, "UNDELIV": smsc.StateUndeliverable, "EXPIRED": smsc.StateExpired}

var receiptOutcomeStates = map[string]bool{smsc.StateDelivered: true, smsc.StateUndeliverable: true, smsc.StateExpired: true}

// finalEvents records the last event of each message.
type finalEvents struct {
	mu   sync.Mutex
	last map[int64]smsc.OutboxEvent
}

func (f *finalEvents) add(_ context.Context, e smsc.OutboxEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		f.last = map[int64]smsc.OutboxEvent{}
	}
	f.last[e.ID] = e
}

func (f *finalEvents) get(id int64) smsc.OutboxEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last[id]
}

// checkOwnReceipts checks, row by row, that every message was accepted
// once by the simulator (with resets: once more per submit written and
// left unanswered) and ended in the state of the receipt the simulator
// sent for the id it gave that message, and that the last event a
// listener (the relay) got for it says the same, with its own reference.
// patientLink waits long for each submit_sm_resp. These tests count how
// often each message reached the SMSC and allow a second copy only where a
// reset lost a response; on a loaded machine under -race the simulator's
// answer can take longer than the tests' usual 2 s, and the retry of a
// submit that timed out is a second copy the test would have to excuse.
func patientLink(lc *smsc.LinkConfig) { lc.RespTimeout = 30 * time.Second }

// copiesOf returns the copies of one text the simulator accepted.
func copiesOf(sim *smscsim.Sim, text string) string { return describeCopies(simCounts(sim)[text]) }

// describeCopies says, for a failure message, where each copy came from.
func describeCopies(subs []smscsim.Submit) string {
	var b strings.Builder
	for _, s := range subs {
		fmt.Fprintf(&b, "[session %d seq %d id %s at %s after_reset %t receipt %s] ",
			s.Session, s.Seq, s.MessageID, s.Time.Format("15:04:05.000000"), s.AfterReset, s.Receipt)
	}
	return b.String()
}

func checkOwnReceipts(t *testing.T, s *stack, ids []int64, texts []string, events *finalEvents, resets bool) {
	t.Helper()
	ctx := context.Background()
	// Wait until every message had a final event, or a deadline: a receipt
	// applied to the wrong message leaves its own one waiting.
	final := func() int {
		n := 0
		for _, id := range ids {
			if _, ok := receiptOutcomeStates[events.get(id).State]; ok {
				n++
			}
		}
		return n
	}
	// A message still in flight at the check would look sent twice with
	// one attempt counted: the check waits until every one is final, and
	// says so when one never is.
	deadline := time.Now().Add(3 * time.Minute)
	for final() < len(ids) {
		if time.Now().After(deadline) {
			var open []string
			for i, id := range ids {
				if _, ok := receiptOutcomeStates[events.get(id).State]; !ok && len(open) < 5 {
					m, parts, _ := s.db.GetSMS(ctx, id)
					open = append(open, fmt.Sprintf("%q: %s, %d attempts (%s), parts %+v, SMSC copies %+v",
						texts[i], m.State, m.Attempts, m.Error, parts, copiesOf(s.sim, texts[i])))
				}
			}
			t.Fatalf("%d of %d messages had no final event after 3 minutes, e.g. %v", len(ids)-final(), len(ids), open)
		}
		time.Sleep(50 * time.Millisecond)
	}
	subs := simCounts(s.sim)
	var wrong, doubled, wrongEvent []string
	resent := 0
	for i, id := range ids {
		got := subs[texts[i]]
		m, parts, err := s.db.GetSMS(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 && (!resets || len(got) == 0 || len(got)-1 > m.Attempts-1) {
			doubled = append(doubled, fmt.Sprintf("%q sent %d times, %d unanswered; %s (%s), parts %+v, SMSC copies %s",
				texts[i], len(got), m.Attempts-1, m.State, m.Error, parts, describeCopies(got)))
			continue
		}
		resent += len(got) - 1
		// The copy whose submit_sm_resp arrived is the one recorded; its
		// receipt decides. (A copy whose response a reset lost gets a
		// receipt too, for an id no part has.)
		var own *smscsim.Submit
		for j, sub := range got {
			if len(parts) == 1 && smsc.NormalizeMessageID(sub.MessageID) == parts[0].MessageID {
				own = &got[j]
			}
		}
		if own == nil {
			wrong = append(wrong, fmt.Sprintf("message %d: parts %+v match none of the SMSC's ids %+v", id, parts, got))
			continue
		}
		want := receiptOutcome[own.Receipt]
		if m.State != want {
			wrong = append(wrong, fmt.Sprintf("message %d (SMSC id %s, receipt %s) is %s (%s), parts %+v", id, own.MessageID, own.Receipt, m.State, m.Error, parts))
		}
		if e := events.get(id); e.State != want || e.Ref != fmt.Sprint(i) {
			wrongEvent = append(wrongEvent, fmt.Sprintf("message %d: last event %+v, want %s for ref %d", id, e, want, i))
		}
	}
	if len(doubled)+len(wrong)+len(wrongEvent) > 0 {
		t.Errorf("%d of %d messages sent other than once, e.g. %v", len(doubled), len(ids), doubled[:min(3, len(doubled))])
		t.Errorf("%d of %d messages not in the state of their own receipt, e.g. %v", len(wrong), len(ids), wrong[:min(3, len(wrong))])
		t.Fatalf("%d of %d messages' last event wrong, e.g. %v", len(wrongEvent), len(ids), wrongEvent[:min(3, len(wrongEvent))])
	}
	t.Logf("%d of %d messages in the state of their own receipt; %d sent again after a lost response", len(ids), len(ids), resent)
}

// Bursts of 1,000 SMS through an SMSC that hands out short sequential ids
// and sends a receipt 50 ms after each submit, its outcome varying by id:
// every message ends in the state of its own receipt, for every way of
// writing the ids, on auto and with the rule configured.
func TestE2EReceiptsReachTheirOwnMessage(t *testing.T) {
	const n = 1000
	tests := []struct {
		name             string
		respIDs, rcptIDs string
		rule             string
	}{
		{"hex ids, hex receipts, auto", "hex-lower", "hex-upper", smsc.ReceiptIDsAuto},
		{"decimal ids, decimal receipts, auto", "decimal", "decimal", smsc.ReceiptIDsAuto},
		{"hex ids, decimal receipts, auto", "hex-lower", "decimal", smsc.ReceiptIDsAuto},
		{"decimal ids, hex receipts, hex", "decimal", "hex-upper", smsc.ReceiptIDsHex},
		{"hex ids, hex receipts, session reset every 50 submits", "hex-lower", "hex-lower", smsc.ReceiptIDsAuto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // much of each is waiting for receipts
			simCfg := smscsim.Config{ShortIDs: true, MessageIDStyle: tt.respIDs, ReceiptIDStyle: tt.rcptIDs,
				ReceiptStat: "MIXED", ReceiptDelay: 50 * time.Millisecond, RedeliverAfter: 50 * time.Millisecond}
			window, resets := 100, strings.Contains(tt.name, "reset")
			if resets {
				// A reset loses the responses in flight: the default window
				// keeps that to a few per reset.
				simCfg.ResetAfter, window = 50, 10
			}
			sim := startSim(t, simCfg)
			cfg := e2eConfig()
			cfg.ReceiptIDWait = 2 * time.Second
			s := newStack(t, storetest.SQLite(t), sim, window, cfg, patientLink, func(lc *smsc.LinkConfig) { lc.ReceiptIDs = tt.rule })
			var events finalEvents
			s.ob.OnStateChange(events.add)
			s.run()
			texts := numbered("burst", n)
			ids := s.enqueue(t, texts...)
			checkOwnReceipts(t, s, ids, texts, &events, resets)
			if u, _ := testutil.GatherAndCount(s.reg, "phonebook_sms_receipts_unmatched_total"); u != 0 {
				t.Fatalf("%d receipts reported unmatched", u)
			}
		})
	}
}

// The same on MySQL, where receipts are applied by several transactions
// side by side.
func TestE2EReceiptsReachTheirOwnMessageMySQL(t *testing.T) {
	db := storetest.MySQL(t)
	sim := startSim(t, smscsim.Config{ShortIDs: true, MessageIDStyle: "hex-lower", ReceiptIDStyle: "hex-lower",
		ReceiptStat: "MIXED", ReceiptDelay: 50 * time.Millisecond, RedeliverAfter: 50 * time.Millisecond})
	cfg := e2eConfig()
	cfg.ReceiptIDWait = 2 * time.Second
	s := newStack(t, db, sim, 100, cfg, patientLink)
	var events finalEvents
	s.ob.OnStateChange(events.add)
	s.run()
	texts := numbered("mysql", 1000)
	checkOwnReceipts(t, s, s.enqueue(t, texts...), texts, &events, false)
}

// Every receipt is written before its own submit_sm_resp, on the same
// session: it is stored first and applied when the part is recorded.
func TestE2EReceiptBeforeSubmitResp(t *testing.T) {
	for _, rule := range []string{smsc.ReceiptIDsAuto} {
		t.Run(rule, func(t *testing.T) {
			sim := startSim(t, smscsim.Config{ShortIDs: true, MessageIDStyle: "hex-lower", ReceiptStat: "MIXED",
				ReceiptBeforeResp: true, RedeliverAfter: 50 * time.Millisecond})
			cfg := e2eConfig()
			cfg.ReceiptIDWait = time.Second
			s := newStack(t, storetest.SQLite(t), sim, 100, cfg, patientLink, func(lc *smsc.LinkConfig) { lc.ReceiptIDs = rule })
			var events finalEvents
			s.ob.OnStateChange(events.add)
			s.run()
			texts := numbered("first "+rule, 1000)
			checkOwnReceipts(t, s, s.enqueue(t, texts...), texts, &events, false)
		})
	}
}

// The session is reset after every 50 accepted submits, the last one's
// response lost, with 8,000 SMS queued and receipts 50 ms after each
// submit: no message fails, and a message reaches the SMSC twice only when
// a submit of it was written and left unanswered (which is what costs an
// attempt). Under -race it runs 2,000 SMS (40 resets): 8,000 take minutes.
func TestE2ESessionResetsFailNothing(t *testing.T) {
	n := 8000
	if raceDetector {
		n = 2000
	}
	sim := startSim(t, smscsim.Config{ResetAfter: 50})
	cfg := e2eConfig()
	cfg.NoReceipts = true // TestE2EReceiptsReachTheirOwnMessage has resets with receipts
	cfg.Batch, cfg.Workers = 500, 100
	cfg.MaxAttempts = 50 // serve's default
	cfg.RetryBase, cfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	s := newStack(t, storetest.SQLite(t), sim, 10, cfg) // the default window
	texts := numbered("reset", n)
	ids := s.enqueue(t, texts...)
	s.run()
	// Under the race detector on a shared machine this takes minutes.
	for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if d, _, err := s.db.SMSDepth(context.Background()); err == nil && d == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still queued after 4 minutes; simulator %+v", sim.Stats())
		}
	}
	waitStates(t, s.db, ids, smsc.StateSubmitted)

	subs := simCounts(sim)
	ctx := context.Background()
	var dupMsgs, extra, costly int
	for i, id := range ids {
		m, _, err := s.db.GetSMS(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		costly += m.Attempts - 1 // the last, successful one counts too
		copies := len(subs[texts[i]])
		if copies > 1 {
			dupMsgs++
			extra += copies - 1
		}
		// Every extra copy is a submit that was written and left
		// unanswered: each such submit cost the message an attempt.
		if copies < 1 || copies-1 > m.Attempts-1 {
			t.Fatalf("message %d reached the SMSC %d times with %d unanswered submits (%s %s): %s",
				id, copies, m.Attempts-1, m.State, m.Error, describeCopies(subs[texts[i]]))
		}
	}
	unanswered := testutil.ToFloat64(s.r.Metrics().Submits.WithLabelValues("a", "link_down")) +
		testutil.ToFloat64(s.r.Metrics().Submits.WithLabelValues("a", "timeout"))
	notSent := testutil.ToFloat64(s.r.Metrics().Submits.WithLabelValues("a", "not_sent")) +
		testutil.ToFloat64(s.r.Metrics().Submits.WithLabelValues("a", "not_bound"))
	st := sim.Stats()
	t.Logf("%d SMS, %d session resets: 0 failed; %d messages reached the SMSC twice (%d extra copies; the simulator lost %d responses); "+
		"%d submits written and unanswered (%d attempts counted), %d never sent (no attempt)",
		n, st.Resets, dupMsgs, extra, st.LostResps, int(unanswered), costly, int(notSent))
	if st.Resets < int64(n/50-1) {
		t.Fatalf("only %d resets", st.Resets)
	}
	if float64(costly) > unanswered {
		t.Fatalf("%d attempts counted for %v unanswered submits", costly, unanswered)
	}
}

// A receipt whose exact id is not recorded yet, while a part stored under
// another form of it exists, waits for its own part.
func TestE2EReceiptWaitsForItsExactID(t *testing.T) {
	for _, rule := range []string{smsc.ReceiptIDsExact, smsc.ReceiptIDsAuto} {
		t.Run(rule, func(t *testing.T) {
			// Short hex ids: message 16 is "10", message 22 is "16".
			sim := startSim(t, smscsim.Config{ShortIDs: true, MessageIDStyle: "hex-lower", ReceiptStat: "MIXED",
				RespDelay: 0, ReceiptDelay: time.Hour})
			cfg := e2eConfig()
			// On auto, a part with the exact id can still appear for this
			// long; message 22 is sent within it.
			cfg.ReceiptIDWait = 3 * time.Second
			s := newStack(t, storetest.SQLite(t), sim, 10, cfg, patientLink, func(lc *smsc.LinkConfig) { lc.ReceiptIDs = rule })
			s.run()
			texts := numbered("exact "+rule, 21)
			ids := s.enqueue(t, texts...)
			waitStates(t, s.db, ids, smsc.StateSubmitted)
			// The receipt for id "16" (message 22, not sent yet) comes now.
			receipt := func(id, stat string) {
				t.Helper()
				err := s.ob.HandleDeliver(context.Background(), smsc.Deliver{Link: "a", ESMClass: 4,
					Payload: []byte("id:" + id + " sub:001 dlvrd:001 submit date:2611251830 done date:2611251831 stat:" + stat + " err:000 text:")})
				if err != nil {
					t.Fatal(err)
				}
			}
			receipt("16", "UNDELIV")
			// Give a wrong match every chance: longer than the grace and the
			// apply loop's tick.
			time.Sleep(time.Second)
			var m16 int64 // the message that got "10", the 16th id
			for _, sub := range sim.Submits() {
				if sub.MessageID == "10" {
					m16 = ids[slices.Index(texts, sub.Text)]
				}
			}
			id22 := s.enqueue(t, "exact twenty-two")[0]
			waitStates(t, s.db, []int64{id22}, smsc.StateUndeliverable)
			receipt("10", "DELIVRD")
			waitStates(t, s.db, []int64{m16}, smsc.StateDelivered)
			for _, id := range ids {
				if m, _, _ := s.db.GetSMS(context.Background(), id); id != m16 && m.State != smsc.StateSubmitted {
					t.Fatalf("message %d took another's receipt: %s", id, m.State)
				}
			}
		})
	}
}

// A receipt applied while the recorder that committed its part has not yet
// emitted that part's "submitted" (here the recorder is held up for 400
// ms after each commit; the applier runs every 250 ms) waits for it:
// every message's listener sees "submitted", then "delivered", never the
// other way round.
func TestE2EReceiptEventFollowsItsSubmitted(t *testing.T) {
	sim := startSim(t, smscsim.Config{ReceiptDelay: time.Millisecond})
	s := newStack(t, storetest.SQLite(t), sim, 10, e2eConfig(), patientLink)
	smsc.SetAfterRecord(s.ob, func() { time.Sleep(400 * time.Millisecond) })
	var mu sync.Mutex
	seen := map[int64][]string{}
	s.ob.OnStateChange(func(_ context.Context, e smsc.OutboxEvent) {
		mu.Lock()
		defer mu.Unlock()
		seen[e.ID] = append(seen[e.ID], e.State)
	})
	s.run()
	ids := s.enqueue(t, numbered("order", 20)...)
	poll.Until(t, "every message's delivery event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if ev := seen[id]; len(ev) == 0 || ev[len(ev)-1] != "delivered" {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if ev := seen[id]; !slices.Equal(ev, []string{"submitted", "delivered"}) {
			t.Errorf("message %d: events %v, want [submitted delivered]", id, ev)
		}
	}
}
