package relay

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("relay: server closed")

// Server is the relay. Lock order: Server.mu, then a router shard, then a
// session's mu, then a dedup shard; done callbacks run with no lock held.
type Server struct {
	cfg       Config
	auth      Authenticator
	store     Store
	dir       Directory
	fallback  Fallback
	media     Media
	router    Router
	log       *slog.Logger
	metrics   *metrics
	dedup     *dedupTable
	sendRate  *keyedLimiter[phonebook.MSISDN] // Send frames per user, over all their sessions on this node
	authFails *keyedLimiter[netip.Addr]       // failed TCP logins per client address
	recorder  *recorder
	contacts  Contacts
	presence  *presenceTracker
	alone     bool // no Deps.Router: this node holds every connection

	idPrefix string
	idSeq    atomic.Uint64

	// ctx is for store calls; it ends only after Shutdown has drained.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	preAuth   map[net.Conn]netip.Addr // accepted, not yet a session; the client's address
	preAuthIP map[netip.Addr]int      // preAuth per client address
	conns     sync.WaitGroup          // connection goroutines

	stopping      atomic.Bool
	quitBG        chan struct{} // janitor and sweeper
	bg            sync.WaitGroup
	storeq        chan storeReq
	quitCommit    chan struct{}
	committerDone chan struct{}
	// Immediate SMS fallbacks in flight: at most cap(smsSlots) at once
	// (more wait for the sweeper); smsMu orders sms.Add against
	// Shutdown's sms.Wait.
	smsMu    sync.Mutex
	smsStop  bool
	sms      sync.WaitGroup
	smsSlots chan struct{}

	// injecting holds the ids of keyed injections in progress (InjectMMS):
	// a repeat waits for the first to finish, then finds its record.
	injecting keyedMutex
	// queueing holds the ids of messages being handed to the fallback
	// outbox: their outbox's state changes wait until the sender has been
	// told QUEUED.
	queueing keyedMutex
}

// NewServer builds a relay; it does not listen until Serve.
func NewServer(cfg Config, deps Deps) (*Server, error) {
	if deps.Auth == nil || deps.Store == nil {
		return nil, errors.New("relay: Deps.Auth and Deps.Store are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if cfg.Fallback == "offline" {
		cfg.Fallback = FallbackOfflineAfter
	}
	if cfg.NodeID == "" {
		cfg.NodeID, _ = os.Hostname()
	}
	alone := deps.Router == nil
	if alone {
		deps.Router = NewLocalRouter()
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	var rnd [5]byte
	rand.Read(rnd[:])
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{
		cfg: cfg, auth: deps.Auth, store: deps.Store, dir: deps.Directory, fallback: deps.Fallback, media: deps.Media,
		router: deps.Router, log: deps.Logger, metrics: newMetrics(deps.Metrics),
		dedup:     newDedupTable(cfg.DedupWindow),
		sendRate:  newKeyedLimiter[phonebook.MSISDN](rate.Limit(cfg.SendRate), cfg.SendBurst),
		authFails: newAuthFailures(cfg.MaxAuthFailuresPerMinute),
		idPrefix:  strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(rnd[:])) + "-",
		ctx:       ctx, cancel: cancel,
		listeners:     make(map[net.Listener]struct{}),
		sessions:      make(map[*session]struct{}),
		preAuth:       make(map[net.Conn]netip.Addr),
		preAuthIP:     make(map[netip.Addr]int),
		quitBG:        make(chan struct{}),
		storeq:        make(chan storeReq, 8*cfg.StoreBatch),
		quitCommit:    make(chan struct{}),
		committerDone: make(chan struct{}),
		smsSlots:      make(chan struct{}, 16),
	}
	srv.recorder = newRecorder(srv)
	srv.contacts = deps.Contacts
	srv.alone = alone
	srv.presence = newPresenceTracker(srv)
	go srv.commitLoop()
	srv.bg.Add(3)
	go srv.janitor()
	go srv.sweeper()
	go srv.storedRecheckLoop()
	if tc, ok := deps.Auth.(TokenChecker); ok {
		srv.bg.Add(1)
		go srv.reauthLoop(tc)
	}
	return srv, nil
}

// newID returns a server_msg_id or session id: unique across restarts (a
// random per-process prefix) and cheap (a counter).
func (srv *Server) newID() string {
	var b [40]byte
	out := append(b[:0], srv.idPrefix...)
	out = strconv.AppendUint(out, srv.idSeq.Add(1), 36)
	return string(out)
}

// ListenAndServe listens on cfg.Addr and serves until Shutdown.
func (srv *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", srv.cfg.Addr)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", srv.cfg.Addr, err)
	}
	return srv.Serve(ln)
}

// Serve accepts TCP connections on ln until Shutdown, then returns
// ErrServerClosed.
func (srv *Server) Serve(ln net.Listener) error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			srv.mu.Lock()
			closed := srv.closed
			srv.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait, keep serving.
			srv.log.Warn("relay: accept", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		srv.mu.Lock()
		if srv.closed {
			srv.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		ip := srv.clientNet(nc)
		if err := srv.admitLocked(ip); err != nil {
			srv.mu.Unlock()
			srv.metrics.authRefused.Inc()
			srv.refuse(nc, err)
			nc.Close()
			continue
		}
		srv.conns.Add(1)
		srv.preAuth[nc] = ip
		srv.preAuthIP[ip]++
		srv.mu.Unlock()
		go srv.serveTCP(nc)
	}
}

func (srv *Server) register(s *session) bool {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return false
	}
	srv.sessions[s] = struct{}{}
	if s.conn != nil {
		srv.authDoneLocked(s.conn)
	}
	srv.mu.Unlock()
	if old := srv.router.Attach(s); old != nil {
		old.Close(phonebook.Errorf(phonebook.ESessionReplaced, "a newer login of %s on this device took over", s.number))
	}
	srv.metrics.connections.Inc()
	return true
}

// authDone takes a connection off the pre-authentication list.
func (srv *Server) authDone(nc net.Conn) {
	srv.mu.Lock()
	srv.authDoneLocked(nc)
	srv.mu.Unlock()
}

func (srv *Server) authDoneLocked(nc net.Conn) {
	ip, ok := srv.preAuth[nc]
	if !ok {
		return
	}
	delete(srv.preAuth, nc)
	if srv.preAuthIP[ip]--; srv.preAuthIP[ip] <= 0 {
		delete(srv.preAuthIP, ip)
	}
}

// admitLocked decides whether a new TCP connection may wait for its Auth
// frame: connections that have not authenticated yet are bounded in all
// and per client address, so that a flood of idle connections cannot use
// up the process's file descriptors, and an address whose logins keep
// failing (each costs a store lookup) waits for its bucket to refill. The
// per-address bound is generous: thousands of phones share an address
// behind carrier NAT, and they all reconnect at once after a restart.
func (srv *Server) admitLocked(ip netip.Addr) error {
	retry := time.Now().Add(time.Second)
	if len(srv.preAuth) >= srv.cfg.MaxPendingAuth {
		return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: retry,
			Message: fmt.Sprintf("%d connections are waiting to authenticate; try again shortly", len(srv.preAuth))}
	}
	if srv.authFails.empty(ip, time.Now()) {
		return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: time.Now().Add(max(time.Second, srv.authFails.refill())),
			Message: fmt.Sprintf("too many failed logins from %s; try again later", ip)}
	}
	if srv.preAuthIP[ip] >= srv.cfg.MaxPendingAuthPerIP {
		return &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: retry,
			Message: fmt.Sprintf("%d connections from %s are waiting to authenticate; try again shortly", srv.preAuthIP[ip], ip)}
	}
	return nil
}

// clientNet is the network a connection counts in for the per-address
// limits: the client's address masked to Config.AddrPrefixes (the zero
// Addr when it has none).
func (srv *Server) clientNet(nc net.Conn) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return srv.cfg.AddrPrefixes.Key(a).Addr()
		}
	}
	return netip.Addr{}
}

func (srv *Server) unregister(s *session) {
	srv.mu.Lock()
	delete(srv.sessions, s)
	srv.mu.Unlock()
	srv.metrics.connections.Dec()
}

// Connections lists the connection table (all nodes, with a cluster router).
func (srv *Server) Connections() []ConnInfo { return srv.router.Connections() }

// ConnectionsHandler serves the connection table as JSON, for the admin
// HTTP listener (`phonebook admin connections` reads it).
func (srv *Server) ConnectionsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns := srv.Connections()
		if conns == nil {
			conns = []ConnInfo{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"connections": conns})
	})
}

// Shutdown stops accepting, closes every session (their unacknowledged
// deliveries go to the offline store), then flushes the offline store and
// chat records. Store writes still in flight when ctx ends are abandoned
// unacknowledged: the client did not get a SendResult and will retry.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.closed = true
	srv.stopping.Store(true)
	for ln := range srv.listeners {
		ln.Close()
	}
	for nc := range srv.preAuth {
		nc.Close() // waiting for Auth: nothing to lose
	}
	sessions := make([]*session, 0, len(srv.sessions))
	for s := range srv.sessions {
		sessions = append(sessions, s)
	}
	srv.mu.Unlock()
	close(srv.quitBG)
	srv.bg.Wait()
	for _, s := range sessions {
		s.Close(phonebook.Errorf(phonebook.EShuttingDown, "server is shutting down; reconnect later"))
	}
	done := make(chan struct{})
	go func() {
		srv.conns.Wait()
		srv.presence.wait() // every user recorded offline
		srv.smsMu.Lock()
		srv.smsStop = true // the committer starts no more
		srv.smsMu.Unlock()
		srv.sms.Wait()
		close(srv.quitCommit)
		<-srv.committerDone
		srv.recorder.stop()
		close(done)
	}()
	select {
	case <-done:
		srv.cancel()
		return nil
	case <-ctx.Done():
		srv.cancel()
		return ctx.Err()
	}
}

// route sends a newly accepted message to the recipient's live session, or
// stores it.
func (srv *Server) route(m *Message) {
	if ep := srv.router.Locate(m.To); ep != nil {
		ep.Offer(m, func(ok bool) {
			switch {
			case ok:
				srv.deliveredOnline(m)
			case !m.undeliverable:
				srv.storeOffline(m)
			}
		})
		return
	}
	srv.storeOffline(m)
}

func (srv *Server) deliveredOnline(m *Message) {
	now := time.Now()
	srv.answer(m, &relaypb.SendResult{ClientMsgId: m.ClientMsgID, ServerMsgId: m.ID, State: relaypb.MessageState_DELIVERED})
	srv.metrics.outcome(outcomeDelivered)
	srv.recorder.record(store.ChatRecord{
		ID: m.ID, Sender: m.From, ClientMsgID: m.ClientMsgID, Receiver: m.To, Content: m.Text, Type: int(m.Type),
		Media: toStoreMedia(m.Media), SentAt: m.SentAt, ReceivedAt: now, State: store.MsgDelivered,
	})
}

// answer sends the final SendResult to the session that sent the message,
// or to a retry's session, or to the sender's current session.
func (srv *Server) answer(m *Message, r *relaypb.SendResult) {
	if m.holder != nil {
		<-m.holder.inflight
		m.holder = nil
	}
	origin := srv.dedup.finish(m.From, m.entry, r)
	f := &relaypb.Frame{Body: &relaypb.Frame_SendResult{SendResult: r}}
	if origin == nil || !origin.Push(f) {
		if ep := srv.router.Locate(m.From); ep != nil {
			ep.Push(f)
		}
	}
	if r.State != relaypb.MessageState_FAILED {
		srv.metrics.latency.Observe(time.Since(m.accepted).Seconds())
	}
}

// receipt tells a sender, if connected, what became of a message; why, for
// a FAILED one (reason).
func (srv *Server) receipt(sender phonebook.MSISDN, id, clientID string, state relaypb.MessageState, reason error) {
	if ep := srv.router.Locate(sender); ep != nil {
		r := &relaypb.Receipt{ServerMsgId: id, ClientMsgId: clientID, State: state, At: time.Now().UnixMicro()}
		if reason != nil {
			r.Error = errorFrame(reason).GetError()
		}
		ep.Push(&relaypb.Frame{Body: &relaypb.Frame_Receipt{Receipt: r}})
	}
}

// storeReq is a message on its way to the offline store.
type storeReq struct {
	m *Message
}

func (srv *Server) storeOffline(m *Message) {
	srv.storeq <- storeReq{m: m}
}

// commitLoop is the offline store's group commit: it takes whatever
// messages are waiting (up to StoreBatch), stores them in one transaction,
// and only then answers their senders.
func (srv *Server) commitLoop() {
	defer close(srv.committerDone)
	batch := make([]storeReq, 0, srv.cfg.StoreBatch)
	for {
		select {
		case r := <-srv.storeq:
			batch = append(batch[:0], r)
		case <-srv.quitCommit:
			for {
				select {
				case r := <-srv.storeq:
					batch = append(batch[:0], r)
					batch = gather(srv.storeq, batch)
					srv.commit(batch)
				default:
					return
				}
			}
		}
		batch = gather(srv.storeq, batch)
		srv.commit(batch)
	}
}

func (srv *Server) commit(batch []storeReq) {
	now := time.Now()
	batch = srv.admitStored(batch)
	if len(batch) == 0 {
		return
	}
	msgs := make([]store.Message, 0, len(batch))
	smsNow := make([]bool, 0, len(batch))
	registered := make(map[phonebook.MSISDN]bool)
	kept := batch[:0]
	for _, r := range batch {
		m := r.m
		sm := store.Message{
			ID: m.ID, Sender: m.From, ClientMsgID: m.ClientMsgID, Recipient: m.To, Type: int(m.Type), Text: m.Text,
			Media: toStoreMedia(m.Media), SentAt: m.SentAt,
		}
		sendNow := false
		if srv.fallback != nil && srv.cfg.Fallback != FallbackNever {
			reg, ok := registered[m.To]
			if !ok {
				reg = srv.isRegistered(m.To)
				registered[m.To] = reg
			}
			switch {
			case !reg:
				// Only an SMS can reach the recipient: a message that
				// cannot go by SMS (too long, say) is refused now rather
				// than stored as STORED forever.
				if err := srv.checkSMS(m); err != nil {
					srv.refuseStored(m, phonebook.Errorf(phonebook.ErrorCode(err),
						"%s has no Phonebook account, so this message could only go by SMS, and it cannot: %s", m.To, phonebook.ErrorMessage(err)))
					continue
				}
				// SMS now; the due time is the sweeper's retry should the
				// immediate attempt fail. via_sms is set once it is queued.
				sm.SMSDueAt = srv.retryAt(m, now.Add(smsRetry))
				sendNow = true
			case srv.cfg.Fallback == FallbackOfflineAfter:
				sm.SMSDueAt = m.SentAt.Add(srv.cfg.FallbackGrace)
			}
		}
		kept = append(kept, r)
		msgs = append(msgs, sm)
		smsNow = append(smsNow, sendNow)
	}
	batch = kept
	if len(batch) == 0 {
		return
	}
	srv.metrics.storeBatch.Observe(float64(len(batch)))
	var res []store.StoreResult
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if res, err = srv.store.StoreMessages(srv.ctx, msgs); err == nil || srv.ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	if err != nil {
		srv.log.Error("relay: store offline messages", "count", len(batch), "err", err)
		for _, r := range batch {
			srv.dedup.forget(r.m.From, r.m.ClientMsgID, r.m.entry)
			srv.answer(r.m, &relaypb.SendResult{ClientMsgId: r.m.ClientMsgID, State: relaypb.MessageState_FAILED,
				Error: &relaypb.Error{Code: string(phonebook.EUnavailable), Message: "message store unavailable; retry"}})
			srv.metrics.outcome(outcomeFailed)
		}
		return
	}
	for i, r := range batch {
		m := r.m
		state := relaypb.MessageState_STORED
		if res[i].Duplicate {
			state = relaypb.MessageState(res[i].State)
			srv.metrics.outcome(outcomeDuplicate)
		} else {
			srv.metrics.outcome(outcomeStored)
		}
		srv.answer(m, &relaypb.SendResult{ClientMsgId: m.ClientMsgID, ServerMsgId: res[i].ID, State: state})
		if res[i].Duplicate {
			continue
		}
		if smsNow[i] {
			srv.sendSMSAsync(storedToMessage(msgs[i]))
		}
		// The recipient may be online: logged in while this was being
		// stored, after its drain had looked, or too slow to acknowledge
		// it live. Its drain delivers it (with a backoff for the slow).
		if w, ok := srv.router.(StoredWaker); ok {
			w.WakeStored(m.To)
		} else if ep := srv.router.Locate(m.To); ep != nil {
			ep.Wake()
		}
	}
}

// admitStored enforces the offline store's bounds on a batch about to be
// stored: messages waiting for one recipient and from one sender. The
// messages over a bound are refused (FAILED, offline_full) and left out.
func (srv *Server) admitStored(batch []storeReq) []storeReq {
	var senders, recipients []phonebook.MSISDN
	seenS, seenR := map[phonebook.MSISDN]bool{}, map[phonebook.MSISDN]bool{}
	for _, r := range batch {
		if !seenS[r.m.From] {
			seenS[r.m.From] = true
			senders = append(senders, r.m.From)
		}
		if !seenR[r.m.To] {
			seenR[r.m.To] = true
			recipients = append(recipients, r.m.To)
		}
	}
	bySender, byRecipient, err := srv.store.OfflineCounts(srv.ctx, senders, recipients)
	if err != nil {
		// Storing will most likely fail too, and say so to the senders.
		srv.log.Warn("relay: count stored messages", "err", err)
		return batch
	}
	kept := batch[:0]
	for _, r := range batch {
		m := r.m
		switch {
		case byRecipient[m.To] >= srv.cfg.MaxOfflinePerRecipient:
			srv.refuseStored(m, phonebook.Errorf(phonebook.EOfflineFull,
				"%d messages already wait for %s to come online; the limit is %d", byRecipient[m.To], m.To, srv.cfg.MaxOfflinePerRecipient))
		case bySender[m.From] >= srv.cfg.MaxOfflinePerSender:
			srv.refuseStored(m, phonebook.Errorf(phonebook.EOfflineFull,
				"%d of your messages already wait for recipients who have not fetched them; the limit is %d", bySender[m.From], srv.cfg.MaxOfflinePerSender))
		default:
			byRecipient[m.To]++
			bySender[m.From]++
			kept = append(kept, r)
		}
	}
	clear(batch[len(kept):])
	return kept
}

// refuseStored answers a message that will not be stored.
func (srv *Server) refuseStored(m *Message, err error) {
	srv.dedup.forget(m.From, m.ClientMsgID, m.entry)
	srv.answer(m, &relaypb.SendResult{ClientMsgId: m.ClientMsgID, State: relaypb.MessageState_FAILED, Error: errorFrame(err).GetError()})
	srv.metrics.outcome(outcomeRejected)
}

func (srv *Server) isRegistered(n phonebook.MSISDN) bool {
	if srv.dir == nil {
		return true
	}
	ok, err := srv.dir.IsRegistered(srv.ctx, n)
	if err != nil {
		// Unknown: do not send an SMS we may not need; the message is
		// stored either way.
		srv.log.Warn("relay: directory lookup", "number", n, "err", err)
		return true
	}
	return ok
}

func storedToMessage(sm store.Message) *Message {
	return &Message{ID: sm.ID, From: sm.Sender, ClientMsgID: sm.ClientMsgID, To: sm.Recipient, Type: relaypb.MessageType(sm.Type),
		Text: sm.Text, Media: fromStoreMedia(sm.Media), SentAt: sm.SentAt,
		ViaSMS: sm.ViaSMS, Seq: sm.Seq}
}

func fromStored(sm *store.Message) *Message {
	m := storedToMessage(*sm)
	m.Offline = true
	return m
}

// FormatSMS renders the SMS text of an IM message with the sender shown.
func (srv *Server) FormatSMS(from phonebook.MSISDN, text string) string {
	return strings.NewReplacer("{from}", string(from), "{text}", text).Replace(srv.cfg.SMSTemplate)
}

// janitor fails deliveries that were not acknowledged in time (so they are
// stored) and forgets idle senders' dedup windows.
func (srv *Server) janitor() {
	defer srv.bg.Done()
	tick := max(srv.cfg.AckTimeout/4, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastExpire := time.Now()
	var sessions []*session
	for {
		select {
		case <-srv.quitBG:
			return
		case now := <-t.C:
			srv.mu.Lock()
			sessions = sessions[:0]
			for s := range srv.sessions {
				sessions = append(sessions, s)
			}
			srv.mu.Unlock()
			cutoff := now.Add(-srv.cfg.AckTimeout)
			for _, s := range sessions {
				s.expireAcks(cutoff)
			}
			clear(sessions)
			if now.Sub(lastExpire) > time.Minute {
				srv.dedup.expire(now.Add(-10 * time.Minute))
				srv.sendRate.prune(now)
				srv.authFails.prune(now)
				lastExpire = now
			}
		}
	}
}
