package smsc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// OutboxConfig tunes the outbox. Zero values mean the defaults in brackets.
type OutboxConfig struct {
	NodeID          string        // names this node's claims; unique among running nodes, stable across restarts [hostname]
	Batch           int           // messages claimed at once [500]
	Claimers        int           // concurrent claims; (Claimers+1)*Batch messages may be in flight [2 on MySQL, 1 on SQLite]
	Workers         int           // concurrent submits; match the links' windows [100]
	Lease           time.Duration // how long a claim lasts before another node may take it [5m]
	Poll            time.Duration // how often an idle worker looks for due messages [1s]
	DefaultValidity time.Duration // for messages enqueued without one [24h]
	MaxValidity     time.Duration // cap on a message's validity [7 days]
	MaxParts        int           // longest text, in SMS parts [10]
	RetryBase       time.Duration // first retry delay after a temporary error [2s]
	RetryMax        time.Duration // longest retry delay [5m]
	MaxAttempts     int           // attempts before a message fails; 0 = until its validity ends
	FlushEvery      time.Duration // longest wait before submit results are written, when no write is in progress [5ms]
	FlushSize       int           // most results per write [1024]
	Recorders       int           // concurrent writers of results [2 on MySQL, 1 on SQLite]
	NoReceipts      bool          // do not ask SMSCs for delivery receipts
	Region          string        // region for national-format MO source numbers ["CN"]
	MOExpiry        time.Duration // incomplete concatenated MO parts are dropped after [1h]
	Retention       time.Duration // finished messages are deleted after [7 days]
	DrainTimeout    time.Duration // how long shutdown waits for submits in flight [30s]
	// ReceiptIDWait is how long a receipt may come before its part is
	// recorded (the SMSC may send it before submit_sm_resp; results are
	// written in batches). On a link whose receipt_ids rule is not known
	// yet, receipts wait this long before they match [10s].
	ReceiptIDWait time.Duration
}

// DefaultOutboxConfig returns the values a zero OutboxConfig stands for.
func DefaultOutboxConfig() OutboxConfig {
	var c OutboxConfig
	c.defaults()
	return c
}

func (c *OutboxConfig) defaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
		if c.NodeID == "" {
			c.NodeID = "phonebook"
		}
	}
	c.NodeID = clipString(c.NodeID, 64)
	if c.Batch <= 0 {
		c.Batch = 500 // a claim costs a few round trips: amortise them
	}
	if c.Workers <= 0 {
		c.Workers = 100
	}
	if c.MaxParts <= 0 {
		c.MaxParts = DefaultMaxParts
	}
	if c.FlushSize <= 0 {
		// A write's cost is mostly per statement and per commit: on MariaDB
		// 128 results cost 32 µs of database CPU each, 512 cost 23 µs.
		c.FlushSize = 1024
	}
	if c.Recorders <= 0 {
		c.Recorders = 2
	}
	if c.Claimers <= 0 {
		c.Claimers = 2
	}
	if c.Region == "" {
		c.Region = phonebook.DefaultRegion
	}
	def(&c.Lease, 5*time.Minute)
	def(&c.Poll, time.Second)
	def(&c.DefaultValidity, 24*time.Hour)
	def(&c.MaxValidity, 7*24*time.Hour)
	def(&c.RetryBase, 2*time.Second)
	def(&c.RetryMax, 5*time.Minute)
	def(&c.FlushEvery, 5*time.Millisecond)
	def(&c.MOExpiry, time.Hour)
	def(&c.Retention, 7*24*time.Hour)
	def(&c.DrainTimeout, 30*time.Second)
	def(&c.ReceiptIDWait, 10*time.Second)
}

// SMS is a message to send.
type SMS struct {
	To       phonebook.MSISDN
	From     string // source address; "" = the link's default
	Text     string
	Kind     string        // "verify", "fallback", ...
	Ref      string        // the caller's reference, returned in events
	Validity time.Duration // 0 = the outbox default
}

// OutboxEvent tells listeners that a message changed state: "submitted"
// (every part accepted by an SMSC), "delivered", "undeliverable",
// "expired" or "failed". Error says why for the last three.
type OutboxEvent struct {
	ID    int64
	Kind  string
	Ref   string
	State string
	Error string
}

// Outbox is the durable SMS outbox: Enqueue writes a message to the store,
// Run submits due messages through a Submitter with retries, and
// HandleDeliver (the links' DeliverHandler) applies receipts and routes
// inbound SMS. Several nodes may run Outboxes on one store.
type Outbox struct {
	db  *store.DB
	sub Submitter
	cfg OutboxConfig
	log *slog.Logger
	m   *outboxMetrics

	wake      chan struct{}
	receiptIn chan struct{} // a receipt was stored

	// While Run runs, Enqueue stores a message already claimed when there
	// is room in flight and hands it to Run over direct: no claim needed.
	rmu     sync.RWMutex
	running bool
	slots   *budget // messages in flight
	direct  chan store.SMS

	eventQ    [eventShards]chan store.SMSChange
	listeners atomic.Pointer[[]func(context.Context, OutboxEvent)]
	lmu       sync.Mutex
	pending   pendingEmits
	// afterRecord, when set (tests), runs between a recorder's commit and
	// the emission of its changes.
	afterRecord func()

	receipts groupCommit[store.SMSReceipt]
	ids      *receiptIDs
	mo       moRouter
}

// NewOutbox builds an outbox; it starts nothing until Run. reg may be nil.
func NewOutbox(db *store.DB, sub Submitter, cfg OutboxConfig, log *slog.Logger, reg prometheus.Registerer) (*Outbox, error) {
	if db == nil || sub == nil {
		return nil, errors.New("smsc: outbox needs a store and a submitter")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.defaults()
	m, err := newOutboxMetrics(reg)
	if err != nil {
		return nil, err
	}
	o := &Outbox{
		db: db, sub: sub, cfg: cfg, log: log.With("component", "sms-outbox", "node", cfg.NodeID), m: m,
		wake:      make(chan struct{}, 1),
		receiptIn: make(chan struct{}, 1),
	}
	if db.Dialect() == store.SQLite {
		o.cfg.Recorders, o.cfg.Claimers = 1, 1 // one writer at a time anyway
	}
	o.receipts.apply, o.receipts.parallel = o.storeReceipts, o.cfg.Recorders
	o.ids = newReceiptIDs(sub, o.cfg.ReceiptIDWait, o.log)
	return o, nil
}

// OnStateChange registers a listener for message state changes. Listeners
// run after the change is committed, off the outbox's write path, on
// eventShards goroutines: the events of one message arrive in order, one
// at a time; a slow listener slows the outbox down (the event queue is
// bounded) but does not stop it.
func (o *Outbox) OnStateChange(fn func(context.Context, OutboxEvent)) {
	o.lmu.Lock()
	defer o.lmu.Unlock()
	var ls []func(context.Context, OutboxEvent)
	if p := o.listeners.Load(); p != nil {
		ls = append(ls, *p...)
	}
	ls = append(ls, fn)
	o.listeners.Store(&ls)
}

// eventShards is how many goroutines call listeners; events are spread by
// message id, so each message's events keep their order.
const eventShards = 8

// emit hands committed changes to the listeners.
func (o *Outbox) emit(changes []store.SMSChange) {
	has := o.listeners.Load() != nil
	for _, c := range changes {
		o.m.events.WithLabelValues(c.State).Inc()
		if has {
			o.eventQ[uint64(c.ID)%eventShards] <- c
		}
	}
}

// notify calls the listeners for the events of one shard until it closes.
func (o *Outbox) notify(ctx context.Context, in <-chan store.SMSChange) {
	for c := range in {
		p := o.listeners.Load()
		for _, fn := range *p {
			fn(ctx, OutboxEvent{ID: c.ID, Kind: c.Kind, Ref: c.Ref, State: c.State, Error: c.Error})
		}
	}
}

// Check tells whether Enqueue would accept s, without storing it: a
// destination that is not E.164, or a text longer than MaxParts parts, is
// refused with the error Enqueue would return (invalid_number,
// request_too_large...).
func (o *Outbox) Check(s SMS) error {
	if !strings.HasPrefix(string(s.To), "+") || len(s.To) < 4 || len(s.To) > 16 {
		return phonebook.Errorf(phonebook.EInvalidNumber, "sms destination %q is not an E.164 number", s.To)
	}
	if len(s.From) > 21 {
		return phonebook.Errorf(phonebook.EInvalid, "sms source address is longer than 21 characters")
	}
	if len(s.Kind) > 32 || len(s.Ref) > 191 {
		return phonebook.Errorf(phonebook.EInvalid, "sms kind (32) or ref (191 characters) too long")
	}
	e, err := Encode(s.Text)
	if err != nil {
		return err
	}
	_, err = e.Parts(0, o.cfg.MaxParts)
	return err
}

// Enqueue checks and stores a message; once it returns the message survives
// a crash and will be sent. It wakes the worker at once.
func (o *Outbox) Enqueue(ctx context.Context, s SMS) (int64, error) {
	if err := o.Check(s); err != nil {
		return 0, err
	}
	v := s.Validity
	if v <= 0 {
		v = o.cfg.DefaultValidity
	}
	v = min(v, o.cfg.MaxValidity)
	kind := s.Kind
	if kind == "" {
		kind = "sms"
	}
	m := store.SMS{Dest: string(s.To), Source: s.From, Text: s.Text, Kind: kind, Ref: s.Ref, ExpiresAt: time.Now().Add(v)}
	if id, ok, err := o.enqueueClaimed(ctx, m); ok || err != nil {
		return id, err
	}
	ids, err := o.db.EnqueueSMS(ctx, m)
	if err != nil {
		o.log.Error("sms outbox: enqueue", "err", err)
		return 0, phonebook.Errorf(phonebook.EUnavailable, "the SMS outbox is not available; try again later")
	}
	o.signal(o.wake)
	return ids[0], nil
}

// enqueueClaimed stores m already claimed by this node and hands it to Run
// when Run is running, a link is bound and there is room in flight: the
// message goes out without waiting for a claim (a transaction) and without
// one. ok is false when it did not try.
func (o *Outbox) enqueueClaimed(ctx context.Context, m store.SMS) (id int64, ok bool, err error) {
	if !o.available() || !o.takeSlot() {
		return 0, false, nil
	}
	ids, err := o.db.EnqueueClaimedSMS(ctx, o.cfg.NodeID, o.cfg.Lease, m)
	if err != nil {
		o.slots.give(1)
		o.log.Error("sms outbox: enqueue", "err", err)
		return 0, false, phonebook.Errorf(phonebook.EUnavailable, "the SMS outbox is not available; try again later")
	}
	m.ID, m.State = ids[0], StateQueued
	o.rmu.RLock()
	defer o.rmu.RUnlock()
	if !o.running {
		// Run stopped meanwhile: hand the claim back so that any node may
		// send the message at once.
		o.slots.give(1)
		if _, err := o.db.RecordSMS(context.WithoutCancel(ctx), o.cfg.NodeID, nil, []store.SMSOutcome{{ID: m.ID, Kind: m.Kind, Ref: m.Ref,
			State: StateQueued, NextAttemptAt: time.Now(), NoAttempt: true, Error: "not sent: " + errStopping.Error()}}); err != nil {
			o.log.Warn("sms outbox: could not release a message enqueued during shutdown; it is sent after its lease", "id", m.ID, "err", err)
		}
		return m.ID, true, nil
	}
	o.direct <- m // room for it: it holds a slot
	return m.ID, true, nil
}

// takeSlot takes room for one message in flight, without waiting.
func (o *Outbox) takeSlot() bool {
	o.rmu.RLock()
	defer o.rmu.RUnlock()
	return o.running && o.slots.tryTake()
}

func (o *Outbox) available() bool {
	av, ok := o.sub.(interface{ Available() bool })
	return !ok || av.Available()
}

func (o *Outbox) signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run submits due messages until ctx ends, then waits (up to DrainTimeout)
// for submits in flight and writes their results. Parts whose
// submit_sm_resp arrived are recorded and never sent again; the rest of an
// interrupted message is sent on a later attempt, here or on another node.
// One Outbox runs one Run at a time; other nodes run their own Outbox.
func (o *Outbox) Run(ctx context.Context) error {
	// Submits and writes outlive ctx so that shutdown records what the SMSC
	// already accepted; stopping makes workers skip jobs not yet started.
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBG()
	var stopping atomic.Bool

	// Claims cost a few round trips each: several claimers keep the
	// workers fed while one waits for the database, and the jobs queue has
	// room for every message in flight so that claimers never wait on it.
	maxInflight := (o.cfg.Claimers + 1) * o.cfg.Batch
	// Claims this node id still holds are from its previous run (killed,
	// or its database went away): take them back now rather than after
	// their lease.
	if n, err := o.db.ReleaseSMSClaims(ctx, o.cfg.NodeID); err != nil && ctx.Err() == nil {
		o.log.Error("sms outbox: releasing the claims of a previous run", "err", err)
	} else if n > 0 {
		o.log.Info("sms outbox: took back messages claimed by this node's previous run", "count", n)
	}
	slots := newBudget(maxInflight)
	direct := make(chan store.SMS, maxInflight)
	o.rmu.Lock()
	o.slots, o.direct, o.running = slots, direct, true
	o.rmu.Unlock()
	go func() { <-ctx.Done(); slots.close() }()
	jobs := make(chan job, maxInflight)
	var notifyWG sync.WaitGroup
	for i := range o.eventQ {
		o.eventQ[i] = make(chan store.SMSChange, 1024)
		notifyWG.Go(func() { o.notify(bg, o.eventQ[i]) })
	}
	// Results of one message go to one recorder, so its parts are written
	// no later than its outcome.
	shards := make([]chan record, o.cfg.Recorders)
	var recWG sync.WaitGroup
	for i := range shards {
		shards[i] = make(chan record, 4*o.cfg.FlushSize)
		recWG.Go(func() { o.recorder(bg, ctx.Done(), shards[i]) })
	}
	records := recordSink(shards)

	var workWG sync.WaitGroup
	for range o.cfg.Workers {
		workWG.Go(func() {
			for j := range jobs {
				o.submit(bg, j, &stopping, records)
			}
		})
	}
	var maintWG sync.WaitGroup
	maintWG.Go(func() { o.maintain(ctx) })
	// As many receipt appliers as claimers: SKIP LOCKED keeps them apart.
	for range o.cfg.Claimers {
		maintWG.Go(func() { o.applyReceipts(ctx) })
	}

	var claimWG sync.WaitGroup
	for range o.cfg.Claimers {
		claimWG.Go(func() { o.claimer(ctx, jobs, records) })
	}
	claimWG.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-direct:
				if !o.start(ctx, m, jobs, records) {
					return
				}
			}
		}
	})
	claimWG.Wait()
	o.rmu.Lock()
	o.running = false
	o.rmu.Unlock()
	// Messages enqueued claimed that never started: hand them back.
	for len(direct) > 0 {
		m := <-direct
		records.send(record{outcome: &store.SMSOutcome{ID: m.ID, Kind: m.Kind, Ref: m.Ref, State: StateQueued,
			NextAttemptAt: time.Now(), NoAttempt: true, Error: "not sent: " + errStopping.Error()}})
		slots.give(1)
	}

	stopping.Store(true)
	close(jobs)
	done := make(chan struct{})
	go func() { workWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.cfg.DrainTimeout):
		o.log.Warn("sms outbox: submits still in flight at shutdown; their messages will be retried after the lease")
		cancelBG()
		<-done
	}
	for _, c := range shards {
		close(c)
	}
	recorded := make(chan struct{})
	go func() { recWG.Wait(); close(recorded) }()
	select {
	case <-recorded:
	case <-time.After(o.cfg.DrainTimeout):
		// The store is not answering: the parts in hand are lost to us and
		// will be sent again once their leases end.
		o.log.Error("sms outbox: could not record submit results at shutdown")
		cancelBG()
		<-recorded
	}
	maintWG.Wait()
	for _, c := range o.eventQ {
		close(c)
	}
	notified := make(chan struct{})
	go func() { notifyWG.Wait(); close(notified) }()
	select {
	case <-notified:
	case <-time.After(o.cfg.DrainTimeout):
		o.log.Error("sms outbox: state change listeners still busy at shutdown")
		cancelBG()
		<-notified
	}
	return nil
}

// maintain refreshes the depth gauges and deletes what has expired.
func (o *Outbox) maintain(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	last := time.Time{}
	for {
		if n, oldest, err := o.db.SMSDepth(ctx); err == nil {
			o.m.depth.Set(float64(n))
			if oldest.IsZero() {
				o.m.oldest.Set(0)
			} else {
				o.m.oldest.Set(time.Since(oldest).Seconds())
			}
		}
		if time.Since(last) > time.Minute {
			last = time.Now()
			if _, err := o.db.ExpireMOFragments(ctx, time.Now().Add(-o.cfg.MOExpiry)); err != nil && ctx.Err() == nil {
				o.log.Error("sms outbox: expiring MO fragments", "err", err)
			}
			if _, err := o.db.PurgeSMS(ctx, time.Now().Add(-o.cfg.Retention), 1000); err != nil && ctx.Err() == nil {
				o.log.Error("sms outbox: purging old messages", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type outboxMetrics struct {
	submits, receipts, unmatched, mo, events *prometheus.CounterVec
	depth, oldest                            prometheus.Gauge
}

func newOutboxMetrics(reg prometheus.Registerer) (*outboxMetrics, error) {
	m := &outboxMetrics{
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_submits_total",
			Help: "Parts the outbox submitted, by result: ok, permanent (refused), temporary (refused, or sent and unanswered: costs an attempt), not_sent (never reached the SMSC: costs no attempt)."}, []string{"result"}),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_receipts_total",
			Help: "Delivery receipts received, by the state they report (delivered, undeliverable, expired, intermediate); invalid (unreadable)."}, []string{"state"}),
		unmatched: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_receipts_unmatched_total",
			Help: "Delivery receipts that could not be applied, by reason: ambiguous (several messages fit; kept, never guessed), unknown (no message fitted within an hour; dropped)."}, []string{"reason"}),
		mo: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_mo_total",
			Help: "Inbound SMS by result: handled, unknown (no handler), failed (handler error), invalid, partial (part stored)."}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_sms_outbox_transitions_total",
			Help: "Outbox messages entering each state."}, []string{"state"}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonebook_sms_outbox_depth",
			Help: "Messages queued in the outbox (not yet accepted by an SMSC)."}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonebook_sms_outbox_oldest_age_seconds",
			Help: "Age of the oldest queued message."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.submits, m.receipts, m.unmatched, m.mo, m.events, m.depth, m.oldest} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("smsc: outbox metrics: %w", err)
			}
		}
	}
	return m, nil
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Sender sends texts of one kind through the outbox; it is what services
// that only send text (verification codes) depend on.
type Sender struct {
	o        *Outbox
	kind     string
	validity time.Duration
}

// SenderFor returns a Sender that enqueues messages of kind with validity
// (0 = the outbox default).
func (o *Outbox) SenderFor(kind string, validity time.Duration) *Sender {
	return &Sender{o: o, kind: kind, validity: validity}
}

// SendSMS enqueues text for to; it returns once the message is durable.
func (s *Sender) SendSMS(ctx context.Context, to phonebook.MSISDN, text string) error {
	_, err := s.o.Enqueue(ctx, SMS{To: to, Text: text, Kind: s.kind, Validity: s.validity})
	return err
}
