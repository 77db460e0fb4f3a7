package console

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The counters the overview turns into per-minute rates, read from this
// node's metrics registry: the console shows what Prometheus would, without
// needing one.
const (
	cLogins       = "logins"        // successful logins
	cLoginsFailed = "logins_failed" // refused logins, any reason
	cVerifyStarts = "verify_starts" // codes sent (method A) and tokens issued (C)
	cVerified     = "verified"      // codes typed back correctly
	cRefusals     = "refusals"      // rate limits: logins, verification, relay, lookups, SMS quota
	cRelayMsgs    = "relay_msgs"    // messages through the relay, any outcome
	linkPrefix    = "link:"         // + link name: submit_sm attempts
)

// SampledMetrics are the metrics the overview reads from the registry (a
// test checks that the server exports each).
func SampledMetrics() []string {
	return []string{"phonebook_logins_total", "phonebook_verify_starts_total", "phonebook_verify_checks_total",
		"phonebook_registrations_total", "phonebook_relay_pending_auth_refused_total", "phonebook_contacts_lookup_limited_total",
		"phonebook_relay_sms_fallback_refused_total", "phonebook_relay_messages_total", "phonebook_smsc_submits_total"}
}

// snapshot is the counters' values at one time.
type snapshot struct {
	at time.Time
	v  map[string]float64
}

// sampler keeps recent snapshots of the counters.
type sampler struct {
	g    prometheus.Gatherer
	keep int

	mu    sync.Mutex
	snaps []snapshot // oldest first
}

func newSampler(g prometheus.Gatherer, keep int) *sampler {
	return &sampler{g: g, keep: keep}
}

// sample reads the registry now.
func (s *sampler) sample(now time.Time) {
	if s.g == nil {
		return
	}
	mfs, err := s.g.Gather()
	if err != nil && len(mfs) == 0 {
		return
	}
	v := countersOf(mfs)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, snapshot{at: now, v: v})
	if len(s.snaps) > s.keep {
		s.snaps = append(s.snaps[:0], s.snaps[len(s.snaps)-s.keep:]...)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func countersOf(mfs []*dto.MetricFamily) map[string]float64 {
	v := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			x := m.GetCounter().GetValue()
			switch mf.GetName() {
			case "phonebook_logins_total":
				if label(m, "outcome") == "ok" {
					v[cLogins] += x
				} else {
					v[cLoginsFailed] += x
				}
				if label(m, "outcome") == "rate_limited" {
					v[cRefusals] += x
				}
			case "phonebook_verify_starts_total":
				if label(m, "outcome") == "ok" {
					v[cVerifyStarts] += x
				}
				if label(m, "outcome") == "rate_limited" {
					v[cRefusals] += x
				}
			case "phonebook_verify_checks_total":
				if label(m, "outcome") == "ok" {
					v[cVerified] += x
				}
			case "phonebook_registrations_total":
				if label(m, "outcome") == "rate_limited" {
					v[cRefusals] += x
				}
			case "phonebook_relay_pending_auth_refused_total", "phonebook_contacts_lookup_limited_total",
				"phonebook_relay_sms_fallback_refused_total":
				v[cRefusals] += x
			case "phonebook_relay_messages_total":
				v[cRelayMsgs] += x
			case "phonebook_smsc_submits_total":
				v[linkPrefix+label(m, "link")] += x
			}
		}
	}
	return v
}

// latest returns the newest value of a counter (0 when never sampled).
func (s *sampler) latest(key string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.snaps) == 0 {
		return 0
	}
	return s.snaps[len(s.snaps)-1].v[key]
}

// perSecond is a counter's rate over the last window: between the newest
// snapshot and the oldest one no older than window (or the oldest there
// is). It is 0 until there are two snapshots; a counter that went down (a
// restart of the registry) counts from zero.
func (s *sampler) perSecond(key string, window time.Duration) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.snaps) < 2 {
		return 0
	}
	last := s.snaps[len(s.snaps)-1]
	first := last
	for i := len(s.snaps) - 2; i >= 0; i-- {
		if last.at.Sub(s.snaps[i].at) > window {
			break
		}
		first = s.snaps[i]
	}
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	d := last.v[key] - first.v[key]
	if d < 0 {
		d = last.v[key]
	}
	return d / dt
}
