package cluster

import (
	"encoding/base64"
	"errors"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/clusterpb"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// envelope is what nodes send each other on pb.node.<node>.*: a
// clusterpb.Envelope (proto/phonebook/cluster/v1/cluster.proto) with the
// numbers typed. The relay's own Frame carries the message itself, so a
// node forwards exactly the bytes its clients would get.
type envelope struct {
	numbers   []phonebook.MSISDN
	device    string
	frame     []byte
	sessionID string
	code      string
	message   string
}

// marshal fails only for a string that is not UTF-8, which proto3 refuses;
// the numbers are normalised and the ids validated long before they get here.
func (e *envelope) marshal() ([]byte, error) {
	numbers := make([]string, len(e.numbers))
	for i, n := range e.numbers {
		numbers[i] = string(n)
	}
	return proto.Marshal(&clusterpb.Envelope{Numbers: numbers, Device: e.device, Frame: e.frame,
		SessionId: e.sessionID, Code: e.code, Message: e.message})
}

var errBadEnvelope = errors.New("cluster: malformed envelope")

// maxEnvelopeNumbers bounds one Notify batch, so a bad peer cannot make a
// node allocate without limit.
const maxEnvelopeNumbers = 10000

func (e *envelope) unmarshal(b []byte) error {
	var pb clusterpb.Envelope
	if err := proto.Unmarshal(b, &pb); err != nil || len(pb.Numbers) > maxEnvelopeNumbers {
		return errBadEnvelope
	}
	e.numbers = make([]phonebook.MSISDN, len(pb.Numbers))
	for i, n := range pb.Numbers {
		e.numbers[i] = phonebook.MSISDN(n)
	}
	e.device, e.frame, e.sessionID, e.code, e.message = pb.Device, pb.Frame, pb.SessionId, pb.Code, pb.Message
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
