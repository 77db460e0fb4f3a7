package contacts

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
)

type metrics struct {
	syncs         *prometheus.CounterVec
	syncSeconds   prometheus.Histogram
	lookupLimited prometheus.Counter
	pushed        *prometheus.CounterVec
	pushCoalesced prometheus.Counter
	pushDropped   prometheus.Counter
	pushPending   prometheus.Gauge
	notifyErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_contacts_syncs_total",
			Help: "Address-book syncs by mode (full, delta) and result (ok or the error code)."}, []string{"mode", "result"}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "phonebook_contacts_sync_seconds",
			Help: "Time to apply and match one address-book sync.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		lookupLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_contacts_lookup_limited_total",
			Help: "Syncs refused because the owner's new-number lookup budget was spent."}),
		pushed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_contacts_pushed_total",
			Help: "Recipients handed to the notifier, by event kind."}, []string{"kind"}),
		pushCoalesced: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_contacts_push_coalesced_total",
			Help: "Events replaced by a newer one for the same user before delivery."}),
		pushDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_contacts_push_dropped_total",
			Help: "Events dropped because too many users had pending events or the service was closing."}),
		pushPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonebook_contacts_push_pending",
			Help: "Users with an event waiting for delivery."}),
		notifyErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_contacts_notify_errors_total",
			Help: "Failed audience lookups and notifier calls."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.syncs, m.syncSeconds, m.lookupLimited, m.pushed, m.pushCoalesced, m.pushDropped, m.pushPending, m.notifyErrors} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observeSync(full bool, err error, d time.Duration) {
	mode, result := "delta", "ok"
	if full {
		mode = "full"
	}
	if err != nil {
		result = string(phonebook.ErrorCode(err))
	}
	m.syncs.WithLabelValues(mode, result).Inc()
	m.syncSeconds.Observe(d.Seconds())
}
