package rudp

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/proto/relaypb"
)

func ackFrame(id string) *relaypb.Frame {
	return &relaypb.Frame{Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: id}}}
}

func TestSealOpen(t *testing.T) {
	key := DeriveKey([]byte("token"), make([]byte, NonceLen), make([]byte, ChallengeLen), 42)
	env := &relaypb.UdpEnvelope{Seq: 7, Ack: 3, Sack: []uint32{5}, Frame: ackFrame("m1"), Pn: 9}
	b, err := Seal(nil, 42, key, env)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := ConnID(b); id != 42 {
		t.Fatalf("conn id %d", id)
	}
	var got relaypb.UdpEnvelope
	if err := Open(b, key, &got); err != nil || got.Seq != 7 || got.Frame.GetDeliverAck().GetServerMsgId() != "m1" {
		t.Fatalf("open: %v %v", &got, err)
	}
	other := DeriveKey([]byte("token"), make([]byte, NonceLen), make([]byte, ChallengeLen), 43)
	tampered := append([]byte(nil), b...)
	tampered[HeaderLen] ^= 1
	for name, tc := range map[string]struct {
		b   []byte
		key []byte
		err error
	}{
		"other session's key": {b, other, ErrBadTag},
		"tampered":            {tampered, key, ErrBadTag},
		"short":               {b[:HeaderLen+TagLen-1], key, ErrShort},
		"no header":           {b[:3], nil, ErrShort},
		"garbage body":        {[]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff}, nil, ErrBadBody},
	} {
		if err := Open(tc.b, tc.key, &got); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", name, err, tc.err)
		}
	}
	if DeriveKey([]byte("token"), make([]byte, NonceLen), make([]byte, ChallengeLen), 42)[0] != key[0] || string(DeriveKey([]byte("other"), make([]byte, NonceLen), make([]byte, ChallengeLen), 42)) == string(key) {
		t.Fatal("key derivation is not a function of the token")
	}
}

func TestReceiveInOrderOnce(t *testing.T) {
	c := NewConn(8, 4, 1<<16, Timing{})
	now := time.Now()
	recv := func(seq uint32) bool {
		fresh, _ := c.Receive(&relaypb.UdpEnvelope{Seq: seq, Frame: ackFrame(string(rune('a' + seq)))}, now)
		return fresh
	}
	if !recv(3) || len(c.Take(nil)) != 0 {
		t.Fatal("seq 3 handed over before 1 and 2")
	}
	recv(1)
	if recv(1) || recv(3) {
		t.Fatal("duplicate taken as fresh")
	}
	recv(2)
	got := c.Take(nil)
	if len(got) != 3 || got[0].GetDeliverAck().ServerMsgId != "b" || got[2].GetDeliverAck().ServerMsgId != "d" {
		t.Fatalf("took %v", got)
	}
	if recv(2) {
		t.Fatal("duplicate after Take taken as fresh")
	}
	// Window of 4 beyond what was taken: seq 8 is refused, 7 held.
	if recv(8) || !recv(7) {
		t.Fatal("receive window not applied")
	}
	var env *relaypb.UdpEnvelope
	c.Poll(now, func(e *relaypb.UdpEnvelope) { env = e })
	if env == nil || env.Ack != 3 || len(env.Sack) != 1 || env.Sack[0] != 7 {
		t.Fatalf("ack %v", env)
	}
}

func TestRetransmitBackoffAndGiveUp(t *testing.T) {
	tm := Timing{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Retries: 3}
	c := NewConn(2, 16, 1<<16, tm)
	push := func(id string) bool { ok, err := c.Push(ackFrame(id), 1000); return ok && err == nil }
	if !push("1") || !push("2") || push("3") {
		t.Fatal("window of 2 not applied")
	}
	t0 := time.Now()
	count := func(at time.Duration) (int, bool) {
		n := 0
		_, dead := c.Poll(t0.Add(at), func(e *relaypb.UdpEnvelope) {
			if e.Seq != 0 {
				n++
			}
		})
		return n, dead
	}
	if n, _ := count(0); n != 2 {
		t.Fatalf("first transmission: %d", n)
	}
	// Seq 2 is acknowledged; seq 1 comes again after 100, 200, 400 ms.
	c.Receive(&relaypb.UdpEnvelope{Ack: 0, Sack: []uint32{2}}, t0)
	if !c.Room() || c.Unacked() != 1 {
		t.Fatal("sack did not free the window")
	}
	for _, step := range []struct {
		at   time.Duration
		want int
	}{{99 * time.Millisecond, 0}, {100 * time.Millisecond, 1}, {299 * time.Millisecond, 0}, {300 * time.Millisecond, 1},
		{700 * time.Millisecond, 1}, {1099 * time.Millisecond, 0}} {
		if n, dead := count(step.at); n != step.want || dead {
			t.Fatalf("at %s: %d sent (dead %v), want %d", step.at, n, dead, step.want)
		}
	}
	if _, dead := count(1100 * time.Millisecond); !dead {
		t.Fatal("no give-up after 3 retransmissions")
	}
}

func TestLargeFrameInChunks(t *testing.T) {
	big := &relaypb.Frame{Body: &relaypb.Frame_Deliver{Deliver: &relaypb.Deliver{ServerMsgId: "m", Text: strings.Repeat("字", 700)}}}
	snd := NewConn(64, 64, 1<<16, Timing{})
	if ok, err := snd.Push(big, 300); !ok || err != nil {
		t.Fatalf("push: %v %v", ok, err)
	}
	if ok, _ := snd.Push(ackFrame("after"), 300); !ok {
		t.Fatal("push after")
	}
	var envs []*relaypb.UdpEnvelope
	snd.Poll(time.Now(), func(e *relaypb.UdpEnvelope) { envs = append(envs, e) })
	if len(envs) != 9 { // 2100+ bytes in 300-byte chunks, then the small frame
		t.Fatalf("%d datagrams", len(envs))
	}
	for _, e := range envs {
		if e.Frame == nil && len(e.Chunk) > 300 {
			t.Fatalf("chunk of %d bytes", len(e.Chunk))
		}
	}
	// Out of order and with duplicates, the receiver rebuilds it once.
	rcv := NewConn(64, 64, 1<<16, Timing{})
	for i := len(envs) - 1; i >= 0; i-- {
		rcv.Receive(envs[i], time.Now())
		rcv.Receive(envs[(i+3)%len(envs)], time.Now())
	}
	got := rcv.Take(nil)
	if len(got) != 2 || got[0].GetDeliver().GetText() != big.GetDeliver().Text || got[1].GetDeliverAck() == nil {
		t.Fatalf("took %d frames", len(got))
	}
	// A frame over the limit is refused by the sender and skipped by a
	// receiver with a smaller limit, and what follows still arrives.
	small := NewConn(64, 64, 1000, Timing{})
	if _, err := small.Push(big, 300); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("push over the limit: %v", err)
	}
	for _, e := range envs {
		small.Receive(e, time.Now())
	}
	if got := small.Take(nil); len(got) != 1 || got[0].GetDeliverAck() == nil {
		t.Fatalf("after an oversized frame: %v", got)
	}
}

// What docs/protocol.md tells client writers about the envelope: the first
// datagram carries pn 1; with more than 16 seqs held above ack, sack lists
// the lowest 16 in increasing order; the session key is keyed by the hash
// of the token's string bytes.
func TestEnvelopeAsDocumented(t *testing.T) {
	c := NewConn(8, 64, 1<<16, Timing{})
	now := time.Now()
	for seq := uint32(3); seq <= 22; seq++ { // 1 and 2 are missing
		c.Receive(&relaypb.UdpEnvelope{Seq: seq, Frame: ackFrame("x")}, now)
	}
	var env *relaypb.UdpEnvelope
	c.Send(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{}}}, false, func(e *relaypb.UdpEnvelope) { env = e })
	if env == nil || env.Pn != 1 {
		t.Fatalf("first datagram: %v, want pn 1", env)
	}
	if env.Ack != 0 || len(env.Sack) != MaxSack || env.Sack[0] != 3 || env.Sack[MaxSack-1] != 18 {
		t.Fatalf("ack %d sack %v, want 0 and 3..18", env.Ack, env.Sack)
	}
	c.Send(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{}}}, false, func(e *relaypb.UdpEnvelope) { env = e })
	if env.Pn != 2 {
		t.Fatalf("second datagram pn %d", env.Pn)
	}

	// The session key: HMAC-SHA256 keyed by the SHA-256 of the token's
	// string bytes, over "phonebook udp v2", nonce, challenge and conn_id
	// (docs/protocol.md; its test vectors: TestProtocolDocVectors).
	const token = "wlfS9j31zQ" // a token as the login API returns it
	nonce, challenge := []byte("0123456789abcdef"), make([]byte, ChallengeLen)
	th := sha256.Sum256([]byte(token))
	m := hmac.New(sha256.New, th[:])
	m.Write([]byte("phonebook udp v2"))
	m.Write(nonce)
	m.Write(challenge)
	m.Write([]byte{0, 0, 0, 0, 0, 0, 0x01, 0x02})
	if string(DeriveKey(th[:], nonce, challenge, 0x0102)) != string(m.Sum(nil)) {
		t.Fatal("the session key is not HMAC-SHA256(SHA-256(token string bytes), \"phonebook udp v2\" || nonce || challenge || conn_id)")
	}
}
