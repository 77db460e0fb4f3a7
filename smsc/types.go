// Package smsc connects Phonebook to operator SMSCs over SMPP 3.4: links and
// routing (link*.go, router.go), the durable SMS outbox (outbox*.go), text
// encoding and splitting (text.go), delivery receipts (receipt.go) and
// inbound SMS (mo.go). It uses go-smpp's PDU codec and owns the session
// layer, because go-smpp's session loses deliver_sm PDUs whose sequence
// number matches an outstanding submit, runs handlers inside its read loop,
// and fails a full window instead of waiting.
package smsc

import (
	"context"
	"fmt"
	"time"

	"github.com/phonebook/phonebook"
)

// Part is one submit_sm: one encoded segment of an SMS, ready for the wire.
type Part struct {
	Source             string           // "" = the link's configured source_addr
	Dest               phonebook.MSISDN // E.164; the link writes it international (TON 1, NPI 1) without '+'
	DataCoding         uint8            // 0 = GSM 03.38 default alphabet (one septet per byte, unpacked), 8 = UCS-2
	ESMClass           uint8            // 0x40 when Payload starts with a UDH
	Payload            []byte           // UDH (if any) + encoded text
	RegisteredDelivery bool             // ask the SMSC for a delivery receipt
	Validity           time.Duration    // 0 = SMSC default; otherwise relative validity_period
}

// SubmitResult is what an SMSC answered to an accepted submit_sm.
type SubmitResult struct {
	Link      string // name of the link that carried it
	MessageID string // the SMSC's message_id from submit_sm_resp, as sent
}

// SubmitError is a refused or failed submit. Temporary errors (throttling,
// queue full, system error, response timeout, lost link, no link up) may be
// retried; permanent ones (invalid destination, ...) fail the message.
//
// Status != 0: the SMSC answered with an error. Otherwise Sent tells a
// submit_sm written to the SMSC and left unanswered (the SMSC may have
// accepted it: sending it again may send it twice) from one that never
// left (no link bound, link closed before the write, shutting down).
type SubmitError struct {
	Link      string
	Status    uint32 // SMPP command_status; 0 for transport failures
	Temporary bool
	Sent      bool  // written to the SMSC (transport failures only)
	Err       error // underlying cause for transport failures
}

func (e *SubmitError) Error() string {
	switch {
	case e.Status != 0:
		return fmt.Sprintf("smsc %s: submit refused: %s (0x%08X)", e.Link, StatusName(e.Status), e.Status)
	case e.Sent:
		return fmt.Sprintf("smsc %s: submit sent, no response: %v", e.Link, e.Err)
	}
	return fmt.Sprintf("smsc %s: submit not sent: %v", e.Link, e.Err)
}

func (e *SubmitError) Unwrap() error { return e.Err }

// Submitter sends one part to an SMSC and waits for its submit_sm_resp.
// *Router implements it; the outbox depends only on this.
type Submitter interface {
	Submit(ctx context.Context, p Part) (SubmitResult, error)
}

// Deliver is one inbound deliver_sm (an MO message or a delivery receipt),
// with the fields the rest of the system needs already taken off the PDU.
type Deliver struct {
	Link       string
	SourceAddr string
	SourceTON  uint8
	SourceNPI  uint8
	DestAddr   string
	ESMClass   uint8 // bit 0x04 (or 0x08, 0x10, 0x20): receipt/ack; 0x40: UDH present
	DataCoding uint8
	Payload    []byte // short_message, or the message_payload TLV when short_message is empty

	// From TLVs, when the SMSC sent them.
	ReceiptedMessageID string // TLV 0x001E
	MessageState       uint8  // TLV 0x0427; 0 = absent
	NetworkErrorCode   []byte // TLV 0x0423
	SARRef             uint16 // TLVs 0x020C/0x020E/0x020F: concatenation without UDH
	SARTotal           uint8
	SARSeq             uint8
}

// IsReceipt reports whether the deliver_sm is a delivery receipt rather than
// an MO message.
func (d Deliver) IsReceipt() bool { return d.ESMClass&0x3C != 0 || d.ReceiptedMessageID != "" }

// DeliverHandler processes an inbound deliver_sm. It is called off the read
// loop. The link answers deliver_sm_resp only after it returns: nil answers
// ESME_ROK; an error answers ESME_RX_T_APPNACK so that the SMSC delivers the
// PDU again later. A handler must therefore be idempotent and must have made
// the PDU's effect durable before it returns nil.
type DeliverHandler func(ctx context.Context, d Deliver) error

// LinkState is a link's state for /readyz and metrics.
type LinkState struct {
	Name      string    `json:"name"`
	Addr      string    `json:"addr"`
	Bound     bool      `json:"bound"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	InFlight  int       `json:"in_flight"` // over all binds
	Window    int       `json:"window"`    // per bind
	Binds     int       `json:"binds"`     // configured
	Sessions  int       `json:"sessions"`  // transmitting sessions bound now
}

// StatusName names an SMPP command_status ("ESME_RTHROTTLED").
func StatusName(s uint32) string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status 0x%08X", s)
}

var statusNames = map[uint32]string{
	0x00: "ESME_ROK", 0x01: "ESME_RINVMSGLEN", 0x02: "ESME_RINVCMDLEN", 0x03: "ESME_RINVCMDID",
	0x04: "ESME_RINVBNDSTS", 0x05: "ESME_RALYBND", 0x06: "ESME_RINVPRTFLG", 0x07: "ESME_RINVREGDLVFLG",
	0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR", 0x0B: "ESME_RINVDSTADR", 0x0C: "ESME_RINVMSGID",
	0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD", 0x0F: "ESME_RINVSYSID", 0x11: "ESME_RCANCELFAIL",
	0x13: "ESME_RREPLACEFAIL", 0x14: "ESME_RMSGQFUL", 0x15: "ESME_RINVSERTYP", 0x33: "ESME_RINVNUMDESTS",
	0x34: "ESME_RINVDLNAME", 0x40: "ESME_RINVDESTFLAG", 0x42: "ESME_RINVSUBREP", 0x43: "ESME_RINVESMCLASS",
	0x44: "ESME_RCNTSUBDL", 0x45: "ESME_RSUBMITFAIL", 0x48: "ESME_RINVSRCTON", 0x49: "ESME_RINVSRCNPI",
	0x50: "ESME_RINVDSTTON", 0x51: "ESME_RINVDSTNPI", 0x53: "ESME_RINVSYSTYP", 0x54: "ESME_RINVREPFLAG",
	0x55: "ESME_RINVNUMMSGS", 0x58: "ESME_RTHROTTLED", 0x61: "ESME_RINVSCHED", 0x62: "ESME_RINVEXPIRY",
	0x63: "ESME_RINVDFTMSGID", 0x64: "ESME_RX_T_APPN", 0x65: "ESME_RX_P_APPN", 0x66: "ESME_RX_R_APPN",
	0x67: "ESME_RQUERYFAIL", 0xC0: "ESME_RINVOPTPARSTREAM", 0xC1: "ESME_ROPTPARNOTALLWD",
	0xC2: "ESME_RINVPARLEN", 0xC3: "ESME_RMISSINGOPTPARAM", 0xC4: "ESME_RINVOPTPARAMVAL",
	0xFE: "ESME_RDELIVERYFAILURE", 0xFF: "ESME_RUNKNOWNERR",
}

// TemporaryStatus reports whether an SMSC refusal may succeed on retry.
func TemporaryStatus(s uint32) bool {
	switch s {
	case 0x08, 0x14, 0x58, 0x64, 0xFE, 0xFF: // SYSERR, MSGQFUL, THROTTLED, X_T_APPN, DELIVERYFAILURE, UNKNOWNERR
		return true
	}
	return false
}
