package relay_test

import (
	"net"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
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
	auth, _ := relay.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "guess"}}}, 0)
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
			relay.NewFrameReader(nc, 0).Read(&f) // unauthorized, or rate_limited
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
