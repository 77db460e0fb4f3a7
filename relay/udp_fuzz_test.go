package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/rudp"
	"github.com/phonebook/phonebook/store/storetest"
)

// fuzzAuth lets every token in as one user; over UDP every token id, with
// the proofs of the token "t".
type fuzzAuth struct{}

func (fuzzAuth) Authenticate(ctx context.Context, token string) (phonebook.MSISDN, string, error) {
	return "+8613800138000", "dev", nil
}

func (fuzzAuth) AuthenticateUDP(ctx context.Context, udpID []byte) (phonebook.MSISDN, string, []byte, error) {
	return "+8613800138000", "dev", phonebook.TokenHash("t"), nil
}

// fuzzServer is a relay that lets every token in as one user, with a tiny
// send queue and ack timeout so that limits are reached.
func fuzzServer(f *testing.F) *Server {
	srv, err := NewServer(Config{NodeID: "fuzz", AckTimeout: 20 * time.Millisecond, SendQueue: 8},
		Deps{Auth: fuzzAuth{}, Store: storetest.SQLite(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// FuzzUDPDatagram gives the UDP transport arbitrary datagrams, both as
// they come (unauthenticated) and sealed with a live session's key (so the
// envelope and frame decoding and the session behind them are reached).
// The server must not panic, and the session table must stay bounded.
func FuzzUDPDatagram(f *testing.F) {
	seal := func(env *relaypb.UdpEnvelope) []byte { b, _ := rudp.Seal(nil, 0, nil, env); return b[rudp.HeaderLen:] }
	f.Add(seal(&relaypb.UdpEnvelope{Seq: 2, Ack: 1, Frame: &relaypb.Frame{Body: &relaypb.Frame_Send{Send: &relaypb.Send{ClientMsgId: "1", To: "13900139000", Text: "hi"}}}}), true)
	f.Add(seal(&relaypb.UdpEnvelope{Seq: 3, Sack: []uint32{5, 9, 1 << 31}, Frame: &relaypb.Frame{Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: "x"}}}}), true)
	f.Add(seal(&relaypb.UdpEnvelope{Pn: 1 << 62, Frame: &relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{At: 1}}}}), true)
	f.Add(seal(&relaypb.UdpEnvelope{Seq: 1 << 31, Frame: &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "t"}}}}), true)
	f.Add(seal(&relaypb.UdpEnvelope{Close: true}), true)
	f.Add(seal(&relaypb.UdpEnvelope{Seq: 2, Chunk: []byte{0x2a, 0x10, 0x0a, 0x01}, More: true}), true)
	f.Add(seal(&relaypb.UdpEnvelope{Seq: 2, Chunk: []byte{0x2a, 0x03, 0x0a, 0x01, 0x31}}), true)
	f.Add(append(make([]byte, 8), seal(&relaypb.UdpEnvelope{Seq: 1, Nonce: make([]byte, 16), Frame: &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "t"}}}})...), false)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff}, false)

	srv := fuzzServer(f)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	// No Serve: the fuzz function is the reader, calling datagram itself.
	u := srv.NewUDP(pc, UDPConfig{UnauthRate: 1e9, UnauthBurst: 1 << 30, MaxSessions: 4})
	f.Cleanup(func() { pc.Close() })
	cli, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cli.Close() })

	var connID uint64
	var key []byte
	// login opens a session as a client would; the fuzz function is then
	// the server's reader, so the answer is read here. Sessions the fuzzer
	// opened may still be closing and fill the table: then try again.
	login := func(t *testing.T) {
		var nonce [rudp.NonceLen]byte
		rand.Read(nonce[:])
		buf := make([]byte, 2048)
		deadline := time.Now().Add(10 * time.Second)
		hello, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Nonce: nonce[:], Padding: make([]byte, rudp.MinHello)})
		var challenge []byte
		for challenge == nil {
			u.datagram(hello, cli.LocalAddr(), time.Now())
			cli.SetReadDeadline(deadline)
			n, _, err := cli.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no challenge: %v", err)
			}
			var env relaypb.UdpEnvelope
			if id, _ := rudp.ConnID(buf[:n]); id == 0 && rudp.Open(buf[:n], nil, &env) == nil && len(env.Challenge) == rudp.ChallengeLen {
				challenge = env.Challenge
			}
		}
		th := phonebook.TokenHash("t")
		d, _ := rudp.Seal(nil, 0, nil, &relaypb.UdpEnvelope{Seq: 1, Nonce: nonce[:], Challenge: challenge,
			Frame: &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{
				UdpTokenId: phonebook.UDPTokenID(th), UdpProof: rudp.Proof(th, nonce[:], challenge)}}}})
		u.datagram(d, cli.LocalAddr(), time.Now())
		for {
			cli.SetReadDeadline(deadline)
			n, _, err := cli.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no AuthOK: %v", err)
			}
			id, _ := rudp.ConnID(buf[:n])
			var env relaypb.UdpEnvelope
			if id == 0 && rudp.Open(buf[:n], nil, &env) == nil && string(env.Nonce) == string(nonce[:]) {
				time.Sleep(10 * time.Millisecond)
				u.datagram(d, cli.LocalAddr(), time.Now())
				continue
			}
			k := rudp.DeriveKey(th, nonce[:], challenge, id)
			if id != 0 && rudp.Open(buf[:n], k, &env) == nil {
				connID, key = id, k
				return
			}
		}
	}

	f.Fuzz(func(t *testing.T, data []byte, sealed bool) {
		u.mu.Lock()
		alive := u.sessions[connID] != nil
		u.mu.Unlock()
		if !alive {
			login(t)
		}
		d := data
		if sealed {
			d = binary.BigEndian.AppendUint64(nil, connID)
			d = append(d, data...)
			m := hmac.New(sha256.New, key)
			m.Write(d)
			d = m.Sum(d)[:len(d)+rudp.TagLen]
		}
		u.datagram(d, cli.LocalAddr(), time.Now())
		if st := u.Stats(); st.Sessions > 4 {
			t.Fatalf("%d sessions: over the limit", st.Sessions)
		}
	})
}
