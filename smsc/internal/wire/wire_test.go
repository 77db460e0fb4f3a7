package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

func TestSMRoundTrip(t *testing.T) {
	in := SM{
		SourceTON: 1, SourceNPI: 1, Source: "8613900001111",
		DestTON: 3, Dest: "10690",
		ESMClass: 0x40, DataCoding: 8, RegisteredDelivery: 1, ValidityPeriod: "000000001000000R",
		ShortMessage: []byte{5, 0, 3, 1, 2, 1, 0, 0x41},
		TLVs:         pdutlv.Map{0x020C: pdutlv.NewTLV(0x020C, []byte{0, 7})},
	}
	for _, id := range []pdu.ID{pdu.SubmitSMID, pdu.DeliverSMID} {
		b, err := EncodeSM(id, 42, in)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Read(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if f.Header.ID != id || f.Header.Seq != 42 || int(f.Header.Len) != len(b) {
			t.Fatalf("header %+v", f.Header)
		}
		out, err := DecodeSM(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		if out.Source != in.Source || out.Dest != in.Dest || out.DestTON != 3 || out.ESMClass != 0x40 || out.DataCoding != 8 ||
			out.ValidityPeriod != in.ValidityPeriod || !bytes.Equal(out.ShortMessage, in.ShortMessage) || !bytes.Equal(out.TLV(0x020C), []byte{0, 7}) {
			t.Fatalf("%s: got %+v", id, out)
		}
	}
	if _, err := EncodeSM(pdu.SubmitSMID, 1, SM{ShortMessage: make([]byte, 255)}); err == nil {
		t.Fatal("255-octet short_message encoded")
	}
}

func TestDataSMRoundTrip(t *testing.T) {
	in := SM{SourceTON: 1, SourceNPI: 1, Source: "8613900001111", Dest: "10690", DataCoding: 8, ShortMessage: []byte{0x4F, 0x60}}
	b, err := EncodeDataSM(9, in)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Read(bytes.NewReader(b))
	if err != nil || f.Header.ID != DataSMID || f.Header.Seq != 9 {
		t.Fatalf("%+v %v", f.Header, err)
	}
	out, err := DecodeDataSM(f.Body)
	if err != nil || out.Source != in.Source || out.Dest != in.Dest || out.DataCoding != 8 || !bytes.Equal(out.ShortMessage, in.ShortMessage) {
		t.Fatalf("%+v %v", out, err)
	}
	if _, err := DecodeDataSM(f.Body[:5]); err == nil {
		t.Fatal("truncated data_sm decoded")
	}
}

func TestReadRejectsBadLengths(t *testing.T) {
	for _, l := range []uint32{0, 15, MaxLen + 1} {
		b := binary.BigEndian.AppendUint32(nil, l)
		b = append(b, make([]byte, 12)...)
		var fe *FramingError
		if _, err := Read(bytes.NewReader(b)); !errors.As(err, &fe) {
			t.Errorf("length %d: %v", l, err)
		}
	}
}

func FuzzDecodeSM(f *testing.F) {
	b, _ := EncodeSM(pdu.DeliverSMID, 1, SM{Source: "1", Dest: "2", ESMClass: 0x40, ShortMessage: []byte{5, 0, 3, 1, 1, 1, 'x'}})
	f.Add(b[pdu.HeaderLen:])
	f.Add([]byte{0, 1, 1, '1', 0, 1, 1, '2', 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 2, 9, 9})
	f.Fuzz(func(t *testing.T, body []byte) {
		sm, err := DecodeSM(body)
		if err == nil && len(sm.ShortMessage) > len(body) {
			t.Fatal("short message longer than the body")
		}
		if sm, err := DecodeDataSM(body); err == nil && len(sm.ShortMessage) > len(body) {
			t.Fatal("data_sm payload longer than the body")
		}
		fr := Frame{Header: pdu.Header{ID: pdu.DeliverSMID, Seq: 1}, Body: body}
		fr.Decode()
		for _, id := range []pdu.ID{pdu.BindTransceiverRespID, pdu.SubmitSMRespID, pdu.GenericNACKID, pdu.QuerySMRespID, pdu.SubmitMultiRespID} {
			fr.Header.ID = id
			fr.Decode()
		}
	})
}
