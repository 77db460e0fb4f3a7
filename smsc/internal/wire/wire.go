// Package wire frames SMPP 3.4 PDUs on a byte stream and decodes the
// short-message bodies (submit_sm, deliver_sm) on top of go-smpp's PDU codec.
// It is shared by the ESME session layer (package smsc) and the SMSC
// simulator (smsc/smscsim), and never panics on input from the network.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

// MaxLen bounds a PDU's command_length. go-smpp allows 4 KiB; a deliver_sm
// carrying a message_payload TLV may legitimately be longer.
const MaxLen = 64 << 10

// Command ids not declared by go-smpp.
const (
	DataSMID            pdu.ID = 0x00000103
	AlertNotificationID pdu.ID = 0x00000102
)

// Statuses used by both ends.
const (
	StatusOK        pdu.Status = 0x00
	StatusInvMsgLen pdu.Status = 0x01
	StatusInvCmdLen pdu.Status = 0x02
	StatusInvCmdID  pdu.Status = 0x03
	StatusInvBndSts pdu.Status = 0x04
	StatusSysErr    pdu.Status = 0x08
	StatusInvPaswd  pdu.Status = 0x0E
	StatusThrottled pdu.Status = 0x58
	StatusXTAppN    pdu.Status = 0x64
	StatusXPAppN    pdu.Status = 0x65
)

// FramingError means the byte stream cannot be resynchronised: the
// connection must be closed after answering generic_nack.
type FramingError struct {
	Len uint32
	Seq uint32
}

func (e *FramingError) Error() string {
	return fmt.Sprintf("bad command_length %d (must be %d..%d)", e.Len, pdu.HeaderLen, MaxLen)
}

// Frame is one PDU as read off the wire.
type Frame struct {
	Header pdu.Header
	Body   []byte // everything after the 16-byte header
}

// IsResponse reports whether the frame answers a request.
func (f Frame) IsResponse() bool { return f.Header.ID&0x80000000 != 0 }

// Read reads one PDU. A *FramingError means the stream is out of sync.
func Read(r io.Reader) (Frame, error) {
	var h [pdu.HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Header: pdu.Header{
		Len:    binary.BigEndian.Uint32(h[0:4]),
		ID:     pdu.ID(binary.BigEndian.Uint32(h[4:8])),
		Status: pdu.Status(binary.BigEndian.Uint32(h[8:12])),
		Seq:    binary.BigEndian.Uint32(h[12:16]),
	}}
	if f.Header.Len < pdu.HeaderLen || f.Header.Len > MaxLen {
		return f, &FramingError{Len: f.Header.Len, Seq: f.Header.Seq}
	}
	f.Body = make([]byte, f.Header.Len-pdu.HeaderLen)
	if _, err := io.ReadFull(r, f.Body); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// Decode hands the frame to go-smpp's decoder, turning any panic in it into
// an error.
func (f Frame) Decode() (b pdu.Body, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("decoding %s: %v", f.Header.ID, p)
		}
	}()
	var buf bytes.Buffer
	buf.Grow(pdu.HeaderLen + len(f.Body))
	h := f.Header
	h.Len = uint32(pdu.HeaderLen + len(f.Body))
	if err := h.SerializeTo(&buf); err != nil {
		return nil, err
	}
	buf.Write(f.Body)
	return pdu.Decode(&buf)
}

// Encode serialises a PDU body.
func Encode(b pdu.Body) ([]byte, error) {
	var buf bytes.Buffer
	if err := b.SerializeTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Header encodes a body-less PDU (enquire_link, unbind, generic_nack...).
func Header(id pdu.ID, status pdu.Status, seq uint32) []byte {
	b := make([]byte, pdu.HeaderLen)
	binary.BigEndian.PutUint32(b[0:4], pdu.HeaderLen)
	binary.BigEndian.PutUint32(b[4:8], uint32(id))
	binary.BigEndian.PutUint32(b[8:12], uint32(status))
	binary.BigEndian.PutUint32(b[12:16], seq)
	return b
}

// Resp encodes a response carrying one C-octet string (message_id or
// system_id), as submit_sm_resp, deliver_sm_resp and bind_*_resp do. A
// non-OK response to submit_sm or a bind carries no body (SMPP 3.4 §4).
func Resp(id pdu.ID, status pdu.Status, seq uint32, s string) []byte {
	if status != StatusOK && id != pdu.DeliverSMRespID {
		return Header(id, status, seq)
	}
	b := Header(id, status, seq)
	b = append(b, s...)
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[0:4], uint32(len(b)))
	return b
}

// RespString returns the C-octet string in a response body ("" when the
// SMSC sent none, as on error responses).
func RespString(body []byte) string {
	if i := bytes.IndexByte(body, 0); i >= 0 {
		return string(body[:i])
	}
	return string(body)
}

// SM holds the fields of submit_sm and deliver_sm, whose mandatory parts are
// laid out identically.
type SM struct {
	ServiceType        string
	SourceTON          uint8
	SourceNPI          uint8
	Source             string
	DestTON            uint8
	DestNPI            uint8
	Dest               string
	ESMClass           uint8
	ProtocolID         uint8
	PriorityFlag       uint8
	ScheduleDelivery   string
	ValidityPeriod     string
	RegisteredDelivery uint8
	ReplaceIfPresent   uint8
	DataCoding         uint8
	SMDefaultMsgID     uint8
	ShortMessage       []byte // raw: UDH included when ESMClass&0x40
	TLVs               pdutlv.Map
}

// smFields is go-smpp's submit_sm field list. deliver_sm has the same layout,
// but go-smpp's deliver_sm list strips and re-parses the UDH (and misreads
// TLVs as UDH when sm_length is 0), so we decode both with this one and keep
// short_message raw.
var smFields = pdu.NewSubmitSM(nil).FieldList()

var errTruncated = errors.New("short message body truncated")

// DecodeSM decodes a submit_sm or deliver_sm body.
func DecodeSM(body []byte) (sm SM, err error) {
	defer func() {
		if p := recover(); p != nil {
			sm, err = SM{}, fmt.Errorf("decoding short message: %v", p)
		}
	}()
	r := bytes.NewBuffer(body)
	f, err := smFields.Decode(r)
	if err != nil {
		return SM{}, err
	}
	// go-smpp stops silently at the end of input; every field is mandatory.
	for _, k := range smFields {
		if _, ok := f[k]; !ok && k != pdufield.ShortMessage {
			return SM{}, errTruncated
		}
	}
	if _, ok := f[pdufield.ShortMessage]; !ok {
		return SM{}, errTruncated
	}
	t, err := pdutlv.DecodeTLV(r)
	if err != nil {
		return SM{}, err
	}
	if r.Len() != 0 {
		return SM{}, fmt.Errorf("%d stray bytes after TLVs", r.Len())
	}
	str := func(k pdufield.Name) string { return f[k].String() }
	u8 := func(k pdufield.Name) uint8 {
		if b := f[k].Bytes(); len(b) > 0 {
			return b[0]
		}
		return 0
	}
	return SM{
		ServiceType:        str(pdufield.ServiceType),
		SourceTON:          u8(pdufield.SourceAddrTON),
		SourceNPI:          u8(pdufield.SourceAddrNPI),
		Source:             str(pdufield.SourceAddr),
		DestTON:            u8(pdufield.DestAddrTON),
		DestNPI:            u8(pdufield.DestAddrNPI),
		Dest:               str(pdufield.DestinationAddr),
		ESMClass:           u8(pdufield.ESMClass),
		ProtocolID:         u8(pdufield.ProtocolID),
		PriorityFlag:       u8(pdufield.PriorityFlag),
		ScheduleDelivery:   str(pdufield.ScheduleDeliveryTime),
		ValidityPeriod:     str(pdufield.ValidityPeriod),
		RegisteredDelivery: u8(pdufield.RegisteredDelivery),
		ReplaceIfPresent:   u8(pdufield.ReplaceIfPresentFlag),
		DataCoding:         u8(pdufield.DataCoding),
		SMDefaultMsgID:     u8(pdufield.SMDefaultMsgID),
		ShortMessage:       bytes.Clone(f[pdufield.ShortMessage].Bytes()),
		TLVs:               t,
	}, nil
}

// EncodeSM serialises sm as a submit_sm or deliver_sm (id) with sequence
// number seq.
func EncodeSM(id pdu.ID, seq uint32, sm SM) ([]byte, error) {
	if len(sm.ShortMessage) > 254 {
		return nil, fmt.Errorf("short_message is %d bytes, at most 254", len(sm.ShortMessage))
	}
	b := pdu.NewSubmitSM(nil)
	b.Header().ID = id
	b.Header().Seq = seq
	f := b.Fields()
	for _, kv := range []struct {
		k pdufield.Name
		v any
	}{
		{pdufield.ServiceType, sm.ServiceType},
		{pdufield.SourceAddrTON, sm.SourceTON},
		{pdufield.SourceAddrNPI, sm.SourceNPI},
		{pdufield.SourceAddr, sm.Source},
		{pdufield.DestAddrTON, sm.DestTON},
		{pdufield.DestAddrNPI, sm.DestNPI},
		{pdufield.DestinationAddr, sm.Dest},
		{pdufield.ESMClass, sm.ESMClass},
		{pdufield.ProtocolID, sm.ProtocolID},
		{pdufield.PriorityFlag, sm.PriorityFlag},
		{pdufield.ScheduleDeliveryTime, sm.ScheduleDelivery},
		{pdufield.ValidityPeriod, sm.ValidityPeriod},
		{pdufield.RegisteredDelivery, sm.RegisteredDelivery},
		{pdufield.ReplaceIfPresentFlag, sm.ReplaceIfPresent},
		{pdufield.DataCoding, sm.DataCoding},
		{pdufield.SMDefaultMsgID, sm.SMDefaultMsgID},
		{pdufield.ShortMessage, sm.ShortMessage},
	} {
		if err := f.Set(kv.k, kv.v); err != nil {
			return nil, err
		}
	}
	if sm.ShortMessage == nil {
		f.Set(pdufield.ShortMessage, []byte{})
	}
	for tag, v := range sm.TLVs {
		b.TLVFields()[tag] = v
	}
	return Encode(b)
}

// TLV returns the value of a TLV, or nil.
func (sm SM) TLV(tag pdutlv.Tag) []byte {
	if v, ok := sm.TLVs[tag]; ok {
		return v.Bytes()
	}
	return nil
}

// CString trims a C-octet string's terminating NUL (and anything after it).
func CString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// dataSMFields is the mandatory part of data_sm (SMPP 3.4 §4.7.1), which
// go-smpp does not implement; its text travels in message_payload.
var dataSMFields = pdufield.List{
	pdufield.ServiceType,
	pdufield.SourceAddrTON, pdufield.SourceAddrNPI, pdufield.SourceAddr,
	pdufield.DestAddrTON, pdufield.DestAddrNPI, pdufield.DestinationAddr,
	pdufield.ESMClass, pdufield.RegisteredDelivery, pdufield.DataCoding,
}

// DecodeDataSM decodes a data_sm body into an SM whose ShortMessage is the
// message_payload TLV.
func DecodeDataSM(body []byte) (sm SM, err error) {
	defer func() {
		if p := recover(); p != nil {
			sm, err = SM{}, fmt.Errorf("decoding data_sm: %v", p)
		}
	}()
	r := bytes.NewBuffer(body)
	f, err := dataSMFields.Decode(r)
	if err != nil {
		return SM{}, err
	}
	for _, k := range dataSMFields {
		if _, ok := f[k]; !ok {
			return SM{}, errTruncated
		}
	}
	t, err := pdutlv.DecodeTLV(r)
	if err != nil {
		return SM{}, err
	}
	if r.Len() != 0 {
		return SM{}, fmt.Errorf("%d stray bytes after TLVs", r.Len())
	}
	u8 := func(k pdufield.Name) uint8 { return f[k].Bytes()[0] }
	sm = SM{
		ServiceType:        f[pdufield.ServiceType].String(),
		SourceTON:          u8(pdufield.SourceAddrTON),
		SourceNPI:          u8(pdufield.SourceAddrNPI),
		Source:             f[pdufield.SourceAddr].String(),
		DestTON:            u8(pdufield.DestAddrTON),
		DestNPI:            u8(pdufield.DestAddrNPI),
		Dest:               f[pdufield.DestinationAddr].String(),
		ESMClass:           u8(pdufield.ESMClass),
		RegisteredDelivery: u8(pdufield.RegisteredDelivery),
		DataCoding:         u8(pdufield.DataCoding),
		TLVs:               t,
	}
	sm.ShortMessage = bytes.Clone(sm.TLV(0x0424))
	return sm, nil
}

// EncodeDataSM serialises sm as a data_sm, its ShortMessage carried in a
// message_payload TLV.
func EncodeDataSM(seq uint32, sm SM) ([]byte, error) {
	if len(sm.ShortMessage) > 0xFFFF {
		return nil, fmt.Errorf("message_payload is %d bytes, at most 65535", len(sm.ShortMessage))
	}
	b := bytes.NewBuffer(Header(DataSMID, 0, seq))
	cstr := func(s string) { b.WriteString(s); b.WriteByte(0) }
	cstr(sm.ServiceType)
	b.Write([]byte{sm.SourceTON, sm.SourceNPI})
	cstr(sm.Source)
	b.Write([]byte{sm.DestTON, sm.DestNPI})
	cstr(sm.Dest)
	b.Write([]byte{sm.ESMClass, sm.RegisteredDelivery, sm.DataCoding})
	if err := pdutlv.NewTLV(0x0424, sm.ShortMessage).SerializeTo(b); err != nil {
		return nil, err
	}
	for tag, v := range sm.TLVs {
		if tag != 0x0424 {
			if err := v.SerializeTo(b); err != nil {
				return nil, err
			}
		}
	}
	out := b.Bytes()
	if len(out) > MaxLen {
		return nil, fmt.Errorf("data_sm is %d bytes, at most %d", len(out), MaxLen)
	}
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)))
	return out, nil
}
