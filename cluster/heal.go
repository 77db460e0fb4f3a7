package cluster

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay"
)

// How a node heals after losing NATS (a partition, a NATS restart):
//
//   - Messages this node stored meanwhile for users on other nodes: their
//     wake-up went nowhere (NATS down) or was never sent (the other nodes
//     looked dead). WakeStored remembers each such recipient until a
//     heartbeat that left after the wake-up is acknowledged, which proves
//     NATS had the wake-up; what is still unconfirmed when the node
//     resyncs is woken again through the rebuilt replica.
//   - Messages other nodes stored for this node's users: the resync wakes
//     every local session once the other nodes have read its entries.
//   - Presence: the others may have purged this node's entries and marked
//     its users offline. An entry found missing is written again and
//     OnResync is told with lost set, so that the user is recorded online
//     again; every resynced session is reported to OnResync, which sends it
//     a fresh presence list (pushes to it were lost).

var _ relay.StoredWaker = (*Router)(nil)

// WakeStored implements relay.StoredWaker: it wakes the newest session of
// n, wherever it is, after a message for n was stored. A wake-up through
// NATS is remembered until confirmed (see above).
func (r *Router) WakeStored(n phonebook.MSISDN) {
	ep := r.Locate(n)
	if ep != nil {
		ep.Wake()
		if _, remote := ep.(*remoteEndpoint); !remote {
			return // in-process: nothing to lose
		}
	}
	now := time.Now()
	r.wmu.Lock()
	if _, ok := r.unconfirmed[n]; ok || len(r.unconfirmed) < maxUnconfirmed {
		r.unconfirmed[n] = wakeNote{at: now, epoch: r.epoch.Load()}
	} else {
		r.wakeOverflow = true
	}
	r.wmu.Unlock()
}

// confirmWakes forgets the wake-ups sent before a heartbeat that NATS
// acknowledged, sent at sentAt in epoch (and no outage since).
func (r *Router) confirmWakes(sentAt time.Time, epoch uint64) {
	if r.epoch.Load() != epoch || r.resyncPending() {
		return
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for n, w := range r.unconfirmed {
		if w.epoch == epoch && w.at.Before(sentAt) {
			delete(r.unconfirmed, n)
		}
	}
}

// rewake wakes again every recipient whose wake-up was not confirmed;
// called by a resync once the replica is rebuilt.
func (r *Router) rewake() {
	r.wmu.Lock()
	pending := r.unconfirmed
	overflow := r.wakeOverflow
	r.unconfirmed = make(map[phonebook.MSISDN]wakeNote, len(pending))
	r.wakeOverflow = false
	r.wmu.Unlock()
	for n := range pending {
		r.WakeStored(n)
	}
	r.metrics.rewakes.Add(float64(len(pending)))
	if overflow {
		// Too many to remember: every node looks in the offline store for
		// all of its sessions.
		if r.nc.Publish(r.subjWakeAll, nil) != nil {
			r.wmu.Lock()
			r.wakeOverflow = true
			r.wmu.Unlock()
		}
	}
	if len(pending) > 0 || overflow {
		r.log.Info("cluster: woke again the recipients of messages stored during the outage", "recipients", len(pending), "all_nodes", overflow)
	}
}

// handleWakeAll wakes every local session (spread over the janitor's
// ticks).
func (r *Router) handleWakeAll(*nats.Msg) {
	r.lmu.Lock()
	for k, le := range r.locals {
		r.wakes = append(r.wakes, pendingWake{key: k, sessionID: le.info.SessionID})
	}
	r.lmu.Unlock()
}

func (r *Router) resyncPending() bool { return r.resyncFin.Load() < r.resyncReq.Load() }

// linkDown records the start of an outage: a disconnect, or a heartbeat
// NATS did not acknowledge.
func (r *Router) linkDown() {
	r.epoch.Add(1)
	r.outMu.Lock()
	if r.outageSince.IsZero() {
		r.outageSince = time.Now()
	}
	r.outMu.Unlock()
}

func (r *Router) linkUp() {
	r.outMu.Lock()
	r.outageSince = time.Time{}
	r.outMu.Unlock()
}

// Outage reports how long this node has been cut off from the cluster: NATS
// disconnected, or heartbeats not acknowledged. Zero when it is healthy.
// Readiness checks use it (cluster.ready_grace).
func (r *Router) Outage() time.Duration {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	if r.outageSince.IsZero() {
		return 0
	}
	return time.Since(r.outageSince)
}

// OnResync sets a function called, after this node re-joined the cluster
// following a NATS outage, for each of its sessions once every live node
// has read the session's re-published entry. lost says the registry had
// dropped the entry meanwhile (purged by another node, or aged out), so the
// user may have been marked offline: the caller records them online again.
// It runs on the router's janitor goroutine and must not block.
func (r *Router) OnResync(fn func(ep relay.Endpoint, lost bool)) {
	r.resynced.Store(&fn)
}
