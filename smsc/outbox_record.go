package smsc

// This file holds the recorders: they write submit results (accepted parts,
// outcomes) to the store in batches, each message's results through one
// recorder.

import (
	"context"
	"sync"
	"time"

	"github.com/phonebook/phonebook/store"
)

// record is a submit result on its way to the store.
type record struct {
	part    *store.SMSPart
	outcome *store.SMSOutcome
}

func (r record) id() int64 {
	if r.part != nil {
		return r.part.OutboxID
	}
	return r.outcome.ID
}

// recordSink routes each message's results to one recorder.
type recordSink []chan record

func (s recordSink) send(r record) { s[uint64(r.id())%uint64(len(s))] <- r }

// recorder writes submit results in batches, as a group commit: while one
// write is in progress the results that arrive meanwhile make up the next
// (at most FlushSize), so batches grow with the load; with no write in
// progress the first result waits at most FlushEvery for others to join it.
// Submits never wait for it: their window slot is free once the response
// is in. A failed write is retried until it succeeds, because the parts in
// it must never be sent again; only once the outbox is shutting down
// (stopping closed) does it give up after a few tries, so that a dead
// database cannot hold shutdown forever.
func (o *Outbox) recorder(ctx context.Context, stopping <-chan struct{}, in <-chan record) {
	type batch struct {
		parts    []store.SMSPart
		outcomes []store.SMSOutcome
	}
	writes := make(chan batch)
	written := make(chan batch) // hands the buffers back for reuse
	go func() {
		defer close(written)
		for b := range writes {
			o.flush(ctx, stopping, b.parts, b.outcomes)
			written <- batch{b.parts[:0], b.outcomes[:0]}
		}
	}()
	var cur, spare batch
	busy := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	lingered := false // the first result of cur waited FlushEvery
	size := func() int { return len(cur.parts) + len(cur.outcomes) }
	for in != nil || size() > 0 || busy {
		// Hand cur to the writer when it is idle and cur is full or has
		// waited long enough (or nothing more will come). Results that
		// arrive during a write have usually waited long enough by its end.
		var out chan<- batch
		if !busy && size() > 0 && (lingered || size() >= o.cfg.FlushSize || in == nil) {
			out = writes
		}
		// A full batch waits for the writer: stop reading.
		recv := in
		if size() >= o.cfg.FlushSize {
			recv = nil
		}
		select {
		case r, ok := <-recv:
			if !ok {
				in = nil
				continue
			}
			if size() == 0 {
				lingered = false
				timer.Reset(o.cfg.FlushEvery)
			}
			if r.part != nil {
				cur.parts = append(cur.parts, *r.part)
			}
			if r.outcome != nil {
				cur.outcomes = append(cur.outcomes, *r.outcome)
			}
		case <-timer.C:
			lingered = true
		case out <- cur:
			busy = true
			cur, spare = spare, batch{}
			timer.Stop()
		case b := <-written:
			busy, spare = false, b
		}
	}
	close(writes)
	for range written {
	}
}

// pendingEmits counts, per message, the recorder writes that have begun
// and whose changes are not emitted yet. A receipt applies only to a part
// that is committed, but the recorder that committed it may not have
// emitted its "submitted" yet: the receipt applier holds a message's
// changes back until none of its writes is pending, so that a listener
// never sees "delivered" and then "submitted" (seen on MySQL, with two
// recorders, under load).
type pendingEmits struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    map[int64]int
}

// hold marks the messages of a write as pending, before it begins.
func (p *pendingEmits) hold(parts []store.SMSPart, outcomes []store.SMSOutcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n, p.cond = map[int64]int{}, sync.NewCond(&p.mu)
	}
	for i := range parts {
		p.n[parts[i].OutboxID]++
	}
	for i := range outcomes {
		p.n[outcomes[i].ID]++
	}
}

// release ends what hold began, once the write's changes are emitted
// (or the write was given up).
func (p *pendingEmits) release(parts []store.SMSPart, outcomes []store.SMSOutcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	done := func(id int64) {
		if p.n[id]--; p.n[id] <= 0 {
			delete(p.n, id)
		}
	}
	for i := range parts {
		done(parts[i].OutboxID)
	}
	for i := range outcomes {
		done(outcomes[i].ID)
	}
	p.cond.Broadcast()
}

// wait returns once no write of changes' messages is pending.
func (p *pendingEmits) wait(changes []store.SMSChange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range changes {
		for p.n[c.ID] > 0 {
			p.cond.Wait()
		}
	}
}

// flush writes one batch of results, retrying as recorder describes.
func (o *Outbox) flush(ctx context.Context, stopping <-chan struct{}, parts []store.SMSPart, outcomes []store.SMSOutcome) {
	o.pending.hold(parts, outcomes)
	defer o.pending.release(parts, outcomes)
	for attempt := 0; ; attempt++ {
		changes, err := o.db.RecordSMS(ctx, o.cfg.NodeID, parts, outcomes)
		if err == nil {
			if o.afterRecord != nil {
				o.afterRecord()
			}
			o.emit(changes)
			return
		}
		o.log.Error("sms outbox: recording submit results; retrying", "err", err, "parts", len(parts), "outcomes", len(outcomes))
		select {
		case <-stopping:
			if attempt >= 2 {
				o.log.Error("sms outbox: shutting down without recording submit results; their messages are sent again after the lease",
					"parts", len(parts), "outcomes", len(outcomes))
				return
			}
		default:
		}
		if ctx.Err() != nil {
			return
		}
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 5*time.Second))
	}
}
