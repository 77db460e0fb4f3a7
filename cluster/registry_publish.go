package cluster

// This file holds the registry's writer: the publisher that puts, verifies,
// refreshes and deletes this node's own entries in pb_sessions.

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay"
)

func (r *Router) kickPublisher() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Router) publisherBusy() bool {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	return len(r.dirty) > 0 || r.publishing
}

// publishLoop makes the registry say what this node's local table says.
// Registry writes are asynchronous so that a login never waits for NATS,
// and a NATS outage only delays them: keys that fail stay dirty and are
// retried every second and after a reconnect.
func (r *Router) publishLoop() {
	defer r.wg.Done()
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	const workers = 16
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		case <-retry.C:
		}
		r.lmu.Lock()
		batch := r.dirty
		if len(batch) == 0 {
			r.lmu.Unlock()
			continue
		}
		r.dirty = make(map[string]pubOp)
		r.publishing = true
		r.lmu.Unlock()

		sem := make(chan struct{}, workers)
		var wg sync.WaitGroup
		for k, op := range batch {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := r.reconcile(k, op); err != nil {
					r.metrics.registryErrors.Inc()
					if r.ctx.Err() == nil {
						r.log.Debug("cluster: registry write failed; will retry", "key", k, "err", err)
					}
					r.lmu.Lock()
					if _, again := r.dirty[k]; !again {
						r.dirty[k] = op
					}
					r.lmu.Unlock()
				}
			}()
		}
		wg.Wait()
		r.lmu.Lock()
		r.publishing = false
		more := len(r.dirty) > 0
		r.lmu.Unlock()
		if more {
			r.kickPublisher()
		}
	}
}

func (r *Router) entryOf(info relay.ConnInfo) []byte {
	b, _ := json.Marshal(registryEntry{
		Number: info.Number, DeviceID: info.DeviceID, SessionID: info.SessionID, Node: r.cfg.Node, Instance: r.instance,
		Transport: info.Transport, RemoteAddr: info.RemoteAddr, ConnectedAt: info.ConnectedAt, ClientVersion: info.ClientVersion,
	})
	return b
}

// pubOp is what the publisher does with a dirty key.
type pubOp uint8

const (
	opWrite   pubOp = iota // after Attach or Detach: put our entry, or delete it
	opVerify               // after a reconnect: read first, the newer registration wins
	opRefresh              // before EntryTTL: rewrite our entry if it is still ours
)

// reconcile writes key k's registry entry, or deletes it. opVerify (after
// a reconnect) first reads the entry: a session registered there since
// ours by another node is the newer, and ours is closed instead.
func (r *Router) reconcile(k string, op pubOp) error {
	r.lmu.Lock()
	le := r.locals[k]
	var ep relay.Endpoint
	var info relay.ConnInfo
	var knownRev uint64
	if le != nil {
		ep, info, knownRev = le.ep, le.info, le.rev
	}
	tb, hasTomb := r.tombs[k]
	r.lmu.Unlock()
	sess, _ := r.buckets()
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()

	if ep != nil {
		val := r.entryOf(info)
		switch {
		case op == opWrite:
			rev, err := sess.Put(ctx, k, val)
			if err != nil {
				return err
			}
			r.published(k, ep, info.SessionID, rev, true, false)
			return nil
		case op == opRefresh && knownRev != 0:
			rev, err := sess.Update(ctx, k, val, knownRev)
			if err == nil {
				r.published(k, ep, info.SessionID, rev, false, false)
				return nil
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
				return err
			}
			// Changed under us: decide as after a reconnect.
		}
		cur, err := sess.Get(ctx, k)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if rev, err = sess.Create(ctx, k, val); err != nil {
				return err
			}
			if knownRev != 0 || op == opVerify {
				// Ours was there and is gone: purged by a node that
				// counted this one dead, or aged out.
				r.markLost(k, ep)
			}
		case err != nil:
			return err
		default:
			var ent registryEntry
			if json.Unmarshal(cur.Value(), &ent) == nil {
				if ent.SessionID == info.SessionID && ent.Instance == r.instance {
					r.published(k, ep, info.SessionID, cur.Revision(), op == opVerify, op == opVerify)
					return nil
				}
				theirsNewer := ent.Node != r.cfg.Node &&
					((knownRev != 0 && cur.Revision() > knownRev) || (knownRev == 0 && ent.ConnectedAt.After(info.ConnectedAt)))
				if theirsNewer {
					r.metrics.takeovers.Inc()
					ep.Close(phonebook.Errorf(phonebook.ESessionReplaced, "a newer login of %s on this device took over on node %s", ent.Number, ent.Node))
					return nil
				}
			}
			if rev, err = sess.Update(ctx, k, val, cur.Revision()); err != nil {
				return err
			}
		}
		r.published(k, ep, info.SessionID, rev, true, op == opVerify)
		return nil
	}
	if !hasTomb {
		return nil
	}
	rev := tb.rev
	if rev == 0 {
		cur, err := sess.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			r.buryTomb(k, tb)
			return nil
		}
		if err != nil {
			return err
		}
		var ent registryEntry
		if json.Unmarshal(cur.Value(), &ent) == nil && (ent.SessionID != tb.sessionID || ent.Node != r.cfg.Node) {
			r.buryTomb(k, tb) // someone else's now
			return nil
		}
		rev = cur.Revision()
	}
	// Only if it is still ours: a newer registration must survive.
	err := sess.Delete(ctx, k, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	r.buryTomb(k, tb)
	if err == nil && tb.orphan {
		r.reportGone(ctx, tb.number)
	}
	return nil
}

// reportGone calls OnGone's function for number unless it is connected
// somewhere.
func (r *Router) reportGone(ctx context.Context, number phonebook.MSISDN) {
	r.goneMu.Lock()
	fn := r.gone
	if fn == nil {
		if len(r.goneWaiting) < 1<<20 {
			r.goneWaiting = append(r.goneWaiting, number)
		}
		r.goneMu.Unlock()
		return
	}
	r.goneMu.Unlock()
	if r.Locate(number) == nil {
		fn(ctx, number)
	}
}

func (r *Router) buryTomb(k string, tb tomb) {
	r.lmu.Lock()
	if cur, ok := r.tombs[k]; ok && cur == tb {
		delete(r.tombs, k)
	}
	r.lmu.Unlock()
}

// published records the revision of our entry and, with wake, schedules
// the session's wake-up for when every node has read it (see
// wakeRegistered); resync marks a re-publication after a NATS outage.
func (r *Router) published(k string, ep relay.Endpoint, sessionID string, rev uint64, wake, resync bool) {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	if le := r.locals[k]; le != nil && le.ep == ep {
		le.rev = rev
		if wake {
			resync = resync || le.lost
			r.wakes = append(r.wakes, pendingWake{key: k, sessionID: sessionID, rev: rev, since: time.Now(), resync: resync, lost: le.lost})
			le.lost = false
		}
	}
}

func (r *Router) markLost(k string, ep relay.Endpoint) {
	r.lmu.Lock()
	if le := r.locals[k]; le != nil && le.ep == ep {
		le.lost = true
	}
	r.lmu.Unlock()
}

// refreshAll rewrites this node's entries before EntryTTL ages them out.
func (r *Router) refreshAll() {
	r.lmu.Lock()
	for k := range r.locals {
		if _, ok := r.dirty[k]; !ok {
			r.dirty[k] = opRefresh
		}
	}
	r.lmu.Unlock()
	r.kickPublisher()
}
