// Package wire is the relay protocol's framing: a 4-byte big-endian length
// prefix, then one protobuf relaypb.Frame. The relay and the Go client both
// import it, so it imports nothing but the standard library, protobuf, the
// generated relaypb and the domain package for its error codes; it must
// never import server code (client/deps_test.go checks that).
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// DefaultMaxFrameSize bounds one frame's protobuf body. A text message is
// far smaller; media travels by reference, never inline.
const DefaultMaxFrameSize = 64 << 10

// frameHeaderLen is the length prefix: 4 bytes, big-endian, body length
// only (the prefix itself is not counted).
const frameHeaderLen = 4

var unmarshalOpts = proto.UnmarshalOptions{DiscardUnknown: false}

// FrameReader reads length-prefixed frames from a stream. It reuses one
// buffer that never grows beyond the maximum frame size, so a peer cannot
// make it allocate more than that by announcing a large length.
type FrameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewFrameReader reads frames of at most max bytes (0 = DefaultMaxFrameSize).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 4096)
	}
	return &FrameReader{r: br, max: max}
}

// Read reads the next frame into f (which it resets). It returns io.EOF at
// a clean end of stream, io.ErrUnexpectedEOF for a stream cut mid-frame,
// and a *phonebook.Error (EProtocol, ETooLarge) for a malformed frame;
// after such an error the stream is out of sync and must be closed.
func (fr *FrameReader) Read(f *relaypb.Frame) error {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > uint32(fr.max) {
		return phonebook.Errorf(phonebook.ETooLarge, "frame of %d bytes is over the %d-byte limit", n, fr.max)
	}
	if cap(fr.buf) < int(n) {
		// Grow in steps so a stream of small frames keeps a small buffer.
		c := max(int(n), 2*cap(fr.buf), 512)
		fr.buf = make([]byte, min(c, fr.max))
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return unmarshalFrame(b, f)
}

// Buffered reports whether bytes are waiting in the reader's buffer.
func (fr *FrameReader) Buffered() int { return fr.r.Buffered() }

// DecodeFrame decodes one complete frame (length prefix included) from b,
// as a datagram transport receives it. Trailing bytes are an error.
func DecodeFrame(b []byte, maxSize int) (*relaypb.Frame, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrameSize
	}
	if len(b) < frameHeaderLen {
		return nil, phonebook.Errorf(phonebook.EProtocol, "frame shorter than its %d-byte length prefix", frameHeaderLen)
	}
	n := binary.BigEndian.Uint32(b)
	if n > uint32(maxSize) {
		return nil, phonebook.Errorf(phonebook.ETooLarge, "frame of %d bytes is over the %d-byte limit", n, maxSize)
	}
	body := b[frameHeaderLen:]
	if uint32(len(body)) != n {
		return nil, phonebook.Errorf(phonebook.EProtocol, "frame length prefix says %d bytes, datagram holds %d", n, len(body))
	}
	f := new(relaypb.Frame)
	if err := unmarshalFrame(body, f); err != nil {
		return nil, err
	}
	return f, nil
}

func unmarshalFrame(b []byte, f *relaypb.Frame) error {
	f.Reset()
	if err := unmarshalOpts.Unmarshal(b, f); err != nil {
		return phonebook.Errorf(phonebook.EProtocol, "frame is not a valid protobuf Frame: %v", err)
	}
	return nil
}

// AppendFrame appends f, length prefix first, to dst.
func AppendFrame(dst []byte, f *relaypb.Frame, maxSize int) ([]byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFrameSize
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, f)
	if err != nil {
		return dst[:start], err
	}
	n := len(out) - start - frameHeaderLen
	if n > maxSize {
		return out[:start], phonebook.Errorf(phonebook.ETooLarge, "frame of %d bytes is over the %d-byte limit", n, maxSize)
	}
	binary.BigEndian.PutUint32(out[start:], uint32(n))
	return out, nil
}

// FrameKind names a frame's body for logs and metrics; "unknown" when the
// body is missing or newer than this server.
func FrameKind(f *relaypb.Frame) string {
	switch f.Body.(type) {
	case *relaypb.Frame_Auth:
		return "auth"
	case *relaypb.Frame_AuthOk:
		return "auth_ok"
	case *relaypb.Frame_Heartbeat:
		return "heartbeat"
	case *relaypb.Frame_HeartbeatAck:
		return "heartbeat_ack"
	case *relaypb.Frame_Send:
		return "send"
	case *relaypb.Frame_SendResult:
		return "send_result"
	case *relaypb.Frame_Deliver:
		return "deliver"
	case *relaypb.Frame_DeliverAck:
		return "deliver_ack"
	case *relaypb.Frame_Receipt:
		return "receipt"
	case *relaypb.Frame_Error:
		return "error"
	default:
		return contactsFrameKind(f)
	}
}

// contactsFrameKind names the contacts and presence frames for FrameKind.
func contactsFrameKind(f *relaypb.Frame) string {
	switch f.Body.(type) {
	case *relaypb.Frame_ContactsSync:
		return "contacts_sync"
	case *relaypb.Frame_ContactsSyncResult:
		return "contacts_sync_result"
	case *relaypb.Frame_PresenceSet:
		return "presence_set"
	case *relaypb.Frame_PresenceSetResult:
		return "presence_set_result"
	case *relaypb.Frame_PresenceQuery:
		return "presence_query"
	case *relaypb.Frame_PresenceList:
		return "presence_list"
	case *relaypb.Frame_PresenceChanged:
		return "presence_changed"
	case *relaypb.Frame_ContactJoined:
		return "contact_joined"
	default:
		return "unknown"
	}
}
