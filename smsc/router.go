package smsc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
)

// Router sends each part over the link that serves its destination: links
// whose prefixes match, longest prefix first, then the default-route links
// (no prefixes), skipping links that are not bound at the moment.
type Router struct {
	links []*Link
	log   *slog.Logger
	m     *metrics

	mu      sync.Mutex
	started bool
	closed  bool
}

var _ Submitter = (*Router)(nil)

// ValidateLinks reports what NewRouter refuses in a set of links.
func ValidateLinks(cfgs []LinkConfig) error {
	names := make(map[string]bool)
	for _, c := range cfgs {
		if err := c.Validate(); err != nil {
			return err
		}
		if names[c.Name] {
			return fmt.Errorf("smsc %s: two links have this name", c.Name)
		}
		names[c.Name] = true
	}
	return nil
}

// NewRouter validates the link configurations and builds the router; Start
// connects. reg may be nil (no metrics registered).
func NewRouter(cfgs []LinkConfig, h DeliverHandler, log *slog.Logger, reg prometheus.Registerer) (*Router, error) {
	if err := ValidateLinks(cfgs); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r := &Router{log: log, m: m}
	for _, c := range cfgs {
		l, err := newLink(c, h, log, m)
		if err != nil {
			return nil, err
		}
		r.links = append(r.links, l)
	}
	return r, nil
}

// Start connects every link in the background; they reconnect until Close
// or until ctx ends.
func (r *Router) Start(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	for _, l := range r.links {
		l.start(ctx)
	}
}

// Close waits for outstanding submits (at most each link's RespTimeout),
// unbinds every link and stops reconnecting.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range r.links {
		wg.Go(l.close)
	}
	wg.Wait()
	return nil
}

// Available reports whether at least one link is bound, so that the outbox
// claims messages only when it can send them.
func (r *Router) Available() bool {
	for _, l := range r.links {
		if l.bound() {
			return true
		}
	}
	return false
}

// ReceiptIDs returns the receipt_ids setting of the named link (auto for
// a name it does not know).
func (r *Router) ReceiptIDs(link string) string {
	for _, l := range r.links {
		if l.cfg.Name == link {
			return l.cfg.ReceiptIDs
		}
	}
	return ReceiptIDsAuto
}

// Capacity is how many submits the links can have outstanding at once: the
// sum of window × binds. The outbox needs as many workers to fill them.
func (r *Router) Capacity() int {
	n := 0
	for _, l := range r.links {
		n += l.cfg.Window * l.cfg.Binds
	}
	return n
}

// Ready is the SMS side's readiness check (/readyz): nil while at least
// one link is bound; otherwise an error naming each link with its last
// error. One bound link is enough: the router sends every SMS it can
// through it.
func (r *Router) Ready(context.Context) error {
	var down []string
	for _, s := range r.States() {
		if s.Bound {
			return nil
		}
		msg := s.Name
		if s.LastError != "" {
			msg += " (" + s.LastError + ")"
		}
		down = append(down, msg)
	}
	return fmt.Errorf("no SMSC link is bound: %s", strings.Join(down, ", "))
}

// States reports every link, for /readyz.
func (r *Router) States() []LinkState {
	out := make([]LinkState, len(r.links))
	for i, l := range r.links {
		out[i] = l.State()
	}
	return out
}

// candidates lists the links for a destination in the order to try them.
func (r *Router) candidates(dest phonebook.MSISDN) []*Link {
	type match struct {
		l   *Link
		len int
	}
	var best []match
	var defaults []*Link
	for _, l := range r.links {
		if len(l.cfg.Prefixes) == 0 {
			defaults = append(defaults, l)
			continue
		}
		n := 0
		for _, p := range l.cfg.Prefixes {
			if strings.HasPrefix(string(dest), p) && len(p) > n {
				n = len(p)
			}
		}
		if n > 0 {
			best = append(best, match{l, n})
		}
	}
	// Stable insertion sort: longest prefix first, configuration order on ties.
	for i := 1; i < len(best); i++ {
		for j := i; j > 0 && best[j].len > best[j-1].len; j-- {
			best[j], best[j-1] = best[j-1], best[j]
		}
	}
	out := make([]*Link, 0, len(best)+len(defaults))
	for _, m := range best {
		out = append(out, m.l)
	}
	return append(out, defaults...)
}

// Submit implements Submitter.
func (r *Router) Submit(ctx context.Context, p Part) (SubmitResult, error) {
	links := r.candidates(p.Dest)
	if len(links) == 0 {
		return SubmitResult{}, &SubmitError{Err: fmt.Errorf("%w: %s", ErrNoRoute, p.Dest)}
	}
	for _, l := range links {
		if !l.bound() {
			continue
		}
		res, err := l.Submit(ctx, p)
		var se *SubmitError
		if errors.As(err, &se) && errors.Is(se.Err, ErrNotBound) {
			continue // went down between the check and the send
		}
		return res, err
	}
	return SubmitResult{}, &SubmitError{Link: links[0].cfg.Name, Temporary: true, Err: ErrNoLinkBound}
}

// metrics are shared by a router's links, labelled by link name.
type metrics struct {
	submits  *prometheus.CounterVec
	delivers *prometheus.CounterVec
	up       *prometheus.GaugeVec
	window   *prometheus.GaugeVec
	binds    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_smsc_submits_total",
			Help: "submit_sm sent, by link and result (SMPP status name; timeout and link_down: sent, no response; not_bound and not_sent: never sent; invalid).",
		}, []string{"link", "result"}),
		delivers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_smsc_deliver_sm_total",
			Help: "deliver_sm received, by link, kind (receipt, mo) and result (ok, nack, malformed, queue_full).",
		}, []string{"link", "kind", "result"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phonebook_smsc_link_up",
			Help: "1 when every connection of the link is bound.",
		}, []string{"link"}),
		window: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phonebook_smsc_window_in_use",
			Help: "Submits waiting for submit_sm_resp, by link.",
		}, []string{"link"}),
		binds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebook_smsc_bind_attempts_total",
			Help: "Bind attempts, by link and result (SMPP status name, dial_error, error).",
		}, []string{"link", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.submits, m.delivers, m.up, m.window, m.binds} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("smsc metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Metrics exposes the collectors, for tests and for wiring elsewhere.
type Metrics struct {
	Submits, Delivers, Binds *prometheus.CounterVec
	Up, Window               *prometheus.GaugeVec
}

// Metrics returns the router's collectors.
func (r *Router) Metrics() Metrics {
	return Metrics{Submits: r.m.submits, Delivers: r.m.delivers, Binds: r.m.binds, Up: r.m.up, Window: r.m.window}
}
