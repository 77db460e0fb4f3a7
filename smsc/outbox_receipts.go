package smsc

// This file holds the outbox's receipt path: HandleDeliver stores delivery
// receipts durably (in group commits) before they are acknowledged, and
// applyReceipts matches them to sent parts in batches.

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/phonebook/phonebook/store"
)

// HandleDeliver is the DeliverHandler for the links: delivery receipts
// update the outbox, everything else is an inbound SMS. It returns nil only
// once the PDU's effect is durable.
func (o *Outbox) HandleDeliver(ctx context.Context, d Deliver) error {
	if !d.IsReceipt() {
		return o.handleMO(ctx, d)
	}
	r, err := ParseReceipt(d)
	if err != nil {
		// Asking the SMSC to send it again would not make it readable.
		o.m.receipts.WithLabelValues("invalid").Inc()
		o.log.Warn("sms outbox: unreadable delivery receipt acknowledged and dropped", "link", d.Link, "err", err)
		return nil
	}
	label := r.State
	if label == "" {
		label = "intermediate"
	}
	o.m.receipts.WithLabelValues(label).Inc()
	if r.State == "" {
		return nil // on its way: nothing to record
	}
	id := NormalizeMessageID(r.MessageID)
	o.ids.saw(d.Link, id, false)
	return o.receipts.do(ctx, store.SMSReceipt{Link: d.Link, MessageID: id, State: r.State, Error: receiptError(r)})
}

func receiptError(r Receipt) string {
	s := r.Stat
	if r.Err != "" && strings.Trim(r.Err, "0") != "" {
		s += " err:" + r.Err
	}
	return s
}

// storeReceipts makes a batch of receipts durable; applyReceipts applies them.
func (o *Outbox) storeReceipts(ctx context.Context, rs []store.SMSReceipt) error {
	if err := o.db.AddReceipts(ctx, rs); err != nil {
		return err
	}
	o.signal(o.receiptIn)
	return nil
}

// applyReceipts applies stored receipts in batches until ctx ends.
func (o *Outbox) applyReceipts(ctx context.Context) {
	const batch = 250 // small enough not to hold locks the recorders wait for
	// The ticker catches receipts whose part was not recorded yet (they
	// come due again after a backoff) and those stored by other nodes.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		res, err := o.db.ApplyPendingReceipts(ctx, batch, o.ids.forms)
		if err != nil && ctx.Err() == nil {
			o.log.Error("sms outbox: applying delivery receipts", "err", err)
		}
		for _, u := range res.Unmatched {
			o.m.unmatched.WithLabelValues(u.Reason).Inc()
			if u.Reason == store.ReceiptAmbiguous {
				o.log.Warn("sms outbox: delivery receipt fits several messages; kept, not applied (set receipt_ids on the link)",
					"link", u.Link, "message_id", u.MessageID, "state", u.State, "fits", u.Parts)
			} else {
				o.log.Warn("sms outbox: delivery receipt for an unknown message id dropped after an hour",
					"link", u.Link, "message_id", u.MessageID, "state", u.State)
			}
		}
		// A part's receipt can be applied before the recorder that
		// committed the part has emitted its "submitted".
		o.pending.wait(res.Changes)
		o.emit(res.Changes)
		if err == nil && res.Seen == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-o.receiptIn:
			// A stored receipt is due after the grace.
			select {
			case <-ctx.Done():
				return
			case <-time.After(store.ReceiptGrace):
			}
		case <-t.C:
		}
	}
}

// groupCommit batches concurrent callers into writes: a caller that finds
// fewer than parallel writes in progress writes everything queued so far,
// while later callers queue for the next write. Under load writes grow, and
// a few run side by side so that one slow commit does not stall the rest;
// alone, nobody waits.
type groupCommit[T any] struct {
	apply    func(context.Context, []T) error
	parallel int

	mu      sync.Mutex
	queue   []T
	waiters []chan error
	busy    int
}

func (g *groupCommit[T]) do(ctx context.Context, v T) error {
	done := make(chan error, 1)
	g.mu.Lock()
	g.queue = append(g.queue, v)
	g.waiters = append(g.waiters, done)
	if g.busy >= max(g.parallel, 1) {
		g.mu.Unlock()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.busy++
	for len(g.queue) > 0 {
		batch, waiters := g.queue, g.waiters
		g.queue, g.waiters = nil, nil
		g.mu.Unlock()
		err := g.apply(context.WithoutCancel(ctx), batch)
		for _, w := range waiters {
			w <- err
		}
		g.mu.Lock()
	}
	g.busy--
	g.mu.Unlock()
	return <-done
}
