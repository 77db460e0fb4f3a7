package relay_test

import (
	"net"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// idleConn opens a TCP connection that does not authenticate (yet).
func idleConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// refused reports whether the server answered nc with Error rate_limited
// (and closed it); false when nc is still waiting after a moment.
func refused(t *testing.T, nc net.Conn) bool {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var f relaypb.Frame
	err := wire.NewFrameReader(nc, 0).Read(&f)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if f.GetError().GetCode() != string(phonebook.ERateLimited) || f.GetError().GetRetryAfterSecs() == 0 {
		t.Fatalf("got %v, want Error rate_limited with retry_after", &f)
	}
	return true
}

// Connections that have not authenticated are bounded per client address
// and in all; authenticating (or leaving) makes room again.
func TestPendingAuthIsBounded(t *testing.T) {
	for _, c := range []struct {
		name          string
		total, perIP  int
		waitingBefore int
	}{
		{"per address", 100, 3, 3},
		{"in all", 2, 100, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxPendingAuth, cfg.MaxPendingAuthPerIP = c.total, c.perIP
			e := start(t, cfg, nil)
			var waiting []net.Conn
			for range c.waitingBefore {
				waiting = append(waiting, idleConn(t, e.addr))
			}
			// Accepts are asynchronous: let the server count them.
			waitFor(t, "the limit to be reached", func() bool { return refused(t, idleConn(t, e.addr)) })
			for _, nc := range waiting {
				if refused(t, nc) {
					t.Fatal("a connection within the limit was refused")
				}
			}
			// One of them authenticates: there is room for one more.
			b, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "tok-alice"}}}, 0)
			if _, err := waiting[0].Write(b); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "alice's login", func() bool { return online(e.srv, alice) == 1 })
			if refused(t, idleConn(t, e.addr)) {
				t.Fatal("no room after a connection authenticated")
			}
			if got := e.counter("phonebook_relay_pending_auth_refused_total"); got < 1 {
				t.Fatalf("phonebook_relay_pending_auth_refused_total = %v", got)
			}
		})
	}
}

// An address whose logins keep failing is turned away at accept, even with
// a good token, until its bucket refills; other failures (the server's)
// do not count.
func TestFailedLoginsAreLimitedPerAddress(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAuthFailuresPerMinute = 3
	e := start(t, cfg, nil)
	badLogin := func() *relaypb.Frame {
		t.Helper()
		nc := idleConn(t, e.addr)
		b, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "not-a-token"}}}, 0)
		nc.Write(b)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var f relaypb.Frame
		if err := wire.NewFrameReader(nc, 0).Read(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		return &f
	}
	for i := range 3 {
		if f := badLogin(); f.GetError().GetCode() != string(phonebook.EUnauthorized) {
			t.Fatalf("bad login %d: %v", i+1, f)
		}
	}
	// A minute's allowance is 3, so a token comes back every 20 s; the
	// refusal says when.
	nc := idleConn(t, e.addr)
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f relaypb.Frame
	if err := wire.NewFrameReader(nc, 0).Read(&f); err != nil || f.GetError().GetCode() != string(phonebook.ERateLimited) {
		t.Fatalf("a fourth connection after three failed logins: %v %v", &f, err)
	}
	if s := f.GetError().GetRetryAfterSecs(); s < 19 || s > 21 {
		t.Fatalf("retry_after_secs = %d, want about 20", s)
	}
	if got := e.counter("phonebook_relay_pending_auth_refused_total"); got != 1 {
		t.Fatalf("phonebook_relay_pending_auth_refused_total = %v, want 1", got)
	}
}
