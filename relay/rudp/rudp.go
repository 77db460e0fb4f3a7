// Package rudp is the reliability layer of the relay's UDP transport, shared
// by the server (relay/udp.go) and the Go client (client/udp.go): datagram
// sealing and authentication with a per-session key, and a Conn that numbers
// the frames that must arrive, retransmits them with exponential backoff
// until acknowledged, and hands received frames over once each, in order.
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
	// DefaultMaxDatagram is a UDP payload that crosses Internet paths
	// without IP fragmentation (IPv6's 1280-byte minimum MTU less headers).
	DefaultMaxDatagram = 1200
	// Overhead is the most a datagram adds to the frame it carries: header,
	// tag and the envelope's other fields (16 sacks, nonce, counters).
	Overhead = HeaderLen + TagLen + 2*6 + 2 + 16*5 + 2 + NonceLen + 11 + 2 + 4
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

// DeriveKey is the session key: both sides know the session token and the
// client's nonce, the server chose the connection id. The key never travels,
// so seeing the server's datagrams does not let anyone forge the client's.
func DeriveKey(token string, nonce []byte, connID uint64) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("phonebook udp v1"))
	m.Write(nonce)
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

	recvWindow int
	recvNext   uint32 // lowest seq not yet received
	takeNext   uint32 // lowest seq not yet taken by the consumer
	recvBuf    map[uint32]*relaypb.Frame
	extra      []*relaypb.Frame // unreliable frames waiting for Take
	ackDue     bool

	readable chan struct{}
	room     chan struct{}
}

// NewConn returns a Conn that keeps at most window frames unacknowledged
// and accepts at most recvWindow frames beyond what its consumer took.
func NewConn(window, recvWindow int, t Timing) *Conn {
	t.setDefaults()
	return &Conn{
		timing: t, window: max(1, window), nextSeq: 1,
		recvWindow: max(1, recvWindow), recvNext: 1, takeNext: 1,
		recvBuf:  make(map[uint32]*relaypb.Frame),
		readable: make(chan struct{}, 1),
		room:     make(chan struct{}, 1),
	}
}

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

// Push queues f to be sent reliably at the next Poll. The caller checks
// Room first; Push beyond the window is refused.
func (c *Conn) Push(f *relaypb.Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unacked) >= c.window || c.nextSeq == 0 {
		return false
	}
	c.unacked = append(c.unacked, &outFrame{seq: c.nextSeq, f: f})
	c.nextSeq++ // wraps to 0 after 4 billion frames: Push refuses from then on
	return true
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
	if f == nil {
		f = &relaypb.Frame{}
	}
	c.recvBuf[seq] = f
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
		dst = append(dst, c.recvBuf[c.takeNext])
		delete(c.recvBuf, c.takeNext)
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
		c.emitLocked(o.seq, o.f, emit)
		sent = true
		o.tries++
		o.sentAt = now
		o.due = now.Add(c.rto(o.tries))
		if next.IsZero() || o.due.Before(next) {
			next = o.due
		}
	}
	if c.ackDue && !sent {
		c.emitLocked(0, nil, emit)
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

func (c *Conn) emitLocked(seq uint32, f *relaypb.Frame, emit Emit) {
	c.pn++
	emit(&relaypb.UdpEnvelope{Seq: seq, Frame: f, Ack: c.recvNext - 1, Sack: c.sackLocked(), Pn: c.pn})
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
