package cluster

import (
	"context"
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
	if err := out.unmarshal(in.marshal()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.numbers, in.numbers) || out.device != in.device || string(out.frame) != string(in.frame) ||
		out.sessionID != in.sessionID || out.code != in.code || out.message != in.message {
		t.Fatalf("round trip: %+v != %+v", out, in)
	}
	f, err := unmarshalFrame(out.frame)
	if err != nil || f.GetDeliver().GetText() != "你好 😀" {
		t.Fatalf("frame: %v %v", f, err)
	}
	for _, bad := range [][]byte{{0x0a}, {0x0a, 0x05, 'a'}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		var e envelope
		if err := e.unmarshal(bad); err == nil {
			t.Errorf("unmarshal(%x) accepted", bad)
		}
	}
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
	f.Add((&envelope{numbers: []phonebook.MSISDN{"+8613800138000"}, device: "d", frame: []byte{1, 2}}).marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var e envelope
		if e.unmarshal(b) != nil {
			return
		}
		var again envelope
		if err := again.unmarshal(e.marshal()); err != nil {
			t.Fatalf("re-encoding failed: %v", err)
		}
		if !slices.Equal(again.numbers, e.numbers) || again.device != e.device || string(again.frame) != string(e.frame) {
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
