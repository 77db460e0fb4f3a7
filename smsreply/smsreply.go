// Package smsreply makes SMS fallback two-way. The source address of each
// fallback SMS lets the reply of a person without the app find the IM user
// who wrote: an extension code appended to the SP short number (extension
// mode), or the last IM user who wrote to that number (sticky mode). The
// reply reaches that user as an IM message from the person's number. The
// package also keeps the recipients' side of fallback SMS: opt-outs by
// keyword (TD, STOP, 退订...) and a daily cap per recipient.
//
// It sits between the SMS side (smsc: the outbox it sends through, the
// inbound SMS it is handed) and the relay (which it hands replies to), and
// depends on neither's internals: cmd/phonebook wires it.
package smsreply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/text/unicode/norm"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/store"
)

// Routing modes.
const (
	ModeExtension = "extension" // source = short number + a code per (sender, recipient)
	ModeSticky    = "sticky"    // one source address; replies go to the last sender
)

// Sticky rules for a reply when several IM users wrote within the window.
const (
	RuleMostRecent = "most_recent" // to the one who wrote last
	RuleAsk        = "ask"         // an SMS back explains how to address a reply
)

// Config is the two-way SMS configuration (config key sms_reply). Zero
// values mean the defaults of DefaultConfig.
type Config struct {
	Mode            string
	ShortNumber     string        // the SP short number replies are sent to; fallback sources start with it
	ExtensionDigits int           // extension mode: digits of a code (1 to 8)
	ExtensionIdle   time.Duration // extension mode: a code unused this long may go to another conversation
	StickyWindow    time.Duration // a reply to the bare short number goes to who wrote within this
	StickyRule      string
	OptOutKeywords  []string // compared without case, spaces, punctuation or full-width forms
	OptInKeywords   []string
	OptOutText      string // confirmation SMS; {who}: the sender's number, or "anyone"
	OptInText       string
	AskText         string // sticky rule ask; {senders}: the numbers, {example}: the first
	// MaxPerRecipientDay caps fallback SMS to one number per UTC day, from
	// all senders together; negative = no cap.
	MaxPerRecipientDay int
	Region             string // for numbers written in national form in a reply
}

// DefaultConfig returns the values a zero Config stands for. The default
// mode is sticky: it works with every operator, while extension needs one
// that lets an SP append digits to its short number.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	str := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	str(&c.Mode, ModeSticky)
	str(&c.ShortNumber, "10690")
	str(&c.StickyRule, RuleMostRecent)
	str(&c.Region, phonebook.DefaultRegion)
	str(&c.OptOutText, "Phonebook: you will get no more SMS from {who}. Reply START to get them again. 回复恢复可重新接收")
	str(&c.OptInText, "Phonebook: SMS from {who} are on again. Reply TD to stop them. 回复TD退订")
	str(&c.AskText, `Phonebook: several people wrote to you ({senders}). Start your reply with the number you answer, e.g. "{example} hello".`)
	if c.ExtensionDigits == 0 {
		c.ExtensionDigits = 4
	}
	if c.ExtensionIdle == 0 {
		c.ExtensionIdle = 7 * 24 * time.Hour
	}
	if c.StickyWindow == 0 {
		c.StickyWindow = 24 * time.Hour
	}
	if c.OptOutKeywords == nil {
		c.OptOutKeywords = []string{"TD", "STOP", "退订", "UNSUBSCRIBE"}
	}
	if c.OptInKeywords == nil {
		c.OptInKeywords = []string{"START", "恢复"}
	}
	if c.MaxPerRecipientDay == 0 {
		c.MaxPerRecipientDay = 20
	}
}

// Validate reports what New refuses.
func (c Config) Validate() error {
	c.setDefaults()
	switch c.Mode {
	case ModeExtension, ModeSticky:
	default:
		return fmt.Errorf("smsreply: mode %q is not %s or %s", c.Mode, ModeExtension, ModeSticky)
	}
	if c.ExtensionDigits < 1 || c.ExtensionDigits > 8 {
		return fmt.Errorf("smsreply: extension_digits %d: want 1 to 8", c.ExtensionDigits)
	}
	if c.ExtensionIdle < 0 || c.StickyWindow < 0 {
		return fmt.Errorf("smsreply: extension_idle and sticky_window must not be negative")
	}
	if c.Mode == ModeExtension && len(c.ShortNumber)+c.ExtensionDigits > 21 {
		return fmt.Errorf("smsreply: short number %q and %d digits make a source longer than 21 characters", c.ShortNumber, c.ExtensionDigits)
	}
	if c.StickyRule != RuleMostRecent && c.StickyRule != RuleAsk {
		return fmt.Errorf("smsreply: sticky_rule %q is not %s or %s", c.StickyRule, RuleMostRecent, RuleAsk)
	}
	if strings.Trim(strings.TrimPrefix(c.ShortNumber, "+"), "0123456789") != "" {
		return fmt.Errorf("smsreply: short number %q is not digits", c.ShortNumber)
	}
	in := keywords(c.OptInKeywords)
	for k := range keywords(c.OptOutKeywords) {
		if in[k] {
			return fmt.Errorf("smsreply: %q is both an opt-out and an opt-in keyword", k)
		}
	}
	return nil
}

// Store is what the service needs from persistence; *store.DB has it.
type Store interface {
	NoteSMSFallback(ctx context.Context, sender, recipient phonebook.MSISDN, digits int, idle time.Duration, at time.Time) (string, error)
	SMSConversationByExt(ctx context.Context, recipient phonebook.MSISDN, ext string, at time.Time) (store.SMSConversation, bool, error)
	TouchSMSConversation(ctx context.Context, recipient, sender phonebook.MSISDN, at time.Time) error
	RecentSMSSenders(ctx context.Context, recipient phonebook.MSISDN, since time.Time, limit int) ([]store.SMSConversation, error)
	AddSMSOptOut(ctx context.Context, number, sender phonebook.MSISDN, at time.Time) (bool, error)
	RemoveSMSOptOut(ctx context.Context, number, sender phonebook.MSISDN, all bool) (int64, error)
	SMSOptedOut(ctx context.Context, number, sender phonebook.MSISDN) (bool, error)
	Hit(ctx context.Context, name string, window time.Duration) (int64, time.Time, error)
}

var _ Store = (*store.DB)(nil)

// Outbox enqueues SMS durably; *smsc.Outbox is one.
type Outbox interface {
	Enqueue(ctx context.Context, s smsc.SMS) (int64, error)
	// Check tells, without storing, whether Enqueue would accept s.
	Check(s smsc.SMS) error
}

var _ Outbox = (*smsc.Outbox)(nil)

// kindFallback is the outbox kind (smsc.SMS.Kind) of fallback SMS; their
// Ref is the relay's message id.
const kindFallback = "fallback"

// Relay takes a reply as an IM message; *relay.Server is one.
type Relay interface {
	InjectSMS(ctx context.Context, from, to phonebook.MSISDN, text string) (string, error)
}

// TokenHandler is method C verification: it reports whether an inbound
// SMS carried a token (verify.Service.HandleMO).
type TokenHandler func(ctx context.Context, from phonebook.MSISDN, to, text string) (bool, error)

// Service routes replies and keeps opt-outs and the daily cap.
type Service struct {
	cfg    Config
	db     Store
	outbox Outbox
	relay  atomic.Pointer[Relay]
	log    *slog.Logger
	optOut map[string]bool
	optIn  map[string]bool
	now    func() time.Time

	inbound  *prometheus.CounterVec
	refused  *prometheus.CounterVec
	noCode   prometheus.Counter
	replyLat prometheus.Histogram
}

// New checks cfg and returns the service. reg may be nil.
func New(cfg Config, db Store, outbox Outbox, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, db: db, outbox: outbox, log: log.With("component", "sms-reply"), now: time.Now,
		optOut: keywords(cfg.OptOutKeywords), optIn: keywords(cfg.OptInKeywords)}
	s.inbound = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_reply_inbound_total",
		Help: "Inbound SMS by what became of them: token, opt_out, opt_in, reply, ask, unknown_extension, no_conversation, empty, non_numeric_sender, unknown."},
		[]string{"result"})
	s.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_fallback_refused_total",
		Help: "Fallback SMS refused for good, by reason: opted_out, recipient_daily_limit."}, []string{"reason"})
	s.noCode = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_sms_reply_extensions_exhausted_total",
		Help: "Fallback SMS sent from the bare short number because every extension code of the recipient was in a live conversation."})
	s.replyLat = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "phonebook_sms_reply_handle_seconds",
		Help: "Time to route an SMS reply and store it for its IM recipient.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	if reg != nil {
		for _, c := range []prometheus.Collector{s.inbound, s.refused, s.noCode, s.replyLat} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("smsreply: metrics: %w", err)
			}
		}
	}
	return s, nil
}

// SetRelay connects the relay replies go to. Until it is set, replies are
// refused with an error, so that the SMSC delivers them again later.
func (s *Service) SetRelay(r Relay) { s.relay.Store(&r) }

func keywords(ks []string) map[string]bool {
	m := map[string]bool{}
	for _, k := range ks {
		if n := NormalizeKeyword(k); n != "" {
			m[n] = true
		}
	}
	return m
}

// NormalizeKeyword folds a text for keyword matching: full-width and
// compatibility forms to their plain form (ＴＤ → TD), upper case, and no
// spaces or punctuation (" td. " → TD).
func NormalizeKeyword(s string) string {
	var b strings.Builder
	for _, r := range norm.NFKC.String(s) {
		if unicode.IsSpace(r) || unicode.IsPunct(r) {
			continue
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// SendFallback sends an IM message's fallback SMS (text already formatted)
// through the outbox, with ref (the relay's message id) as its reference.
// It refuses, with code EOptedOut or ERecipientLimit, an SMS to a number
// that opted out of from's messages or had its daily cap; otherwise the
// SMS leaves from the address that routes a reply back to from.
func (s *Service) SendFallback(ctx context.Context, ref string, from, to phonebook.MSISDN, text string) error {
	out, err := s.db.SMSOptedOut(ctx, to, from)
	if err != nil {
		return err
	}
	if out {
		s.refused.WithLabelValues(string(phonebook.EOptedOut)).Inc()
		return phonebook.Errorf(phonebook.EOptedOut, "%s asked for no more SMS through Phonebook", to)
	}
	if s.cfg.MaxPerRecipientDay > 0 {
		n, _, err := s.db.Hit(ctx, "sms_fallback_to:"+string(to), 24*time.Hour)
		if err != nil {
			return err
		}
		if n > int64(s.cfg.MaxPerRecipientDay) {
			s.refused.WithLabelValues(string(phonebook.ERecipientLimit)).Inc()
			return phonebook.Errorf(phonebook.ERecipientLimit, "%s has had %d SMS from Phonebook users today, the most allowed", to, s.cfg.MaxPerRecipientDay)
		}
	}
	source, err := s.NoteConversation(ctx, from, to)
	if err != nil {
		return err
	}
	_, err = s.outbox.Enqueue(ctx, smsc.SMS{To: to, From: source, Text: text, Kind: kindFallback, Ref: ref})
	return err
}

// NoteConversation records that from writes to to through a fallback (an
// SMS, or an MMS) and returns the source address that routes a reply back
// to from: the short number plus the conversation's extension code
// (extension mode), or "" for the link's own (sticky mode, and extension
// mode with every code live).
func (s *Service) NoteConversation(ctx context.Context, from, to phonebook.MSISDN) (string, error) {
	digits := 0
	if s.cfg.Mode == ModeExtension {
		digits = s.cfg.ExtensionDigits
	}
	ext, err := s.db.NoteSMSFallback(ctx, from, to, digits, s.cfg.ExtensionIdle, s.now())
	switch {
	case errors.Is(err, store.ErrExtensionsExhausted):
		// Sent all the same: a reply to the bare short number still finds
		// the last sender.
		s.noCode.Inc()
		s.log.Warn("every extension code of the recipient is in a live conversation: sent from the bare short number",
			"to", to, "from", from, "digits", digits)
		return s.cfg.ShortNumber, nil
	case err != nil:
		return "", err
	case ext != "":
		return s.cfg.ShortNumber + ext, nil
	}
	return "", nil
}

// CheckFallback tells, without sending, whether the outbox could ever
// take an IM message's fallback SMS (its destination, its length): the
// error SendFallback's Enqueue would return (invalid_number,
// request_too_large...), or nil.
func (s *Service) CheckFallback(ref string, from, to phonebook.MSISDN, text string) error {
	return s.outbox.Check(smsc.SMS{To: to, Text: text, Kind: kindFallback, Ref: ref})
}

// FallbackStates returns an outbox listener (smsc.Outbox.OnStateChange)
// that hands report the state changes of fallback SMS, by the message id
// SendFallback was given (e.g. relay.Server.SMSOutboxStateChanged), and
// ignores every other kind of SMS. A report that fails is logged.
func (s *Service) FallbackStates(report func(ctx context.Context, ref, state, detail string) error) func(context.Context, smsc.OutboxEvent) {
	return func(ctx context.Context, ev smsc.OutboxEvent) {
		if ev.Kind != kindFallback || ev.Ref == "" {
			return
		}
		if err := report(ctx, ev.Ref, ev.State, ev.Error); err != nil {
			s.log.Warn("sms fallback state not recorded", "message", ev.Ref, "state", ev.State, "err", err)
		}
	}
}

// MOHandler returns the handler for every inbound SMS that no prefix
// handler took. Its order is the documented one (docs/sms-outbox.md):
// method C tokens (tokens, may be nil), opt-out and opt-in keywords,
// conversation replies, then unknown. Bad input (a non-numeric sender, an
// unknown extension, an empty reply) is acknowledged, counted and logged.
func (s *Service) MOHandler(tokens TokenHandler) smsc.MOHandler {
	return func(ctx context.Context, mo smsc.MO) error {
		if mo.From == "" {
			s.inbound.WithLabelValues("non_numeric_sender").Inc()
			s.log.Info("inbound SMS from a non-numeric sender ignored", "source", mo.Source, "to", mo.To)
			return nil
		}
		if tokens != nil {
			handled, err := tokens(ctx, mo.From, mo.To, mo.Text)
			if err != nil {
				return err
			}
			if handled {
				s.inbound.WithLabelValues("token").Inc()
				return nil
			}
		}
		handled, err := s.HandleMO(ctx, mo)
		if err != nil || handled {
			return err
		}
		s.inbound.WithLabelValues("unknown").Inc()
		s.log.Info("unknown inbound SMS", "from", mo.From, "to", mo.To, "parts", mo.Parts)
		return nil
	}
}

// extension splits an MO destination into our short number and the code
// after it; ours is false for another destination.
func (s *Service) extension(to string) (ext string, ours bool) {
	t := strings.TrimPrefix(strings.TrimSpace(to), "+")
	sn := strings.TrimPrefix(s.cfg.ShortNumber, "+")
	if !strings.HasPrefix(t, sn) {
		return "", false
	}
	return t[len(sn):], true
}

// HandleMO takes opt-out and opt-in keywords and replies sent to the
// short number (with or without an extension). It reports false for an
// SMS that is none of these (to another number, or to the bare short
// number from someone nobody wrote to).
func (s *Service) HandleMO(ctx context.Context, mo smsc.MO) (bool, error) {
	ext, ours := s.extension(mo.To)
	if !ours || mo.From == "" {
		return false, nil
	}
	if s.cfg.Mode == ModeSticky {
		ext = "" // the operator may append digits of its own
	}
	kw := NormalizeKeyword(mo.Text)
	switch {
	case s.optOut[kw]:
		return true, s.optOutMO(ctx, mo, ext)
	case s.optIn[kw]:
		return true, s.optInMO(ctx, mo, ext)
	}
	started := s.now()
	r, err := s.route(ctx, mo.From, ext, mo.Text, started)
	switch {
	case err != nil:
		return true, err
	case r.unknownExt:
		s.inbound.WithLabelValues("unknown_extension").Inc()
		s.log.Info("SMS reply to an extension with no conversation for its sender dropped", "from", mo.From, "to", mo.To)
		return true, nil
	case r.to == "" && len(r.ask) == 0:
		return false, nil
	case r.to == "" && s.cfg.StickyRule == RuleAsk:
		return true, s.ask(ctx, mo, r.ask)
	}
	return true, s.deliver(ctx, mo, r.to, r.text, started)
}

// routed is where a reply goes: to (with text, the part meant for them),
// or, when several IM users wrote and the reply names none, ask holds
// them (to is then the most recent).
type routed struct {
	to         phonebook.MSISDN
	text       string
	ask        []store.SMSConversation
	unknownExt bool
}

// route finds the IM user a reply from number answers: the conversation
// of the extension, else the sticky rule. It records the use of the
// conversation, except when the rule would ask.
func (s *Service) route(ctx context.Context, number phonebook.MSISDN, ext, text string, at time.Time) (routed, error) {
	if ext != "" {
		c, found, err := s.db.SMSConversationByExt(ctx, number, ext, at)
		if err != nil || !found {
			return routed{unknownExt: !found}, err
		}
		return routed{to: c.Sender, text: text}, nil
	}
	recent, err := s.db.RecentSMSSenders(ctx, number, at.Add(-s.cfg.StickyWindow), 10)
	if err != nil || len(recent) == 0 {
		return routed{}, err
	}
	to, rest, ok := s.addressed(text, recent)
	if !ok {
		if len(recent) > 1 && s.cfg.StickyRule == RuleAsk {
			return routed{ask: recent}, nil
		}
		to, rest = recent[0].Sender, text
	}
	if err := s.db.TouchSMSConversation(ctx, number, to, at); err != nil {
		return routed{}, err
	}
	return routed{to: to, text: rest}, nil
}

// RouteReply finds the IM user a message from number (a phone without the
// app) to the short number to answers, as HandleMO routes SMS replies: by
// the extension after the short number, else to who wrote last (a message
// that starts with the number of one of the recent writers goes to that
// one, without the number). A message that cannot be answered with a
// question (an MMS) goes to the most recent writer under the ask rule
// too. found is false when to is not the short number or nobody wrote to
// number within the sticky window; rest is text without a leading number.
func (s *Service) RouteReply(ctx context.Context, number phonebook.MSISDN, to, text string) (user phonebook.MSISDN, rest string, found bool, err error) {
	ext, ours := s.extension(to)
	if !ours || number == "" {
		return "", "", false, nil
	}
	if s.cfg.Mode == ModeSticky {
		ext = ""
	}
	at := s.now()
	r, err := s.route(ctx, number, ext, text, at)
	if err != nil || r.unknownExt {
		return "", "", false, err
	}
	if r.to == "" && len(r.ask) > 0 {
		r.to, r.text = r.ask[0].Sender, text
		if err := s.db.TouchSMSConversation(ctx, number, r.to, at); err != nil {
			return "", "", false, err
		}
	}
	return r.to, r.text, r.to != "", nil
}

// addressed reads a reply that starts with the number of one of the recent
// senders ("13600136000 see you"): the rest goes to that sender.
func (s *Service) addressed(text string, recent []store.SMSConversation) (phonebook.MSISDN, string, bool) {
	t := strings.TrimSpace(text)
	head, rest := t, ""
	if i := strings.IndexFunc(t, unicode.IsSpace); i >= 0 {
		head, rest = t[:i], t[i:]
	}
	head = strings.TrimRight(norm.NFKC.String(head), ":,;")
	n, err := phonebook.NormalizeMSISDN(head, s.cfg.Region)
	if err != nil {
		return "", "", false
	}
	for _, c := range recent {
		if c.Sender == n {
			return n, strings.TrimSpace(rest), true
		}
	}
	return "", "", false
}

func (s *Service) deliver(ctx context.Context, mo smsc.MO, to phonebook.MSISDN, text string, started time.Time) error {
	if strings.TrimSpace(text) == "" {
		s.inbound.WithLabelValues("empty").Inc()
		s.log.Info("empty SMS reply dropped", "from", mo.From, "to", mo.To)
		return nil
	}
	r := s.relay.Load()
	if r == nil {
		return phonebook.Errorf(phonebook.EUnavailable, "the relay is not running: the SMSC delivers the reply again later")
	}
	if _, err := (*r).InjectSMS(ctx, mo.From, to, text); err != nil {
		return err
	}
	s.inbound.WithLabelValues("reply").Inc()
	s.replyLat.Observe(s.now().Sub(started).Seconds())
	return nil
}

// optOutMO records an opt-out: from the conversation's sender when sent to
// its extension, from everyone when sent to the bare short number, and
// confirms it from the address the person wrote to.
func (s *Service) optOutMO(ctx context.Context, mo smsc.MO, ext string) error {
	sender, err := s.extSender(ctx, mo.From, ext)
	if err != nil {
		return err
	}
	if _, err := s.db.AddSMSOptOut(ctx, mo.From, sender, s.now()); err != nil {
		return err
	}
	s.inbound.WithLabelValues("opt_out").Inc()
	s.log.Info("number opted out of fallback SMS", "number", mo.From, "from_sender", sender)
	return s.confirm(ctx, mo, s.cfg.OptOutText, sender)
}

// optInMO lifts the opt-out from everyone and, when sent to an extension,
// the one from that conversation's sender; sent to the bare short number
// it lifts every opt-out of the number.
func (s *Service) optInMO(ctx context.Context, mo smsc.MO, ext string) error {
	sender, err := s.extSender(ctx, mo.From, ext)
	if err != nil {
		return err
	}
	if sender == "" {
		if _, err := s.db.RemoveSMSOptOut(ctx, mo.From, "", true); err != nil {
			return err
		}
	} else {
		for _, who := range []phonebook.MSISDN{"", sender} {
			if _, err := s.db.RemoveSMSOptOut(ctx, mo.From, who, false); err != nil {
				return err
			}
		}
	}
	s.inbound.WithLabelValues("opt_in").Inc()
	s.log.Info("number opted in to fallback SMS again", "number", mo.From, "from_sender", sender)
	return s.confirm(ctx, mo, s.cfg.OptInText, sender)
}

// extSender is the IM user whose conversation with number holds ext; ""
// for no extension or an unknown one.
func (s *Service) extSender(ctx context.Context, number phonebook.MSISDN, ext string) (phonebook.MSISDN, error) {
	if ext == "" {
		return "", nil
	}
	c, _, err := s.db.SMSConversationByExt(ctx, number, ext, s.now())
	return c.Sender, err
}

func (s *Service) confirm(ctx context.Context, mo smsc.MO, tmpl string, sender phonebook.MSISDN) error {
	who := "anyone"
	if sender != "" {
		who = string(sender)
	}
	text := strings.ReplaceAll(tmpl, "{who}", who)
	_, err := s.outbox.Enqueue(ctx, smsc.SMS{To: mo.From, From: s.source(mo.To), Text: text, Kind: "sms_reply"})
	return err
}

// source is the address to answer an MO from: the one it was sent to, so
// that the answer lands in the same thread on the handset.
func (s *Service) source(to string) string {
	t := strings.TrimPrefix(strings.TrimSpace(to), "+")
	if len(t) > 21 {
		return ""
	}
	return t
}

// ask answers a reply that could be for several senders with how to
// address it.
func (s *Service) ask(ctx context.Context, mo smsc.MO, recent []store.SMSConversation) error {
	nums := make([]string, len(recent))
	for i, c := range recent {
		nums[i] = string(c.Sender)
	}
	text := strings.NewReplacer("{senders}", strings.Join(nums, ", "), "{example}", nums[0]).Replace(s.cfg.AskText)
	if _, err := s.outbox.Enqueue(ctx, smsc.SMS{To: mo.From, From: s.source(mo.To), Text: text, Kind: "sms_reply"}); err != nil {
		return err
	}
	s.inbound.WithLabelValues("ask").Inc()
	s.log.Info("SMS reply for several senders: asked the person to address it", "from", mo.From, "senders", len(recent))
	return nil
}
