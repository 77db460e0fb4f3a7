package smsc

import (
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/phonebook/phonebook/store"
)

// How a link's receipts write the message ids of its submit_sm_resp
// (LinkConfig.ReceiptIDs, the receipt_ids setting).
const (
	// ReceiptIDsAuto learns the rule from the ids the link carries (see
	// receiptIDs.learned); until it knows, a receipt waits, then matches its
	// exact id, or another form only when that cannot be ambiguous.
	ReceiptIDsAuto = "auto"
	// ReceiptIDsExact: receipts carry the id as submit_sm_resp gave it
	// (case and leading zeros aside).
	ReceiptIDsExact = "exact"
	// ReceiptIDsHex: receipts carry in hex the id submit_sm_resp gave in
	// decimal.
	ReceiptIDsHex = "hex"
	// ReceiptIDsDecimal: receipts carry in decimal the id submit_sm_resp
	// gave in hex.
	ReceiptIDsDecimal = "decimal"
)

// learnAfter is how many ids of decimal digits only, and none with a hex
// letter, show that a side of a link writes decimal. Sequential hex ids
// show a letter at least every 10; random ones almost always.
const learnAfter = 16

// receiptIDs applies each link's receipt_ids rule for the outbox and, for
// links on auto, learns the rule from the ids it sees.
type receiptIDs struct {
	configured func(link string) string // nil: every link is on auto
	wait       time.Duration            // how long a part may take to be recorded after its receipt
	log        *slog.Logger

	mu    sync.Mutex
	links map[string]*idEvidence
}

// idEvidence is what the ids seen on a link on auto tell.
type idEvidence struct {
	respHex, rcptHex     bool // an id with a hex letter was seen
	respPlain, rcptPlain int  // ids of decimal digits only seen
	opaque               bool // an id that is no number in either radix: only exact can match
	rule                 string
}

func newReceiptIDs(sub Submitter, wait time.Duration, log *slog.Logger) *receiptIDs {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &receiptIDs{wait: wait, log: log, links: map[string]*idEvidence{}}
	if c, ok := sub.(interface{ ReceiptIDs(string) string }); ok {
		r.configured = c.ReceiptIDs
	}
	return r
}

// rule returns the link's rule: configured, learned, or "" (not known yet).
func (r *receiptIDs) rule(link string) string {
	if r.configured != nil {
		if c := r.configured(link); c != ReceiptIDsAuto && c != "" {
			return c
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.links[link]; e != nil {
		return e.rule
	}
	return ""
}

// saw records an id the link carried: in a submit_sm_resp (resp) or in a
// receipt.
func (r *receiptIDs) saw(link, id string, resp bool) {
	if id == "" || r.rule(link) != "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.links[link]
	if e == nil {
		e = &idEvidence{}
		r.links[link] = e
	}
	switch {
	case isDigits(id, 10):
		if resp {
			e.respPlain++
		} else {
			e.rcptPlain++
		}
	case isDigits(id, 16):
		if resp {
			e.respHex = true
		} else {
			e.rcptHex = true
		}
	default:
		e.opaque = true
	}
	if e.rule = e.learned(); e.rule != "" {
		args := []any{"link", link, "receipt_ids", e.rule}
		if e.rule != ReceiptIDsExact {
			args = append(args, "hint", "set receipt_ids: "+e.rule+" on this link so that receipts match from the first message")
		}
		r.log.Info("sms outbox: learned how this link's receipts write message ids", args...)
	}
}

// learned reads the rule off the evidence: a side that showed a hex letter
// writes hex; one that showed learnAfter plain ids and no letter writes
// decimal.
func (e *idEvidence) learned() string {
	respDec := !e.respHex && e.respPlain >= learnAfter
	rcptDec := !e.rcptHex && e.rcptPlain >= learnAfter
	switch {
	case e.opaque, e.respHex && e.rcptHex, respDec && rcptDec:
		return ReceiptIDsExact
	case e.respHex && rcptDec:
		return ReceiptIDsDecimal
	case respDec && e.rcptHex:
		return ReceiptIDsHex
	}
	return ""
}

// receiptID is the id a receipt for the part with message id id (as
// normalised from submit_sm_resp) will carry; "" while the link's rule is
// not known.
func (r *receiptIDs) receiptID(link, id string) string {
	switch r.rule(link) {
	case ReceiptIDsExact:
		return id
	case ReceiptIDsHex: // the part's id is decimal; its receipt, hex
		return convert(id, 10, 16)
	case ReceiptIDsDecimal:
		return convert(id, 16, 10)
	}
	return ""
}

// forms implements store.ReceiptRules: which part ids a receipt with id id,
// received on link age ago, may be for.
func (r *receiptIDs) forms(link, id string, age time.Duration) store.ReceiptForms {
	var exact string
	switch r.rule(link) {
	case ReceiptIDsExact:
		return store.ReceiptForms{Exact: id}
	case ReceiptIDsHex: // receipt hex, part decimal
		exact = convert(id, 16, 10)
	case ReceiptIDsDecimal:
		exact = convert(id, 10, 16)
	default:
		if age < r.wait {
			// Not known yet, and the part may still be recorded: a guess
			// now could take another message's part.
			return store.ReceiptForms{Wait: true}
		}
		f := store.ReceiptForms{Exact: id}
		r.mu.Lock()
		e := r.links[link]
		var respHex, rcptHex bool
		if e != nil {
			respHex, rcptHex = e.respHex, e.rcptHex
		}
		r.mu.Unlock()
		// A form is a candidate only if what the link showed allows it.
		if alt := convert(id, 16, 10); alt != "" && alt != id && !respHex {
			f.Others = append(f.Others, alt)
		}
		if alt := convert(id, 10, 16); alt != "" && alt != id && !rcptHex {
			f.Others = append(f.Others, alt)
		}
		return f
	}
	if exact == "" {
		exact = id // not a number in the rule's radix: only the id itself can match
	}
	return store.ReceiptForms{Exact: exact}
}

// convert rewrites a normalised number from one radix to another; "" when
// id is not a number in radix from.
func convert(id string, from, to int) string {
	if !isDigits(id, from) {
		return ""
	}
	v, ok := new(big.Int).SetString(id, from)
	if !ok {
		return ""
	}
	return v.Text(to)
}
