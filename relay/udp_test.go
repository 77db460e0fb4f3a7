package relay_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/rudp"
	"github.com/phonebook/phonebook/store/storetest"
)

// fastTiming retransmits quickly, and often enough that 20% loss in each
// direction cannot exhaust the retries (0.36^31 per frame).
var fastTiming = rudp.Timing{Initial: 15 * time.Millisecond, Max: 150 * time.Millisecond, Retries: 30}

// startUDP serves e's relay over UDP on 127.0.0.1; wrap, when set, wraps
// the server's socket.
func (e *env) startUDP(cfg relay.UDPConfig, wrap func(net.PacketConn) net.PacketConn) (*relay.UDPServer, string) {
	e.t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if wrap != nil {
		pc = wrap(pc)
	}
	u := e.srv.NewUDP(pc, cfg)
	done := make(chan error, 1)
	go func() { done <- u.Serve() }()
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
		select {
		case err := <-done:
			if !errors.Is(err, relay.ErrServerClosed) {
				e.t.Errorf("ServeUDP returned %v", err)
			}
		case <-ctx.Done():
			e.t.Error("ServeUDP did not return after Shutdown")
		}
	})
	return u, addr
}

func (e *env) dialUDP(addr, token, device string, o client.Options) *client.Client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o.Token, o.DeviceID = token, device
	c, err := client.DialUDP(ctx, addr, o)
	if err != nil {
		e.t.Fatalf("dial UDP as %s: %v", token, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// lossy drops a share of datagrams in both directions, with a seeded RNG.
type lossy struct {
	net.PacketConn
	mu      sync.Mutex
	rng     *rand.Rand
	rate    float64
	dropped atomic.Int64
}

func newLossy(pc net.PacketConn, rate float64, seed uint64) *lossy {
	return &lossy{PacketConn: pc, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), rate: rate}
}

func (l *lossy) drop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rng.Float64() < l.rate {
		l.dropped.Add(1)
		return true
	}
	return false
}

func (l *lossy) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := l.PacketConn.ReadFrom(b)
		if err != nil || !l.drop() {
			return n, addr, err
		}
	}
}

func (l *lossy) WriteTo(b []byte, addr net.Addr) (int, error) {
	if l.drop() {
		return len(b), nil
	}
	return l.PacketConn.WriteTo(b, addr)
}

// largeText takes three datagrams.
var largeText = strings.Repeat("large ", 500)

// collect reads n deliveries, counting each server_msg_id.
func collect(t *testing.T, c *client.Client, n int) map[string]int {
	t.Helper()
	seen := make(map[string]int)
	timeout := time.After(30 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case d, ok := <-c.Deliveries():
			if !ok {
				t.Fatalf("connection ended after %d of %d deliveries: %v", got, n, c.Err())
			}
			seen[d.ServerMsgId]++
			if d.Text != largeText && d.Text != "msg" && d.Text != "lossy" && d.Text != "while you were out" {
				t.Fatalf("delivered a damaged text of %d bytes", len(d.Text))
			}
		case <-timeout:
			t.Fatalf("%d of %d deliveries", got, n)
		}
	}
	return seen
}

func TestUDPOnlineDelivery(t *testing.T) {
	cfg := testConfig()
	e := start(t, cfg, nil)
	_, addr := e.startUDP(relay.UDPConfig{}, nil)
	a := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	b := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true})
	if a.Number != alice || a.SessionID == "" {
		t.Fatalf("AuthOK over UDP: %s %q", a.Number, a.SessionID)
	}
	waitFor(t, "bob online", func() bool { return online(e.srv, bob) == 1 })
	for _, c := range e.srv.Connections() {
		if c.Number == bob && c.Transport != "udp" {
			t.Fatalf("bob's transport is %q", c.Transport)
		}
	}
	p, err := a.Send("13900139000", "hello over udp")
	if err != nil {
		t.Fatal(err)
	}
	d := <-b.Deliveries()
	if d.From != string(alice) || d.Text != "hello over udp" {
		t.Fatalf("delivered %v", d)
	}
	if id, state := wait(t, p); state != "DELIVERED" || id != d.ServerMsgId {
		t.Fatalf("SendResult %s %s, delivered %s", id, state, d.ServerMsgId)
	}

	// A TCP sender reaches the UDP recipient.
	at := e.alice(client.Options{})
	waitFor(t, "alice on TCP replaced her UDP session", func() bool {
		cs := e.srv.Connections()
		return len(cs) == 2 && online(e.srv, alice) == 1
	})
	p, _ = at.Send("+8613900139000", "tcp to udp")
	d = <-b.Deliveries()
	if d.Text != "tcp to udp" {
		t.Fatalf("delivered %v", d)
	}
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("TCP to UDP: %s", state)
	}
	// The replaced UDP session was told why.
	select {
	case <-a.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("replaced UDP session still open")
	}
	var se *client.ServerError
	if !errors.As(a.Err(), &se) || se.Code != phonebook.ESessionReplaced {
		t.Fatalf("replaced UDP session ended with %v", a.Err())
	}
}

func TestUDPOfflineThenDeliveredAtLogin(t *testing.T) {
	e := start(t, testConfig(), nil)
	_, addr := e.startUDP(relay.UDPConfig{}, nil)
	a := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	var ps []*client.Pending
	for i := 0; i < 5; i++ {
		p, err := a.Send("13900139000", "while you were out")
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	ids := map[string]bool{}
	for _, p := range ps {
		id, state := wait(t, p)
		if state != "STORED" {
			t.Fatalf("offline recipient: %s", state)
		}
		ids[id] = true
	}
	b := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true})
	seen := collect(t, b, 5)
	for id := range ids {
		if seen[id] != 1 {
			t.Fatalf("message %s delivered %d times", id, seen[id])
		}
	}
	// The sender hears of each delivery over UDP.
	for got := 0; got < 5; {
		select {
		case r := <-a.Receipts():
			if r.State != relaypb.MessageState_DELIVERED || !ids[r.ServerMsgId] {
				t.Fatalf("receipt %v", r)
			}
			got++
		case <-time.After(15 * time.Second):
			t.Fatalf("%d of 5 receipts", got)
		}
	}
}

func TestUDPRebinding(t *testing.T) {
	e := start(t, testConfig(), nil)
	u, addr := e.startUDP(relay.UDPConfig{}, nil)
	a := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	b := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true})
	const rounds, per = 3, 10
	var ps []*client.Pending
	total := 0
	for r := 0; r < rounds; r++ {
		for i := 0; i < per; i++ {
			p, err := a.Send("13900139000", "msg")
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		// Move mid-conversation: results and deliveries still in flight
		// follow the client to its new port.
		switch r {
		case 0:
			if err := b.Rebind(); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := a.Rebind(); err != nil {
				t.Fatal(err)
			}
		}
		total += per
	}
	seen := collect(t, b, total)
	for _, p := range ps {
		id, state := wait(t, p)
		if state != "DELIVERED" || seen[id] != 1 {
			t.Fatalf("message %s: %s, delivered %d times", id, state, seen[id])
		}
	}
	if st := u.Stats(); st.Rebinds < 2 {
		t.Fatalf("rebinds %d, want 2", st.Rebinds)
	}
	if online(e.srv, alice) != 1 || online(e.srv, bob) != 1 {
		t.Fatal("a session was replaced instead of moved")
	}
}

func TestUDPLoss(t *testing.T) {
	cfg := testConfig()
	cfg.AckTimeout = time.Minute // DELIVERED must come from the acks, not a timeout
	e := start(t, cfg, nil)
	var srvLoss *lossy
	_, addr := e.startUDP(relay.UDPConfig{Timing: fastTiming}, func(pc net.PacketConn) net.PacketConn {
		srvLoss = newLossy(pc, 0.2, 1)
		return srvLoss
	})
	var seed atomic.Uint64
	var clientLoss []*lossy
	var mu sync.Mutex
	o := client.Options{UDP: client.UDPOptions{Timing: fastTiming, Wrap: func(pc net.PacketConn) net.PacketConn {
		l := newLossy(pc, 0.2, 100+seed.Add(1))
		mu.Lock()
		clientLoss = append(clientLoss, l)
		mu.Unlock()
		return l
	}}}
	a := e.dialUDP(addr, "tok-alice", "dev-alice", o)
	o.AutoAck = true
	b := e.dialUDP(addr, "tok-bob", "dev-bob", o)
	const n = 200
	ps := make([]*client.Pending, n)
	for i := range ps {
		text := "lossy"
		if i%10 == 0 {
			text = largeText
		}
		p, err := a.Send("13900139000", text)
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	seen := collect(t, b, n)
	for _, p := range ps {
		id, state := wait(t, p)
		if state != "DELIVERED" || seen[id] != 1 {
			t.Fatalf("message %s: %s, delivered %d times", id, state, seen[id])
		}
	}
	// Nothing more arrives: no duplicate reached the application.
	select {
	case d := <-b.Deliveries():
		t.Fatalf("extra delivery %s (seen %d times before)", d.ServerMsgId, seen[d.ServerMsgId])
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	dropped := srvLoss.dropped.Load()
	for _, l := range clientLoss {
		dropped += l.dropped.Load()
	}
	mu.Unlock()
	if dropped < n/5 {
		t.Fatalf("only %d datagrams dropped: the loss wrapper did not work", dropped)
	}
	t.Logf("%d datagrams dropped", dropped)
}

// tap records the datagrams a client socket sends and receives.
type tap struct {
	net.PacketConn
	mu       sync.Mutex
	sent     [][]byte
	received [][]byte
}

func (tp *tap) WriteTo(b []byte, addr net.Addr) (int, error) {
	tp.mu.Lock()
	tp.sent = append(tp.sent, append([]byte(nil), b...))
	tp.mu.Unlock()
	return tp.PacketConn.WriteTo(b, addr)
}

func (tp *tap) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := tp.PacketConn.ReadFrom(b)
	if err == nil {
		tp.mu.Lock()
		tp.received = append(tp.received, append([]byte(nil), b[:n]...))
		tp.mu.Unlock()
	}
	return n, addr, err
}

func TestUDPSpoofedDatagramsDropped(t *testing.T) {
	e := start(t, testConfig(), nil)
	u, addr := e.startUDP(relay.UDPConfig{UnauthBurst: 1000, UnauthRate: 1000}, nil)
	var bt *tap
	b := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true, UDP: client.UDPOptions{
		Wrap: func(pc net.PacketConn) net.PacketConn { bt = &tap{PacketConn: pc}; return bt }}})
	a := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	p, _ := a.Send("13900139000", "before")
	<-b.Deliveries()
	wait(t, p)

	bt.mu.Lock()
	authentic := bt.sent[len(bt.sent)-1] // bob's latest: an ack, from his address
	var connID uint64                    // of bob's session: the handshake's datagrams have 0
	for _, d := range bt.received {
		if connID, _ = rudp.ConnID(d); connID != 0 {
			break
		}
	}
	bt.mu.Unlock()

	attacker, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	send := func(b []byte) {
		if _, err := attacker.WriteTo(b, raddr); err != nil {
			t.Fatal(err)
		}
	}
	// Unknown connection id.
	forged, _ := rudp.Seal(nil, connID^1, make([]byte, 32), &relaypb.UdpEnvelope{Seq: 5, Frame: &relaypb.Frame{
		Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: "x"}}}})
	send(forged)
	// Bob's id with a key that is not his.
	forged, _ = rudp.Seal(nil, connID, make([]byte, 32), &relaypb.UdpEnvelope{Seq: 5, Pn: 1 << 40, Close: true})
	send(forged)
	// Bob's genuine datagram with its tag altered.
	bad := append([]byte(nil), authentic...)
	bad[len(bad)-1] ^= 1
	send(bad)
	// Garbage and an Auth-less handshake.
	send([]byte{1, 2, 3})
	send(make([]byte, 8))
	// Bob's genuine datagram replayed from elsewhere: accepted as a
	// duplicate, but must not move his session to the attacker.
	send(authentic)
	waitFor(t, "spoofs counted", func() bool {
		st := u.Stats()
		return st.UnknownConn >= 1 && st.BadTag >= 2 && st.Malformed >= 2
	})
	if st := u.Stats(); st.Rebinds != 0 {
		t.Fatalf("a replayed datagram moved the session: %+v", st)
	}
	// Bob still gets his messages at his own address.
	p, _ = a.Send("13900139000", "after")
	if d := <-b.Deliveries(); d.Text != "after" {
		t.Fatalf("delivered %v", d)
	}
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("after spoofing: %s", state)
	}
	attacker.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := attacker.ReadFrom(make([]byte, 2048)); err == nil {
		t.Fatalf("the attacker got a %d-byte answer", n)
	}
}

func TestUDPLimits(t *testing.T) {
	e := start(t, testConfig(), nil)
	u, addr := e.startUDP(relay.UDPConfig{UnauthRate: 1, UnauthBurst: 5, MaxSessions: 1}, nil)
	// A bad token is refused with its code.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.DialUDP(ctx, addr, client.Options{Token: "nope"})
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != phonebook.EUnauthorized {
		t.Fatalf("bad token: %v", err)
	}
	// One session allowed; a second login is refused, not queued.
	e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	_, err = client.DialUDP(ctx, addr, client.Options{Token: "tok-bob", DeviceID: "dev-bob"})
	if !errors.As(err, &se) || se.Code != phonebook.EUnavailable {
		t.Fatalf("over the session limit: %v", err)
	}
	// Unauthenticated datagrams beyond the per-address burst are dropped
	// before any work.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	for i := 0; i < 50; i++ {
		pc.WriteTo([]byte("garbage!garbage!"), raddr)
	}
	waitFor(t, "rate limit", func() bool { return u.Stats().RateLimited >= 40 })
	if st := u.Stats(); st.UnknownConn > 5 {
		t.Fatalf("%d unauthenticated datagrams processed beyond the burst", st.UnknownConn)
	}
}

// A refused UDP login is answered with no more bytes than the Auth
// datagram had, or, for a tiny Auth, with the code alone, so a forged
// source address gains next to nothing.
func TestUDPRefusalDoesNotAmplify(t *testing.T) {
	e := start(t, testConfig(), nil)
	_, addr := e.startUDP(relay.UDPConfig{}, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	nonce := make([]byte, rudp.NonceLen)
	codeOnly, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Nonce: nonce, Close: true,
		Frame: &relaypb.Frame{Body: &relaypb.Frame_Error{Error: &relaypb.Error{Code: string(phonebook.EUnauthorized)}}}})
	for i, token := range []string{"x", strings.Repeat("y", 200)} {
		nonce[0] = byte(i + 1) // a new login each time
		auth, err := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Seq: 1, Nonce: nonce,
			Frame: &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: token}}}})
		if err != nil {
			t.Fatal(err)
		}
		pc.WriteTo(auth, raddr)
		buf := make([]byte, 2048)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to a %d-byte Auth: %v", len(auth), err)
		}
		if n > max(len(auth), len(codeOnly)) {
			t.Fatalf("a %d-byte Auth got a %d-byte answer (the code alone takes %d)", len(auth), n, len(codeOnly))
		}
		env := new(relaypb.UdpEnvelope)
		if err := rudp.Open(buf[:n], nil, env); err != nil || env.Frame.GetError().GetCode() != string(phonebook.EUnauthorized) {
			t.Fatalf("answer %v %v", env, err)
		}
		if len(token) > 100 && env.Frame.GetError().GetMessage() == "" {
			t.Fatal("a large Auth lost the message text it had room for")
		}
	}
}

func TestUDPLargeMessages(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTextBytes = 4096 // big (3900 bytes) fits, big+big does not
	e := start(t, cfg, nil)
	_, addr := e.startUDP(relay.UDPConfig{}, nil)
	a := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	b := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true})
	big := strings.Repeat("字", 1300) // 3900 bytes: four datagrams of 1200
	p, _ := a.Send("13900139000", big)
	if d := <-b.Deliveries(); d.Text != big {
		t.Fatalf("delivered %d bytes", len(d.Text))
	}
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("large message over UDP: %s", state)
	}
	// From a TCP sender too.
	b2 := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true})
	at := e.alice(client.Options{})
	p, _ = at.Send("13900139000", big+"!")
	if d := <-b2.Deliveries(); d.Text != big+"!" {
		t.Fatalf("delivered %d bytes", len(d.Text))
	}
	wait(t, p)
	// Over max_text_bytes: the server's answer, as over TCP.
	au := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	p, _ = au.Send("13900139000", big+big)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.Wait(ctx)
	if err != nil || r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.ETooLarge) {
		t.Fatalf("over the text limit: %v %v", r, err)
	}
}

func TestUDPDeadPeerStoresDeliveries(t *testing.T) {
	cfg := testConfig()
	cfg.AckTimeout = time.Minute // storing must come from the retransmission limit
	e := start(t, cfg, nil)
	u, addr := e.startUDP(relay.UDPConfig{Timing: rudp.Timing{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, Retries: 4}}, nil)
	var deaf atomic.Bool
	b := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{UDP: client.UDPOptions{Wrap: func(pc net.PacketConn) net.PacketConn {
		return &deafConn{PacketConn: pc, deaf: &deaf}
	}}})
	_ = b
	a := e.dialUDP(addr, "tok-alice", "dev-alice", client.Options{})
	deaf.Store(true) // bob's phone loses the network
	p, _ := a.Send("13900139000", "into the void")
	if _, state := wait(t, p); state != "STORED" {
		t.Fatalf("to a dead UDP peer: %s", state)
	}
	waitFor(t, "bob's session ended", func() bool { return online(e.srv, bob) == 0 && u.Stats().Sessions == 1 })
	b2 := e.dialUDP(addr, "tok-bob", "dev-bob", client.Options{AutoAck: true})
	if d := <-b2.Deliveries(); d.Text != "into the void" || !d.Offline {
		t.Fatalf("at next login: %v", d)
	}
}

// deafConn stops receiving when deaf is set.
type deafConn struct {
	net.PacketConn
	deaf *atomic.Bool
}

func (d *deafConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := d.PacketConn.ReadFrom(b)
		if err != nil || !d.deaf.Load() {
			return n, addr, err
		}
	}
}

// BenchmarkUDPDelivery sends messages between two UDP clients on loopback,
// 64 in flight, each delivered, acknowledged and answered DELIVERED:
// go test -run '^$' -bench UDPDelivery -benchtime 20000x ./relay
func BenchmarkUDPDelivery(b *testing.B) {
	a := newTokenAuth()
	srv, err := relay.NewServer(testConfig(), relay.Deps{Auth: a, Store: storetest.SQLite(b), Directory: a})
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.ServeUDP(pc, relay.UDPConfig{})
	defer srv.Shutdown(context.Background())
	dial := func(token, device string) *client.Client {
		c, err := client.DialUDP(context.Background(), pc.LocalAddr().String(), client.Options{Token: token, DeviceID: device, AutoAck: true})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	ac, bc := dial("tok-alice", "dev-alice"), dial("tok-bob", "dev-bob")
	defer ac.Close()
	defer bc.Close()
	go func() {
		for range bc.Deliveries() {
		}
	}()
	window := make(chan *client.Pending, 64)
	done := make(chan error, 1)
	go func() {
		for p := range window {
			r, err := p.Wait(context.Background())
			if err == nil && r.State != relaypb.MessageState_DELIVERED {
				err = errors.New(r.State.String())
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		p, err := ac.Send("13900139000", "benchmark message of a typical length, about sixty bytes")
		if err != nil {
			b.Fatal(err)
		}
		window <- p
	}
	close(window)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
