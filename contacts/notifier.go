package contacts

import (
	"context"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// Notifier carries events to connected users. The relay implements it; it
// should hand the event to each recipient's connection without waiting for
// the phone, and may drop recipients no longer connected.
type Notifier interface {
	Notify(ctx context.Context, to []phonebook.MSISDN, ev Event) error
}

// EventKind names a push.
type EventKind string

const (
	// PresenceChanged: Number's presence is now Presence.
	PresenceChanged EventKind = "presence_changed"
	// ContactJoined: Number, which is in the recipient's book, became a user.
	ContactJoined EventKind = "contact_joined"
)

// Event is one push. Events about one user arrive in the order they
// happened; a burst of changes may arrive as its last state only.
type Event struct {
	Kind     EventKind        `json:"kind"`
	Number   phonebook.MSISDN `json:"number"`
	Presence *Presence        `json:"presence,omitempty"`
	At       time.Time        `json:"at"`

	vis string // the subject's visibility choice, for the fan-out; not sent
}

type discard struct{}

func (discard) Notify(context.Context, []phonebook.MSISDN, Event) error { return nil }

type pushKey struct {
	kind   EventKind
	number phonebook.MSISDN
}

// pusher delivers events off the callers' goroutines. Each user belongs to
// one shard, and each shard has one worker, so one user's events stay in
// order; a shard keeps only the newest pending event per (kind, user) (by
// its At, not by when it was enqueued), so a burst of changes costs one
// fan-out.
type pusher struct {
	s       *Service
	n       atomic.Pointer[Notifier]
	shards  []*shard
	pending atomic.Int64
	closed  atomic.Bool
	quit    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type shard struct {
	mu     sync.Mutex
	events map[pushKey]Event
	order  []pushKey // FIFO of keys in events
	wake   chan struct{}
}

func newPusher(s *Service, n Notifier) *pusher {
	p := &pusher{s: s, quit: make(chan struct{})}
	p.n.Store(&n)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for range s.cfg.PushWorkers {
		sh := &shard{events: make(map[pushKey]Event), wake: make(chan struct{}, 1)}
		p.shards = append(p.shards, sh)
		p.wg.Add(1)
		go p.run(sh)
	}
	return p
}

func (p *pusher) presence(st store.Status) {
	pr := presenceOf(st)
	p.enqueue(Event{Kind: PresenceChanged, Number: st.Number, Presence: pr, At: st.UpdatedAt, vis: st.Visibility})
}

func (p *pusher) joined(n phonebook.MSISDN) {
	p.enqueue(Event{Kind: ContactJoined, Number: n, At: time.Now().UTC()})
}

func (p *pusher) enqueue(ev Event) {
	if p.closed.Load() {
		p.s.m.pushDropped.Inc()
		return
	}
	h := fnv.New32a()
	h.Write([]byte(ev.Number))
	sh := p.shards[int(h.Sum32()%uint32(len(p.shards)))]
	k := pushKey{ev.Kind, ev.Number}
	sh.mu.Lock()
	if old, ok := sh.events[k]; ok {
		// Keep the newer state: an event read from the store earlier (the
		// presence pushed when two users become mutual) can be enqueued
		// after a change that happened since.
		if !ev.At.Before(old.At) {
			sh.events[k] = ev
		}
		sh.mu.Unlock()
		p.s.m.pushCoalesced.Inc()
		return
	}
	if p.pending.Load() >= int64(p.s.cfg.MaxPendingPushes) {
		sh.mu.Unlock()
		p.s.m.pushDropped.Inc()
		return
	}
	p.pending.Add(1)
	p.s.m.pushPending.Inc()
	sh.events[k] = ev
	sh.order = append(sh.order, k)
	sh.mu.Unlock()
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

func (sh *shard) next() (Event, bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.order) == 0 {
		sh.order = nil
		return Event{}, false
	}
	k := sh.order[0]
	sh.order = sh.order[1:]
	ev := sh.events[k]
	delete(sh.events, k)
	return ev, true
}

func (p *pusher) run(sh *shard) {
	defer p.wg.Done()
	for {
		ev, ok := sh.next()
		if ok {
			p.pending.Add(-1)
			p.s.m.pushPending.Dec()
			p.deliver(ev)
			continue
		}
		select {
		case <-sh.wake:
		case <-p.quit:
			// Closed: enqueue accepts nothing more; deliver what is left.
			for ev, ok := sh.next(); ok; ev, ok = sh.next() {
				p.pending.Add(-1)
				p.s.m.pushPending.Dec()
				p.deliver(ev)
			}
			return
		}
	}
}

// deliver finds the online users allowed to receive ev, at delivery time so
// a coalesced burst costs one query, and hands them to the notifier in
// batches.
func (p *pusher) deliver(ev Event) {
	var mutualOnly bool
	if ev.Kind == PresenceChanged {
		vis := p.s.cfg.Visibility
		if ev.vis != "" {
			vis = Visibility(ev.vis)
		}
		switch vis {
		case VisibleMutual:
			mutualOnly = true
		case VisibleNobody:
			// Hidden: those who saw the user before see them go offline.
			ev.Presence = &Presence{Number: ev.Number, IMStatus: StatusOffline, UpdatedAt: ev.At}
		}
	}
	to, err := p.s.db.Holders(p.ctx, ev.Number, true, mutualOnly)
	if err != nil {
		p.s.m.notifyErrors.Inc()
		p.s.log.Warn("contacts: push audience lookup failed", "kind", ev.Kind, "err", err)
		return
	}
	for start := 0; start < len(to); start += p.s.cfg.NotifyBatch {
		batch := to[start:min(start+p.s.cfg.NotifyBatch, len(to))]
		ctx, cancel := context.WithTimeout(p.ctx, p.s.cfg.NotifyTimeout)
		err := (*p.n.Load()).Notify(ctx, batch, ev)
		cancel()
		if err != nil {
			p.s.m.notifyErrors.Inc()
			p.s.log.Warn("contacts: notify failed", "kind", ev.Kind, "recipients", len(batch), "err", err)
			continue
		}
		p.s.m.pushed.WithLabelValues(string(ev.Kind)).Add(float64(len(batch)))
	}
}

func (p *pusher) close(ctx context.Context) error {
	if p.closed.Swap(true) {
		return nil
	}
	close(p.quit)
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel() // abort deliveries in flight
		<-done
		return ctx.Err()
	}
}
