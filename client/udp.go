package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/rudp"
	"github.com/phonebook/phonebook/relay/wire"
)

// UDPOptions tunes DialUDP. Zero values mean the defaults in parentheses.
type UDPOptions struct {
	MaxDatagram int           // (1200, rudp.DefaultMaxDatagram); must not exceed the server's
	Timing      rudp.Timing   // retransmission: 250ms doubling to 4s, 8 retries
	Window      int           // frames sent and not yet acknowledged (256)
	RecvWindow  int           // frames accepted ahead of the reader (2048)
	IdleTimeout time.Duration // give up after this long without a datagram from the server (65s; keep it above the heartbeat)
	// Wrap, when set, wraps each local socket (tests: loss).
	Wrap func(net.PacketConn) net.PacketConn
}

// DialUDP connects to a relay's UDP transport and authenticates; the
// Client then behaves as one from Dial. Frames that must arrive are
// retransmitted until acknowledged; the session survives the handset's
// address changing (Rebind simulates that). A frame too large for one
// datagram travels in several.
func DialUDP(ctx context.Context, addr string, o Options) (*Client, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	u := &udpConn{raddr: raddr, tokenHash: phonebook.TokenHash(o.Token), opts: o.UDP, wake: make(chan struct{}, 1),
		readSig: make(chan struct{}, 1), chalSig: make(chan struct{}), done: make(chan struct{})}
	uo := &u.opts
	if uo.MaxDatagram <= 0 {
		uo.MaxDatagram = rudp.DefaultMaxDatagram
	}
	if uo.Window <= 0 {
		uo.Window = 256
	}
	if uo.RecvWindow <= 0 {
		uo.RecvWindow = 2048
	}
	uo.Timing = uo.Timing.WithDefaults()
	if uo.IdleTimeout <= 0 {
		uo.IdleTimeout = 65 * time.Second
	}
	u.chunk = rudp.MaxFrame(uo.MaxDatagram)
	maxFrame := o.MaxFrameSize
	if maxFrame <= 0 {
		maxFrame = wire.DefaultMaxFrameSize
	}
	u.rc = rudp.NewConn(uo.Window, uo.RecvWindow, maxFrame, uo.Timing)
	rand.Read(u.nonce[:])
	pc, err := u.listen()
	if err != nil {
		return nil, err
	}
	u.pc = pc
	u.lastRecv.Store(time.Now().UnixNano())
	go u.readLoop(pc)
	go u.writeLoop()
	if err := u.hello(ctx); err != nil {
		u.Close()
		return nil, err
	}
	c, err := Handshake(ctx, u, o)
	if err != nil {
		u.Close()
		return nil, err
	}
	return c, nil
}

// Rebind moves a UDP client to a new local socket, as when the handset's
// NAT mapping or network changes; the session continues. It is an error on
// a TCP client.
func (c *Client) Rebind() error {
	u, ok := c.nc.(*udpConn)
	if !ok {
		return errors.New("relay client: Rebind needs a UDP client")
	}
	return u.rebind()
}

// udpConn presents the UDP transport as the byte stream of length-prefixed
// frames that Client reads and writes: Write splits the stream into frames
// and sends each in a datagram, Read yields received frames in order.
type udpConn struct {
	raddr     *net.UDPAddr
	tokenHash []byte // the token's SHA-256: the token itself is never sent over UDP
	nonce     [rudp.NonceLen]byte
	challenge []byte        // the server's, from its answer to our hello; set once, under mu
	chalSig   chan struct{} // closed when challenge is set
	opts      UDPOptions
	chunk     int // frame bytes per datagram
	rc        *rudp.Conn
	lastRecv  atomic.Int64

	mu     sync.Mutex
	pc     net.PacketConn
	connID uint64 // 0 until the server's first authentic datagram
	key    []byte
	wbuf   []byte
	rbuf   []byte
	synth  []*relaypb.Frame // frames made up here (refusals, too-large results)
	eof    bool             // the server ended the session
	dead   error
	rdl    time.Time

	wake      chan struct{}
	readSig   chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ net.Conn = (*udpConn)(nil)

func (u *udpConn) listen() (net.PacketConn, error) {
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, err
	}
	if u.opts.Wrap != nil {
		return u.opts.Wrap(pc), nil
	}
	return pc, nil
}

func (u *udpConn) rebind() error {
	npc, err := u.listen()
	if err != nil {
		return err
	}
	u.mu.Lock()
	old := u.pc
	u.pc = npc
	u.mu.Unlock()
	go u.readLoop(npc)
	old.Close()
	// Any authentic datagram moves the session; a heartbeat also gets an
	// answer to the new address.
	u.sendUnreliable(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{At: time.Now().UnixMicro()}}}, false)
	return nil
}

func (u *udpConn) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// hello sends the handshake's first datagram until the server answers
// with its challenge, on the retransmission schedule.
func (u *udpConn) hello(ctx context.Context) error {
	env := &relaypb.UdpEnvelope{Nonce: u.nonce[:]}
	b, err := rudp.Seal(nil, 0, nil, env)
	if err != nil {
		return err
	}
	env.Padding = make([]byte, max(0, rudp.MinHello-len(b))) // a few bytes more than needed: the field's key and length
	if b, err = rudp.Seal(nil, 0, nil, env); err != nil {
		return err
	}
	wait := u.opts.Timing.Initial
	for try := 0; ; try++ {
		u.flush([][]byte{b})
		t := time.NewTimer(wait)
		select {
		case <-u.chalSig:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("relay: waiting for the UDP challenge from %s: %w", u.raddr, ctx.Err())
		case <-u.done:
			t.Stop()
			return net.ErrClosed
		case <-t.C:
		}
		if try >= u.opts.Timing.Retries {
			return fmt.Errorf("relay: no answer from %s to %d UDP hellos", u.raddr, try+1)
		}
		wait = min(2*wait, u.opts.Timing.Max)
	}
}

// emitter seals envelopes for the current connection id; before the
// server answered, datagrams carry id 0, the nonce and the challenge.
func (u *udpConn) emitter(out *[][]byte) rudp.Emit {
	u.mu.Lock()
	id, key, challenge := u.connID, u.key, u.challenge
	u.mu.Unlock()
	return func(env *relaypb.UdpEnvelope) {
		if id == 0 {
			env.Nonce = u.nonce[:]
			env.Challenge = challenge
		}
		if b, err := rudp.Seal(nil, id, key, env); err == nil {
			*out = append(*out, b)
		}
	}
}

func (u *udpConn) flush(out [][]byte) {
	u.mu.Lock()
	pc := u.pc
	u.mu.Unlock()
	for _, b := range out {
		pc.WriteTo(b, u.raddr)
	}
}

func (u *udpConn) sendUnreliable(f *relaypb.Frame, close bool) {
	var out [][]byte
	u.rc.Send(f, close, u.emitter(&out))
	u.flush(out)
}

func (u *udpConn) writeLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var out [][]byte
	for {
		select {
		case <-u.wake:
		case <-timer.C:
		case <-u.done:
			return
		}
		now := time.Now()
		last := time.Unix(0, u.lastRecv.Load())
		if now.Sub(last) > u.opts.IdleTimeout {
			u.fail(fmt.Errorf("relay: nothing heard from %s for %s", u.raddr, u.opts.IdleTimeout))
			return
		}
		out = out[:0]
		next, dead := u.rc.Poll(now, u.emitter(&out))
		u.flush(out)
		clear(out)
		if dead {
			u.fail(fmt.Errorf("relay: no acknowledgement from %s after %d retransmissions", u.raddr, u.opts.Timing.Retries))
			return
		}
		wakeAt := last.Add(u.opts.IdleTimeout)
		if !next.IsZero() && next.Before(wakeAt) {
			wakeAt = next
		}
		timer.Reset(max(time.Until(wakeAt), time.Millisecond))
	}
}

func (u *udpConn) fail(err error) {
	u.mu.Lock()
	if u.dead == nil {
		u.dead = err
	}
	u.mu.Unlock()
	u.signal(u.readSig)
}

func (u *udpConn) readLoop(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-u.done:
				return
			default:
				continue
			}
		}
		if ua, ok := addr.(*net.UDPAddr); !ok || !ua.IP.Equal(u.raddr.IP) || ua.Port != u.raddr.Port {
			continue
		}
		u.datagram(buf[:n])
	}
}

func (u *udpConn) datagram(b []byte) {
	id, ok := rudp.ConnID(b)
	if !ok {
		return
	}
	env := new(relaypb.UdpEnvelope)
	u.mu.Lock()
	switch {
	case u.connID == 0 && id == 0:
		// The challenge answering our hello, or a refusal of our Auth;
		// either echoes our nonce.
		if rudp.Open(b, nil, env) != nil || string(env.Nonce) != string(u.nonce[:]) {
			u.mu.Unlock()
			return
		}
		if len(env.Challenge) == rudp.ChallengeLen && env.Frame == nil {
			if u.challenge == nil {
				u.challenge = env.Challenge
				close(u.chalSig)
			}
			u.mu.Unlock()
			return
		}
		if env.Frame.GetError() == nil {
			u.mu.Unlock()
			return
		}
		u.synth = append(u.synth, env.Frame)
		u.eof = true
		u.mu.Unlock()
		u.signal(u.readSig)
		return
	case u.connID == 0:
		if u.challenge == nil {
			u.mu.Unlock()
			return
		}
		key := rudp.DeriveKey(u.tokenHash, u.nonce[:], u.challenge, id)
		if rudp.Open(b, key, env) != nil {
			u.mu.Unlock()
			return
		}
		u.connID, u.key = id, key
	case id != u.connID || rudp.Open(b, u.key, env) != nil:
		u.mu.Unlock()
		return
	}
	u.mu.Unlock()
	u.lastRecv.Store(time.Now().UnixNano())
	_, wake := u.rc.Receive(env, time.Now())
	if env.Close {
		u.mu.Lock()
		u.eof = true
		u.mu.Unlock()
		u.signal(u.readSig)
	}
	if wake {
		u.signal(u.wake)
	}
}

// Read implements net.Conn: received frames, length-prefixed, in order.
// After the server's closing datagram it returns io.EOF.
func (u *udpConn) Read(p []byte) (int, error) {
	var frames []*relaypb.Frame
	for {
		u.mu.Lock()
		if len(u.rbuf) > 0 {
			n := copy(p, u.rbuf)
			u.rbuf = u.rbuf[n:]
			u.mu.Unlock()
			return n, nil
		}
		// eof is read before taking frames: it is set after the closing
		// frame was received, so that frame is then already there.
		eof, dead, dl := u.eof, u.dead, u.rdl
		frames = append(u.rc.Take(frames[:0]), u.synth...)
		u.synth = nil
		for _, f := range frames {
			u.rbuf, _ = wire.AppendFrame(u.rbuf, f, 1<<20)
		}
		clear(frames)
		if len(u.rbuf) > 0 {
			u.mu.Unlock()
			continue
		}
		u.rbuf = nil
		u.mu.Unlock()
		switch {
		case eof:
			return 0, io.EOF
		case dead != nil:
			return 0, dead
		}
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-u.rc.Readable():
		case <-u.readSig:
		case <-u.done:
			return 0, net.ErrClosed
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// Write implements net.Conn: it takes a stream of length-prefixed frames
// and sends each whole frame in its own datagram. It blocks while the send
// window is full.
func (u *udpConn) Write(b []byte) (int, error) {
	u.mu.Lock()
	if u.dead != nil {
		u.mu.Unlock()
		return 0, u.dead
	}
	u.wbuf = append(u.wbuf, b...)
	var frames []*relaypb.Frame
	for len(u.wbuf) >= 4 {
		n := int(binary.BigEndian.Uint32(u.wbuf))
		if len(u.wbuf) < 4+n {
			break
		}
		f, err := wire.DecodeFrame(u.wbuf[:4+n], 1<<30)
		u.wbuf = u.wbuf[4+n:]
		if err != nil {
			continue
		}
		if a := f.GetAuth(); a != nil {
			// The token never crosses the wire: name it and prove it.
			a.Token = ""
			a.UdpTokenId = phonebook.UDPTokenID(u.tokenHash)
			a.UdpProof = rudp.Proof(u.tokenHash, u.nonce[:], u.challenge)
		}
		frames = append(frames, f)
	}
	u.wbuf = append(u.wbuf[:0:0], u.wbuf...)
	u.mu.Unlock()
	for _, f := range frames {
		if err := u.send(f); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (u *udpConn) send(f *relaypb.Frame) error {
	if !rudp.Reliable(f) {
		u.sendUnreliable(f, false)
		return nil
	}
	for {
		ok, err := u.rc.Push(f, u.chunk)
		if err != nil {
			u.tooLarge(f)
			return nil
		}
		if ok {
			break
		}
		select {
		case <-u.rc.RoomSignal():
		case <-u.done:
			return net.ErrClosed
		}
	}
	u.signal(u.wake)
	return nil
}

// tooLarge answers a Send that the transport cannot carry at all with a
// failed SendResult, as the server would.
func (u *udpConn) tooLarge(f *relaypb.Frame) {
	s := f.GetSend()
	if s == nil {
		return
	}
	u.mu.Lock()
	u.synth = append(u.synth, &relaypb.Frame{Body: &relaypb.Frame_SendResult{SendResult: &relaypb.SendResult{
		ClientMsgId: s.ClientMsgId, State: relaypb.MessageState_FAILED,
		Error: &relaypb.Error{Code: string(phonebook.ETooLarge), Message: fmt.Sprintf(
			"message is %d bytes, over the %d-byte frame limit or the send window: shorten it", proto.Size(f), u.rc.MaxFrame())},
	}}})
	u.mu.Unlock()
	u.signal(u.readSig)
}

// Close ends the session: the server is told (best effort) and the socket
// closed.
func (u *udpConn) Close() error {
	u.closeOnce.Do(func() {
		u.mu.Lock()
		established := u.connID != 0
		u.mu.Unlock()
		if established {
			u.sendUnreliable(nil, true)
			u.sendUnreliable(nil, true)
		}
		close(u.done)
		u.mu.Lock()
		u.pc.Close()
		u.mu.Unlock()
	})
	return nil
}

func (u *udpConn) LocalAddr() net.Addr {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pc.LocalAddr()
}

func (u *udpConn) RemoteAddr() net.Addr { return u.raddr }

func (u *udpConn) SetDeadline(t time.Time) error { return u.SetReadDeadline(t) }

func (u *udpConn) SetReadDeadline(t time.Time) error {
	u.mu.Lock()
	u.rdl = t
	u.mu.Unlock()
	return nil
}

// SetWriteDeadline is accepted and ignored: a write waits only for room in
// the send window, which retransmission limits bound.
func (u *udpConn) SetWriteDeadline(time.Time) error { return nil }
