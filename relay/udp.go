package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/rudp"
	"github.com/phonebook/phonebook/relay/wire"
)

// UDPConfig tunes the UDP transport. Zero values mean the defaults in
// parentheses.
type UDPConfig struct {
	// MaxDatagram is the largest datagram sent or accepted (1200: fits
	// any Internet path unfragmented). A frame larger than
	// MaxDatagram - rudp.Overhead travels in several datagrams.
	MaxDatagram int
	MaxSessions int         // UDP sessions on this socket (100000)
	RecvWindow  int         // client frames accepted ahead of the session's handler (256)
	Timing      rudp.Timing // retransmission: 250ms doubling to 4s, 8 retries
	UnauthRate  float64     // unauthenticated datagrams per second per source IP (10)
	UnauthBurst int         // (20)
	AuthSlots   int         // logins being authenticated at once (64)
	// LimiterTable bounds the networks whose unauthenticated datagrams
	// are rate-limited (8192); past it the least recently used is dropped.
	LimiterTable int
}

// DefaultUDPConfig returns the values a zero UDPConfig stands for, with
// the default relay.Config's frame size.
func DefaultUDPConfig() UDPConfig {
	var c UDPConfig
	c.setDefaults(DefaultConfig().MaxFrameSize)
	return c
}

func (c *UDPConfig) setDefaults(frameMax int) {
	if c.MaxDatagram <= 0 {
		c.MaxDatagram = rudp.DefaultMaxDatagram
	}
	c.MaxDatagram = max(min(c.MaxDatagram, frameMax+rudp.Overhead, 65507), rudp.Overhead+64)
	c.Timing = c.Timing.WithDefaults()
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100000
	}
	if c.RecvWindow <= 0 {
		c.RecvWindow = 256
	}
	if c.UnauthRate <= 0 {
		c.UnauthRate = 10
	}
	if c.UnauthBurst <= 0 {
		c.UnauthBurst = 20
	}
	if c.AuthSlots <= 0 {
		c.AuthSlots = 64
	}
	if c.LimiterTable <= 0 {
		c.LimiterTable = 8192
	}
}

// UDPStats counts what a UDP transport did with datagrams it did not
// deliver to a session, and address changes.
type UDPStats struct {
	Sessions    int64  // live UDP sessions
	Rebinds     uint64 // a session's client moved to a new address
	UnknownConn uint64 // connection id of no session
	BadTag      uint64 // authentication tag did not match
	Malformed   uint64 // not a datagram of this protocol
	TooLarge    uint64 // over MaxDatagram
	RateLimited uint64 // unauthenticated datagrams over the per-address limit
	Refused     uint64 // logins refused (bad token, too many sessions) or dropped (busy)
}

// UDPServer is the relay's UDP transport on one socket. Lock order:
// UDPServer.mu before Server.mu; a session's rudp.Conn lock is taken with
// neither held.
type UDPServer struct {
	srv     *Server
	pc      net.PacketConn
	cfg     UDPConfig
	closing atomic.Bool

	mu       sync.Mutex
	sessions map[uint64]*udpSession
	byNonce  map[[rudp.NonceLen]byte]*udpSession // nil value: being authenticated
	wg       sync.WaitGroup                      // session goroutines

	authSlots chan struct{}
	limits    *limiterLRU // reader goroutine only
	chalKey   []byte      // HMAC key of this socket's handshake challenges

	stats struct {
		rebinds, unknown, badTag, malformed, tooLarge, rateLimited, refused counter
	}
}

// counter is one of UDPStats' numbers, mirrored in a Prometheus counter.
type counter struct {
	n atomic.Uint64
	c prometheus.Counter
}

func (c *counter) Add(n uint64) {
	c.n.Add(n)
	c.c.Add(float64(n))
}

func (c *counter) Load() uint64 { return c.n.Load() }

// ServeUDP serves the relay over UDP on pc until Shutdown, then returns
// ErrServerClosed. cfg may be the zero value.
func (srv *Server) ServeUDP(pc net.PacketConn, cfg UDPConfig) error {
	return srv.NewUDP(pc, cfg).Serve()
}

// NewUDP prepares a UDP transport on pc; Serve runs it.
func (srv *Server) NewUDP(pc net.PacketConn, cfg UDPConfig) *UDPServer {
	cfg.setDefaults(srv.cfg.MaxFrameSize)
	u := &UDPServer{
		srv: srv, pc: pc, cfg: cfg,
		sessions:  make(map[uint64]*udpSession),
		byNonce:   make(map[[rudp.NonceLen]byte]*udpSession),
		authSlots: make(chan struct{}, cfg.AuthSlots),
		limits:    newLimiterLRU(cfg.LimiterTable, rate.Limit(cfg.UnauthRate), cfg.UnauthBurst),
		chalKey:   make([]byte, 32),
	}
	if _, err := rand.Read(u.chalKey); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	st, m := &u.stats, srv.metrics
	st.rebinds.c = m.udpRebinds
	for c, reason := range map[*counter]string{&st.unknown: "unknown_conn", &st.badTag: "bad_tag", &st.malformed: "malformed",
		&st.tooLarge: "too_large", &st.rateLimited: "rate_limited", &st.refused: "refused"} {
		c.c = m.udpDropped.WithLabelValues(reason)
	}
	return u
}

// Addr is the socket's address.
func (u *UDPServer) Addr() net.Addr { return u.pc.LocalAddr() }

// Stats returns the transport's counters.
func (u *UDPServer) Stats() UDPStats {
	u.mu.Lock()
	n := len(u.sessions)
	u.mu.Unlock()
	return UDPStats{
		Sessions: int64(n), Rebinds: u.stats.rebinds.Load(), UnknownConn: u.stats.unknown.Load(),
		BadTag: u.stats.badTag.Load(), Malformed: u.stats.malformed.Load(), TooLarge: u.stats.tooLarge.Load(),
		RateLimited: u.stats.rateLimited.Load(), Refused: u.stats.refused.Load(),
	}
}

// udpListener registers a UDP socket with the server's listeners so that
// Shutdown stops it like a TCP listener. Closing only stops the reader: the
// socket stays open until the sessions on it have sent their last datagram
// (shutting_down).
type udpListener struct{ u *UDPServer }

func (l udpListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (l udpListener) Addr() net.Addr            { return l.u.pc.LocalAddr() }
func (l udpListener) Close() error {
	l.u.closing.Store(true)
	return l.u.pc.SetReadDeadline(time.Now())
}

// Serve reads datagrams until Shutdown.
func (u *UDPServer) Serve() error {
	srv := u.srv
	ln := udpListener{u}
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		u.pc.Close()
		return ErrServerClosed
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, ln)
		srv.mu.Unlock()
	}()
	buf := make([]byte, u.cfg.MaxDatagram+1)
	backoff := 5 * time.Millisecond
	for {
		n, addr, err := u.pc.ReadFrom(buf)
		if err != nil {
			if u.closing.Load() {
				u.wg.Wait()
				u.pc.Close()
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				u.closeAll()
				return err
			}
			srv.log.Warn("relay: udp read", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		u.datagram(buf[:n], addr, time.Now())
	}
}

// closeAll ends the sessions of a socket that someone else closed.
func (u *UDPServer) closeAll() {
	u.mu.Lock()
	var all []*udpSession
	for _, us := range u.sessions {
		all = append(all, us)
	}
	u.mu.Unlock()
	for _, us := range all {
		us.s.Close(nil)
	}
	u.wg.Wait()
}

// allow applies the per-network limit (Config.AddrPrefixes) on datagrams
// that are not (yet) authenticated. The table of limiters is bounded and
// drops the least recently used network when full.
func (u *UDPServer) allow(addr net.Addr, now time.Time) bool {
	var ip netip.Addr
	if ua, ok := addr.(*net.UDPAddr); ok {
		ip = ua.AddrPort().Addr()
	}
	if !u.limits.allow(u.srv.cfg.AddrPrefixes.Key(ip), now) {
		u.stats.rateLimited.Add(1)
		return false
	}
	return true
}

// datagram handles one received datagram; it never blocks on a session.
func (u *UDPServer) datagram(b []byte, addr net.Addr, now time.Time) {
	if len(b) > u.cfg.MaxDatagram {
		if u.allow(addr, now) {
			u.stats.tooLarge.Add(1)
		}
		return
	}
	id, ok := rudp.ConnID(b)
	if !ok {
		if u.allow(addr, now) {
			u.stats.malformed.Add(1)
		}
		return
	}
	if id == 0 {
		if u.allow(addr, now) {
			u.handshake(b, addr, now)
		}
		return
	}
	u.mu.Lock()
	us := u.sessions[id]
	u.mu.Unlock()
	if us == nil {
		if u.allow(addr, now) {
			u.stats.unknown.Add(1)
		}
		return
	}
	env := new(relaypb.UdpEnvelope)
	if err := rudp.Open(b, us.key, env); err != nil {
		if u.allow(addr, now) {
			if errors.Is(err, rudp.ErrBadTag) || errors.Is(err, rudp.ErrShort) {
				u.stats.badTag.Add(1)
			} else {
				u.stats.malformed.Add(1)
			}
		}
		return
	}
	us.received(env, addr, now)
}

// challengeTTL is how long a handshake challenge may be answered.
const challengeTTL = 30 * time.Second

// challenge returns a fresh challenge for a hello from addr with nonce. It
// is stateless, so hellos cost no memory: expiry (8 bytes, Unix seconds),
// 8 random bytes, and a MAC binding both to the address and the nonce.
func (u *UDPServer) challenge(addr net.Addr, nonce []byte, now time.Time) []byte {
	c := make([]byte, rudp.ChallengeLen)
	binary.BigEndian.PutUint64(c, uint64(now.Add(challengeTTL).Unix()))
	rand.Read(c[8:16])
	copy(c[16:], u.challengeMAC(c[:16], addr, nonce))
	return c
}

func (u *UDPServer) challengeMAC(head []byte, addr net.Addr, nonce []byte) []byte {
	m := hmac.New(sha256.New, u.chalKey)
	m.Write(head)
	m.Write([]byte(addr.String()))
	m.Write(nonce)
	return m.Sum(nil)[:rudp.ChallengeLen-16]
}

// validChallenge reports whether c is a challenge this socket gave addr
// for nonce, not expired.
func (u *UDPServer) validChallenge(c []byte, addr net.Addr, nonce []byte, now time.Time) bool {
	if len(c) != rudp.ChallengeLen || now.Unix() > int64(binary.BigEndian.Uint64(c)) {
		return false
	}
	return hmac.Equal(c[16:], u.challengeMAC(c[:16], addr, nonce))
}

// handshake answers a hello with a challenge, or starts a login from an
// Auth datagram that answers one, or answers a retransmitted Auth.
func (u *UDPServer) handshake(b []byte, addr net.Addr, now time.Time) {
	env := new(relaypb.UdpEnvelope)
	if err := rudp.Open(b, nil, env); err != nil || len(env.Nonce) != rudp.NonceLen {
		u.stats.malformed.Add(1)
		return
	}
	if env.Frame == nil && len(env.Challenge) == 0 && env.Seq == 0 {
		// A hello. The answer is never longer than the hello, so a forged
		// source address gains nothing.
		out, err := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Nonce: env.Nonce, Challenge: u.challenge(addr, env.Nonce, now)})
		if err != nil || len(b) < rudp.MinHello || len(out) > len(b) {
			u.stats.malformed.Add(1)
			return
		}
		u.pc.WriteTo(out, addr)
		return
	}
	if env.Seq != 1 || env.Frame.GetAuth() == nil {
		u.stats.malformed.Add(1)
		return
	}
	answered := u.validChallenge(env.Challenge, addr, env.Nonce, now)
	nonce := [rudp.NonceLen]byte(env.Nonce)
	srv := u.srv
	u.mu.Lock()
	if us, ok := u.byNonce[nonce]; ok {
		u.mu.Unlock()
		if us != nil {
			// Our AuthOK or its ack was lost: ack the Auth again; AuthOK is
			// retransmitted on its own schedule.
			us.rc.Receive(&relaypb.UdpEnvelope{Seq: 1}, now)
			us.signal()
		}
		return
	}
	if !answered {
		u.mu.Unlock()
		u.stats.refused.Add(1)
		u.refuse(addr, env.Nonce, len(b), phonebook.Errorf(phonebook.EUnauthorized,
			"the handshake challenge is missing, wrong or expired: send a hello first and answer its challenge (docs/protocol.md, UDP)"))
		return
	}
	if len(u.sessions)+len(u.authSlots) >= u.cfg.MaxSessions {
		u.mu.Unlock()
		u.stats.refused.Add(1)
		u.refuse(addr, env.Nonce, len(b), &phonebook.Error{Code: phonebook.EUnavailable,
			Message: "too many UDP sessions on this relay; use TCP or retry later", RetryAfter: now.Add(30 * time.Second)})
		return
	}
	select {
	case u.authSlots <- struct{}{}:
	default:
		u.mu.Unlock()
		u.stats.refused.Add(1) // busy: the client retransmits its Auth
		return
	}
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		u.mu.Unlock()
		<-u.authSlots
		return
	}
	srv.conns.Add(1)
	srv.mu.Unlock()
	u.byNonce[nonce] = nil
	u.wg.Add(1)
	u.mu.Unlock()
	go u.run(env.Frame, nonce, env.Challenge, addr, len(b))
}

// login authenticates a UDP Auth: it names the session token by its public
// id and proves the token with an HMAC over the nonce and this socket's
// challenge; the token itself never travels. It returns the session and
// the token's hash, from which the session key is derived.
func (u *UDPServer) login(f *relaypb.Frame, nonce, challenge []byte, addr net.Addr) (*session, []byte, error) {
	srv := u.srv
	ua, ok := srv.auth.(UDPAuthenticator)
	if !ok {
		return nil, nil, phonebook.Errorf(phonebook.EUnavailable, "this relay cannot authenticate UDP logins; use TCP")
	}
	auth := f.GetAuth()
	if auth.GetToken() != "" || len(auth.GetUdpTokenId()) == 0 || len(auth.GetUdpProof()) != sha256.Size {
		return nil, nil, phonebook.Errorf(phonebook.EUnauthorized,
			"over UDP the Auth names the token (udp_token_id) and proves it (udp_proof), and never carries it (docs/protocol.md, UDP)")
	}
	ctx, cancel := context.WithTimeout(srv.ctx, srv.cfg.AuthTimeout)
	number, device, tokenHash, err := ua.AuthenticateUDP(ctx, auth.GetUdpTokenId())
	cancel()
	if err != nil {
		return nil, nil, err
	}
	if !hmac.Equal(rudp.Proof(tokenHash, nonce, challenge), auth.GetUdpProof()) {
		return nil, nil, phonebook.Errorf(phonebook.EUnauthorized, "the session token is missing, expired or revoked")
	}
	s, err := srv.open(auth, number, device, tokenHash, "udp", addr.String(), nil)
	return s, tokenHash, err
}

// refuse answers a login that got no session, best effort. An answer
// larger than the Auth datagram (reqLen) loses its message text, keeping
// the code, so that a forged source address gains next to nothing: a
// minimal Auth draws at most a few dozen bytes, and unauthenticated
// datagrams are rate-limited per address besides.
func (u *UDPServer) refuse(addr net.Addr, nonce []byte, reqLen int, err error) {
	f := errorFrame(err)
	b, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Frame: f, Nonce: nonce, Close: true})
	if len(b) > reqLen {
		f.GetError().Message = ""
		b, _ = rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Frame: f, Nonce: nonce, Close: true})
	}
	u.pc.WriteTo(b, addr)
}

// run authenticates a login and then serves its session until it ends.
func (u *UDPServer) run(auth *relaypb.Frame, nonce [rudp.NonceLen]byte, challenge []byte, addr net.Addr, reqLen int) {
	srv := u.srv
	defer srv.conns.Done()
	defer u.wg.Done()
	s, tokenHash, err := u.login(auth, nonce[:], challenge, addr)
	if err != nil {
		u.mu.Lock()
		delete(u.byNonce, nonce)
		<-u.authSlots
		u.mu.Unlock()
		u.stats.refused.Add(1)
		if phonebook.ErrorCode(err) == phonebook.EInternal {
			srv.log.Warn("relay: udp login refused", "addr", addr.String(), "err", err)
		}
		u.refuse(addr, nonce[:], reqLen, err)
		return
	}
	us := &udpSession{u: u, s: s, wake: make(chan struct{}, 1),
		rc: rudp.NewConn(srv.cfg.SendQueue, u.cfg.RecvWindow, srv.cfg.MaxFrameSize, u.cfg.Timing)}
	us.rc.ExpectFirst()
	us.addr.Store(&addr)
	us.lastRecv.Store(time.Now().UnixNano())
	u.mu.Lock()
	for us.id == 0 || u.sessions[us.id] != nil {
		us.id = rudp.NewConnID()
	}
	us.key = rudp.DeriveKey(tokenHash, nonce[:], challenge, us.id)
	u.sessions[us.id] = us
	u.byNonce[nonce] = us
	<-u.authSlots // under u.mu: a login counts in the limit as one or the other
	u.mu.Unlock()

	handlerDone := make(chan struct{})
	go func() {
		defer close(handlerDone)
		us.handleLoop()
	}()
	us.writeLoop()
	s.Close(nil)
	<-handlerDone
	u.mu.Lock()
	delete(u.sessions, us.id)
	delete(u.byNonce, nonce)
	u.mu.Unlock()
	srv.logout(s)
}

// udpSession is a session's UDP side. The reader goroutine (Serve) feeds
// it acks and frames; handleLoop gives frames to the session; writeLoop
// sends, retransmits and watches for silence.
type udpSession struct {
	u        *UDPServer
	s        *session
	id       uint64
	key      []byte
	rc       *rudp.Conn
	addr     atomic.Pointer[net.Addr]
	maxPN    uint64 // reader goroutine only
	lastRecv atomic.Int64
	wake     chan struct{}
}

func (us *udpSession) signal() {
	select {
	case us.wake <- struct{}{}:
	default:
	}
}

// received takes an authenticated envelope. A datagram newer than any
// before it (pn) from a new address moves the session there: the client's
// NAT rebound. Replayed old datagrams cannot move it.
func (us *udpSession) received(env *relaypb.UdpEnvelope, addr net.Addr, now time.Time) {
	if env.Pn > us.maxPN {
		us.maxPN = env.Pn
		if cur := *us.addr.Load(); !sameAddr(cur, addr) {
			us.addr.Store(&addr)
			us.u.stats.rebinds.Add(1)
			us.u.srv.log.Debug("relay: udp client moved", "session", us.s.info.SessionID, "addr", addr.String())
		}
	}
	us.lastRecv.Store(now.UnixNano())
	if env.Close {
		us.s.Close(nil)
		return
	}
	if _, wake := us.rc.Receive(env, now); wake {
		us.signal()
	}
}

func sameAddr(a, b net.Addr) bool {
	ua, ok1 := a.(*net.UDPAddr)
	ub, ok2 := b.(*net.UDPAddr)
	if ok1 && ok2 {
		return ua.Port == ub.Port && ua.IP.Equal(ub.IP) && ua.Zone == ub.Zone
	}
	return a.String() == b.String()
}

// handleLoop gives received frames to the session in order. It may block
// (a sender over its in-flight limit); meanwhile the receive window fills
// and the client's further frames wait unacknowledged.
func (us *udpSession) handleLoop() {
	s := us.s
	var frames []*relaypb.Frame
	for {
		select {
		case <-us.rc.Readable():
		case <-s.closing:
			return
		}
		frames = us.rc.Take(frames[:0])
		for i, f := range frames {
			frames[i] = nil
			us.u.srv.metrics.framesIn.Inc()
			if err := s.handle(f, time.Now()); err != nil {
				s.Close(err)
				return
			}
		}
	}
}

// writeLoop owns the session's sending: it moves queued frames into the
// retransmission window (at most SendQueue unacknowledged; beyond that
// frames wait in the send queue, which, when full, closes the session as a
// slow consumer), sends what is due, and closes the session when a frame
// runs out of retries or the client falls silent.
func (us *udpSession) writeLoop() {
	s, u := us.s, us.u
	idle := u.srv.cfg.IdleTimeout
	chunk := rudp.MaxFrame(u.cfg.MaxDatagram)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var backlog []*relaypb.Frame
	var out [][]byte
	emit := func(env *relaypb.UdpEnvelope) {
		b, err := rudp.Seal(nil, us.id, us.key, env)
		if err == nil {
			out = append(out, b)
		}
	}
	for {
		select {
		case <-s.out.ready:
		case <-us.wake:
		case <-timer.C:
		case <-s.closing:
			var f *relaypb.Frame
			if s.closeErr != nil {
				f = &relaypb.Frame{Body: &relaypb.Frame_Error{Error: s.closeErr}}
			}
			// Twice: it is not retransmitted, and the client otherwise
			// learns of the close only by silence.
			us.rc.Send(f, true, emit)
			us.rc.Send(f, true, emit)
			us.flush(out)
			return
		}
		now := time.Now()
		if last := time.Unix(0, us.lastRecv.Load()); now.Sub(last) > idle {
			s.Close(phonebook.Errorf(phonebook.ETimeout, "nothing received for %s; send heartbeats", idle))
			continue
		}
		for {
			if len(backlog) == 0 {
				if backlog = s.out.takeAll(backlog); len(backlog) == 0 {
					break
				}
			}
			n := 0
			for ; n < len(backlog); n++ {
				f := backlog[n]
				if !rudp.Reliable(f) {
					us.rc.Send(f, false, emit)
				} else if ok, err := us.rc.Push(f, chunk); err != nil {
					us.tooLarge(f, chunk)
				} else if !ok {
					goto full
				}
				backlog[n] = nil
			}
		full:
			backlog = backlog[:copy(backlog, backlog[n:])]
			if len(backlog) > 0 {
				break
			}
		}
		next, dead := us.rc.Poll(now, emit)
		if len(out) > 0 {
			u.srv.metrics.framesOut.Add(float64(len(out)))
			out = us.flush(out)
		}
		if dead {
			s.Close(phonebook.Errorf(phonebook.ETimeout, "no acknowledgement after %d retransmissions", u.cfg.Timing.Retries))
			continue
		}
		wakeAt := time.Unix(0, us.lastRecv.Load()).Add(idle)
		if !next.IsZero() && next.Before(wakeAt) {
			wakeAt = next
		}
		timer.Reset(max(time.Until(wakeAt), time.Millisecond))
	}
}

// flush writes datagrams to the client's current address.
func (us *udpSession) flush(out [][]byte) [][]byte {
	addr := *us.addr.Load()
	for i, b := range out {
		if _, err := us.u.pc.WriteTo(b, addr); err != nil && errors.Is(err, net.ErrClosed) {
			us.s.Close(nil)
		}
		out[i] = nil
	}
	return out[:0]
}

// tooLarge handles a frame the session's window cannot carry even in
// chunks (only with a tiny send queue). A delivery stays in (or goes to)
// the offline store, and the client is told why.
func (us *udpSession) tooLarge(f *relaypb.Frame, chunk int) {
	s := us.s
	d := f.GetDeliver()
	if d == nil {
		s.srv.log.Error("relay: frame too large for UDP", "kind", wire.FrameKind(f), "size", proto.Size(f))
		return
	}
	s.mu.Lock()
	p := s.pending[d.ServerMsgId]
	delete(s.pending, d.ServerMsgId)
	if p != nil {
		s.drains.Add(1)
	}
	s.mu.Unlock()
	if p != nil {
		go func() {
			defer s.drains.Done()
			p.done(false) // stores it; may wait for the committer
		}()
	}
	us.rc.Push(errorFrame(phonebook.Errorf(phonebook.ETooLarge,
		"message %s from %s is %d bytes, more than this UDP session's window carries; it stays stored: log in over TCP to receive it",
		d.ServerMsgId, d.From, proto.Size(f))), chunk)
}
