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
	"github.com/phonebook/phonebook/internal/backoff"
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

// job is one part to submit.
type job struct {
	msg  *attempt
	seq  int
	part Part
}

// attempt tracks one claimed message while its parts are submitted.
type attempt struct {
	m        store.SMS
	total    int
	leaseEnd time.Time
	left     atomic.Int32

	mu      sync.Mutex
	tempErr error // the first temporary failure that costs an attempt
	freeErr error // the first part that was never sent
	permErr error
}

func (a *attempt) fail(err error, temporary bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !temporary:
		if a.permErr == nil {
			a.permErr = err
		}
	case notSent(err):
		if a.freeErr == nil {
			a.freeErr = err
		}
	case a.tempErr == nil:
		a.tempErr = err
	}
}

// record is a submit result on its way to the store.
type record struct {
	part    *store.SMSPart
	outcome *store.SMSOutcome
}

func (r record) id() int64 {
	if r.part != nil {
		return r.part.OutboxID
	}
	return r.outcome.ID
}

// recordSink routes each message's results to one recorder.
type recordSink []chan record

func (s recordSink) send(r record) { s[uint64(r.id())%uint64(len(s))] <- r }

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

// claimer claims due messages and feeds their parts to the workers, as
// long as the budget of messages in flight allows at least half a batch
// (claims cost round trips: not one per finished message).
func (o *Outbox) claimer(ctx context.Context, jobs chan<- job, records recordSink) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		// With no link bound a claim would only fail every message and push
		// it back by a growing backoff; wait for a link instead, so that
		// queued messages go out as soon as one binds.
		if !o.available() {
			timer.Reset(o.cfg.Poll / 4)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			continue
		}
		n := o.slots.take(o.cfg.Batch, max(o.cfg.Batch/2, 1))
		if n == 0 {
			return // shutting down
		}
		msgs, err := o.db.ClaimSMS(ctx, o.cfg.NodeID, n, o.cfg.Lease)
		if err != nil && ctx.Err() == nil {
			o.log.Error("sms outbox: claim", "err", err)
		}
		o.slots.give(n - len(msgs))
		for i, m := range msgs {
			if !o.start(ctx, m, jobs, records) {
				// Shutting down: hand back what never started.
				for _, r := range msgs[i+1:] {
					records.send(record{outcome: &store.SMSOutcome{ID: r.ID, Kind: r.Kind, Ref: r.Ref, State: StateQueued,
						NextAttemptAt: time.Now(), NoAttempt: true, Error: "not sent: " + errStopping.Error()}})
				}
				o.slots.give(len(msgs) - i - 1)
				return
			}
		}
		if len(msgs) == n {
			continue // more may be due right now
		}
		timer.Reset(o.cfg.Poll)
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-timer.C:
		}
	}
}

// budget counts the messages a node may have in flight.
type budget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	free   int
	closed bool
}

func newBudget(n int) *budget {
	b := &budget{free: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// take waits until at least atLeast slots are free and takes up to want;
// it returns 0 once the budget is closed.
func (b *budget) take(want, atLeast int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.free < atLeast {
		b.cond.Wait()
	}
	if b.closed {
		return 0
	}
	n := min(want, b.free)
	b.free -= n
	return n
}

// tryTake takes one slot if one is free, without waiting.
func (b *budget) tryTake() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.free == 0 {
		return false
	}
	b.free--
	return true
}

func (b *budget) give(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// start turns a claimed message into jobs; it returns false when ctx ended
// while the jobs queue was full (the message is released for a retry).
func (o *Outbox) start(ctx context.Context, m store.SMS, jobs chan<- job, records recordSink) bool {
	now := time.Now()
	finish := func(state, reason string) {
		records.send(record{outcome: &store.SMSOutcome{ID: m.ID, Kind: m.Kind, Ref: m.Ref, State: state, Error: reason, NextAttemptAt: now}})
		o.slots.give(1)
	}
	if !m.ExpiresAt.After(now) {
		why := "validity ended before it could be sent"
		if m.Error != "" {
			why += "; last error: " + m.Error
		}
		finish(StateExpired, why)
		return true
	}
	e, err := Encode(m.Text)
	var parts []Part
	if err == nil {
		parts, err = e.Parts(uint8(m.ID), o.cfg.MaxParts)
	}
	if err != nil {
		finish(StateFailed, phonebook.ErrorMessage(err))
		return true
	}
	sent := map[int]bool{}
	for _, s := range m.SentParts {
		sent[s] = true
	}
	a := &attempt{m: m, total: len(parts), leaseEnd: now.Add(o.cfg.Lease)}
	var todo []job
	for i, p := range parts {
		if sent[i+1] {
			continue
		}
		p.Dest = phonebook.MSISDN(m.Dest)
		p.Source = m.Source
		p.RegisteredDelivery = !o.cfg.NoReceipts
		// 0 would mean the SMSC's default validity, often days.
		p.Validity = max(m.ExpiresAt.Sub(now).Truncate(time.Second), time.Second)
		todo = append(todo, job{msg: a, seq: i + 1, part: p})
	}
	if len(todo) == 0 { // every part went out before a crash
		finish(StateSubmitted, "")
		return true
	}
	a.left.Store(int32(len(todo)))
	for i, j := range todo {
		select {
		case jobs <- j:
		case <-ctx.Done():
			// The rest of the parts never started; count them off so that
			// the message is released for a retry.
			for range todo[i:] {
				a.fail(errStopping, true)
				o.partDone(a, records)
			}
			return false
		}
	}
	return true
}

func (o *Outbox) submit(ctx context.Context, j job, stopping *atomic.Bool, records recordSink) {
	a := j.msg
	switch {
	case stopping.Load():
		a.fail(errStopping, true)
	case time.Until(a.leaseEnd) < o.cfg.Lease/10:
		// The claim is about to lapse: another node may take the message, so
		// sending now could send it twice.
		a.fail(errLeaseEnding, true)
	case !o.awaitLink(stopping):
		// Still no link after linkWait: give the part back unsent.
		a.fail(&SubmitError{Temporary: true, Err: ErrNoLinkBound}, true)
	default:
		res, err := o.sub.Submit(ctx, j.part)
		// A part that never left because the link dropped just then is
		// tried again here once a link is bound (within linkWait), rather
		// than sent round the queue with its whole message.
		for start := time.Now(); err != nil && retryHere(err) && !stopping.Load() &&
			time.Since(start) < linkWait && time.Until(a.leaseEnd) >= o.cfg.Lease/10 && o.awaitLink(stopping); {
			o.m.submits.WithLabelValues("not_sent").Inc()
			res, err = o.sub.Submit(ctx, j.part)
		}
		if err == nil {
			o.m.submits.WithLabelValues("ok").Inc()
			id := NormalizeMessageID(res.MessageID)
			o.ids.saw(res.Link, id, true)
			records.send(record{part: &store.SMSPart{OutboxID: a.m.ID, Seq: j.seq, Total: a.total, Link: res.Link,
				MessageID: id, ReceiptID: o.ids.receiptID(res.Link, id), SubmittedAt: time.Now()}})
			break
		}
		var se *SubmitError
		temporary := !errors.As(err, &se) || se.Temporary
		switch {
		case !temporary:
			o.m.submits.WithLabelValues("permanent").Inc()
		case notSent(err):
			o.m.submits.WithLabelValues("not_sent").Inc()
		default:
			o.m.submits.WithLabelValues("temporary").Inc()
		}
		a.fail(err, temporary)
	}
	o.partDone(a, records)
}

// linkWait bounds how long a worker holds a part while no link is bound.
// A link that drops comes back within a reconnect delay or two; failing
// every part in hand at once would only send them round the queue.
const linkWait = 5 * time.Second

// awaitLink waits until a link is bound (if the submitter tells), at most
// linkWait and not once shutting down; it reports whether one is.
func (o *Outbox) awaitLink(stopping *atomic.Bool) bool {
	av, ok := o.sub.(interface{ Available() bool })
	if !ok {
		return true
	}
	for deadline := time.Now().Add(linkWait); !av.Available(); time.Sleep(10 * time.Millisecond) {
		if stopping.Load() || time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// retryHere reports whether a failed submit is one a worker tries again at
// once: temporary, never sent, for want of a bound link.
func retryHere(err error) bool {
	var se *SubmitError
	return errors.As(err, &se) && se.Temporary && notSent(err) &&
		(errors.Is(err, ErrNotBound) || errors.Is(err, ErrNoLinkBound) || errors.Is(err, ErrNotWritten))
}

// Reasons the outbox itself does not send a part; like every error for
// which notSent holds, they cost the message no attempt.
var (
	errStopping    = errors.New("outbox shutting down")
	errLeaseEnding = errors.New("claim lease nearly over")
)

// notSent reports whether a failed submit never reached the SMSC: no link
// was bound, the link closed before the write, or the outbox held it back.
// Only a submit the SMSC refused, or one written and left unanswered,
// counts as an attempt.
func notSent(err error) bool {
	if errors.Is(err, errStopping) || errors.Is(err, errLeaseEnding) {
		return true
	}
	var se *SubmitError
	return errors.As(err, &se) && se.Status == 0 && !se.Sent
}

// partDone counts a part off; the last one decides the message's outcome.
func (o *Outbox) partDone(a *attempt, records recordSink) {
	if a.left.Add(-1) != 0 {
		return
	}
	o.slots.give(1)
	now := time.Now()
	out := &store.SMSOutcome{ID: a.m.ID, Kind: a.m.Kind, Ref: a.m.Ref, State: StateSubmitted}
	a.mu.Lock()
	perm, temp, free := a.permErr, a.tempErr, a.freeErr
	a.mu.Unlock()
	switch {
	case perm != nil:
		out.State, out.Error = StateFailed, reason(perm)
	case temp != nil:
		attempts := a.m.Attempts + 1
		next := now.Add(o.backoff(attempts))
		if errors.Is(temp, ErrLinkClosed) {
			// The link, not the message, failed: retry soon (the claimer
			// waits for a bound link before claiming again).
			next = now.Add(o.cfg.RetryBase)
		}
		switch {
		case o.cfg.MaxAttempts > 0 && attempts >= o.cfg.MaxAttempts:
			out.State, out.Error = StateFailed, fmt.Sprintf("gave up after %d attempts: %s", attempts, reason(temp))
		case next.After(a.m.ExpiresAt):
			out.State, out.Error = StateExpired, "validity ended while retrying: "+reason(temp)
		default:
			out.State, out.NextAttemptAt, out.Error = StateQueued, next, reason(temp)
		}
	case free != nil:
		// Nothing reached the SMSC: requeue at no cost. The outbox's own
		// reasons retry at once; a link that is down, after RetryBase.
		next := now
		if !errors.Is(free, errStopping) && !errors.Is(free, errLeaseEnding) {
			next = now.Add(o.cfg.RetryBase)
		}
		if next.After(a.m.ExpiresAt) {
			out.State, out.Error = StateExpired, "validity ended while retrying: "+reason(free)
		} else {
			out.State, out.NextAttemptAt, out.NoAttempt, out.Error = StateQueued, next, true, reason(free)
		}
	}
	records.send(record{outcome: out})
}

// reason is the failure text stored with a message: the SMPP status name
// for refusals; for transport failures the cause, saying whether the
// submit was sent (and left unanswered) or never sent.
func reason(err error) string {
	var se *SubmitError
	if errors.As(err, &se) && se.Status != 0 {
		return StatusName(se.Status)
	}
	cause := err.Error()
	if se != nil && se.Err != nil {
		cause = se.Err.Error()
	}
	if notSent(err) {
		return "not sent: " + cause
	}
	if se != nil {
		return "sent, no response: " + cause
	}
	return cause
}

// backoff is exponential from RetryBase, capped at RetryMax, with "equal
// jitter" (half fixed, half random) so that a burst of throttled messages
// does not come back as one burst.
func (o *Outbox) backoff(attempts int) time.Duration {
	return backoff.Equal(o.cfg.RetryBase, o.cfg.RetryMax, attempts)
}

// recorder writes submit results in batches, as a group commit: while one
// write is in progress the results that arrive meanwhile make up the next
// (at most FlushSize), so batches grow with the load; with no write in
// progress the first result waits at most FlushEvery for others to join it.
// Submits never wait for it: their window slot is free once the response
// is in. A failed write is retried until it succeeds, because the parts in
// it must never be sent again; only once the outbox is shutting down
// (stopping closed) does it give up after a few tries, so that a dead
// database cannot hold shutdown forever.
func (o *Outbox) recorder(ctx context.Context, stopping <-chan struct{}, in <-chan record) {
	type batch struct {
		parts    []store.SMSPart
		outcomes []store.SMSOutcome
	}
	writes := make(chan batch)
	written := make(chan batch) // hands the buffers back for reuse
	go func() {
		defer close(written)
		for b := range writes {
			o.flush(ctx, stopping, b.parts, b.outcomes)
			written <- batch{b.parts[:0], b.outcomes[:0]}
		}
	}()
	var cur, spare batch
	busy := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	lingered := false // the first result of cur waited FlushEvery
	size := func() int { return len(cur.parts) + len(cur.outcomes) }
	for in != nil || size() > 0 || busy {
		// Hand cur to the writer when it is idle and cur is full or has
		// waited long enough (or nothing more will come). Results that
		// arrive during a write have usually waited long enough by its end.
		var out chan<- batch
		if !busy && size() > 0 && (lingered || size() >= o.cfg.FlushSize || in == nil) {
			out = writes
		}
		// A full batch waits for the writer: stop reading.
		recv := in
		if size() >= o.cfg.FlushSize {
			recv = nil
		}
		select {
		case r, ok := <-recv:
			if !ok {
				in = nil
				continue
			}
			if size() == 0 {
				lingered = false
				timer.Reset(o.cfg.FlushEvery)
			}
			if r.part != nil {
				cur.parts = append(cur.parts, *r.part)
			}
			if r.outcome != nil {
				cur.outcomes = append(cur.outcomes, *r.outcome)
			}
		case <-timer.C:
			lingered = true
		case out <- cur:
			busy = true
			cur, spare = spare, batch{}
			timer.Stop()
		case b := <-written:
			busy, spare = false, b
		}
	}
	close(writes)
	for range written {
	}
}

// flush writes one batch of results, retrying as recorder describes.
func (o *Outbox) flush(ctx context.Context, stopping <-chan struct{}, parts []store.SMSPart, outcomes []store.SMSOutcome) {
	for attempt := 0; ; attempt++ {
		changes, err := o.db.RecordSMS(ctx, o.cfg.NodeID, parts, outcomes)
		if err == nil {
			o.emit(changes)
			return
		}
		o.log.Error("sms outbox: recording submit results; retrying", "err", err, "parts", len(parts), "outcomes", len(outcomes))
		select {
		case <-stopping:
			if attempt >= 2 {
				o.log.Error("sms outbox: shutting down without recording submit results; their messages are sent again after the lease",
					"parts", len(parts), "outcomes", len(outcomes))
				return
			}
		default:
		}
		if ctx.Err() != nil {
			return
		}
		time.Sleep(min(time.Duration(attempt+1)*100*time.Millisecond, 5*time.Second))
	}
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

// HandleDeliver is the DeliverHandler for the links: delivery receipts
// update the outbox, everything else is an inbound SMS. It returns nil only
// once the PDU's effect is durable.
func (o *Outbox) HandleDeliver(ctx context.Context, d Deliver) error {
	if !d.IsReceipt() {
		return o.handleMO(ctx, d)
	}
	r, err := ParseReceipt(d)
	if err != nil {
		// Asking the SMSC to send it again would not make it readable.
		o.m.receipts.WithLabelValues("invalid").Inc()
		o.log.Warn("sms outbox: unreadable delivery receipt acknowledged and dropped", "link", d.Link, "err", err)
		return nil
	}
	label := r.State
	if label == "" {
		label = "intermediate"
	}
	o.m.receipts.WithLabelValues(label).Inc()
	if r.State == "" {
		return nil // on its way: nothing to record
	}
	id := NormalizeMessageID(r.MessageID)
	o.ids.saw(d.Link, id, false)
	return o.receipts.do(ctx, store.SMSReceipt{Link: d.Link, MessageID: id, State: r.State, Error: receiptError(r)})
}

func receiptError(r Receipt) string {
	s := r.Stat
	if r.Err != "" && strings.Trim(r.Err, "0") != "" {
		s += " err:" + r.Err
	}
	return s
}

// storeReceipts makes a batch of receipts durable; applyReceipts applies them.
func (o *Outbox) storeReceipts(ctx context.Context, rs []store.SMSReceipt) error {
	if err := o.db.AddReceipts(ctx, rs); err != nil {
		return err
	}
	o.signal(o.receiptIn)
	return nil
}

// applyReceipts applies stored receipts in batches until ctx ends.
func (o *Outbox) applyReceipts(ctx context.Context) {
	const batch = 250 // small enough not to hold locks the recorders wait for
	// The ticker catches receipts whose part was not recorded yet (they
	// come due again after a backoff) and those stored by other nodes.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		res, err := o.db.ApplyPendingReceipts(ctx, batch, o.ids.forms)
		if err != nil && ctx.Err() == nil {
			o.log.Error("sms outbox: applying delivery receipts", "err", err)
		}
		for _, u := range res.Unmatched {
			o.m.unmatched.WithLabelValues(u.Reason).Inc()
			if u.Reason == store.ReceiptAmbiguous {
				o.log.Warn("sms outbox: delivery receipt fits several messages; kept, not applied (set receipt_ids on the link)",
					"link", u.Link, "message_id", u.MessageID, "state", u.State, "fits", u.Parts)
			} else {
				o.log.Warn("sms outbox: delivery receipt for an unknown message id dropped after an hour",
					"link", u.Link, "message_id", u.MessageID, "state", u.State)
			}
		}
		o.emit(res.Changes)
		if err == nil && res.Seen == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-o.receiptIn:
			// A stored receipt is due after the grace.
			select {
			case <-ctx.Done():
				return
			case <-time.After(store.ReceiptGrace):
			}
		case <-t.C:
		}
	}
}

// groupCommit batches concurrent callers into writes: a caller that finds
// fewer than parallel writes in progress writes everything queued so far,
// while later callers queue for the next write. Under load writes grow, and
// a few run side by side so that one slow commit does not stall the rest;
// alone, nobody waits.
type groupCommit[T any] struct {
	apply    func(context.Context, []T) error
	parallel int

	mu      sync.Mutex
	queue   []T
	waiters []chan error
	busy    int
}

func (g *groupCommit[T]) do(ctx context.Context, v T) error {
	done := make(chan error, 1)
	g.mu.Lock()
	g.queue = append(g.queue, v)
	g.waiters = append(g.waiters, done)
	if g.busy >= max(g.parallel, 1) {
		g.mu.Unlock()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.busy++
	for len(g.queue) > 0 {
		batch, waiters := g.queue, g.waiters
		g.queue, g.waiters = nil, nil
		g.mu.Unlock()
		err := g.apply(context.WithoutCancel(ctx), batch)
		for _, w := range waiters {
			w <- err
		}
		g.mu.Lock()
	}
	g.busy--
	g.mu.Unlock()
	return <-done
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
