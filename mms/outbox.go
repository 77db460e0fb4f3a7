package mms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/backoff"
	"github.com/phonebook/phonebook/store"
)

// Submission is one MMS to submit over a link.
type Submission struct {
	To             phonebook.MSISDN
	From           string // sender address; "" = the link's
	Subject        string
	Text           string // the caption: a text part and the SMIL's text region
	Parts          []Part // the media, adapted to the link's limit
	DeliveryReport bool
	Expiry         time.Duration // relative validity at the MMSC
	// TransactionID names the outbox row, the same on every attempt, so an
	// MMSC that keeps transaction ids can tell a retry (after a response
	// that was lost) from a new message.
	TransactionID string
}

// Submitter submits an MMS to one MMSC and returns the MMSC's MessageID;
// the MM7 client is one (NewMM7Submitter). Errors should be *SubmitError
// so that the outbox knows what to do; any other error is taken as a
// temporary failure of a request that reached the MMSC.
type Submitter interface {
	Submit(ctx context.Context, s *Submission) (messageID string, err error)
}

// Class is what a failed submit means for the message.
type Class int

const (
	Temporary  Class = iota // try again later
	Permanent               // the MMSC refused this MMS for good: it goes as SMS
	NotCapable              // the recipient cannot receive MMS: marked, and it goes as SMS
)

// SubmitError is a failed submit.
type SubmitError struct {
	Class Class
	// NotSent: the request never reached the MMSC (it refused the
	// connection, no link): a retry costs the message no attempt.
	NotSent bool
	Err     error
}

func (e *SubmitError) Error() string { return e.Err.Error() }
func (e *SubmitError) Unwrap() error { return e.Err }

// Link is one MMSC link: the destinations it serves, its size limit and
// its submitter.
type Link struct {
	Name            string
	Prefixes        []string // none = default route
	MaxMessageBytes int
	Submitter       Submitter
}

// Media reads the content of media ids and makes download links; an
// adapter over media.Service is one.
type Media interface {
	// Parts returns the media in order. An error with code ENotFound or
	// EExpired means the media is gone for good.
	Parts(ctx context.Context, ids []string) ([]Part, error)
	// Link returns a short, expiring, unguessable download link to the
	// media for to, for the message ref; ttl 0 = the media's default.
	Link(ctx context.Context, ref string, to phonebook.MSISDN, ids []string, ttl time.Duration) (string, error)
}

// SMS sends an IM message's fallback SMS durably (smsreply.Service is
// one: it picks the source address a reply comes back to, and refuses
// numbers that opted out or had their daily allowance).
type SMS interface {
	SendFallback(ctx context.Context, ref string, from, to phonebook.MSISDN, text string) error
}

// Store is what the outbox needs from persistence; *store.DB has it.
type Store interface {
	CapabilityStore
	EnqueueMMS(ctx context.Context, msgs ...store.MMS) ([]int64, error)
	ClaimMMS(ctx context.Context, node string, limit int, lease time.Duration) ([]store.MMS, error)
	ReleaseMMSClaims(ctx context.Context, node string) (int64, error)
	RecordMMS(ctx context.Context, node string, o store.MMSOutcome) ([]store.MMSChange, error)
	ApplyMMSReport(ctx context.Context, r store.MMSReport) ([]store.MMSChange, bool, error)
	MMSDepth(ctx context.Context) (int64, time.Time, error)
	PurgeMMS(ctx context.Context, before, reportsBefore time.Time, limit int) (int64, error)
}

var _ Store = (*store.DB)(nil)

// Message is a media message for the outbox.
type Message struct {
	Ref      string           // the relay's message id: states are reported against it
	Kind     string           // "fallback" [default]
	From     phonebook.MSISDN // the IM user who sent it
	To       phonebook.MSISDN
	Text     string   // the caption, as the recipient reads it
	Media    []string // media ids, in order
	Validity time.Duration
	source   string // the sender address, set by Send: "" = the link's
}

// Event is a state change of an MMS, for OnStateChange listeners.
type Event struct {
	ID    int64
	Kind  string
	Ref   string
	From  phonebook.MSISDN
	To    phonebook.MSISDN
	State string // store.MMSSubmitted, MMSDelivered, MMSFailed, MMSExpired, MMSToSMS, MMSSMS
	Error string
}

// Deps are the outbox's collaborators. Media and SMS may be nil in tests
// that do not need them (messages then fail instead of going as SMS).
type Deps struct {
	Store   Store
	Links   []Link
	Media   Media
	SMS     SMS
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Outbox is the durable MMS outbox: Enqueue makes a message durable; the
// outbox's workers claim due messages with a lease, read and adapt their
// media, submit them over the link that serves their destination, retry
// temporary failures with backoff until their validity ends, and hand
// messages the MMSC refused (or that cannot be adapted, or whose
// recipient is not MMS-capable) to the SMS fallback with a download link.
type Outbox struct {
	cfg   Config
	db    Store
	links []Link
	media Media
	sms   SMS
	caps  *Capabilities
	log   *slog.Logger
	m     *outboxMetrics

	wake chan struct{}

	lmu sync.Mutex
	// orderMu is held from a state change's commit to its emission, so
	// that listeners see one message's changes in the order they were
	// committed (a delivery report's MMS_DELIVERED must not overtake the
	// MMS_SUBMITTED of the record it follows).
	orderMu   sync.Mutex
	listeners []func(context.Context, Event)

	mu       sync.Mutex
	started  bool
	stopping chan struct{}
	runCtx   context.Context
	cancel   context.CancelFunc
	loops    sync.WaitGroup // claim loop and maintenance
	work     sync.WaitGroup // messages being processed
}

// NewOutbox checks cfg and builds the outbox; Start runs it.
func NewOutbox(cfg Config, d Deps) (*Outbox, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	if d.Store == nil {
		return nil, errors.New("mms: outbox needs a store")
	}
	for _, l := range d.Links {
		if l.Submitter == nil || l.Name == "" {
			return nil, fmt.Errorf("mms: link %q has no submitter", l.Name)
		}
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newOutboxMetrics(d.Metrics)
	if err != nil {
		return nil, err
	}
	o := &Outbox{cfg: cfg, db: d.Store, links: d.Links, media: d.Media, sms: d.SMS, log: log.With("component", "mms-outbox"), m: m,
		caps: NewCapabilities(d.Store, cfg.CapablePrefixes), wake: make(chan struct{}, 1), stopping: make(chan struct{})}
	return o, nil
}

// Capabilities returns the capability rules the outbox marks numbers in.
func (o *Outbox) Capabilities() *Capabilities { return o.caps }

// OnStateChange registers a listener for state changes; it runs after the
// change is committed, on the goroutine that made it.
func (o *Outbox) OnStateChange(f func(context.Context, Event)) {
	o.lmu.Lock()
	o.listeners = append(o.listeners, f)
	o.lmu.Unlock()
}

// Route returns the link that serves to: the one with the longest
// matching prefix, else the first default-route link; nil when none.
func (o *Outbox) Route(to phonebook.MSISDN) *Link {
	var best *Link
	bestLen := -1
	for i := range o.links {
		l := &o.links[i]
		n := 0
		if len(l.Prefixes) > 0 {
			n = longestPrefix(l.Prefixes, string(to))
			if n < 0 {
				continue
			}
		}
		if n > bestLen {
			best, bestLen = l, n
		}
	}
	return best
}

// Enqueue stores a media message; once it returns the MMS survives a
// crash. It is sent by whichever node's worker claims it first.
func (o *Outbox) Enqueue(ctx context.Context, msg Message) (int64, error) {
	if n, err := phonebook.NormalizeMSISDN(string(msg.To), phonebook.DefaultRegion); err != nil || n != msg.To {
		return 0, phonebook.Errorf(phonebook.EInvalidNumber, "mms: %q is not an E.164 number", msg.To)
	}
	if len(msg.Media) == 0 {
		return 0, phonebook.Errorf(phonebook.EInvalid, "mms: a message without media")
	}
	kind := msg.Kind
	if kind == "" {
		kind = "fallback"
	}
	validity := msg.Validity
	if validity <= 0 || validity > o.cfg.Validity {
		validity = o.cfg.Validity
	}
	ids, err := o.db.EnqueueMMS(ctx, store.MMS{Dest: string(msg.To), Source: msg.source, Sender: string(msg.From), Caption: msg.Text, Media: msg.Media,
		Kind: kind, Ref: msg.Ref, ExpiresAt: time.Now().Add(validity)})
	if err != nil {
		return 0, err
	}
	o.m.events.WithLabelValues(store.MMSQueued).Inc()
	o.signal()
	return ids[0], nil
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Start takes back this node's claims of a previous run and starts the
// workers. ctx bounds the outbox's life; Close stops it cleanly.
func (o *Outbox) Start(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started {
		return errors.New("mms: outbox already started")
	}
	if n, err := o.db.ReleaseMMSClaims(ctx, o.cfg.NodeID); err != nil {
		return err
	} else if n > 0 {
		o.log.Info("mms outbox: took back the claims of this node's last run", "count", n, "node", o.cfg.NodeID)
	}
	o.started = true
	o.runCtx, o.cancel = context.WithCancel(context.WithoutCancel(ctx))
	o.loops.Add(2)
	go o.claimLoop()
	go o.maintain()
	go func() {
		select {
		case <-ctx.Done():
			o.Close(context.Background())
		case <-o.stopping:
		}
	}()
	return nil
}

// Close stops claiming, waits up to Config.ShutdownTimeout (or ctx) for
// the submits in flight and records their results. Submits still running
// then are cut off; their messages come back after the lease.
func (o *Outbox) Close(ctx context.Context) error {
	o.mu.Lock()
	if !o.started {
		o.mu.Unlock()
		return nil
	}
	select {
	case <-o.stopping:
		o.mu.Unlock()
		o.loops.Wait()
		return nil
	default:
	}
	close(o.stopping)
	o.mu.Unlock()
	done := make(chan struct{})
	go func() {
		o.work.Wait()
		close(done)
	}()
	t := time.NewTimer(o.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		o.log.Warn("mms outbox: shutdown timeout: submits still in flight are sent again after their lease")
	case <-ctx.Done():
	}
	o.cancel()
	<-done
	o.loops.Wait()
	return nil
}

func (o *Outbox) isStopping() bool {
	select {
	case <-o.stopping:
		return true
	default:
		return false
	}
}

// claimLoop claims as many due messages as there are free workers and
// hands each to one.
func (o *Outbox) claimLoop() {
	defer o.loops.Done()
	slots := make(chan struct{}, o.cfg.Workers)
	t := time.NewTicker(o.cfg.Poll)
	defer t.Stop()
	for {
		if o.isStopping() {
			return
		}
		free := cap(slots) - len(slots)
		got := 0
		if free > 0 {
			ms, err := o.db.ClaimMMS(o.runCtx, o.cfg.NodeID, free, o.cfg.Lease)
			if err != nil && o.runCtx.Err() == nil {
				o.log.Error("mms outbox: claiming", "err", err)
			}
			claimed := time.Now()
			for _, m := range ms {
				slots <- struct{}{}
				o.work.Add(1)
				go func(m store.MMS) {
					defer o.work.Done()
					o.process(m, claimed)
					<-slots
					o.signal()
				}(m)
			}
			got = len(ms)
		}
		if got > 0 && got == free {
			continue
		}
		select {
		case <-o.stopping:
			return
		case <-o.wake:
		case <-t.C:
		}
	}
}

// Reasons the outbox itself does not send a message; they cost no attempt.
var (
	errStopping    = errors.New("outbox shutting down")
	errLeaseEnding = errors.New("claim lease nearly over")
	errNoLink      = errors.New("no MMSC link routes this destination")
)

// process makes one attempt at a claimed message and records it.
func (o *Outbox) process(m store.MMS, claimed time.Time) {
	var out store.MMSOutcome
	if m.State == store.MMSToSMS {
		out = o.handOver(m)
	} else {
		out = o.submit(m, claimed)
	}
	out.ID = m.ID
	o.record(m, out)
}

// record writes an outcome, retrying a failing database for a while (a
// result not written means the message is sent again after its lease).
func (o *Outbox) record(m store.MMS, out store.MMSOutcome) {
	var changes []store.MMSChange
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(o.runCtx), 10*time.Second)
		o.orderMu.Lock()
		changes, err = o.db.RecordMMS(ctx, o.cfg.NodeID, out)
		if err == nil {
			o.emit(changes)
		}
		o.orderMu.Unlock()
		cancel()
		if err == nil {
			break
		}
		o.log.Error("mms outbox: recording a result; retrying", "id", m.ID, "state", out.State, "err", err)
		if o.isStopping() && attempt >= 2 {
			break
		}
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
	}
	if err != nil {
		o.log.Error("mms outbox: result not recorded; the message is tried again after its lease", "id", m.ID, "err", err)
		return
	}
	if out.State == store.MMSToSMS {
		o.signal()
	}
}

func (o *Outbox) emit(changes []store.MMSChange) {
	if len(changes) == 0 {
		return
	}
	o.lmu.Lock()
	ls := o.listeners
	o.lmu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(o.runCtx), 10*time.Second)
	defer cancel()
	for _, c := range changes {
		o.m.events.WithLabelValues(c.State).Inc()
		ev := Event{ID: c.ID, Kind: c.Kind, Ref: c.Ref, From: phonebook.MSISDN(c.Sender), To: phonebook.MSISDN(c.Dest), State: c.State, Error: c.Error}
		for _, f := range ls {
			f(ctx, ev)
		}
	}
}

// submit makes one MM7 attempt at a queued message.
func (o *Outbox) submit(m store.MMS, claimed time.Time) store.MMSOutcome {
	now := time.Now()
	free := func(err error, at time.Time) store.MMSOutcome {
		if at.After(m.ExpiresAt) {
			return store.MMSOutcome{State: store.MMSExpired, NoAttempt: true, Error: "validity ended while retrying: not sent: " + err.Error()}
		}
		return store.MMSOutcome{State: store.MMSQueued, NextAttemptAt: at, NoAttempt: true, Error: "not sent: " + err.Error()}
	}
	toSMS := func(why string) store.MMSOutcome {
		return store.MMSOutcome{State: store.MMSToSMS, NoAttempt: true, Error: why}
	}
	switch {
	case now.After(m.ExpiresAt):
		return store.MMSOutcome{State: store.MMSExpired, NoAttempt: true, Error: "validity ended before it could be sent"}
	case o.isStopping():
		return free(errStopping, now)
	case now.Sub(claimed) > o.cfg.Lease*9/10:
		return free(errLeaseEnding, now)
	}
	link := o.Route(phonebook.MSISDN(m.Dest))
	if link == nil {
		o.m.submits.WithLabelValues("no_link").Inc()
		return toSMS(errNoLink.Error())
	}
	if o.media == nil {
		return store.MMSOutcome{State: store.MMSFailed, NoAttempt: true, Error: "no media store"}
	}
	ctx, cancel := context.WithTimeout(o.runCtx, time.Minute)
	parts, err := o.media.Parts(ctx, m.Media)
	cancel()
	if err != nil {
		switch phonebook.ErrorCode(err) {
		case phonebook.ENotFound, phonebook.EExpired:
			return store.MMSOutcome{State: store.MMSFailed, NoAttempt: true, Error: "media gone: " + err.Error()}
		}
		return free(fmt.Errorf("reading media: %w", err), now.Add(o.cfg.RetryBase))
	}
	parts, err = Adapt(parts, m.Caption, link.MaxMessageBytes)
	if err != nil {
		o.m.submits.WithLabelValues("cannot_adapt").Inc()
		return toSMS(err.Error())
	}
	sub := &Submission{To: phonebook.MSISDN(m.Dest), From: m.Source, Subject: m.Subject, Text: m.Caption, Parts: parts,
		DeliveryReport: true, Expiry: time.Until(m.ExpiresAt).Round(time.Second), TransactionID: fmt.Sprintf("pb-mms-%d", m.ID)}
	id, err := link.Submitter.Submit(o.runCtx, sub)
	if err == nil {
		o.m.submits.WithLabelValues("ok").Inc()
		return store.MMSOutcome{State: store.MMSSubmitted, Link: link.Name, MessageID: id}
	}
	var se *SubmitError
	if !errors.As(err, &se) {
		se = &SubmitError{Class: Temporary, Err: err}
	}
	why := fmt.Sprintf("mmsc %s: %v", link.Name, err)
	switch se.Class {
	case NotCapable:
		o.m.submits.WithLabelValues("not_capable").Inc()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(o.runCtx), 10*time.Second)
		if err := o.caps.Report(ctx, phonebook.MSISDN(m.Dest), store.CapabilityMMSC, false); err != nil {
			o.log.Warn("mms outbox: not-capable answer not recorded", "to", m.Dest, "err", err)
		}
		cancel()
		return store.MMSOutcome{State: store.MMSToSMS, Error: "not MMS-capable: " + why}
	case Permanent:
		o.m.submits.WithLabelValues("permanent").Inc()
		return store.MMSOutcome{State: store.MMSToSMS, Error: why}
	}
	if se.NotSent {
		o.m.submits.WithLabelValues("not_sent").Inc()
		return free(fmt.Errorf("mmsc %s: %w", link.Name, err), now.Add(o.cfg.RetryBase))
	}
	o.m.submits.WithLabelValues("temporary").Inc()
	attempts := m.Attempts + 1
	next := time.Now().Add(o.backoff(attempts))
	switch {
	case o.cfg.MaxAttempts > 0 && attempts >= o.cfg.MaxAttempts:
		return store.MMSOutcome{State: store.MMSToSMS, Error: fmt.Sprintf("gave up after %d attempts: %s", attempts, why)}
	case next.After(m.ExpiresAt):
		return store.MMSOutcome{State: store.MMSExpired, Error: "validity ended while retrying: " + why}
	}
	return store.MMSOutcome{State: store.MMSQueued, NextAttemptAt: next, Error: why}
}

// handOver sends a message refused as MMS as an SMS: its caption and a
// download link.
func (o *Outbox) handOver(m store.MMS) store.MMSOutcome {
	now := time.Now()
	retry := func(err error) store.MMSOutcome {
		next := now.Add(o.cfg.RetryBase)
		if next.After(m.ExpiresAt) {
			return store.MMSOutcome{State: store.MMSFailed, NoAttempt: true, Error: "validity ended while handing it to SMS: " + err.Error()}
		}
		return store.MMSOutcome{State: store.MMSToSMS, NextAttemptAt: next, NoAttempt: true}
	}
	if o.sms == nil || o.media == nil || m.Sender == "" {
		return store.MMSOutcome{State: store.MMSFailed, NoAttempt: true}
	}
	if o.isStopping() {
		return store.MMSOutcome{State: store.MMSToSMS, NextAttemptAt: now, NoAttempt: true}
	}
	ctx, cancel := context.WithTimeout(o.runCtx, 30*time.Second)
	defer cancel()
	url, err := o.media.Link(ctx, m.Ref, phonebook.MSISDN(m.Dest), m.Media, 0)
	if err != nil {
		switch phonebook.ErrorCode(err) {
		case phonebook.ENotFound, phonebook.EExpired:
			return store.MMSOutcome{State: store.MMSFailed, NoAttempt: true, Error: "media gone: " + err.Error()}
		}
		o.log.Warn("mms outbox: download link; retried", "id", m.ID, "err", err)
		return retry(err)
	}
	err = o.sms.SendFallback(ctx, m.Ref, phonebook.MSISDN(m.Sender), phonebook.MSISDN(m.Dest), SMSText(m.Caption, url))
	if err != nil {
		if permanentSMSError(err) {
			return store.MMSOutcome{State: store.MMSFailed, NoAttempt: true, Error: "the SMS fallback failed: " + err.Error()}
		}
		o.log.Warn("mms outbox: SMS fallback; retried", "id", m.ID, "err", err)
		return retry(err)
	}
	return store.MMSOutcome{State: store.MMSSMS, NoAttempt: true}
}

// SMSText is the SMS that replaces an MMS: its caption, then the link.
func SMSText(caption, url string) string {
	if strings.TrimSpace(caption) == "" {
		return url
	}
	return caption + " " + url
}

// permanentSMSError reports whether the SMS side refused for good (as
// relay.PermanentSMSError does; mms does not import the relay).
func permanentSMSError(err error) bool {
	switch phonebook.ErrorCode(err) {
	case phonebook.ETooLarge, phonebook.EInvalid, phonebook.EInvalidNumber, phonebook.ENumberNotAllowed, phonebook.EBlocked,
		phonebook.EOptedOut, phonebook.ERecipientLimit:
		return true
	}
	return false
}

// backoff is exponential from RetryBase, capped at RetryMax, with "equal
// jitter" (half fixed, half random).
func (o *Outbox) backoff(attempts int) time.Duration {
	return backoff.Equal(o.cfg.RetryBase, o.cfg.RetryMax, attempts)
}

// HandleReport applies an MMSC's delivery report for the MessageID it
// gave on link; status is the MM7 MMStatus (Retrieved, Rejected,
// Expired...). A report that comes before its SubmitRsp is recorded is
// kept and applied then; one for an id never recorded is dropped after an
// hour. It returns nil once the report is durable.
func (o *Outbox) HandleReport(ctx context.Context, link, messageID, status, text string) error {
	state, known := ReportState(status)
	label := state
	if !known {
		label = "unknown_status"
		o.log.Warn("mms outbox: delivery report with an unknown MMStatus taken as on its way", "link", link, "message_id", messageID, "status", status)
	} else if label == "" {
		label = "intermediate"
	}
	o.m.reports.WithLabelValues(label).Inc()
	why := status
	if text != "" {
		why += ": " + text
	}
	o.orderMu.Lock()
	changes, matched, err := o.db.ApplyMMSReport(ctx, store.MMSReport{Link: link, MessageID: messageID, State: state, Error: why})
	if err == nil {
		o.emit(changes)
	}
	o.orderMu.Unlock()
	if err != nil {
		return err
	}
	if !matched {
		o.log.Info("mms outbox: delivery report for no recorded message kept (applied if its message is recorded within the hour)",
			"link", link, "message_id", messageID, "status", status)
	}
	if state == store.MMSToSMS && len(changes) > 0 {
		o.signal()
	}
	return nil
}

// ReportState maps an MM7 MMStatus to the outbox's state: Retrieved is
// delivered, Expired expired, Rejected and Unrecognised (the handset
// refused or could not read it) go as SMS; Deferred, Indeterminate and
// Forwarded change nothing (""). known is false for a status MM7 does not
// define.
func ReportState(status string) (state string, known bool) {
	switch strings.ToLower(strings.TrimSpace(status)) {
	case "retrieved":
		return store.MMSDelivered, true
	case "expired":
		return store.MMSExpired, true
	case "rejected", "unrecognised", "unrecognized":
		return store.MMSToSMS, true
	case "deferred", "indeterminate", "forwarded":
		return "", true
	}
	return "", false
}

// maintain refreshes the depth gauges and deletes what is finished.
func (o *Outbox) maintain() {
	defer o.loops.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	last := time.Time{}
	for {
		ctx := o.runCtx
		if n, oldest, err := o.db.MMSDepth(ctx); err == nil {
			o.m.depth.Set(float64(n))
			if oldest.IsZero() {
				o.m.oldest.Set(0)
			} else {
				o.m.oldest.Set(time.Since(oldest).Seconds())
			}
		}
		if time.Since(last) > time.Minute {
			last = time.Now()
			if _, err := o.db.PurgeMMS(ctx, time.Now().Add(-o.cfg.Retention), time.Now().Add(-time.Hour), 1000); err != nil && ctx.Err() == nil {
				o.log.Error("mms outbox: purging old messages", "err", err)
			}
		}
		select {
		case <-o.stopping:
			return
		case <-t.C:
		}
	}
}

type outboxMetrics struct {
	submits, reports, events *prometheus.CounterVec
	depth, oldest            prometheus.Gauge
}

func newOutboxMetrics(reg prometheus.Registerer) (*outboxMetrics, error) {
	m := &outboxMetrics{
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_mms_submits_total",
			Help: "MMS submit attempts by result: ok, permanent (refused: goes as SMS), not_capable (goes as SMS), temporary (retried), not_sent (never reached the MMSC: costs no attempt), no_link, cannot_adapt."}, []string{"result"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_mms_reports_total",
			Help: "MM7 delivery reports received, by the state they report (delivered, expired, to_sms, intermediate, unknown_status)."}, []string{"state"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_mms_outbox_transitions_total",
			Help: "MMS outbox messages entering each state."}, []string{"state"}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonebook_mms_outbox_depth",
			Help: "MMS waiting in the outbox (queued, or refused and waiting for the SMS fallback)."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonebook_mms_outbox_oldest_age_seconds",
			Help: "Age of the oldest waiting MMS."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.submits, m.reports, m.events, m.depth, m.oldest} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("mms: outbox metrics: %w", err)
			}
		}
	}
	return m, nil
}
