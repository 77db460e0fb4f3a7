package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay"
)

// heartbeatLoop tells the cluster this node is alive and how far it has
// read the registry. A heartbeat that fails means the others may have
// counted this node dead and stored messages for its sessions without
// waking them; once heartbeats get through again, a resync wakes them.
func (r *Router) heartbeatLoop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		_, nodes := r.buckets()
		epoch, sentAt := r.epoch.Load(), time.Now()
		b, _ := json.Marshal(nodeEntry{Instance: r.instance, Rev: r.appliedRev.Load(), At: sentAt.UTC()})
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.DeadAfter)
		_, err := nodes.Put(ctx, r.cfg.Node, b)
		cancel()
		switch {
		case err != nil && r.ctx.Err() == nil:
			if !failing {
				r.linkDown()
			}
			r.logRate.warn(r.log, "heartbeat", "cluster: heartbeat failed", "err", err)
			failing = true
		case err == nil && failing:
			failing = false
			r.triggerResync()
		case err == nil:
			if r.nc.IsConnected() && !r.resyncPending() {
				r.linkUp()
			}
			r.confirmWakes(sentAt, epoch)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resyncLoop recovers from a NATS reconnect: the buckets are reopened
// (JetStream may have restarted), the watchers rebuild the replica, and
// every local session is checked against the registry and re-published.
func (r *Router) resyncLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.resync:
		}
		req := r.resyncReq.Load()
		backoff := 100 * time.Millisecond
		for {
			err := r.openBuckets(r.ctx)
			if err == nil {
				break
			}
			if r.ctx.Err() != nil {
				return
			}
			r.logRate.warn(r.log, "reopen", "cluster: reopening KV buckets after reconnect", "err", err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
		sess0, nodes0 := r.sessSynced.Load(), r.nodesSynced.Load()
		r.restartWatchers()
		r.lmu.Lock()
		for k := range r.locals {
			r.dirty[k] = opVerify
		}
		for k := range r.tombs {
			if _, ok := r.dirty[k]; !ok {
				r.dirty[k] = opWrite
			}
		}
		n := len(r.locals)
		r.lmu.Unlock()
		r.kickPublisher()
		r.log.Info("cluster: resynchronising registry", "local_sessions", n)
		// Once the replica shows the cluster as it is now, wake again
		// whom this node's wake-ups may have missed.
		for r.sessSynced.Load() == sess0 || r.nodesSynced.Load() == nodes0 {
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		r.rewake()
		r.resyncFin.Store(req)
	}
}

// janitorLoop times out remote offers, wakes sessions whose registration
// every node has seen, and deletes the entries of nodes gone for
// PurgeAfter.
func (r *Router) janitorLoop() {
	defer r.wg.Done()
	tick := max(min(r.cfg.HeartbeatInterval/2, r.cfg.DeliverTimeout/4), 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastPurge, lastRefresh := time.Now(), time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.expireOffers(now)
			r.wakeRegistered(now)
			if now.Sub(lastPurge) > r.cfg.HeartbeatInterval {
				r.purgeDead(now)
				lastPurge = now
			}
			if now.Sub(lastRefresh) > r.cfg.EntryTTL/3 {
				r.refreshAll()
				lastRefresh = now
			}
		}
	}
}

func (r *Router) expireOffers(now time.Time) {
	var late []*offer
	r.omu.Lock()
	for id, o := range r.offers {
		if now.After(o.deadline) {
			late = append(late, o)
			delete(r.offers, id)
		}
	}
	r.omu.Unlock()
	for _, o := range late {
		r.metrics.offers[offerTimeout].Inc()
		o.done(false)
	}
}

// wakeRegistered closes the race between a login and a message stored on
// another node: the session drained the offline store when it attached,
// but a node that had not yet seen the registration may have stored a
// message afterwards and, finding nobody online, woken nobody. Once every
// live node reports having read our entry's revision, any message stored
// later is followed by a Wake through it, so one more drain now catches
// what fell in between. Dead or silent nodes are not waited for beyond
// DeadAfter.
func (r *Router) wakeRegistered(now time.Time) {
	r.lmu.Lock()
	if len(r.wakes) == 0 {
		r.lmu.Unlock()
		return
	}
	r.lmu.Unlock()
	minRev := ^uint64(0)
	r.mu.RLock()
	for id, ns := range r.nodes {
		if id != r.cfg.Node && now.Sub(ns.lastSeen) < r.cfg.DeadAfter && ns.rev < minRev {
			minRev = ns.rev
		}
	}
	r.mu.RUnlock()
	const maxPerTick = 2000 // spread the offline-store queries of a mass resync
	type wakeUp struct {
		ep           relay.Endpoint
		resync, lost bool
	}
	var wake []wakeUp
	r.lmu.Lock()
	keep := r.wakes[:0]
	for _, w := range r.wakes {
		if len(wake) < maxPerTick && (w.rev <= minRev || now.Sub(w.since) > r.cfg.DeadAfter) {
			if le := r.locals[w.key]; le != nil && le.info.SessionID == w.sessionID {
				wake = append(wake, wakeUp{le.ep, w.resync, w.lost})
			}
			continue
		}
		keep = append(keep, w)
	}
	clear(r.wakes[len(keep):])
	r.wakes = keep
	r.lmu.Unlock()
	var resynced func(relay.Endpoint, bool)
	if fn := r.resynced.Load(); fn != nil {
		resynced = *fn
	}
	for _, w := range wake {
		w.ep.Wake()
		if w.resync {
			r.metrics.resynced.Inc()
			if resynced != nil {
				resynced(w.ep, w.lost)
			}
		}
	}
}

type purgeItem struct {
	key    string
	rev    uint64
	number phonebook.MSISDN
}

func (r *Router) purgeDead(now time.Time) {
	var gone []purgeItem
	r.mu.Lock()
	// A node cut off from NATS, or whose copy of the node table is behind
	// (it has not seen its own latest heartbeats), or that is rebuilding
	// its replica after an outage, sees the others fall silent when they
	// are not: it purges nobody (nor marks their users offline) until its
	// view is current again, and by then they are alive in it.
	blind := !r.aliveLocked(r.cfg.Node, r.instance, now) || r.resyncPending()
	for k, re := range r.remote {
		if r.aliveLocked(re.info.Node, re.instance, now) {
			re.deadSince = time.Time{}
			continue
		}
		if re.deadSince.IsZero() {
			re.deadSince = now
		} else if now.Sub(re.deadSince) > r.cfg.PurgeAfter && !blind {
			gone = append(gone, purgeItem{k, re.rev, re.info.Number})
		}
	}
	r.mu.Unlock()
	if len(gone) == 0 || !r.nc.IsConnected() {
		return
	}
	sess, _ := r.buckets()
	for _, g := range gone {
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		err := sess.Delete(ctx, g.key, jetstream.LastRevision(g.rev))
		if err != nil {
			if _, gerr := sess.Get(ctx, g.key); errors.Is(gerr, jetstream.ErrKeyNotFound) {
				// It aged out of the bucket (EntryTTL) before anyone
				// deleted it, so no delete will reach the replica.
				r.removeRemote(g.key, g.rev)
				err = nil
			}
		}
		if err == nil {
			r.metrics.purged.Inc()
			// The dead node cannot mark its users offline; this node does,
			// unless the user is connected elsewhere by now. (Usually one
			// survivor's delete wins; after an age-out each may report.)
			r.reportGone(ctx, g.number)
		}
		cancel()
	}
	r.log.Info("cluster: removed registry entries of dead nodes", "count", len(gone))
}
