package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/rudp"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// A real login's token over UDP, on SQLite and MariaDB: the session is
// found by its public id in the store and the proof checked; the capture
// holds neither the token nor its hash. Then 100 attackers at once, from
// 100 addresses: half replay the captured Auth (ignored, it names the live
// session's nonce; TestUDPTokenNeverOnTheWire replays it after the session
// ended: refused), half answer challenges of their own with guessed proofs
// for the real token id (refused). No session is opened but the owner's,
// which keeps working.
func TestUDPLoginAttackedOnRealStores(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		acc := accounts.New(db, accounts.Config{}, nil, nil)
		const number = "+8613800138000"
		id := phonebook.Identity{DeviceID: "imei-1", SIMID: "sim-1"}
		creds, err := acc.Prove(ctx, number, id, accounts.MethodHeader)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := acc.Login(ctx, accounts.LoginRequest{Number: number, Identity: id, DeviceKey: creds.DeviceKey})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := relay.NewServer(testConfig(), relay.Deps{Auth: relay.AccountsAuth{Accounts: acc}, Store: db, Metrics: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, db: db, srv: srv}
		u, addr := e.startUDP(relay.UDPConfig{UnauthRate: 1000, UnauthBurst: 1000}, nil)

		var capture *tap
		c := e.dialUDP(addr, sess.Token, id.DeviceID, client.Options{UDP: client.UDPOptions{
			Wrap: func(pc net.PacketConn) net.PacketConn { capture = &tap{PacketConn: pc}; return capture }}})
		if c.Number != number {
			t.Fatalf("logged in as %s", c.Number)
		}
		capture.mu.Lock()
		var auth []byte
		for _, d := range capture.sent {
			var env relaypb.UdpEnvelope
			if cid, _ := rudp.ConnID(d); cid == 0 && rudp.Open(d, nil, &env) == nil && env.Frame.GetAuth() != nil {
				auth = d
			}
		}
		all := append(append([][]byte(nil), capture.sent...), capture.received...)
		capture.mu.Unlock()
		if auth == nil {
			t.Fatal("no Auth captured")
		}
		for _, d := range all {
			if containsAny(d, []byte(sess.Token), phonebook.TokenHash(sess.Token)) {
				t.Fatalf("a datagram carries the token or its hash: %x", d)
			}
		}

		raddr, _ := net.ResolveUDPAddr("udp", addr)
		before := u.Stats().Refused
		var refusals atomic.Int64
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: loopback(i + 1)})
				if err != nil {
					t.Error(err)
					return
				}
				defer pc.Close()
				pc.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 2048)
				var nonce [rudp.NonceLen]byte
				rand.Read(nonce[:])
				datagram := auth // the replay: its challenge is for the client's address
				if i%2 == 1 {
					// A challenge of its own, a guessed proof for the real token id.
					hello, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Nonce: nonce[:], Padding: make([]byte, rudp.MinHello)})
					pc.WriteTo(hello, raddr)
					n, _, err := pc.ReadFrom(buf)
					var env relaypb.UdpEnvelope
					if err != nil || rudp.Open(buf[:n], nil, &env) != nil || len(env.Challenge) != rudp.ChallengeLen {
						t.Errorf("no challenge: %v", err)
						return
					}
					guess := make([]byte, 32)
					rand.Read(guess)
					datagram, _ = rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Seq: 1, Nonce: nonce[:], Challenge: env.Challenge,
						Frame: &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{
							UdpTokenId: phonebook.UDPTokenID(phonebook.TokenHash(sess.Token)), UdpProof: guess}}}})
				}
				pc.WriteTo(datagram, raddr)
				if i%2 == 0 {
					// While the session lives, its nonce only re-acks it, at
					// the owner's address: the replayer hears nothing.
					pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
					if n, _, err := pc.ReadFrom(buf); err == nil {
						t.Errorf("a replayed Auth drew a %d-byte answer", n)
					}
					return
				}
				for {
					n, _, err := pc.ReadFrom(buf)
					if err != nil {
						t.Errorf("attacker %d: no answer: %v", i, err)
						return
					}
					var env relaypb.UdpEnvelope
					if cid, _ := rudp.ConnID(buf[:n]); cid != 0 {
						t.Errorf("attacker %d got a session datagram", i)
						return
					}
					if rudp.Open(buf[:n], nil, &env) == nil && env.Frame.GetError().GetCode() == string(phonebook.EUnauthorized) {
						refusals.Add(1)
						return
					}
				}
			}()
		}
		wg.Wait()
		if refusals.Load() != 50 || u.Stats().Refused-before != 50 {
			t.Fatalf("%d of 50 guessed proofs refused (stats: %d)", refusals.Load(), u.Stats().Refused-before)
		}
		if got := u.Stats().Sessions; got != 1 {
			t.Fatalf("%d UDP sessions after the attack, want the owner's alone", got)
		}
		// The owner's session still works.
		p, err := c.Send("13900139000", "after the attack")
		if err != nil {
			t.Fatal(err)
		}
		wait(t, p)
	})
}

func containsAny(b []byte, subs ...[]byte) bool {
	for _, s := range subs {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}
