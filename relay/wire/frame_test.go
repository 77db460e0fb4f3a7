package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
)

func mustFrame(t testing.TB, f *relaypb.Frame) []byte {
	t.Helper()
	b, err := AppendFrame(nil, f, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawFrame(body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

func TestFrameRoundTrip(t *testing.T) {
	in := []*relaypb.Frame{
		{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "tok", DeviceId: "imei1"}}},
		{Body: &relaypb.Frame_Send{Send: &relaypb.Send{ClientMsgId: "c1", To: "138 0013 8000", Text: "你好 😀", Type: relaypb.MessageType_TEXT}}},
		{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{}}},
	}
	var stream []byte
	for _, f := range in {
		stream = append(stream, mustFrame(t, f)...)
	}
	r := NewFrameReader(bytes.NewReader(stream), 0)
	for i, want := range in {
		var got relaypb.Frame
		if err := r.Read(&got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("frame %d = %v, want %v", i, &got, want)
		}
	}
	var f relaypb.Frame
	if err := r.Read(&f); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

func TestFrameMalformed(t *testing.T) {
	big := &relaypb.Frame{Body: &relaypb.Frame_Send{Send: &relaypb.Send{Text: string(bytes.Repeat([]byte("x"), 200))}}}
	unknown := protowireField(50, []byte{}) // a body from the reserved contacts range
	tests := []struct {
		name     string
		stream   []byte
		max      int
		wantErr  error // io sentinel, or nil when wantCode is set
		wantCode phonebook.Code
		wantKind string // when the frame decodes
	}{
		{name: "empty stream", stream: nil, wantErr: io.EOF},
		{name: "short length prefix", stream: []byte{0, 0}, wantErr: io.ErrUnexpectedEOF},
		{name: "body cut short", stream: []byte{0, 0, 0, 10, 1, 2}, wantErr: io.ErrUnexpectedEOF},
		{name: "oversize announced", stream: []byte{0xff, 0xff, 0xff, 0xff}, wantCode: phonebook.ETooLarge},
		{name: "over configured max", stream: mustFrame(t, big), max: 100, wantCode: phonebook.ETooLarge},
		{name: "garbage protobuf", stream: rawFrame([]byte{0xff, 0xff, 0xff}), wantCode: phonebook.EProtocol},
		{name: "truncated field", stream: rawFrame([]byte{0x0a, 0x05, 0x0a}), wantCode: phonebook.EProtocol},
		{name: "invalid utf-8 string", stream: rawFrame([]byte{0x2a, 0x03, 0x1a, 0x01, 0xff}), wantCode: phonebook.EProtocol},
		{name: "unknown frame type", stream: rawFrame(unknown), wantKind: "unknown"},
		{name: "empty frame", stream: rawFrame(nil), wantKind: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f relaypb.Frame
			err := NewFrameReader(bytes.NewReader(tt.stream), tt.max).Read(&f)
			switch {
			case tt.wantKind != "":
				if err != nil {
					t.Fatalf("err = %v, want a %s frame", err, tt.wantKind)
				}
				if k := FrameKind(&f); k != tt.wantKind {
					t.Fatalf("kind = %s, want %s", k, tt.wantKind)
				}
			case tt.wantCode != "":
				if phonebook.ErrorCode(err) != tt.wantCode {
					t.Fatalf("err = %v, want code %s", err, tt.wantCode)
				}
			default:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			}
		})
	}
}

func TestDecodeFrameDatagram(t *testing.T) {
	ok := mustFrame(t, &relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{At: 7}}})
	if f, err := DecodeFrame(ok, 0); err != nil || f.GetHeartbeat().GetAt() != 7 {
		t.Fatalf("DecodeFrame = %v, %v", f, err)
	}
	for name, b := range map[string][]byte{
		"short":    {0, 1},
		"trailing": append(append([]byte{}, ok...), 0),
		"cut":      ok[:len(ok)-1],
	} {
		if _, err := DecodeFrame(b, 0); phonebook.ErrorCode(err) != phonebook.EProtocol {
			t.Errorf("%s: err = %v, want %s", name, err, phonebook.EProtocol)
		}
	}
}

// protowireField encodes a length-delimited field by hand, so the test can
// send bodies this server's generated code does not know.
func protowireField(num int, payload []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(num)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(payload)))
	return append(b, payload...)
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(mustFrame(f, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "t", DeviceId: "d"}}}))
	f.Add(mustFrame(f, &relaypb.Frame{Body: &relaypb.Frame_Send{Send: &relaypb.Send{ClientMsgId: "1", To: "+8613800138000", Text: "hi"}}}))
	f.Add(mustFrame(f, &relaypb.Frame{Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: "m1"}}}))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add(rawFrame(protowireField(50, nil)))
	const max = 4096
	f.Fuzz(func(t *testing.T, b []byte) {
		// As a stream: read frames until an error; must never panic or
		// allocate past max.
		r := NewFrameReader(bytes.NewReader(b), max)
		for i := 0; ; i++ {
			var fr relaypb.Frame
			if err := r.Read(&fr); err != nil {
				break
			}
			if cap(r.buf) > max {
				t.Fatalf("reader buffer grew to %d, over max %d", cap(r.buf), max)
			}
			// Whatever decodes must encode and decode to the same frame.
			enc, err := AppendFrame(nil, &fr, 0)
			if err != nil {
				t.Fatalf("re-encode of decoded frame: %v", err)
			}
			back, err := DecodeFrame(enc, 0)
			if err != nil || !proto.Equal(back, &fr) {
				t.Fatalf("round trip: %v; %v != %v", err, back, &fr)
			}
			FrameKind(&fr)
		}
		// As a datagram.
		if fr, err := DecodeFrame(b, max); err == nil {
			FrameKind(fr)
		} else if c := phonebook.ErrorCode(err); c != phonebook.EProtocol && c != phonebook.ETooLarge {
			t.Fatalf("datagram error with code %s: %v", c, err)
		}
	})
}
