package relay_test

import (
	"bytes"
	"crypto/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/rudp"
	"github.com/phonebook/phonebook/relay/wire"
)

// loopback returns 127.0.x.y for i: every address in 127.0.0.0/8 is this
// host's, so a test can send from many addresses of one network.
func loopback(i int) net.IP { return net.IPv4(127, 0, byte(i/250), byte(i%250+2)) }

// Connections waiting for Auth are bounded per network, not per address:
// with limits.ipv4_prefix 16, 100 connections from 100 addresses of
// 127.0.0.0/16, opened at once, get at most MaxPendingAuthPerIP waiting;
// the rest are refused. Another /16 has its own bound.
func TestPendingAuthPerNetwork(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPendingAuthPerIP = 10
	cfg.AddrPrefixes = phonebook.AddrPrefixes{V4: 16}
	e := start(t, cfg, nil)
	const n = 100
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: loopback(i)}}
			nc, err := d.Dial("tcp", e.addr)
			if err != nil {
				t.Error(err)
				return
			}
			conns[i] = nc
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	})
	rejected := 0
	for _, nc := range conns {
		if nc != nil && refused(t, nc) {
			rejected++
		}
	}
	if rejected < n-10 {
		t.Fatalf("%d of %d connections from one /16 were refused; want at least %d", rejected, n, n-10)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, 0, 1)}}
	other, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if refused(t, other) {
		t.Fatal("a connection from another /16 was refused")
	}
}

// Failed relay logins from many addresses of one network drain one
// bucket: the network's next connection is refused.
func TestAuthFailuresPerNetwork(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAuthFailuresPerMinute = 5
	cfg.AddrPrefixes = phonebook.AddrPrefixes{V4: 16}
	e := start(t, cfg, nil)
	auth, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "guess"}}}, 0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: loopback(i)}}
			nc, err := d.Dial("tcp", e.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			nc.Write(auth)
			var f relaypb.Frame
			wire.NewFrameReader(nc, 0).Read(&f) // unauthorized, or rate_limited
		}()
	}
	wg.Wait()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: loopback(77)}}
	nc, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !refused(t, nc) {
		t.Fatal("a fresh address of a network whose logins kept failing was let in")
	}
}

// Unauthenticated datagrams from 300 addresses of one network share one
// bucket; and a flood of new networks through a full limiter table does not
// give a network that keeps sending a fresh burst: the table drops the
// least recently used network, not everyone's.
func TestUDPLimitPerNetworkAndLRU(t *testing.T) {
	t.Run("one /16 shares a bucket", func(t *testing.T) {
		cfg := testConfig()
		cfg.AddrPrefixes = phonebook.AddrPrefixes{V4: 16}
		e := start(t, cfg, nil)
		u, addr := e.startUDP(relay.UDPConfig{UnauthRate: 0.001, UnauthBurst: 20}, nil)
		raddr, _ := net.ResolveUDPAddr("udp", addr)
		const n = 300
		for i := range n {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: loopback(i)})
			if err != nil {
				t.Fatal(err)
			}
			pc.WriteTo([]byte("garbage!garbage!"), raddr)
			pc.Close()
			if i%50 == 49 {
				seen := uint64(i + 1)
				waitFor(t, "the datagrams so far to be seen", func() bool { st := u.Stats(); return st.UnknownConn+st.RateLimited >= seen })
			}
		}
		waitFor(t, "every datagram to be seen", func() bool { st := u.Stats(); return st.UnknownConn+st.RateLimited >= n })
		if st := u.Stats(); st.UnknownConn > 20 {
			t.Fatalf("%d datagrams from one /16 got past a burst of 20 (stats %+v)", st.UnknownConn, st)
		}
	})
	t.Run("LRU eviction", func(t *testing.T) {
		e := start(t, testConfig(), nil)
		u, addr := e.startUDP(relay.UDPConfig{UnauthRate: 0.001, UnauthBurst: 5, LimiterTable: 32}, nil)
		raddr, _ := net.ResolveUDPAddr("udp", addr)
		attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 9, 9, 9)})
		if err != nil {
			t.Fatal(err)
		}
		defer attacker.Close()
		const others = 500
		for i := range others {
			attacker.WriteTo([]byte("garbage!garbage!"), raddr)
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: loopback(i)})
			if err != nil {
				t.Fatal(err)
			}
			pc.WriteTo([]byte("garbage!garbage!"), raddr)
			pc.Close()
			if i%50 == 49 { // pace the flood so the socket buffer keeps every datagram
				seen := uint64(2 * (i + 1))
				waitFor(t, "the datagrams so far to be seen", func() bool { st := u.Stats(); return st.UnknownConn+st.RateLimited >= seen })
			}
		}
		waitFor(t, "every datagram to be seen", func() bool { st := u.Stats(); return st.UnknownConn+st.RateLimited >= 2*others })
		// The attacker gets its burst of 5 and no more; every new address
		// its one datagram.
		if st := u.Stats(); st.UnknownConn > others+5 || st.RateLimited < others-5 {
			t.Fatalf("stats %+v: the busy network got a fresh burst while the table turned over", st)
		}
	})
}

// The UDP login never puts the session token (nor its hash, the proof's
// key) on the wire: a capture of every datagram of a session, both ways,
// contains neither. Replaying the captured Auth from another address is
// refused (the challenge is bound to the client's address), and an Auth
// that carries the token in clear, as before challenge-response, is refused.
func TestUDPTokenNeverOnTheWire(t *testing.T) {
	e := start(t, testConfig(), nil)
	const token = "tok-alice-0123456789abcdefghijklmnopqrstuv"
	e.auth.add(token, alice, "dev-alice")
	u, addr := e.startUDP(relay.UDPConfig{}, nil)
	var capture *tap
	a := e.dialUDP(addr, token, "dev-alice", client.Options{UDP: client.UDPOptions{
		Wrap: func(pc net.PacketConn) net.PacketConn { capture = &tap{PacketConn: pc}; return capture }}})
	b := e.bob(client.Options{AutoAck: true})
	p, _ := a.Send("13900139000", "over udp")
	if d := <-b.Deliveries(); d.Text != "over udp" {
		t.Fatalf("delivered %v", d)
	}
	wait(t, p)
	a.Close()
	capture.mu.Lock()
	all := append(append([][]byte(nil), capture.sent...), capture.received...)
	var auth []byte
	for _, d := range capture.sent {
		var env relaypb.UdpEnvelope
		if id, _ := rudp.ConnID(d); id == 0 && rudp.Open(d, nil, &env) == nil && env.Frame.GetAuth() != nil {
			auth = d
		}
	}
	capture.mu.Unlock()
	if len(all) < 4 || auth == nil {
		t.Fatalf("captured %d datagrams, Auth %v: the capture did not work", len(all), auth != nil)
	}
	hash := phonebook.TokenHash(token)
	for i, d := range all {
		if bytes.Contains(d, []byte(token)) || bytes.Contains(d, hash) {
			t.Fatalf("datagram %d of %d carries the token or its hash: %x", i, len(all), d)
		}
	}

	// The captured Auth, replayed from another address once the session
	// is gone (while it lives, a datagram with its nonce only re-acks it).
	waitFor(t, "the session to end", func() bool { return u.Stats().Sessions == 0 })
	observer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	raddr, _ := net.ResolveUDPAddr("udp", addr)
	before := u.Stats().Refused
	observer.WriteTo(auth, raddr)
	observer.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := observer.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer to the replayed Auth: %v", err)
	}
	var env relaypb.UdpEnvelope
	if id, _ := rudp.ConnID(buf[:n]); id != 0 || rudp.Open(buf[:n], nil, &env) != nil || env.Frame.GetError().GetCode() != string(phonebook.EUnauthorized) {
		t.Fatalf("replayed Auth answered with %x", buf[:n])
	}
	if u.Stats().Refused != before+1 {
		t.Fatalf("refused %d -> %d", before, u.Stats().Refused)
	}

	// An Auth carrying the token in clear, answering a real challenge.
	var nonce [rudp.NonceLen]byte
	rand.Read(nonce[:])
	hello, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Nonce: nonce[:], Padding: make([]byte, rudp.MinHello)})
	observer.WriteTo(hello, raddr)
	n, _, err = observer.ReadFrom(buf)
	if err != nil || rudp.Open(buf[:n], nil, &env) != nil || len(env.Challenge) != rudp.ChallengeLen {
		t.Fatalf("no challenge: %v %x", err, buf[:n])
	}
	clear, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Seq: 1, Nonce: nonce[:], Challenge: env.Challenge,
		Frame: &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: token, DeviceId: "dev-alice"}}}})
	observer.WriteTo(clear, raddr)
	n, _, err = observer.ReadFrom(buf)
	if err != nil || rudp.Open(buf[:n], nil, &env) != nil || env.Frame.GetError().GetCode() != string(phonebook.EUnauthorized) {
		t.Fatalf("an Auth with the token in clear was not refused: %v %x", err, buf[:n])
	}
	// And a hello shorter than the minimum gets no answer at all.
	short, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Nonce: nonce[:]})
	observer.WriteTo(short, raddr)
	observer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := observer.ReadFrom(buf); err == nil {
		t.Fatalf("a %d-byte hello drew a %d-byte answer", len(short), n)
	}
}
