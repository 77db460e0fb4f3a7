// Package rudp is the reliability layer of the relay's UDP transport, shared
// by the server (relay/udp.go) and the Go client (client/udp.go): datagram
// sealing and authentication with a per-session key, and a Conn that numbers
// the frames that must arrive, retransmits them with exponential backoff
// until acknowledged, and hands received frames over once each, in order;
// a frame too large for one datagram travels in chunks.
// It does no I/O: the caller reads and writes the socket.
package rudp

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook/proto/relaypb"
)

const (
	// HeaderLen is the connection id in front of every datagram.
	HeaderLen = 8
	// TagLen is the truncated HMAC-SHA256 at the end of every datagram
	// whose connection id is not 0.
	TagLen = 16
	// NonceLen is the client's handshake nonce.
	NonceLen = 16
	// MinHello is the least a client's hello datagram must measure (with
	// padding): more than the server's challenge answer, so a forged
	// source address gains nothing by it.
	MinHello = 96
	// DefaultMaxDatagram is a UDP payload that crosses Internet paths
	// without IP fragmentation (IPv6's 1280-byte minimum MTU less headers).
	DefaultMaxDatagram = 1200
	// Overhead is the most a datagram adds to the frame (or chunk) it
	// carries: header, tag, and the envelope's other fields: seq and ack
	// (6 each), 16 packed sacks (83), nonce (18), pn (11), close and more
	// (2 each), the frame's own key and length (4); rounded up.
	Overhead = 160
	// MaxSack is how many out-of-order seqs an envelope reports.
	MaxSack = 16
)

// Errors from Open.
var (
	ErrShort   = errors.New("rudp: datagram too short")
	ErrBadTag  = errors.New("rudp: authentication tag does not match")
	ErrBadBody = errors.New("rudp: envelope is not valid protobuf")
)

// MaxFrame is the largest encoded Frame a datagram of maxDatagram bytes
// carries.
func MaxFrame(maxDatagram int) int { return maxDatagram - Overhead }

// NewConnID returns a random, non-zero connection id.
func NewConnID() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// ChallengeLen is the server's handshake challenge.
const ChallengeLen = 32

// Proof is what a UDP login proves the session token with, instead of
// sending it: HMAC-SHA256 keyed with the token's SHA-256
// (phonebook.TokenHash) over "phonebook udp auth v2", the client's nonce
// and the server's challenge. Each login answers a fresh challenge, so a
// captured proof is worth nothing.
func Proof(tokenHash, nonce, challenge []byte) []byte {
	m := hmac.New(sha256.New, tokenHash)
	m.Write([]byte("phonebook udp auth v2"))
	m.Write(nonce)
	m.Write(challenge)
	return m.Sum(nil)
}

// DeriveKey is the session key: both sides know the token's hash, the
// client's nonce and the server's challenge, and the server chose the
// connection id. The key never travels, so seeing the datagrams does not
// let anyone forge either side's.
func DeriveKey(tokenHash, nonce, challenge []byte, connID uint64) []byte {
	m := hmac.New(sha256.New, tokenHash)
	m.Write([]byte("phonebook udp v2"))
	m.Write(nonce)
	m.Write(challenge)
	var id [8]byte
	binary.BigEndian.PutUint64(id[:], connID)
	m.Write(id[:])
	return m.Sum(nil)
}

// ConnID reads a datagram's connection id.
func ConnID(b []byte) (uint64, bool) {
	if len(b) < HeaderLen {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// Seal appends a datagram to dst: header, envelope, and the tag when key is
// set (connID != 0).
func Seal(dst []byte, connID uint64, key []byte, env *relaypb.UdpEnvelope) ([]byte, error) {
	start := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, connID)
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, env)
	if err != nil {
		return dst[:start], err
	}
	if key != nil {
		m := hmac.New(sha256.New, key)
		m.Write(out[start:])
		out = m.Sum(out)[:len(out)+TagLen]
	}
	return out, nil
}

// Open checks a datagram's tag with key (nil: the datagram must have
// connection id 0 and carries no tag) and decodes its envelope into env.
func Open(b []byte, key []byte, env *relaypb.UdpEnvelope) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	body := b
	if key != nil {
		if len(b) < HeaderLen+TagLen {
			return ErrShort
		}
		body = b[:len(b)-TagLen]
		m := hmac.New(sha256.New, key)
		m.Write(body)
		var sum [sha256.Size]byte
		if !hmac.Equal(m.Sum(sum[:0])[:TagLen], b[len(body):]) {
			return ErrBadTag
		}
	}
	env.Reset()
	if err := proto.Unmarshal(body[HeaderLen:], env); err != nil {
		return ErrBadBody
	}
	return nil
}

// Reliable says which frames are numbered and retransmitted: all but
// heartbeats, which are sent again on their own schedule anyway.
func Reliable(f *relaypb.Frame) bool {
	switch f.Body.(type) {
	case *relaypb.Frame_Heartbeat, *relaypb.Frame_HeartbeatAck:
		return false
	}
	return true
}

// Timing is the retransmission schedule.
type Timing struct {
	Initial time.Duration // first retransmission timeout, before an RTT is measured (250ms)
	Max     time.Duration // backoff cap (4s)
	Retries int           // retransmissions of one frame before the peer counts as gone (8)
}

// WithDefaults fills in the zero fields.
func (t Timing) WithDefaults() Timing {
	t.setDefaults()
	return t
}

func (t *Timing) setDefaults() {
	if t.Initial <= 0 {
		t.Initial = 250 * time.Millisecond
	}
	if t.Max <= 0 {
		t.Max = 4 * time.Second
	}
	if t.Max < t.Initial {
		t.Max = t.Initial
	}
	if t.Retries <= 0 {
		t.Retries = 8
	}
}

type outFrame struct {
	seq    uint32
	f      *relaypb.Frame
	chunk  []byte // a piece of a frame too large for one datagram
	more   bool
	tries  int
	due    time.Time
	sentAt time.Time
}

// Conn is one side's reliability state. Its methods are safe for
// concurrent use: typically a reader goroutine calls Receive and a writer
// goroutine Push and Poll, and a consumer Take.
type Conn struct {
	mu     sync.Mutex
	timing Timing
	window int // unacknowledged frames we may have out
	srtt   time.Duration

	nextSeq uint32
	unacked []*outFrame // ascending seq
	pn      uint64

	maxFrame   int // largest frame sent or reassembled
	recvWindow int
	recvNext   uint32 // lowest seq not yet received
	takeNext   uint32 // lowest seq not yet taken by the consumer
	recvBuf    map[uint32]inFrame
	extra      []*relaypb.Frame // unreliable frames waiting for Take
	ackDue     bool
	asm        []byte // chunks of a large frame so far
	asmBad     bool   // the frame being reassembled is over maxFrame: skip to its last chunk

	readable chan struct{}
	room     chan struct{}
}

// inFrame is a received frame, or a chunk of one.
type inFrame struct {
	f     *relaypb.Frame
	chunk []byte
	more  bool
}

// NewConn returns a Conn that keeps at most window datagrams
// unacknowledged, accepts at most recvWindow beyond what its consumer took,
// and sends and reassembles frames of up to maxFrame bytes.
func NewConn(window, recvWindow, maxFrame int, t Timing) *Conn {
	t.setDefaults()
	return &Conn{
		timing: t, window: max(1, window), nextSeq: 1, maxFrame: maxFrame,
		recvWindow: max(1, recvWindow), recvNext: 1, takeNext: 1,
		recvBuf:  make(map[uint32]inFrame),
		readable: make(chan struct{}, 1),
		room:     make(chan struct{}, 1),
	}
}

// MaxFrame is the largest frame Push accepts.
func (c *Conn) MaxFrame() int { return c.maxFrame }

// Readable is signalled when Take has frames.
func (c *Conn) Readable() <-chan struct{} { return c.readable }

// RoomSignal is signalled when acknowledgements free the send window.
func (c *Conn) RoomSignal() <-chan struct{} { return c.room }

// Room reports whether Push may be called.
func (c *Conn) Room() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.unacked) < c.window
}

// Unacked counts frames awaiting acknowledgement.
func (c *Conn) Unacked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.unacked)
}

// ErrTooLarge is Push's answer to a frame over the Conn's maxFrame, or
// needing more chunks than the window holds.
var ErrTooLarge = errors.New("rudp: frame too large")

// Push queues f to be sent reliably at the next Poll: in one datagram when
// its encoding is at most chunk bytes, else cut into chunk-byte pieces,
// one per datagram. It returns false when the window has no room for all
// of them (try again after RoomSignal).
func (c *Conn) Push(f *relaypb.Frame, chunk int) (bool, error) {
	size := proto.Size(f)
	n := 1
	if size > chunk {
		n = (size + chunk - 1) / chunk
	}
	if size > c.maxFrame || n > c.window {
		return false, ErrTooLarge
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unacked)+n > c.window || c.nextSeq+uint32(n) < c.nextSeq {
		return false, nil // full; or 4 billion frames sent, and refused from then on
	}
	if n == 1 {
		c.unacked = append(c.unacked, &outFrame{seq: c.nextSeq, f: f})
		c.nextSeq++
		return true, nil
	}
	b, err := proto.Marshal(f)
	if err != nil {
		return false, err
	}
	for len(b) > 0 {
		k := min(chunk, len(b))
		c.unacked = append(c.unacked, &outFrame{seq: c.nextSeq, chunk: b[:k:k], more: k < len(b)})
		c.nextSeq++
		b = b[k:]
	}
	return true, nil
}

// ExpectFirst marks seq 1 as received without a frame: the server handles
// the client's Auth before the Conn exists.
func (c *Conn) ExpectFirst() {
	c.mu.Lock()
	c.recvNext, c.takeNext, c.ackDue = 2, 2, true
	c.mu.Unlock()
}

// Receive processes an authenticated envelope: its acknowledgements, and
// its frame. It reports whether the datagram told something new (not a
// duplicate), and whether the writer should run (acks due, window freed).
func (c *Conn) Receive(env *relaypb.UdpEnvelope, now time.Time) (fresh, wake bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ack(env.GetAck(), env.GetSack(), now) {
		select {
		case c.room <- struct{}{}:
		default:
		}
		wake = true
	}
	seq, f := env.GetSeq(), env.GetFrame()
	if seq == 0 {
		if f != nil && len(c.extra) < 16 {
			c.extra = append(c.extra, f)
			c.signalReadable()
			return true, wake
		}
		return f == nil, wake
	}
	// Every reliable datagram is answered, duplicates too: the duplicate
	// means our ack was lost.
	c.ackDue = true
	switch {
	case seq < c.recvNext:
		return false, true
	case seq-c.takeNext >= uint32(c.recvWindow):
		return false, true // beyond the window: the sender retries later
	}
	if _, ok := c.recvBuf[seq]; ok {
		return false, true
	}
	in := inFrame{f: f, chunk: env.GetChunk(), more: env.GetMore()}
	if in.f == nil && in.chunk == nil && !in.more {
		in.f = &relaypb.Frame{} // no body: the consumer answers unknown_frame
	}
	c.recvBuf[seq] = in
	for {
		if _, ok := c.recvBuf[c.recvNext]; !ok {
			break
		}
		c.recvNext++
	}
	if c.takeNext < c.recvNext {
		c.signalReadable()
	}
	return true, true
}

func (c *Conn) signalReadable() {
	select {
	case c.readable <- struct{}{}:
	default:
	}
}

func (c *Conn) ack(ack uint32, sack []uint32, now time.Time) bool {
	n := 0
	kept := c.unacked[:0]
	for _, o := range c.unacked {
		if o.seq <= ack || slices.Contains(sack, o.seq) {
			if o.tries == 1 {
				// Karn: only frames sent once give a clean sample.
				rtt := now.Sub(o.sentAt)
				if c.srtt == 0 {
					c.srtt = rtt
				} else {
					c.srtt += (rtt - c.srtt) / 8
				}
			}
			n++
			continue
		}
		kept = append(kept, o)
	}
	clear(c.unacked[len(kept):])
	c.unacked = kept
	return n > 0
}

// Take returns the frames received in order since the last Take, and
// unreliable frames, freeing their room in the receive window.
func (c *Conn) Take(dst []*relaypb.Frame) []*relaypb.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	dst = append(dst, c.extra...)
	clear(c.extra)
	c.extra = c.extra[:0]
	for ; c.takeNext < c.recvNext; c.takeNext++ {
		in := c.recvBuf[c.takeNext]
		delete(c.recvBuf, c.takeNext)
		if in.f != nil {
			c.asm, c.asmBad = nil, false // an unfinished large frame is abandoned
			dst = append(dst, in.f)
			continue
		}
		if !c.asmBad && len(c.asm)+len(in.chunk) > c.maxFrame {
			c.asm, c.asmBad = nil, true
		}
		if !c.asmBad {
			c.asm = append(c.asm, in.chunk...)
		}
		if in.more {
			continue
		}
		if !c.asmBad {
			f := new(relaypb.Frame)
			if proto.Unmarshal(c.asm, f) != nil {
				f = &relaypb.Frame{} // the consumer answers unknown_frame
			}
			dst = append(dst, f)
		}
		c.asm, c.asmBad = nil, false
	}
	return dst
}

// Emit seals one envelope into a datagram; Poll calls it under the Conn's
// lock, so it must not call back into the Conn.
type Emit func(env *relaypb.UdpEnvelope)

// Poll emits what is due at now: first transmissions, retransmissions
// (each timeout twice the last, up to Timing.Max), and a pure ack when one
// is owed and no frame carried it. It returns when to poll next (zero: no
// timer needed) and dead when a frame ran out of retries.
func (c *Conn) Poll(now time.Time, emit Emit) (next time.Time, dead bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sent := false
	for _, o := range c.unacked {
		if o.due.After(now) {
			if next.IsZero() || o.due.Before(next) {
				next = o.due
			}
			continue
		}
		if o.tries > c.timing.Retries {
			return time.Time{}, true
		}
		c.emitLocked(o, emit)
		sent = true
		o.tries++
		o.sentAt = now
		o.due = now.Add(c.rto(o.tries))
		if next.IsZero() || o.due.Before(next) {
			next = o.due
		}
	}
	if c.ackDue && !sent {
		c.emitLocked(&outFrame{}, emit)
	}
	c.ackDue = false
	return next, false
}

// Send emits an unreliable frame (or, with f nil, a pure ack) now; the
// close flag ends the session.
func (c *Conn) Send(f *relaypb.Frame, close bool, emit Emit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pn++
	env := &relaypb.UdpEnvelope{Frame: f, Ack: c.recvNext - 1, Sack: c.sackLocked(), Pn: c.pn, Close: close}
	c.ackDue = false
	emit(env)
}

func (c *Conn) emitLocked(o *outFrame, emit Emit) {
	c.pn++
	emit(&relaypb.UdpEnvelope{Seq: o.seq, Frame: o.f, Chunk: o.chunk, More: o.more, Ack: c.recvNext - 1, Sack: c.sackLocked(), Pn: c.pn})
}

func (c *Conn) sackLocked() []uint32 {
	var s []uint32
	for seq := range c.recvBuf {
		if seq > c.recvNext {
			s = append(s, seq)
		}
	}
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return s[:min(len(s), MaxSack)]
}

// rto is the timeout after the tries-th transmission.
func (c *Conn) rto(tries int) time.Duration {
	base := max(c.timing.Initial, 2*c.srtt)
	d := base << min(tries-1, 16)
	if d <= 0 || d > c.timing.Max {
		d = c.timing.Max
	}
	return d
}
