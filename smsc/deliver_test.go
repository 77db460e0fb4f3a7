package smsc

import (
	"bytes"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"

	"github.com/phonebook/phonebook/smsc/internal/wire"
)

func TestDecodeDeliverTLVs(t *testing.T) {
	tlv := func(tag pdutlv.Tag, v ...byte) pdutlv.Body { return pdutlv.NewTLV(tag, v) }
	b, err := wire.EncodeSM(pdu.DeliverSMID, 1, wire.SM{
		SourceTON: 1, SourceNPI: 1, Source: "8613900001111", Dest: "10690", DataCoding: 8,
		TLVs: pdutlv.Map{
			tagMessagePayload:     tlv(tagMessagePayload, 0x4F, 0x60),
			tagReceiptedMessageID: tlv(tagReceiptedMessageID, 'A', 'B', 0),
			tagMessageState:       tlv(tagMessageState, 5),
			tagNetworkErrorCode:   tlv(tagNetworkErrorCode, 3, 0, 11),
			tagSARMsgRefNum:       tlv(tagSARMsgRefNum, 1, 2),
			tagSARTotalSegments:   tlv(tagSARTotalSegments, 3),
			tagSARSegmentSeqnum:   tlv(tagSARSegmentSeqnum, 2),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeDeliver("a", pdu.DeliverSMID, b[pdu.HeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if d.Link != "a" || d.SourceAddr != "8613900001111" || d.SourceTON != 1 || d.DataCoding != 8 ||
		!bytes.Equal(d.Payload, []byte{0x4F, 0x60}) || d.ReceiptedMessageID != "AB" || d.MessageState != 5 ||
		!bytes.Equal(d.NetworkErrorCode, []byte{3, 0, 11}) || d.SARRef != 0x0102 || d.SARTotal != 3 || d.SARSeq != 2 || !d.IsReceipt() {
		t.Fatalf("%+v", d)
	}
}

func TestRelativeTime(t *testing.T) {
	for d, want := range map[string]string{
		"10m": "000000001000000R", "25h1s": "000001010001000R", "2400h": "000099000000000R",
	} {
		dur, _ := time.ParseDuration(d)
		if got := relativeTime(dur); got != want {
			t.Errorf("%s: %s, want %s", d, got, want)
		}
	}
}

func TestSequenceNumbersWrap(t *testing.T) {
	var s session
	s.seq.Store(0x7FFFFFFE)
	for _, want := range []uint32{0x7FFFFFFF, 1, 2} {
		if got := s.nextSeq(); got != want {
			t.Fatalf("got 0x%X, want 0x%X", got, want)
		}
	}
}
