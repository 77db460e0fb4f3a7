// Package client is Phonebook's Go client: API (api.go) registers, verifies
// and logs in over HTTP; Client (client.go) holds the relay connection with
// the session token that login returns: it dials TCP, sends messages and
// waits for their SendResults, and receives deliveries and receipts. Tests,
// the handset emulator and the benchmarks use it; it is also the reference
// for client developers (docs/api.md, docs/protocol.md).
package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// Options configures Dial.
type Options struct {
	Token         string
	DeviceID      string
	ClientVersion string
	// AutoAck answers every Deliver with a DeliverAck as soon as it is
	// received, before it is handed to Deliveries. Without it, call Ack
	// once the message is safe on the handset.
	AutoAck bool
	// Heartbeat overrides the interval the server asks for; negative turns
	// heartbeats off (tests of idle detection).
	Heartbeat    time.Duration
	MaxFrameSize int // 0: wire.DefaultMaxFrameSize
	Buffer       int // capacity of Deliveries and Receipts (1024)
	// TLS, when set, runs the connection over TLS (a relay listening with
	// relay.tls_cert); ServerName defaults to the dialled host.
	TLS *tls.Config
	UDP UDPOptions // DialUDP only
}

// Client is one relay connection. Its methods are safe for concurrent use.
type Client struct {
	nc        net.Conn
	opts      Options
	Number    phonebook.MSISDN
	SessionID string
	Heartbeat time.Duration

	// The write side. out feeds writeLoop; the read loop writes its
	// acknowledgements itself, without a hand-off to another goroutine.
	// Both encode into wbuf and write it under wmu.
	out      chan *relaypb.Frame
	wmu      sync.Mutex
	wbuf     *[]byte
	idPrefix string
	idSeq    atomic.Uint64

	mu      sync.Mutex
	pending map[string]*Pending

	deliveries chan *relaypb.Deliver
	seen       recentMessages // read loop only
	receipts   chan *relaypb.Receipt
	cs         contactsState // presence.go

	done      chan struct{}
	closeOnce sync.Once
	errMu     sync.Mutex
	err       error
}

// Pending is a sent message waiting for its SendResult.
type Pending struct {
	ClientMsgID string
	done        chan struct{}
	result      *relaypb.SendResult
	err         error
	at          time.Time // when the SendResult arrived
}

// At returns when the SendResult arrived (zero until then), for latency
// measurements that read results later than they arrive.
func (p *Pending) At() time.Time {
	select {
	case <-p.done:
		return p.at
	default:
		return time.Time{}
	}
}

// Wait returns the SendResult, or an error when the connection ended first
// (the message may or may not have been accepted: resend it with the same
// ClientMsgID on a new connection) or ctx ended. A ctx that is already
// done when Wait is called gives its error, whether or not the result has
// come: the caller's deadline decides, not the scheduler.
func (p *Pending) Wait(ctx context.Context) (*relaypb.SendResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-p.done:
		return p.result, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Done is closed when the result is known.
func (p *Pending) Done() <-chan struct{} { return p.done }

// ServerError is an Error frame from the relay.
type ServerError struct {
	Code    phonebook.Code
	Message string
}

func (e *ServerError) Error() string { return fmt.Sprintf("relay: %s: %s", e.Code, e.Message) }

// Dial connects and authenticates. It returns once AuthOK arrived, or the
// server's refusal as a *ServerError.
func Dial(ctx context.Context, addr string, o Options) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if o.TLS != nil {
		cfg := o.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("relay: TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c, err := Handshake(ctx, nc, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// A client's memory is mostly its buffers, and programs that hold thousands
// of connections (the load generator) need them small.
const (
	// ioBufSize is the read buffer, and the write buffer while one is in
	// use.
	ioBufSize = 4 << 10
	// outQueue bounds the frames waiting for writeLoop: a full queue makes
	// callers of write wait, the back-pressure they should see.
	outQueue = 256
)

// Handshake authenticates over an established connection and starts the
// client's goroutines.
func Handshake(ctx context.Context, nc net.Conn, o Options) (*Client, error) {
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	b, err := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{
		Token: o.Token, DeviceId: o.DeviceID, ClientVersion: o.ClientVersion}}}, o.MaxFrameSize)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if _, err := nc.Write(b); err != nil {
		return nil, err
	}
	fr := wire.NewFrameReader(bufio.NewReaderSize(nc, ioBufSize), o.MaxFrameSize)
	var f relaypb.Frame
	if err := fr.Read(&f); err != nil {
		return nil, fmt.Errorf("relay: waiting for AuthOK: %w", err)
	}
	nc.SetDeadline(time.Time{})
	if e := f.GetError(); e != nil {
		return nil, &ServerError{Code: phonebook.Code(e.Code), Message: e.Message}
	}
	ok := f.GetAuthOk()
	if ok == nil {
		return nil, fmt.Errorf("relay: expected AuthOK, got %s", wire.FrameKind(&f))
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	c := &Client{
		nc: nc, opts: o, Number: phonebook.MSISDN(ok.Number), SessionID: ok.SessionId,
		Heartbeat:  time.Duration(ok.HeartbeatSecs) * time.Second,
		out:        make(chan *relaypb.Frame, outQueue),
		idPrefix:   hex.EncodeToString(rnd[:]) + "-",
		pending:    make(map[string]*Pending),
		deliveries: make(chan *relaypb.Deliver, o.Buffer),
		receipts:   make(chan *relaypb.Receipt, o.Buffer),
		done:       make(chan struct{}),
	}
	if o.Heartbeat != 0 {
		c.Heartbeat = o.Heartbeat
	}
	c.cs.init(o.Buffer)
	go c.readLoop(fr)
	go c.writeLoop()
	if c.Heartbeat > 0 {
		go c.heartbeatLoop()
	}
	return c, nil
}

// recentMessages remembers the last deliveries by (from, client_msg_id), to
// recognise a sender's retry that reached this client under a new
// server_msg_id (docs/protocol.md, Deliver).
type recentMessages struct {
	ids  map[string]string // from + "\x00" + client_msg_id -> server_msg_id
	ring []string
	pos  int
}

const recentMessagesKept = 1024

// retry reports whether d repeats a recent delivery under another
// server_msg_id, and remembers d otherwise. A repeat under the same
// server_msg_id is a redelivery the application must see (it may not have
// acknowledged the first).
func (r *recentMessages) retry(d *relaypb.Deliver) bool {
	if d.ClientMsgId == "" {
		return false
	}
	key := d.From + "\x00" + d.ClientMsgId
	if id, ok := r.ids[key]; ok {
		return id != d.ServerMsgId
	}
	if r.ids == nil {
		r.ids = make(map[string]string)
	}
	if len(r.ring) < recentMessagesKept {
		r.ring = append(r.ring, key)
	} else {
		delete(r.ids, r.ring[r.pos])
		r.ring[r.pos] = key
		r.pos = (r.pos + 1) % recentMessagesKept
	}
	r.ids[key] = d.ServerMsgId
	return false
}

// Deliveries yields incoming messages. Keep reading it: when it is full
// the client stops reading the connection and the server eventually drops
// it as a slow consumer. A sender's retry that arrives again under a new
// server_msg_id (same from and client_msg_id, within the last 1,024
// deliveries) is acknowledged here and not yielded.
func (c *Client) Deliveries() <-chan *relaypb.Deliver { return c.deliveries }

// Receipts yields later states of sent messages. Receipts that find it full
// are dropped (they are informational).
func (c *Client) Receipts() <-chan *relaypb.Receipt { return c.receipts }

// Done is closed when the connection has ended; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is the reason the connection ended: a *ServerError when the server
// said why, nil after Close.
func (c *Client) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// NewClientMsgID returns a fresh id for Send.
func (c *Client) NewClientMsgID() string {
	return c.idPrefix + strconv.FormatUint(c.idSeq.Add(1), 36)
}

// Send sends a text message to a number in any format.
func (c *Client) Send(to, text string) (*Pending, error) {
	return c.SendMsg(&relaypb.Send{ClientMsgId: c.NewClientMsgID(), To: to, Text: text, Type: relaypb.MessageType_TEXT})
}

// SendMsg sends m as is; m.ClientMsgId must be set. Sending the same id
// again (after a reconnect) returns the first attempt's result.
func (c *Client) SendMsg(m *relaypb.Send) (*Pending, error) {
	if m.ClientMsgId == "" {
		return nil, errors.New("relay client: ClientMsgId is required")
	}
	p := &Pending{ClientMsgID: m.ClientMsgId, done: make(chan struct{})}
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return nil, c.closedErr()
	}
	c.pending[m.ClientMsgId] = p
	c.mu.Unlock()
	if err := c.write(&relaypb.Frame{Body: &relaypb.Frame_Send{Send: m}}); err != nil {
		return nil, err
	}
	return p, nil
}

// Ack acknowledges a delivery: the server may forget it.
func (c *Client) Ack(serverMsgID string) error {
	return c.write(&relaypb.Frame{Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: serverMsgID}}})
}

// WriteFrame sends any frame (tests use it to misbehave).
func (c *Client) WriteFrame(f *relaypb.Frame) error { return c.write(f) }

func (c *Client) write(f *relaypb.Frame) error {
	select {
	case <-c.done:
		return c.closedErr()
	default:
	}
	select {
	case c.out <- f:
		return nil
	case <-c.done:
		return c.closedErr()
	}
}

// writeLoop writes what write queues: a burst of Sends from one caller
// goes out in one write.
func (c *Client) writeLoop() {
	for {
		var f *relaypb.Frame
		select {
		case f = <-c.out:
		case <-c.done:
			return
		}
		c.wmu.Lock()
		for f != nil {
			c.appendFrame(f)
			select {
			case f = <-c.out:
			default:
				f = nil
			}
		}
		err := c.flushLocked()
		c.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

func (c *Client) closedErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return net.ErrClosed
}

// Close closes the connection. Pending sends fail.
func (c *Client) Close() error {
	c.shutdown(nil)
	return nil
}

func (c *Client) shutdown(err error) {
	c.closeOnce.Do(func() {
		c.errMu.Lock()
		c.err = err
		c.errMu.Unlock()
		close(c.done)
		c.nc.Close()
		c.mu.Lock()
		pend := c.pending
		c.pending = nil
		c.mu.Unlock()
		failErr := err
		if failErr == nil {
			failErr = net.ErrClosed
		}
		for _, p := range pend {
			p.err = failErr
			close(p.done)
		}
		c.failRequests(failErr)
	})
}

func (c *Client) readLoop(fr *wire.FrameReader) {
	var serverErr error
	for {
		if fr.Buffered() == 0 {
			c.flush() // before a read that may wait
		}
		f := new(relaypb.Frame)
		if err := fr.Read(f); err != nil {
			if serverErr == nil {
				select {
				case <-c.done:
				default:
					serverErr = err
				}
			}
			c.shutdown(serverErr)
			close(c.deliveries)
			close(c.receipts)
			return
		}
		if c.handleContactsFrame(f) {
			continue
		}
		switch b := f.Body.(type) {
		case *relaypb.Frame_SendResult:
			r := b.SendResult
			c.mu.Lock()
			p := c.pending[r.ClientMsgId]
			delete(c.pending, r.ClientMsgId)
			c.mu.Unlock()
			if p != nil {
				p.result, p.at = r, time.Now()
				close(p.done)
			}
		case *relaypb.Frame_Deliver:
			ack := &relaypb.Frame{Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: b.Deliver.ServerMsgId}}}
			if c.seen.retry(b.Deliver) {
				// The sender's retry of a message already delivered under
				// another server_msg_id: acknowledged, not delivered again.
				c.queue(ack)
				continue
			}
			if c.opts.AutoAck {
				c.queue(ack)
			}
			select {
			case c.deliveries <- b.Deliver:
			default:
				c.flush() // the acknowledgements, before waiting for the reader
				select {
				case c.deliveries <- b.Deliver:
				case <-c.done:
				}
			}
		case *relaypb.Frame_Receipt:
			select {
			case c.receipts <- b.Receipt:
			default:
			}
		case *relaypb.Frame_Error:
			serverErr = &ServerError{Code: phonebook.Code(b.Error.Code), Message: b.Error.Message}
		case *relaypb.Frame_Heartbeat:
			c.queue(&relaypb.Frame{Body: &relaypb.Frame_HeartbeatAck{HeartbeatAck: &relaypb.HeartbeatAck{At: b.Heartbeat.At}}})
		}
	}
}

// appendFrame encodes f into the write buffer; the caller holds wmu. A
// frame that cannot be encoded (over the maximum size) is left out and the
// connection goes on.
func (c *Client) appendFrame(f *relaypb.Frame) error {
	if c.wbuf == nil {
		c.wbuf = writeBufs.Get().(*[]byte)
	}
	b, err := wire.AppendFrame(*c.wbuf, f, c.opts.MaxFrameSize)
	*c.wbuf = b
	return err
}

// flushLocked writes the buffered frames; the caller holds wmu. The buffer
// goes back to the pool, so an idle client holds none.
func (c *Client) flushLocked() error {
	if c.wbuf == nil {
		return nil
	}
	bp := c.wbuf
	c.wbuf = nil
	_, err := c.nc.Write(*bp)
	if cap(*bp) <= 64<<10 {
		*bp = (*bp)[:0]
		writeBufs.Put(bp)
	}
	if err != nil {
		c.shutdown(err)
		return c.closedErr()
	}
	return nil
}

// flush writes what queue buffered.
func (c *Client) flush() {
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
}

// queue buffers f without writing it: the read loop answers a burst of
// frames (acknowledgements) with one write, made when it has read
// everything that arrived.
func (c *Client) queue(f *relaypb.Frame) {
	c.wmu.Lock()
	c.appendFrame(f)
	c.wmu.Unlock()
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, ioBufSize); return &b }}

func (c *Client) heartbeatLoop() {
	t := time.NewTicker(c.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			c.write(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{At: now.UnixMicro()}}})
		}
	}
}
