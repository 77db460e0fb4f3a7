// Package cluster lets several `phonebook serve` nodes act as one relay
// (patent §4, fig. 6: "clients may be connected to different servers;
// forwarding follows the connection information"). The nodes share one SQL
// store and one NATS server (or NATS cluster) with JetStream.
//
// Router implements relay.Router. Each node keeps its own sessions in the
// relay's in-process LocalRouter and publishes one registry entry per
// (number, device) to the JetStream KV bucket pb_sessions. Every node
// watches the whole bucket and keeps a replica in memory, so Locate is a
// map lookup and never a network round trip. An entry found on another
// node becomes a remote endpoint: Offer is a NATS request to
// pb.node.<node>.deliver, answered only after that node's client sent
// DeliverAck; no responder, a timeout or any error counts as "not
// delivered", and the relay then stores the message. So a dead or
// unreachable node can delay a message, never swallow one.
//
// Nodes heartbeat into the KV bucket pb_nodes with their process instance
// and how far they have read pb_sessions. An entry whose node has not
// heartbeated for DeadAfter, or whose instance is not the node's current
// one (the node restarted), counts as offline. After a NATS reconnect a node
// rebuilds its replica, re-asserts its own entries (the newer login wins)
// and has its sessions look in the offline store again.
//
// Wiring a node (the relay's NodeID should be the cluster node id):
//
//	router, err := cluster.New(ctx, cluster.Config{URL: natsURL, Node: node}, log, reg)
//	srv, err := relay.NewServer(relay.Config{NodeID: node, ...}, relay.Deps{Router: router, ...})
//	...
//	srv.Shutdown(ctx)  // first: sessions close and their entries are removed
//	router.Close(ctx)  // then leave the cluster
//
// docs/operations.md describes the subjects, buckets and failure modes.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay"
)

// Router is the cluster-wide relay.Router. Its locks (lmu, mu, omu, kvMu)
// are never held together, nor while calling into an endpoint (Offer,
// Push, Close) or NATS.
type Router struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	local    *relay.LocalRouter
	instance string // random per process: tells a restarted node's entries from its old ones

	nc *nats.Conn
	js jetstream.JetStream

	kvMu   sync.Mutex // guards sessKV, nodeKV: they are reopened after a reconnect
	sessKV jetstream.KeyValue
	nodeKV jetstream.KeyValue

	subjDeliver, subjPush, subjWake, subjClose string
	subjWakeAll, replyPrefix                   string

	// This node's sessions and what the registry should say about them.
	lmu        sync.Mutex
	locals     map[string]*localEntry // by session key
	tombs      map[string]tomb        // detached, registry entry to delete
	dirty      map[string]pubOp       // keys the publisher must reconcile, and how
	wakes      []pendingWake          // sessions to wake once every node has seen their entry
	kick       chan struct{}
	publishing bool

	// The replica of other nodes' entries and the node table.
	mu         sync.RWMutex
	remote     map[string]*remoteEndpoint
	byNumber   map[phonebook.MSISDN][]*remoteEndpoint
	nodes      map[string]*nodeState
	appliedRev atomic.Uint64 // highest pb_sessions revision applied to the replica

	// In-flight remote offers, answered on replyPrefix.<id>.
	omu      sync.Mutex
	offers   map[uint64]*offer
	offerSeq atomic.Uint64

	resync    chan struct{}
	resyncReq atomic.Uint64 // resyncs asked for
	resyncFin atomic.Uint64 // the last request a finished resync covered
	// Initial passes the watchers completed: a resync waits for both to
	// move before it trusts the replica again.
	sessSynced, nodesSynced atomic.Uint64
	restartMu               sync.Mutex
	restartCh               chan struct{} // closed (and replaced) to make the KV watchers rebuild the replica
	ctx                     context.Context
	cancel                  context.CancelFunc
	wg                      sync.WaitGroup
	subs                    []*nats.Subscription
	closed                  atomic.Bool

	goneMu      sync.Mutex
	gone        func(context.Context, phonebook.MSISDN) // OnGone
	goneWaiting []phonebook.MSISDN                      // reported before OnGone was set

	resynced atomic.Pointer[func(ep relay.Endpoint, lost bool)] // OnResync

	// The link to NATS: epoch moves on every disconnect and failed
	// heartbeat; outageSince is when the current outage began (zero: none).
	epoch       atomic.Uint64
	outMu       sync.Mutex
	outageSince time.Time

	// Recipients of messages stored here whose wake-up is not known to
	// have reached their node (see WakeStored).
	wmu          sync.Mutex
	unconfirmed  map[phonebook.MSISDN]wakeNote
	wakeOverflow bool

	logRate *logLimiter
}

type wakeNote struct {
	at    time.Time
	epoch uint64
}

// maxUnconfirmed bounds the recipients remembered for a re-wake; past it a
// resync asks every node to wake all of its sessions instead.
const maxUnconfirmed = 100000

// OnGone sets a function called when a crashed node's session is removed
// from the registry and its number has no session anywhere else: a user
// who was online there, and whom nobody marked offline, because the node
// died. Either the crashed node's next process removes it (at its start),
// or a survivor does, PurgeAfter after the node stopped heartbeating: the
// one whose delete wins, or, when the entry aged out of the bucket first,
// every survivor. The caller marks the user offline (the relay would
// have, at the node's logout), which must be idempotent, and should check
// Locate again, as the user may reconnect at any time.
//
// Users found gone before OnGone is called (at start, before the relay is
// up) are reported to fn when it is set.
func (r *Router) OnGone(fn func(ctx context.Context, number phonebook.MSISDN)) {
	r.goneMu.Lock()
	r.gone = fn
	waiting := r.goneWaiting
	r.goneWaiting = nil
	r.goneMu.Unlock()
	for _, n := range waiting {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		r.reportGone(ctx, n)
		cancel()
	}
}

type localEntry struct {
	ep   relay.Endpoint
	info relay.ConnInfo
	rev  uint64 // registry revision of our put; 0 until it succeeded
	// lost: the registry dropped our entry (another node purged it, or it
	// aged out), so other nodes may have marked the user offline.
	lost bool
}

type tomb struct {
	sessionID string
	rev       uint64
	// orphan: left by this node's previous process, which cannot have
	// marked the user offline; number is whose it was.
	orphan bool
	number phonebook.MSISDN
}

type pendingWake struct {
	key       string
	sessionID string
	rev       uint64
	since     time.Time
	resync    bool // re-published after a NATS outage: OnResync too
	lost      bool
}

type nodeState struct {
	instance string
	rev      uint64 // how far it has read pb_sessions
	lastSeen time.Time
}

type offer struct {
	done     func(bool)
	deadline time.Time
	start    time.Time
}

// registryEntry is a pb_sessions value (JSON, so operators can read it with
// `nats kv get pb_sessions <key>`).
type registryEntry struct {
	Number        phonebook.MSISDN `json:"number"`
	DeviceID      string           `json:"device_id"`
	SessionID     string           `json:"session_id"`
	Node          string           `json:"node"`
	Instance      string           `json:"instance"`
	Transport     string           `json:"transport,omitempty"`
	RemoteAddr    string           `json:"remote_addr,omitempty"`
	ConnectedAt   time.Time        `json:"connected_at"`
	ClientVersion string           `json:"client_version,omitempty"`
}

// nodeEntry is a pb_nodes value.
type nodeEntry struct {
	Instance string    `json:"instance"`
	Rev      uint64    `json:"rev"`
	At       time.Time `json:"at"`
}

var _ relay.Router = (*Router)(nil)

// New connects to NATS, creates the KV buckets if needed, loads the
// registry and starts heartbeating. It fails when NATS cannot be reached:
// a node that cannot see the others must not serve as if it were alone.
// Close it after the relay server has shut down.
func New(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Router, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	r := &Router{
		cfg:      cfg,
		log:      log.With("node", cfg.Node),
		local:    relay.NewLocalRouter(),
		instance: hex.EncodeToString(rnd[:]),
		locals:   make(map[string]*localEntry),
		tombs:    make(map[string]tomb),
		dirty:    make(map[string]pubOp),
		kick:     make(chan struct{}, 1),
		remote:   make(map[string]*remoteEndpoint),
		byNumber: make(map[phonebook.MSISDN][]*remoteEndpoint),
		nodes:    make(map[string]*nodeState),
		offers:   make(map[uint64]*offer),
		resync:   make(chan struct{}, 1),

		unconfirmed: make(map[phonebook.MSISDN]wakeNote),
		logRate:     newLogLimiter(time.Minute),
	}
	r.metrics = newMetrics(reg, r)
	base := cfg.SubjectPrefix + ".node." + cfg.Node + "."
	r.subjDeliver, r.subjPush, r.subjWake, r.subjClose = base+"deliver", base+"push", base+"wake", base+"close"
	r.replyPrefix = cfg.SubjectPrefix + ".reply." + cfg.Node + "." + r.instance + "."
	r.subjWakeAll = cfg.SubjectPrefix + ".wakeall"

	opts := []nats.Option{
		nats.Name("phonebook " + cfg.Node),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		// Fail publishes while disconnected instead of buffering them: a
		// buffered Deliver would reach the client after its sender was
		// told STORED, and the publisher retries registry writes itself.
		nats.ReconnectBufSize(-1),
		// A link that goes silent (no reset, no close) is dropped, and
		// another server tried, after three unanswered pings: not after
		// the client's default 4 minutes, nor so soon that a busy node
		// flaps. (The outage itself counts from the first heartbeat NATS
		// does not acknowledge.)
		nats.PingInterval(max(cfg.DeadAfter, 2*time.Second)),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // closed by us
			}
			r.metrics.disconnects.Inc()
			r.linkDown()
			r.logRate.warn(r.log, "disconnected", "cluster: NATS disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			r.metrics.reconnects.Inc()
			r.epoch.Add(1)
			r.log.Info("cluster: NATS reconnected", "url", nc.ConnectedUrlRedacted())
			r.triggerResync()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			r.logRate.warn(r.log, "error "+err.Error(), "cluster: NATS error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, cfg.NATSOptions...)
	if err := r.connect(ctx, opts); err != nil {
		return nil, err
	}
	nc := r.nc
	for subj, h := range map[string]nats.MsgHandler{
		r.subjDeliver: r.handleDeliver, r.subjPush: r.handlePush, r.subjWake: r.handleWake,
		r.subjClose: r.handleClose, r.replyPrefix + "*": r.handleReply, r.subjWakeAll: r.handleWakeAll,
	} {
		sub, err := nc.Subscribe(subj, h)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("cluster: subscribe %s: %w", subj, err)
		}
		// A node under load must queue, not drop, requests and replies:
		// a dropped reply would turn a delivered message into a stored
		// duplicate.
		sub.SetPendingLimits(-1, 256<<20)
		r.subs = append(r.subs, sub)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	// Load the registry before serving, so the first Locate knows the
	// cluster.
	sessReady, nodesReady := make(chan struct{}), make(chan struct{})
	r.wg.Add(6)
	go r.watchLoop(r.watchSessions, sessReady)
	go r.resyncLoop()
	go r.watchLoop(r.watchNodes, nodesReady)
	go r.publishLoop()
	go r.heartbeatLoop()
	go r.janitorLoop()
	for _, ch := range []chan struct{}{sessReady, nodesReady} {
		select {
		case <-ch:
		case <-ctx.Done():
			r.Close(context.Background())
			return nil, fmt.Errorf("cluster: loading the registry: %w", ctx.Err())
		}
	}
	r.log.Info("cluster: joined", "url", nc.ConnectedUrlRedacted(), "instance", r.instance,
		"nodes", len(r.aliveNodes()), "remote_sessions", r.remoteCount())
	return r, nil
}

// URL returns the configured NATS URL(s), passwords and tokens hidden.
func (r *Router) URL() string { return redactURL(r.cfg.URL) }

// Node returns this node's id.
func (r *Router) Node() string { return r.cfg.Node }

// Close leaves the cluster: it removes this node's registry entries that
// the relay's shutdown detached, deletes its heartbeat so the others stop
// routing to it at once, and closes the NATS connection. Call it after
// relay.Server.Shutdown.
func (r *Router) Close(ctx context.Context) error {
	if r.closed.Swap(true) {
		return nil
	}
	// Let the publisher remove the entries of sessions closed by the
	// relay's shutdown.
	for r.nc.IsConnected() && r.publisherBusy() {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
			continue
		}
		break
	}
	if _, nodes := r.buckets(); nodes != nil && r.nc.IsConnected() {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		nodes.Delete(dctx, r.cfg.Node)
		cancel()
	}
	r.cancel()
	r.wg.Wait()
	for _, s := range r.subs {
		s.Unsubscribe()
	}
	r.failOffers()
	err := r.nc.Drain()
	// Drain is asynchronous; wait for it within ctx.
	for !r.nc.IsClosed() {
		select {
		case <-ctx.Done():
			r.nc.Close()
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return err
}

// Kill drops the NATS connection without draining or deregistering, as a
// crash would (tests and failure drills).
func (r *Router) Kill() {
	if r.closed.Swap(true) {
		return
	}
	r.cancel()
	r.nc.Close()
	r.wg.Wait()
	r.failOffers()
}

func (r *Router) failOffers() {
	r.omu.Lock()
	offers := r.offers
	r.offers = make(map[uint64]*offer)
	r.omu.Unlock()
	for _, o := range offers {
		o.done(false)
	}
}

// Attach implements relay.Router: the session joins the local table at
// once and the registry shortly after.
func (r *Router) Attach(ep relay.Endpoint) relay.Endpoint {
	old := r.local.Attach(ep)
	info := ep.Info()
	k := sessionKey(info.Number, info.DeviceID)
	r.lmu.Lock()
	r.locals[k] = &localEntry{ep: ep, info: info}
	delete(r.tombs, k)
	r.dirty[k] = opWrite
	r.lmu.Unlock()
	r.kickPublisher()
	return old
}

// Detach implements relay.Router.
func (r *Router) Detach(ep relay.Endpoint) {
	r.local.Detach(ep)
	info := ep.Info()
	k := sessionKey(info.Number, info.DeviceID)
	r.lmu.Lock()
	if le := r.locals[k]; le != nil && le.ep == ep {
		delete(r.locals, k)
		r.tombs[k] = tomb{sessionID: info.SessionID, rev: le.rev}
		r.dirty[k] = opWrite
	}
	r.lmu.Unlock()
	r.kickPublisher()
}

// Locate implements relay.Router: the newest session of the number on any
// live node.
func (r *Router) Locate(n phonebook.MSISDN) relay.Endpoint {
	best := r.local.Locate(n)
	var bestAt time.Time
	if best != nil {
		bestAt = best.Info().ConnectedAt
	}
	now := time.Now()
	r.mu.RLock()
	for _, re := range r.byNumber[n] {
		if !r.aliveLocked(re.info.Node, re.instance, now) {
			continue
		}
		if best == nil || re.info.ConnectedAt.After(bestAt) {
			best, bestAt = re, re.info.ConnectedAt
		}
	}
	r.mu.RUnlock()
	return best
}

// Connections implements relay.Router: this node's sessions plus the
// registry's entries of the other live nodes, by number then device.
func (r *Router) Connections() []relay.ConnInfo {
	out := r.local.Connections()
	now := time.Now()
	r.mu.RLock()
	for _, re := range r.remote {
		if r.aliveLocked(re.info.Node, re.instance, now) {
			out = append(out, re.info)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Number != out[j].Number {
			return out[i].Number < out[j].Number
		}
		if out[i].DeviceID != out[j].DeviceID {
			return out[i].DeviceID < out[j].DeviceID
		}
		return out[i].Node < out[j].Node
	})
	return out
}

// Nodes lists the nodes that heartbeated within DeadAfter, this one
// included once it has seen its own heartbeat.
func (r *Router) Nodes() []string {
	nodes := r.aliveNodes()
	sort.Strings(nodes)
	return nodes
}

func (r *Router) aliveNodes() []string {
	now := time.Now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for id, ns := range r.nodes {
		if now.Sub(ns.lastSeen) < r.cfg.DeadAfter {
			out = append(out, id)
		}
	}
	return out
}

func (r *Router) aliveLocked(node, instance string, now time.Time) bool {
	ns := r.nodes[node]
	return ns != nil && ns.instance == instance && now.Sub(ns.lastSeen) < r.cfg.DeadAfter
}

func (r *Router) remoteCount() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.remote)
}

func (r *Router) localEndpoint(n phonebook.MSISDN, device string) relay.Endpoint {
	if device == "" {
		return r.local.Locate(n)
	}
	r.lmu.Lock()
	defer r.lmu.Unlock()
	if le := r.locals[sessionKey(n, device)]; le != nil {
		return le.ep
	}
	return nil
}

func (r *Router) triggerResync() {
	r.resyncReq.Add(1)
	select {
	case r.resync <- struct{}{}:
	default:
	}
}
