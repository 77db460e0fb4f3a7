package cluster

import (
	"encoding/base64"
	"errors"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// envelope is what nodes send each other on pb.node.<node>.*. It is
// encoded by hand in protobuf wire format, so it reads as this message:
//
//	message Envelope {
//	  repeated string numbers = 1; // E.164 recipients
//	  string device = 2;           // one device; empty: the newest session of each number
//	  bytes frame = 3;             // a relay Frame (Deliver, Receipt, SendResult, ...)
//	  string session_id = 4;       // close: only this session
//	  string code = 5;             // close: the error code sent to the client
//	  string message = 6;
//	}
//
// The relay's own Frame carries the message itself, so a node forwards
// exactly the bytes its clients would get.
type envelope struct {
	numbers   []phonebook.MSISDN
	device    string
	frame     []byte
	sessionID string
	code      string
	message   string
}

func (e *envelope) marshal() []byte {
	n := len(e.frame) + len(e.device) + len(e.sessionID) + len(e.code) + len(e.message) + 16
	for _, num := range e.numbers {
		n += len(num) + 2
	}
	b := make([]byte, 0, n)
	for _, num := range e.numbers {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, string(num))
	}
	appendStr := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	appendStr(2, e.device)
	if len(e.frame) > 0 {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, e.frame)
	}
	appendStr(4, e.sessionID)
	appendStr(5, e.code)
	appendStr(6, e.message)
	return b
}

var errBadEnvelope = errors.New("cluster: malformed envelope")

// maxEnvelopeNumbers bounds one Notify batch, so a bad peer cannot make a
// node allocate without limit.
const maxEnvelopeNumbers = 10000

func (e *envelope) unmarshal(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errBadEnvelope
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errBadEnvelope
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errBadEnvelope
		}
		b = b[n:]
		switch num {
		case 1:
			if len(e.numbers) >= maxEnvelopeNumbers {
				return errBadEnvelope
			}
			e.numbers = append(e.numbers, phonebook.MSISDN(v))
		case 2:
			e.device = string(v)
		case 3:
			e.frame = v
		case 4:
			e.sessionID = string(v)
		case 5:
			e.code = string(v)
		case 6:
			e.message = string(v)
		}
	}
	return nil
}

func marshalFrame(f *relaypb.Frame) ([]byte, error) {
	return proto.MarshalOptions{}.Marshal(f)
}

func unmarshalFrame(b []byte) (*relaypb.Frame, error) {
	f := new(relaypb.Frame)
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// sessionKey is the registry key of (number, device): the number's digits,
// a dot, and the device id in unpadded base64url, since KV keys allow only
// [-/_=.a-zA-Z0-9] and device ids are free text.
func sessionKey(n phonebook.MSISDN, device string) string {
	var sb strings.Builder
	sb.Grow(len(n) + 2 + base64.RawURLEncoding.EncodedLen(len(device)))
	sb.WriteString(strings.TrimPrefix(string(n), "+"))
	sb.WriteByte('.')
	if device == "" {
		sb.WriteByte('-') // base64url never yields a lone "-" for a non-empty id
	} else {
		sb.WriteString(base64.RawURLEncoding.EncodeToString([]byte(device)))
	}
	return sb.String()
}
