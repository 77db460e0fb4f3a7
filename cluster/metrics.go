package cluster

import "github.com/prometheus/client_golang/prometheus"

const (
	offerDelivered = iota
	offerRefused
	offerNoResponders
	offerTimeout
	offerError
	numOfferResults
)

var offerResultNames = [numOfferResults]string{"delivered", "not_delivered", "no_responders", "timeout", "error"}

type metrics struct {
	offers         [numOfferResults]prometheus.Counter
	offerLatency   prometheus.Histogram
	served         prometheus.Counter
	forwards       prometheus.Counter
	forwardErrors  prometheus.Counter
	takeovers      prometheus.Counter
	registryErrors prometheus.Counter
	purged         prometheus.Counter
	disconnects    prometheus.Counter
	reconnects     prometheus.Counter
	idConflicts    prometheus.Counter
	rewakes        prometheus.Counter
	resynced       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Router) *metrics {
	offers := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_cluster_remote_offers_total",
		Help: "Messages offered to a session on another node, by outcome (anything but delivered is stored offline)."}, []string{"result"})
	m := &metrics{
		offerLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "phonebook_cluster_remote_offer_seconds",
			Help:    "Time from a remote offer to the owning node's reply that the client acknowledged it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}),
		served: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_deliveries_served_total",
			Help: "Messages from other nodes offered to this node's sessions."}),
		forwards: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_forwards_total",
			Help: "Pushes, wakes and closes forwarded to other nodes."}),
		forwardErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_forward_errors_total",
			Help: "Forwards that could not be published (NATS unavailable)."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_session_takeovers_total",
			Help: "Local sessions closed because the same number and device logged in on another node."}),
		registryErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_registry_errors_total",
			Help: "Failed session registry writes (retried)."}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_registry_purged_total",
			Help: "Registry entries of dead nodes deleted by this node."}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_nats_disconnects_total",
			Help: "Times the NATS connection was lost."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_nats_reconnects_total",
			Help: "Times the NATS connection was re-established."}),
		idConflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_node_id_conflicts_total",
			Help: "Heartbeats seen from another process using this node's id (a misconfiguration)."}),
		rewakes: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_rewakes_total",
			Help: "Recipients of messages stored during a NATS outage woken again after it."}),
		resynced: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_cluster_resynced_sessions_total",
			Help: "Local sessions re-announced after a NATS outage (presence re-asserted, presence list sent again)."}),
	}
	for i, name := range offerResultNames {
		m.offers[i] = offers.WithLabelValues(name)
	}
	if reg != nil {
		reg.MustRegister(offers, m.offerLatency, m.served, m.forwards, m.forwardErrors, m.takeovers,
			m.registryErrors, m.purged, m.disconnects, m.reconnects, m.idConflicts, m.rewakes, m.resynced,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phonebook_cluster_outage_seconds",
				Help: "How long this node has been cut off from NATS (disconnected or heartbeats failing); 0 when healthy."},
				func() float64 { return r.Outage().Seconds() }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phonebook_cluster_nodes_alive",
				Help: "Nodes whose heartbeat this node saw within DeadAfter (itself included)."},
				func() float64 { return float64(len(r.aliveNodes())) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phonebook_cluster_remote_sessions",
				Help: "Registry entries of other nodes held in this node's replica."},
				func() float64 { return float64(r.remoteCount()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phonebook_cluster_registry_pending",
				Help: "Local sessions whose registry entry is waiting to be written or deleted."},
				func() float64 {
					r.lmu.Lock()
					defer r.lmu.Unlock()
					return float64(len(r.dirty))
				}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "phonebook_cluster_nats_connected",
				Help: "1 while the NATS connection is up."},
				func() float64 {
					if r.nc != nil && r.nc.IsConnected() {
						return 1
					}
					return 0
				}),
		)
	}
	return m
}
