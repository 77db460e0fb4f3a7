package smsc

import (
	"strings"
	"time"

	"github.com/phonebook/phonebook"
)

// Outbox states a receipt can lead to. They are the values of
// sms_outbox_parts.state and sms_outbox.state.
const (
	StateQueued        = "queued"
	StateSubmitted     = "submitted"
	StateDelivered     = "delivered"
	StateUndeliverable = "undeliverable"
	StateExpired       = "expired"
	StateFailed        = "failed"
)

// Receipt is a delivery receipt taken off a deliver_sm.
type Receipt struct {
	MessageID string    // as the SMSC wrote it
	Stat      string    // DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD, ENROUTE
	State     string    // the outbox state it leads to; "" while the message is still on its way
	Err       string    // the err: field or network_error_code, "" when absent
	Submitted time.Time // zero when absent
	Done      time.Time // zero when absent
	Text      string    // first characters of the original, when the SMSC echoes them
}

// message_state TLV values (SMPP 3.4 §5.2.28) and their receipt-text names.
var messageStates = map[uint8]string{
	1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED",
	5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD",
}

// statOutboxState maps a receipt stat to an outbox state. ENROUTE and
// ACCEPTD are intermediate: the part stays submitted. UNKNOWN is a final
// state in SMPP 3.4 ("message is in invalid state"), so it is undeliverable.
var statOutboxState = map[string]string{
	"DELIVRD": StateDelivered,
	"EXPIRED": StateExpired,
	"DELETED": StateUndeliverable,
	"UNDELIV": StateUndeliverable,
	"UNKNOWN": StateUndeliverable,
	"REJECTD": StateUndeliverable,
	"ACCEPTD": "",
	"ENROUTE": "",
}

// Some SMSCs spell the stat out in full.
var statAliases = map[string]string{
	"DELIVERED": "DELIVRD", "UNDELIVERABLE": "UNDELIV", "ACCEPTED": "ACCEPTD",
	"REJECTED": "REJECTD", "EXPIRD": "EXPIRED",
}

// ParseReceipt reads a delivery receipt from the TLVs (receipted_message_id,
// message_state) when present, and from the SMPP 3.4 appendix B text form
// otherwise ("id:... sub:... dlvrd:... submit date:... done date:...
// stat:... err:... text:..."), in any case and field order. TLVs win where
// both are present.
func ParseReceipt(d Deliver) (Receipt, error) {
	if !d.IsReceipt() {
		return Receipt{}, phonebook.Errorf(phonebook.EInvalid, "deliver_sm is not a delivery receipt (esm_class 0x%02X)", d.ESMClass)
	}
	r := parseReceiptText(string(d.Payload))
	if d.ReceiptedMessageID != "" {
		r.MessageID = d.ReceiptedMessageID
	}
	if d.MessageState != 0 {
		name, ok := messageStates[d.MessageState]
		if !ok {
			return Receipt{}, phonebook.Errorf(phonebook.EInvalid, "receipt message_state %d is not an SMPP 3.4 state", d.MessageState)
		}
		r.Stat = name
	}
	if len(d.NetworkErrorCode) > 0 && r.Err == "" {
		r.Err = strings.ToUpper(hexString(d.NetworkErrorCode))
	}
	r.MessageID = strings.TrimSpace(r.MessageID)
	if r.MessageID == "" {
		return Receipt{}, phonebook.Errorf(phonebook.EInvalid, "receipt has no message id (no receipted_message_id TLV, no id: field)")
	}
	if len(r.MessageID) > 65 {
		return Receipt{}, phonebook.Errorf(phonebook.EInvalid, "receipt message id is %d characters (SMPP allows 65)", len(r.MessageID))
	}
	if a, ok := statAliases[r.Stat]; ok {
		r.Stat = a
	}
	state, ok := statOutboxState[r.Stat]
	if !ok {
		return Receipt{}, phonebook.Errorf(phonebook.EInvalid, "receipt stat %q is not a known state", r.Stat)
	}
	r.State = state
	return r, nil
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// receiptKeys are the field names of the text form, longest first so that
// "submit date" is not read as "sub".
var receiptKeys = []string{"submit date", "done date", "dlvrd", "stat", "text", "err", "sub", "id"}

func parseReceiptText(s string) Receipt {
	lower := asciiLower(s) // same length as s, so offsets carry over
	// Find every "key:" that starts a field (at the start or after a space).
	type field struct {
		key        string
		start, end int // value bounds
	}
	var fields []field
	for i := 0; i < len(lower); i++ {
		if i > 0 && lower[i-1] != ' ' {
			continue
		}
		for _, k := range receiptKeys {
			if strings.HasPrefix(lower[i:], k+":") {
				fields = append(fields, field{key: k, start: i + len(k) + 1})
				i += len(k)
				break
			}
		}
		if n := len(fields); n > 0 && fields[n-1].key == "text" {
			break // the text runs to the end and may contain anything
		}
	}
	var r Receipt
	for i, f := range fields {
		end := len(s)
		if i+1 < len(fields) {
			end = fields[i+1].start - len(fields[i+1].key) - 1
		}
		v := s[f.start:end]
		if f.key != "text" {
			v = strings.TrimSpace(v)
		} else {
			v = strings.TrimPrefix(v, " ")
		}
		switch f.key {
		case "id":
			r.MessageID = v
		case "stat":
			r.Stat = strings.ToUpper(v)
		case "err":
			r.Err = v
		case "submit date":
			r.Submitted = parseReceiptDate(v)
		case "done date":
			r.Done = parseReceiptDate(v)
		case "text":
			r.Text = v
		}
	}
	return r
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// parseReceiptDate reads YYMMDDhhmm or YYMMDDhhmmss, in UTC (SMSCs use their
// local time; we only show it).
func parseReceiptDate(v string) time.Time {
	for _, layout := range []string{"0601021504", "060102150405"} {
		if len(v) == len(layout) {
			if t, err := time.Parse(layout, v); err == nil {
				return t
			}
		}
	}
	return time.Time{}
}

// NormalizeMessageID is the form in which an SMSC message id is stored:
// trimmed, lower-case, without leading zeros ("0" stays "0").
func NormalizeMessageID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	t := strings.TrimLeft(id, "0")
	if t == "" && id != "" {
		return "0"
	}
	return t
}

func isDigits(s string, base int) bool {
	if s == "" || len(s) > 65 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' || base == 16 && c >= 'a' && c <= 'f' {
			continue
		}
		return false
	}
	return true
}
