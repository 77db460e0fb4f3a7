package cluster

import (
	"bytes"
	"context"
	"encoding/hex"
	"slices"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	fb, err := marshalFrame(&relaypb.Frame{Body: &relaypb.Frame_Deliver{Deliver: &relaypb.Deliver{ServerMsgId: "m1", Text: "你好 😀"}}})
	if err != nil {
		t.Fatal(err)
	}
	in := envelope{numbers: []phonebook.MSISDN{"+8613800138000", "+447700900123"}, device: "dev 1/ü", frame: fb,
		sessionID: "s-1", code: "session_replaced", message: "moved"}
	var out envelope
	if err := out.unmarshal(mustMarshal(t, &in)); err != nil {
		t.Fatal(err)
	}
	if !sameEnvelope(out, in) {
		t.Fatalf("round trip: %+v != %+v", out, in)
	}
	f, err := unmarshalFrame(out.frame)
	if err != nil || f.GetDeliver().GetText() != "你好 😀" {
		t.Fatalf("frame: %v %v", f, err)
	}
	tooMany := make([]phonebook.MSISDN, maxEnvelopeNumbers+1)
	for i := range tooMany {
		tooMany[i] = "+8613800138000"
	}
	for _, bad := range [][]byte{{0x0a}, {0x0a, 0x05, 'a'}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		mustMarshal(t, &envelope{numbers: tooMany})} {
		var e envelope
		if err := e.unmarshal(bad); err == nil {
			t.Errorf("unmarshal(%.20x...) accepted", bad)
		}
	}
}

// The envelope was encoded by hand before cluster.proto declared it; these
// bytes are what that encoder wrote. The generated code writes and reads the
// same bytes, so old and new nodes understand each other during a rolling
// upgrade.
func TestEnvelopeBytesMatchTheHandEncoding(t *testing.T) {
	fb, err := marshalFrame(&relaypb.Frame{Body: &relaypb.Frame_Deliver{Deliver: &relaypb.Deliver{ServerMsgId: "m1", Text: "你好"}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  envelope
		hex  string
	}{
		{"deliver", envelope{numbers: []phonebook.MSISDN{"+8613800138000", "+447700900123"}, device: "dev-1", frame: fb},
			"0a0e2b383631333830303133383030300a0d2b34343737303039303031323312056465762d311a0e3a0c0a026d311a06e4bda0e5a5bd"},
		{"close", envelope{numbers: []phonebook.MSISDN{"+8613800138000"}, device: "dev-1", sessionID: "s-1", code: "session_replaced", message: "signed in elsewhere"},
			"0a0e2b3836313338303031333830303012056465762d312203732d312a1073657373696f6e5f7265706c6163656432137369676e656420696e20656c73657768657265"},
		{"wake", envelope{numbers: []phonebook.MSISDN{"+8613800138000"}}, "0a0e2b38363133383030313338303030"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hex.EncodeToString(mustMarshal(t, &tt.env)); got != tt.hex {
				t.Errorf("marshal:\n got %s\nwant %s", got, tt.hex)
			}
			golden, _ := hex.DecodeString(tt.hex)
			// A field a later version adds (here 7, a varint) is skipped.
			for _, b := range [][]byte{golden, append(golden, 0x38, 0x01)} {
				var out envelope
				if err := out.unmarshal(b); err != nil || !sameEnvelope(out, tt.env) {
					t.Errorf("unmarshal(%x) = %+v, %v; want %+v", b, out, err, tt.env)
				}
			}
		})
	}
}

func mustMarshal(t testing.TB, e *envelope) []byte {
	t.Helper()
	b, err := e.marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameEnvelope(a, b envelope) bool {
	return slices.Equal(a.numbers, b.numbers) && a.device == b.device && bytes.Equal(a.frame, b.frame) &&
		a.sessionID == b.sessionID && a.code == b.code && a.message == b.message
}

func TestSessionKeyIsAValidKVKey(t *testing.T) {
	keys := map[string]bool{}
	for _, dev := range []string{"", "-", "dev-1", "IMEI 3567 8901/2", "ü.*>", "a", "b"} {
		k := sessionKey("+8613800138000", dev)
		for _, c := range k {
			ok := c == '-' || c == '_' || c == '=' || c == '.' || c == '/' ||
				(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
			if !ok {
				t.Fatalf("key %q for device %q has %q", k, dev, c)
			}
		}
		if keys[k] {
			t.Fatalf("key %q is not unique", k)
		}
		keys[k] = true
	}
}

func FuzzEnvelope(f *testing.F) {
	f.Add(mustMarshal(f, &envelope{numbers: []phonebook.MSISDN{"+8613800138000"}, device: "d", frame: []byte{1, 2}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e envelope
		if e.unmarshal(b) != nil {
			return
		}
		var again envelope
		if err := again.unmarshal(mustMarshal(t, &e)); err != nil {
			t.Fatalf("re-encoding failed: %v", err)
		}
		if !sameEnvelope(again, e) {
			t.Fatalf("re-encoding changed the envelope")
		}
	})
}

// pushRecorder is an Endpoint that keeps what it was pushed.
type pushRecorder struct {
	info relay.ConnInfo
	mu   sync.Mutex
	got  []*relaypb.Frame
}

func (p *pushRecorder) Info() relay.ConnInfo                    { return p.info }
func (p *pushRecorder) Offer(m *relay.Message, done func(bool)) { done(false) }
func (p *pushRecorder) Wake()                                   {}
func (p *pushRecorder) Close(error)                             {}
func (p *pushRecorder) Push(f *relaypb.Frame) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, f)
	return true
}

func TestNotifyThroughLocalRouter(t *testing.T) {
	lr := relay.NewLocalRouter()
	on := &pushRecorder{info: relay.ConnInfo{Number: "+8613800138000", DeviceID: "d"}}
	lr.Attach(on)
	f := &relaypb.Frame{Body: &relaypb.Frame_Receipt{Receipt: &relaypb.Receipt{ServerMsgId: "x"}}}
	n, err := Notify(context.Background(), lr, []phonebook.MSISDN{"+8613800138000", "+8613900139000"}, f)
	if err != nil || n != 1 || len(on.got) != 1 || on.got[0] != f {
		t.Fatalf("Notify = %d, %v; pushed %d", n, err, len(on.got))
	}
	if _, err := Notify(context.Background(), lr, nil, &relaypb.Frame{}); phonebook.ErrorCode(err) != phonebook.EInvalid {
		t.Fatalf("empty frame: %v", err)
	}
}
