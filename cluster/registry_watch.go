package cluster

// This file holds the registry's readers: the watchers of pb_sessions and
// pb_nodes that keep this node's in-memory replica of the other nodes'
// sessions.

import (
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
