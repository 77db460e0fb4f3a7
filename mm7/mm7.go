// Package mm7 speaks MM7, the interface between a value-added service
// provider (VASP, here: Phonebook) and an operator's MMSC, as 3GPP TS 23.140
// defines it: SOAP 1.1 envelopes over HTTP, with the message content as
// attachments in a multipart/related body (SOAP with attachments). It
// writes the REL-5-MM7-1-2 and REL-6-MM7-1-4 schema namespaces and reads
// any REL-5/REL-6 one.
//
// The VASP side is a Client (SubmitReq out, SubmitRsp back) and a Handler
// (DeliveryReportReq and DeliverReq in from the MMSC). The same codec serves
// the MMSC side for the simulator in mm7/mmscsim: ReadRequest, WriteResponse,
// WriteFault, and Client.DeliveryReport / Client.Deliver toward a VASP.
//
// Every parser here faces the network: bodies are bounded, malformed input
// gives a *StatusError with an MM7 status code and a sentence, never a panic.
package mm7

import (
	"strings"
	"time"
)

// Schema versions this package writes. Version strings are the last element
// of the schema namespace.
const (
	REL5 = "REL-5-MM7-1-2" // MM7Version 5.3.0
	REL6 = "REL-6-MM7-1-4" // MM7Version 6.8.0

	nsBase = "http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/"
	soapNS = "http://schemas.xmlsoap.org/soap/envelope/"
)

// namespace is the schema namespace of version v ("" = REL5).
func namespace(v string) string {
	if v == "" {
		v = REL5
	}
	return nsBase + v
}

// mm7Version is the MM7Version element's value that goes with schema v.
func mm7Version(v string) string {
	if strings.HasPrefix(v, "REL-6") {
		return "6.8.0"
	}
	return "5.3.0"
}

// knownVersion reports whether v is a version this package writes.
func knownVersion(v string) bool { return v == "" || v == REL5 || v == REL6 }

// Part is one part of a multimedia message: an image, a sound, a text.
// ContentID is written without angle brackets. A SMIL presentation refers to
// a part by ContentLocation when it is set, else by "cid:"+ContentID.
type Part struct {
	ContentType     string `json:"content_type"` // e.g. "image/jpeg", "text/plain; charset=utf-8"
	ContentID       string `json:"content_id,omitempty"`
	ContentLocation string `json:"content_location,omitempty"`
	Data            []byte `json:"data,omitempty"`
}

// ref is how a SMIL presentation names p.
func (p Part) ref() string {
	if p.ContentLocation != "" {
		return p.ContentLocation
	}
	if p.ContentID != "" {
		return "cid:" + p.ContentID
	}
	return ""
}

// SubmitReq is a message from the VASP to one or more recipients (MM7_submit.REQ).
type SubmitReq struct {
	TransactionID string // "" = the Client makes one up (crypto/rand)
	VASPID        string // "" = ClientConfig.VASPID
	VASID         string // "" = ClientConfig.VASID
	ServiceCode   string // for charging, as the operator assigned it
	// SenderAddress is written as a ShortCode, or as a Number when it
	// starts with "+", or as an RFC2822Address when it holds an "@".
	SenderAddress string
	// To are the recipients, written as Numbers (RFC2822Address with "@").
	// A parsed SubmitReq (on the MMSC side) lists To, Cc and Bcc here.
	To      []string
	Subject string
	Parts   []Part // the content; see BuildSMIL and CaptionPart
	// SMIL is the presentation (see BuildSMIL); it is sent as the first
	// part of a multipart/related content, and every src in it must name
	// one of Parts. Empty = a multipart/mixed content without presentation.
	SMIL           []byte
	DeliveryReport bool          // ask the MMSC for delivery reports
	Expiry         time.Duration // 0 = the MMSC's default; else ExpiryDate = now + Expiry
	LinkedID       string        // the DeliverReq this answers, if any
}

// SubmitRsp is the MMSC's answer to a SubmitReq.
type SubmitRsp struct {
	TransactionID string
	MessageID     string // the MMSC's id; delivery reports carry it
	Status        Status
}

// DeliveryReportReq tells the VASP what became of a submitted message for one
// recipient (MM7_delivery_report.REQ).
type DeliveryReportReq struct {
	TransactionID string
	MessageID     string
	Recipient     string
	Sender        string
	Date          time.Time // zero when the MMSC sent none or one we could not read
	// MMStatus is the outcome: Retrieved, Rejected, Expired, Indeterminate,
	// Forwarded, Deferred, Unrecognised, DeliveryConditionNotMet (REL-6).
	MMStatus   string
	StatusText string
}

// Delivered reports whether the report says the recipient got the message.
func (r *DeliveryReportReq) Delivered() bool {
	return strings.EqualFold(r.MMStatus, "Retrieved") || strings.EqualFold(r.MMStatus, "Forwarded")
}

// Final reports whether no further report will follow for this recipient:
// every MMStatus but Deferred and Indeterminate is an outcome.
func (r *DeliveryReportReq) Final() bool {
	return !strings.EqualFold(r.MMStatus, "Deferred") && !strings.EqualFold(r.MMStatus, "Indeterminate")
}

// DeliverReq is a message from a phone to the VASP's short number
// (MM7_deliver.REQ, mobile-originated MMS).
type DeliverReq struct {
	TransactionID string
	LinkedID      string // quote it as SubmitReq.LinkedID to answer
	Sender        string
	Recipients    []string // To, Cc and Bcc
	Subject       string
	// Parts is the content without the presentation; text/plain parts
	// in another charset are converted to UTF-8 (charset=utf-8).
	Parts    []Part
	SMIL     []byte // the presentation, if the content had one
	Received time.Time
}

// Request is a parsed MM7 request (see ReadRequest): one of Submit, Deliver
// or DeliveryReport is set, as Op names.
type Request struct {
	Op            string // "SubmitReq", "DeliverReq", "DeliveryReportReq"
	Version       string // the schema namespace's version, e.g. "REL-5-MM7-1-2"; "" if unrecognised
	MM7Version    string // the MM7Version element, e.g. "5.3.0"
	TransactionID string

	Submit         *SubmitReq
	Deliver        *DeliverReq
	DeliveryReport *DeliveryReportReq
}
