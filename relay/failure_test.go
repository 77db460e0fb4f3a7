package relay_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// rawConn is a hand-driven client connection: it can misbehave.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	fr *wire.FrameReader
}

func dialRaw(t *testing.T, addr string, rcvbuf int) *rawConn {
	t.Helper()
	d := net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(network, address string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, fr: wire.NewFrameReader(bufio.NewReader(nc), 0)}
}

func (c *rawConn) write(f *relaypb.Frame) {
	c.t.Helper()
	b, err := wire.AppendFrame(nil, f, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeBytes(b)
}

func (c *rawConn) writeBytes(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) read() (*relaypb.Frame, error) {
	c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	var f relaypb.Frame
	err := c.fr.Read(&f)
	return &f, err
}

// expectError reads until an Error frame and returns its code; closed
// reports whether the server then closed the connection.
func (c *rawConn) expectError() (code string, closed bool) {
	c.t.Helper()
	for {
		f, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for Error frame: %v", err)
		}
		if e := f.GetError(); e != nil {
			code = e.Code
			break
		}
	}
	c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var f relaypb.Frame
	err := c.fr.Read(&f)
	ne, isNet := err.(net.Error)
	return code, err != nil && !(isNet && ne.Timeout())
}

func (c *rawConn) auth(token, device string) {
	c.t.Helper()
	c.write(&relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: token, DeviceId: device}}})
	f, err := c.read()
	if err != nil || f.GetAuthOk() == nil {
		c.t.Fatalf("auth: %v %v", f, err)
	}
}

func TestMalformedFramesOverTCP(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFrameSize = 2048
	cfg.MaxTextBytes = 500
	e := start(t, cfg, nil)
	bigLen := binary.BigEndian.AppendUint32(nil, 1<<30)
	tests := []struct {
		name       string
		authFirst  bool
		send       func(c *rawConn)
		wantCode   phonebook.Code
		wantClosed bool
	}{
		{"auth not first", false, func(c *rawConn) {
			c.write(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{}}})
		}, phonebook.EUnauthorized, true},
		{"garbage before auth", false, func(c *rawConn) { c.writeBytes([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff}) }, phonebook.EProtocol, true},
		{"oversize length", true, func(c *rawConn) { c.writeBytes(bigLen) }, phonebook.ETooLarge, true},
		{"garbage protobuf", true, func(c *rawConn) { c.writeBytes([]byte{0, 0, 0, 2, 0x0a, 0x7f}) }, phonebook.EProtocol, true},
		{"second auth", true, func(c *rawConn) {
			c.write(&relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "tok-bob"}}})
		}, phonebook.EProtocol, true},
		{"server-only frame", true, func(c *rawConn) {
			c.write(&relaypb.Frame{Body: &relaypb.Frame_Deliver{Deliver: &relaypb.Deliver{Text: "spoof"}}})
		}, phonebook.EProtocol, true},
		{"unknown frame type", true, func(c *rawConn) {
			// Field 50 (reserved for contacts) with an empty body.
			c.writeBytes([]byte{0, 0, 0, 3, 0x92, 0x03, 0x00})
		}, phonebook.EUnknownFrame, false},
		// The empty frame (length 0: a Frame without a body) is a frame of
		// unknown kind: refused as a first frame, ignored after Auth.
		{"empty frame before auth", false, func(c *rawConn) { c.writeBytes([]byte{0, 0, 0, 0}) }, phonebook.EUnauthorized, true},
		{"empty frame", true, func(c *rawConn) { c.writeBytes([]byte{0, 0, 0, 0}) }, phonebook.EUnknownFrame, false},
		// A string that is not UTF-8 makes the frame invalid protobuf
		// (proto3): the connection closes, no SendResult.
		{"text not UTF-8", true, func(c *rawConn) {
			send := []byte{0x0a, 0x01, 'a', 0x12, 0x01, '1', 0x1a, 0x01, 0xff} // Send{client_msg_id "a", to "1", text "\xff"}
			c.writeBytes(append([]byte{0, 0, 0, byte(2 + len(send)), 0x2a, byte(len(send))}, send...))
		}, phonebook.EProtocol, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, e.addr, 0)
			if tt.authFirst {
				c.auth("tok-bob", "dev-bob")
			}
			tt.send(c)
			code, closed := c.expectError()
			if code != string(tt.wantCode) || closed != tt.wantClosed {
				t.Fatalf("got %s closed=%v, want %s closed=%v", code, closed, tt.wantCode, tt.wantClosed)
			}
		})
	}
	t.Run("auth deadline", func(t *testing.T) {
		cfg := testConfig()
		cfg.AuthTimeout = 100 * time.Millisecond
		e := start(t, cfg, nil)
		c := dialRaw(t, e.addr, 0)
		if code, closed := c.expectError(); code != string(phonebook.ETimeout) || !closed {
			t.Fatalf("got %s closed=%v", code, closed)
		}
	})
	// The server carries on.
	a := e.alice(client.Options{})
	b := e.bob(client.Options{AutoAck: true})
	p, _ := a.Send(string(bob), "still here")
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("state %s", state)
	}
	next(t, b.Deliveries(), "delivery")
	// A text over the limit is refused, not fatal.
	p, _ = a.Send(string(bob), strings.Repeat("x", 800))
	if r, _ := p.Wait(context.Background()); r.GetState() != relaypb.MessageState_FAILED || r.GetError().GetCode() != string(phonebook.ETooLarge) {
		t.Fatalf("oversize text: %v", r)
	}
}

func TestHalfOpenClientDetected(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 500 * time.Millisecond
	cfg.IdleTimeout = time.Second // 20 heartbeats of the live clients
	cfg.AckTimeout = 300 * time.Millisecond
	e := start(t, cfg, nil)
	// Bob authenticates, then goes silent without closing: no reads, no
	// heartbeats, no acks — as a phone that lost coverage.
	dead := dialRaw(t, e.addr, 0)
	dead.auth("tok-bob", "dev-bob")
	a := e.alice(client.Options{Heartbeat: 50 * time.Millisecond})
	p, _ := a.Send(string(bob), "into the void")
	id1, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("unacknowledged delivery ended %s, want STORED", state)
	}
	waitFor(t, "half-open session dropped", func() bool { return online(e.srv, bob) == 0 })
	p, _ = a.Send(string(bob), "later")
	id2, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("after drop: %s", state)
	}
	b := e.bob(client.Options{AutoAck: true, Heartbeat: 50 * time.Millisecond})
	for _, id := range []string{id1, id2} {
		if d := next(t, b.Deliveries(), "stored delivery"); d.ServerMsgId != id {
			t.Fatalf("got %s, want %s", d.ServerMsgId, id)
		}
	}
}

func TestHeartbeatsKeepSessionAlive(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 500 * time.Millisecond
	cfg.IdleTimeout = time.Second
	e := start(t, cfg, nil)
	b := e.bob(client.Options{Heartbeat: 50 * time.Millisecond, AutoAck: true})
	// Several idle timeouts pass; the heartbeats hold the session.
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if online(e.srv, bob) != 1 {
			t.Fatal("heartbeating session was dropped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-b.Done():
		t.Fatalf("client ended: %v", b.Err())
	default:
	}
}

func TestSlowReaderDisconnectedAndMessagesStored(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueue = 16
	cfg.SocketWriteBuffer = 4096
	cfg.AckTimeout = time.Hour // only the full queue may end it
	e := start(t, cfg, nil)
	slow := dialRaw(t, e.addr, 4096)
	slow.auth("tok-bob", "dev-bob")
	// Eight senders, each with as many messages in flight as the relay
	// lets it have: far more than the slow reader's queue and socket
	// buffers hold.
	text := strings.Repeat("z", 4000)
	var pend []*client.Pending
	for k := range 8 {
		tok := fmt.Sprintf("tok-sender%d", k)
		e.auth.add(tok, phonebook.MSISDN(fmt.Sprintf("+861360013600%d", k)), "dev")
		c := e.dial(tok, "dev", client.Options{})
		for i := range 16 {
			p, err := c.Send(string(bob), fmt.Sprintf("%d/%d %s", k, i, text))
			if err != nil {
				t.Fatal(err)
			}
			pend = append(pend, p)
		}
	}
	ids := make([]string, len(pend))
	for i, p := range pend {
		var state string
		ids[i], state = wait(t, p)
		if state != "STORED" {
			t.Fatalf("message %d: %s, want STORED (never acknowledged)", i, state)
		}
	}
	if online(e.srv, bob) != 0 {
		t.Fatal("slow reader still connected")
	}
	// Every message reaches bob's next session.
	b := e.bob(client.Options{AutoAck: true, Buffer: len(ids) + 1})
	got := map[string]bool{}
	for len(got) < len(ids) {
		got[next(t, b.Deliveries(), "stored delivery").ServerMsgId] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("message %s lost", id)
		}
	}
}

func TestSlowAckRedeliveredInSameSession(t *testing.T) {
	cfg := testConfig()
	cfg.AckTimeout = 100 * time.Millisecond
	e := start(t, cfg, nil)
	a := e.alice(client.Options{})
	b := e.bob(client.Options{}) // acknowledges by hand, late
	p, _ := a.Send(string(bob), "slow")
	first := next(t, b.Deliveries(), "live delivery")
	id, state := wait(t, p)
	if state != "STORED" || id != first.ServerMsgId {
		t.Fatalf("after the ack timeout: %s %s", id, state)
	}
	// Still connected: the stored copy comes again without a new login.
	again := next(t, b.Deliveries(), "redelivery")
	if again.ServerMsgId != id || !again.Offline {
		t.Fatalf("redelivery %v", again)
	}
	b.Ack(again.ServerMsgId)
	if r := next(t, a.Receipts(), "DELIVERED receipt"); r.ServerMsgId != id || r.State != relaypb.MessageState_DELIVERED {
		t.Fatalf("receipt %v", r)
	}
	waitFor(t, "stored copy deleted", func() bool {
		k, err := e.db.CountOfflineMessages(context.Background(), bob)
		return err == nil && k == 0
	})
}
