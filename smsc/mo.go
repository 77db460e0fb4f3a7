package smsc

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// MO is an inbound SMS, reassembled when it came in parts.
type MO struct {
	Link   string
	From   phonebook.MSISDN // the sender in E.164; "" when the source is not a phone number
	Source string           // the source address as the SMSC sent it
	To     string           // the destination address (our short number)
	Text   string
	Parts  int
}

// MOHandler processes an inbound SMS. Returning an error makes the SMSC
// deliver the (last) part again later, so a handler must be idempotent.
type MOHandler func(ctx context.Context, m MO) error

// moClaim is how long one node has to deliver a completed concatenated
// message before a repeated part may deliver it again.
const moClaim = time.Minute

type moRouter struct {
	mu       sync.RWMutex
	prefixes []string // upper case, longest first
	handlers map[string]MOHandler
	def      MOHandler
}

// HandleMO registers h for inbound SMS whose text starts with prefix
// (ignoring case and leading spaces); the longest matching prefix wins.
// Prefix "" registers the default handler for everything else. Inbound SMS
// that no handler takes are logged, counted and acknowledged.
func (o *Outbox) HandleMO(prefix string, h MOHandler) {
	r := &o.mo
	r.mu.Lock()
	defer r.mu.Unlock()
	p := strings.ToUpper(strings.TrimSpace(prefix))
	if p == "" {
		r.def = h
		return
	}
	if r.handlers == nil {
		r.handlers = map[string]MOHandler{}
	}
	if _, ok := r.handlers[p]; !ok {
		r.prefixes = append(r.prefixes, p)
		sort.SliceStable(r.prefixes, func(i, j int) bool { return len(r.prefixes[i]) > len(r.prefixes[j]) })
	}
	r.handlers[p] = h
}

func (r *moRouter) lookup(text string) MOHandler {
	t := strings.ToUpper(strings.TrimSpace(text))
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, p := range r.prefixes {
		if strings.HasPrefix(t, p) {
			return r.handlers[p]
		}
	}
	return r.def
}

// MOSource turns an MO source address into E.164 using its type of number:
// international (TON 1) is the digits with "+"; national and unknown ones
// are read in the default region; alphanumeric senders (TON 5) have no
// number.
func MOSource(addr string, ton uint8, region string) (phonebook.MSISDN, error) {
	a := strings.TrimSpace(addr)
	switch ton {
	case 1:
		return phonebook.NormalizeMSISDN("+"+strings.TrimPrefix(a, "+"), region)
	case 5:
		return "", phonebook.Errorf(phonebook.EInvalidNumber, "source %q is alphanumeric, not a phone number", addr)
	default:
		return phonebook.NormalizeMSISDN(a, region)
	}
}

// handleMO stores a part of a concatenated message (durably, before the
// deliver_sm is acknowledged), and dispatches a complete message.
func (o *Outbox) handleMO(ctx context.Context, d Deliver) error {
	body, c, err := SplitUDH(d.Payload, d.ESMClass&0x40 != 0)
	if err != nil {
		return o.invalidMO(d, err)
	}
	if c == nil && d.SARTotal > 1 {
		if d.SARSeq == 0 || d.SARSeq > d.SARTotal {
			return o.invalidMO(d, phonebook.Errorf(phonebook.EInvalid, "SAR TLVs say part %d of %d", d.SARSeq, d.SARTotal))
		}
		c = &Concat{Ref: d.SARRef, Total: d.SARTotal, Seq: d.SARSeq}
	}
	if c == nil || c.Total == 1 {
		text, err := DecodeText(d.DataCoding, body)
		if err != nil {
			return o.invalidMO(d, err)
		}
		return o.dispatchMO(ctx, d, text, 1)
	}
	if _, err := DecodeText(d.DataCoding, nil); err != nil {
		return o.invalidMO(d, err) // binary or unknown coding: refuse before storing
	}
	frag := store.MOFragment{Link: d.Link, Source: d.SourceAddr, Dest: d.DestAddr, Ref: int(c.Ref), Total: int(c.Total),
		Seq: int(c.Seq), DataCoding: d.DataCoding, Body: body}
	parts, err := o.db.AddMOFragment(ctx, frag, moClaim)
	if err != nil {
		return err // not stored: let the SMSC deliver it again
	}
	if parts == nil {
		o.m.mo.WithLabelValues("partial").Inc()
		return nil
	}
	var joined []byte
	for _, p := range parts {
		joined = append(joined, p.Body...)
	}
	text, err := DecodeText(parts[0].DataCoding, joined)
	if err != nil {
		o.db.FinishMO(ctx, frag, true)
		return o.invalidMO(d, err)
	}
	err = o.dispatchMO(ctx, d, text, len(parts))
	if ferr := o.db.FinishMO(context.WithoutCancel(ctx), frag, err == nil); ferr != nil && err == nil {
		// Delivered, but the tombstone is not written: a repeated part may
		// deliver it again, which handlers tolerate.
		o.log.Warn("sms mo: marking a delivered message done", "err", ferr)
	}
	return err
}

func (o *Outbox) invalidMO(d Deliver, err error) error {
	o.m.mo.WithLabelValues("invalid").Inc()
	o.log.Warn("sms mo: unreadable inbound SMS acknowledged and dropped", "link", d.Link, "data_coding", d.DataCoding, "err", err)
	return nil
}

func (o *Outbox) dispatchMO(ctx context.Context, d Deliver, text string, parts int) error {
	m := MO{Link: d.Link, Source: d.SourceAddr, To: d.DestAddr, Text: text, Parts: parts}
	from, err := MOSource(d.SourceAddr, d.SourceTON, o.cfg.Region)
	if err == nil {
		m.From = from
	}
	h := o.mo.lookup(text)
	if h == nil {
		o.m.mo.WithLabelValues("unknown").Inc()
		o.log.Info("sms mo: no handler for inbound SMS", "link", d.Link, "to", d.DestAddr, "parts", parts)
		return nil
	}
	if err := h(ctx, m); err != nil {
		o.m.mo.WithLabelValues("failed").Inc()
		o.log.Warn("sms mo: handler failed; the SMSC will deliver it again", "link", d.Link, "err", err)
		return err
	}
	o.m.mo.WithLabelValues("handled").Inc()
	return nil
}
