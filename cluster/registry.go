package cluster

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

var errRestart = errors.New("cluster: watcher restart")

func (r *Router) restartChan() chan struct{} {
	r.restartMu.Lock()
	defer r.restartMu.Unlock()
	if r.restartCh == nil {
		r.restartCh = make(chan struct{})
	}
	return r.restartCh
}

func (r *Router) restartWatchers() {
	r.restartMu.Lock()
	defer r.restartMu.Unlock()
	if r.restartCh != nil {
		close(r.restartCh)
	}
	r.restartCh = make(chan struct{})
}

// watchLoop runs a KV watcher until the router closes, starting it again
// when it ends or a resync asks for it.
func (r *Router) watchLoop(watch func(ready func()) error, ready chan struct{}) {
	defer r.wg.Done()
	var once sync.Once
	markReady := func() { once.Do(func() { close(ready) }) }
	backoff := 50 * time.Millisecond
	for r.ctx.Err() == nil {
		err := watch(markReady)
		if r.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRestart) {
			backoff = 50 * time.Millisecond
			continue
		}
		r.logRate.warn(r.log, "watcher", "cluster: KV watcher ended; restarting", "err", err)
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// watchSessions mirrors pb_sessions into the replica. The first pass
// delivers every current entry; entries the replica held that were not in
// it are dropped when it ends.
func (r *Router) watchSessions(ready func()) error {
	restart := r.restartChan()
	sess, _ := r.buckets()
	w, err := sess.WatchAll(r.ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	// Count again from the start: a NATS that lost its store numbers
	// revisions from 1, and an old high mark would let sessions be woken
	// before the other nodes have read their new entries.
	r.appliedRev.Store(0)
	seen := make(map[string]bool)
	for {
		select {
		case <-r.ctx.Done():
			return nil
		case <-restart:
			return errRestart
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("sessions watcher closed")
			}
			if e == nil {
				if seen != nil {
					r.pruneRemote(seen)
					seen = nil
					r.sessSynced.Add(1)
					ready()
				}
				continue
			}
			if seen != nil {
				seen[e.Key()] = true
			}
			r.applySession(e)
		}
	}
}

func (r *Router) watchNodes(ready func()) error {
	restart := r.restartChan()
	_, nodes := r.buckets()
	w, err := nodes.WatchAll(r.ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	initial := true
	for {
		select {
		case <-r.ctx.Done():
			return nil
		case <-restart:
			return errRestart
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("nodes watcher closed")
			}
			if e == nil {
				if initial {
					r.nodesSynced.Add(1)
				}
				initial = false
				ready()
				continue
			}
			r.applyNode(e, initial)
		}
	}
}

func (r *Router) applyNode(e jetstream.KeyValueEntry, initial bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.nodes, e.Key())
		return
	}
	var ne nodeEntry
	if err := json.Unmarshal(e.Value(), &ne); err != nil {
		r.log.Warn("cluster: bad node heartbeat", "node", e.Key(), "err", err)
		return
	}
	if e.Key() == r.cfg.Node && ne.Instance != r.instance {
		if !initial {
			// Not a predecessor's last heartbeat: another live process
			// uses this node id, and the two will steal each other's
			// deliveries.
			r.metrics.idConflicts.Inc()
			r.log.Error("cluster: another process is running with this node id; give every node a unique id", "other_instance", ne.Instance)
		}
		return
	}
	seen := time.Now()
	if initial && e.Created().Before(seen) {
		// An old heartbeat must not make a dead node look alive.
		seen = e.Created()
	}
	r.nodes[e.Key()] = &nodeState{instance: ne.Instance, rev: ne.Rev, lastSeen: seen}
}

func (r *Router) applySession(e jetstream.KeyValueEntry) {
	k, rev := e.Key(), e.Revision()
	for {
		cur := r.appliedRev.Load()
		if rev <= cur || r.appliedRev.CompareAndSwap(cur, rev) {
			break
		}
	}
	if e.Operation() != jetstream.KeyValuePut {
		r.removeRemote(k, 0)
		r.lostOwn(k)
		return
	}
	var ent registryEntry
	if err := json.Unmarshal(e.Value(), &ent); err != nil {
		r.log.Warn("cluster: bad registry entry", "key", k, "err", err)
		return
	}
	if ent.Node == r.cfg.Node {
		r.removeRemote(k, 0)
		if ent.Instance != r.instance {
			// Left by this node's previous process: its sessions are gone.
			r.lmu.Lock()
			if r.locals[k] == nil {
				r.tombs[k] = tomb{sessionID: ent.SessionID, rev: rev, orphan: true, number: ent.Number}
				r.dirty[k] = opWrite
			}
			r.lmu.Unlock()
			r.kickPublisher()
		}
		return
	}
	r.setRemote(k, &ent, rev)
	// One live session per device: a later registration of our
	// (number, device) elsewhere closes ours. One whose put has not landed
	// yet is the newer and stays; the other node closes its own.
	var victim relay.Endpoint
	r.lmu.Lock()
	if le := r.locals[k]; le != nil && le.info.SessionID != ent.SessionID && le.rev != 0 && le.rev < rev {
		victim = le.ep
	}
	r.lmu.Unlock()
	if victim != nil {
		r.metrics.takeovers.Inc()
		victim.Close(phonebook.Errorf(phonebook.ESessionReplaced, "a newer login of %s on this device took over on node %s", ent.Number, ent.Node))
	}
}

// lostOwn handles the deletion of key k from the registry: if it names a
// live local session, another node purged it (it counted this node dead),
// so the entry is written again and the user's presence re-asserted.
func (r *Router) lostOwn(k string) {
	r.lmu.Lock()
	le := r.locals[k]
	if le != nil && le.rev != 0 {
		le.rev, le.lost = 0, true
		r.dirty[k] = opVerify
	}
	r.lmu.Unlock()
	if le != nil {
		r.kickPublisher()
	}
}

func (r *Router) setRemote(k string, ent *registryEntry, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.remote[k]; old != nil {
		if old.info.SessionID == ent.SessionID && old.instance == ent.Instance && old.info.Node == ent.Node {
			old.rev = rev
			return
		}
		r.unindexLocked(old)
	}
	re := r.newRemote(k, ent, rev)
	r.remote[k] = re
	r.byNumber[ent.Number] = append(r.byNumber[ent.Number], re)
}

// removeRemote drops the replica's entry k; with rev > 0 only if it is
// still that revision.
func (r *Router) removeRemote(k string, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.remote[k]; old != nil && (rev == 0 || old.rev == rev) {
		r.unindexLocked(old)
		delete(r.remote, k)
	}
}

func (r *Router) unindexLocked(re *remoteEndpoint) {
	n := re.info.Number
	list := r.byNumber[n]
	for i, x := range list {
		if x == re {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(r.byNumber, n)
	} else {
		r.byNumber[n] = list
	}
}

func (r *Router) pruneRemote(seen map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, re := range r.remote {
		if !seen[k] {
			r.unindexLocked(re)
			delete(r.remote, k)
		}
	}
}

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
