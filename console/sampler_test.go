package console

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSamplerRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	logins := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_logins_total"}, []string{"outcome"})
	submits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_smsc_submits_total"}, []string{"link", "result"})
	reg.MustRegister(logins, submits)
	s := newSampler(reg, 4)
	t0 := time.Unix(1000, 0)

	s.sample(t0)
	if got := s.perSecond(cLogins, time.Minute); got != 0 {
		t.Fatalf("one sample: rate %v, want 0", got)
	}
	logins.WithLabelValues("ok").Add(30)
	logins.WithLabelValues("rate_limited").Add(6)
	submits.WithLabelValues("a", "ESME_ROK").Add(100)
	submits.WithLabelValues("a", "ESME_RTHROTTLED").Add(20)
	s.sample(t0.Add(30 * time.Second))
	for key, want := range map[string]float64{cLogins: 1, cLoginsFailed: 0.2, cRefusals: 0.2, linkPrefix + "a": 4} {
		if got := s.perSecond(key, time.Minute); got != want {
			t.Errorf("%s: %v/s, want %v", key, got, want)
		}
	}
	// Only the window counts: 60 more logins in the next 30 s, then
	// nothing for 90 s.
	logins.WithLabelValues("ok").Add(60)
	s.sample(t0.Add(60 * time.Second))
	if got := s.perSecond(cLogins, time.Minute); got != 1.5 {
		t.Errorf("over the last minute: %v/s, want 1.5", got)
	}
	s.sample(t0.Add(150 * time.Second))
	if got := s.perSecond(cLogins, time.Minute); got != 0 {
		t.Errorf("after a quiet minute: %v/s, want 0", got)
	}
	if got := s.latest(cLogins); got != 90 {
		t.Errorf("latest %v, want 90", got)
	}
	// Only keep samples are kept.
	for i := 0; i < 10; i++ {
		s.sample(t0.Add(time.Duration(200+i) * time.Second))
	}
	if len(s.snaps) != 4 {
		t.Errorf("%d samples kept, want 4", len(s.snaps))
	}
}

// Every metric SampledMetrics names (the list a server test checks against
// the registry) is one countersOf reads.
func TestSampledMetricsAreRead(t *testing.T) {
	for _, name := range SampledMetrics() {
		reg := prometheus.NewRegistry()
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name}, []string{"outcome", "link"})
		reg.MustRegister(c)
		c.WithLabelValues("ok", "a").Inc()
		c.WithLabelValues("rate_limited", "a").Inc()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if v := countersOf(mfs); len(v) == 0 {
			t.Errorf("%s is listed but not read", name)
		}
	}
}
