package smsc

// This file holds the submit side of the outbox: claiming due messages,
// handing their parts to the links, retries and backoff, and deciding each
// message's outcome once its last part is done.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/backoff"
	"github.com/phonebook/phonebook/store"
)

// job is one part to submit.
type job struct {
	msg  *attempt
	seq  int
	part Part
}

// attempt tracks one claimed message while its parts are submitted.
type attempt struct {
	m        store.SMS
	total    int
	leaseEnd time.Time
	left     atomic.Int32

	mu      sync.Mutex
	tempErr error // the first temporary failure that costs an attempt
	freeErr error // the first part that was never sent
	permErr error
}

func (a *attempt) fail(err error, temporary bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !temporary:
		if a.permErr == nil {
			a.permErr = err
		}
	case notSent(err):
		if a.freeErr == nil {
			a.freeErr = err
		}
	case a.tempErr == nil:
		a.tempErr = err
	}
}

// claimer claims due messages and feeds their parts to the workers, as
// long as the budget of messages in flight allows at least half a batch
// (claims cost round trips: not one per finished message).
func (o *Outbox) claimer(ctx context.Context, jobs chan<- job, records recordSink) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// With no link bound a claim would only fail every message and push
		// it back by a growing backoff; wait for a link instead, so that
		// queued messages go out as soon as one binds.
		if !o.available() {
			timer.Reset(o.cfg.Poll / 4)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			continue
		}
		n := o.slots.take(o.cfg.Batch, max(o.cfg.Batch/2, 1))
		if n == 0 {
			return // shutting down
		}
		msgs, err := o.db.ClaimSMS(ctx, o.cfg.NodeID, n, o.cfg.Lease)
		if err != nil && ctx.Err() == nil {
			o.log.Error("sms outbox: claim", "err", err)
		}
		o.slots.give(n - len(msgs))
		for i, m := range msgs {
			if !o.start(ctx, m, jobs, records) {
				// Shutting down: hand back what never started.
				for _, r := range msgs[i+1:] {
					records.send(record{outcome: &store.SMSOutcome{ID: r.ID, Kind: r.Kind, Ref: r.Ref, State: StateQueued,
						NextAttemptAt: time.Now(), NoAttempt: true, Error: "not sent: " + errStopping.Error()}})
				}
				o.slots.give(len(msgs) - i - 1)
				return
			}
		}
		if len(msgs) == n {
			continue // more may be due right now
		}
		timer.Reset(o.cfg.Poll)
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-timer.C:
		}
	}
}

// budget counts the messages a node may have in flight.
type budget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	free   int
	closed bool
}

func newBudget(n int) *budget {
	b := &budget{free: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// take waits until at least atLeast slots are free and takes up to want;
// it returns 0 once the budget is closed.
func (b *budget) take(want, atLeast int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.free < atLeast {
		b.cond.Wait()
	}
	if b.closed {
		return 0
	}
	n := min(want, b.free)
	b.free -= n
	return n
}

// tryTake takes one slot if one is free, without waiting.
func (b *budget) tryTake() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.free == 0 {
		return false
	}
	b.free--
	return true
}

func (b *budget) give(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// start turns a claimed message into jobs; it returns false when ctx ended
// while the jobs queue was full (the message is released for a retry).
func (o *Outbox) start(ctx context.Context, m store.SMS, jobs chan<- job, records recordSink) bool {
	now := time.Now()
	finish := func(state, reason string) {
		records.send(record{outcome: &store.SMSOutcome{ID: m.ID, Kind: m.Kind, Ref: m.Ref, State: state, Error: reason, NextAttemptAt: now}})
		o.slots.give(1)
	}
	if !m.ExpiresAt.After(now) {
		why := "validity ended before it could be sent"
		if m.Error != "" {
			why += "; last error: " + m.Error
		}
		finish(StateExpired, why)
		return true
	}
	e, err := Encode(m.Text)
	var parts []Part
	if err == nil {
		parts, err = e.Parts(uint8(m.ID), o.cfg.MaxParts)
	}
	if err != nil {
		finish(StateFailed, phonebook.ErrorMessage(err))
		return true
	}
	sent := map[int]bool{}
	for _, s := range m.SentParts {
		sent[s] = true
	}
	a := &attempt{m: m, total: len(parts), leaseEnd: now.Add(o.cfg.Lease)}
	var todo []job
	for i, p := range parts {
		if sent[i+1] {
			continue
		}
		p.Dest = phonebook.MSISDN(m.Dest)
		p.Source = m.Source
		p.RegisteredDelivery = !o.cfg.NoReceipts
		// 0 would mean the SMSC's default validity, often days.
		p.Validity = max(m.ExpiresAt.Sub(now).Truncate(time.Second), time.Second)
		todo = append(todo, job{msg: a, seq: i + 1, part: p})
	}
	if len(todo) == 0 { // every part went out before a crash
		finish(StateSubmitted, "")
		return true
	}
	a.left.Store(int32(len(todo)))
	for i, j := range todo {
		select {
		case jobs <- j:
		case <-ctx.Done():
			// The rest of the parts never started; count them off so that
			// the message is released for a retry.
			for range todo[i:] {
				a.fail(errStopping, true)
				o.partDone(a, records)
			}
			return false
		}
	}
	return true
}

func (o *Outbox) submit(ctx context.Context, j job, stopping *atomic.Bool, records recordSink) {
	a := j.msg
	switch {
	case stopping.Load():
		a.fail(errStopping, true)
	case time.Until(a.leaseEnd) < o.cfg.Lease/10:
		// The claim is about to lapse: another node may take the message, so
		// sending now could send it twice.
		a.fail(errLeaseEnding, true)
	case !o.awaitLink(stopping):
		// Still no link after linkWait: give the part back unsent.
		a.fail(&SubmitError{Temporary: true, Err: ErrNoLinkBound}, true)
	default:
		res, err := o.sub.Submit(ctx, j.part)
		// A part that never left because the link dropped just then is
		// tried again here once a link is bound (within linkWait), rather
		// than sent round the queue with its whole message.
		for start := time.Now(); err != nil && retryHere(err) && !stopping.Load() &&
			time.Since(start) < linkWait && time.Until(a.leaseEnd) >= o.cfg.Lease/10 && o.awaitLink(stopping); {
			o.m.submits.WithLabelValues("not_sent").Inc()
			res, err = o.sub.Submit(ctx, j.part)
		}
		if err == nil {
			o.m.submits.WithLabelValues("ok").Inc()
			id := NormalizeMessageID(res.MessageID)
			o.ids.saw(res.Link, id, true)
			records.send(record{part: &store.SMSPart{OutboxID: a.m.ID, Seq: j.seq, Total: a.total, Link: res.Link,
				MessageID: id, ReceiptID: o.ids.receiptID(res.Link, id), SubmittedAt: time.Now()}})
			break
		}
		var se *SubmitError
		temporary := !errors.As(err, &se) || se.Temporary
		switch {
		case !temporary:
			o.m.submits.WithLabelValues("permanent").Inc()
		case notSent(err):
			o.m.submits.WithLabelValues("not_sent").Inc()
		default:
			o.m.submits.WithLabelValues("temporary").Inc()
		}
		a.fail(err, temporary)
	}
	o.partDone(a, records)
}

// linkWait bounds how long a worker holds a part while no link is bound.
// A link that drops comes back within a reconnect delay or two; failing
// every part in hand at once would only send them round the queue.
const linkWait = 5 * time.Second

// awaitLink waits until a link is bound (if the submitter tells), at most
// linkWait and not once shutting down; it reports whether one is.
func (o *Outbox) awaitLink(stopping *atomic.Bool) bool {
	av, ok := o.sub.(interface{ Available() bool })
	if !ok {
		return true
	}
	for deadline := time.Now().Add(linkWait); !av.Available(); time.Sleep(10 * time.Millisecond) {
		if stopping.Load() || time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// retryHere reports whether a failed submit is one a worker tries again at
// once: temporary, never sent, for want of a bound link.
func retryHere(err error) bool {
	var se *SubmitError
	return errors.As(err, &se) && se.Temporary && notSent(err) &&
		(errors.Is(err, ErrNotBound) || errors.Is(err, ErrNoLinkBound) || errors.Is(err, ErrNotWritten))
}

// Reasons the outbox itself does not send a part; like every error for
// which notSent holds, they cost the message no attempt.
var (
	errStopping    = errors.New("outbox shutting down")
	errLeaseEnding = errors.New("claim lease nearly over")
)

// notSent reports whether a failed submit never reached the SMSC: no link
// was bound, the link closed before the write, or the outbox held it back.
// Only a submit the SMSC refused, or one written and left unanswered,
// counts as an attempt.
func notSent(err error) bool {
	if errors.Is(err, errStopping) || errors.Is(err, errLeaseEnding) {
		return true
	}
	var se *SubmitError
	return errors.As(err, &se) && se.Status == 0 && !se.Sent
}

// partDone counts a part off; the last one decides the message's outcome.
func (o *Outbox) partDone(a *attempt, records recordSink) {
	if a.left.Add(-1) != 0 {
		return
	}
	o.slots.give(1)
	now := time.Now()
	out := &store.SMSOutcome{ID: a.m.ID, Kind: a.m.Kind, Ref: a.m.Ref, State: StateSubmitted}
	a.mu.Lock()
	perm, temp, free := a.permErr, a.tempErr, a.freeErr
	a.mu.Unlock()
	switch {
	case perm != nil:
		out.State, out.Error = StateFailed, reason(perm)
	case temp != nil:
		attempts := a.m.Attempts + 1
		next := now.Add(o.backoff(attempts))
		if errors.Is(temp, ErrLinkClosed) {
			// The link, not the message, failed: retry soon (the claimer
			// waits for a bound link before claiming again).
			next = now.Add(o.cfg.RetryBase)
		}
		switch {
		case o.cfg.MaxAttempts > 0 && attempts >= o.cfg.MaxAttempts:
			out.State, out.Error = StateFailed, fmt.Sprintf("gave up after %d attempts: %s", attempts, reason(temp))
		case next.After(a.m.ExpiresAt):
			out.State, out.Error = StateExpired, "validity ended while retrying: "+reason(temp)
		default:
			out.State, out.NextAttemptAt, out.Error = StateQueued, next, reason(temp)
		}
	case free != nil:
		// Nothing reached the SMSC: requeue at no cost. The outbox's own
		// reasons retry at once; a link that is down, after RetryBase.
		next := now
		if !errors.Is(free, errStopping) && !errors.Is(free, errLeaseEnding) {
			next = now.Add(o.cfg.RetryBase)
		}
		if next.After(a.m.ExpiresAt) {
			out.State, out.Error = StateExpired, "validity ended while retrying: "+reason(free)
		} else {
			out.State, out.NextAttemptAt, out.NoAttempt, out.Error = StateQueued, next, true, reason(free)
		}
	}
	records.send(record{outcome: out})
}

// reason is the failure text stored with a message: the SMPP status name
// for refusals; for transport failures the cause, saying whether the
// submit was sent (and left unanswered) or never sent.
func reason(err error) string {
	var se *SubmitError
	if errors.As(err, &se) && se.Status != 0 {
		return StatusName(se.Status)
	}
	cause := err.Error()
	if se != nil && se.Err != nil {
		cause = se.Err.Error()
	}
	if notSent(err) {
		return "not sent: " + cause
	}
	if se != nil {
		return "sent, no response: " + cause
	}
	return cause
}

// backoff is exponential from RetryBase, capped at RetryMax, with "equal
// jitter" (half fixed, half random) so that a burst of throttled messages
// does not come back as one burst.
func (o *Outbox) backoff(attempts int) time.Duration {
	return backoff.Equal(o.cfg.RetryBase, o.cfg.RetryMax, attempts)
}
