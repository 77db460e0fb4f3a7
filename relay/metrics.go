package relay

import "github.com/prometheus/client_golang/prometheus"

const (
	outcomeDelivered = iota
	outcomeStored
	outcomeSMS
	outcomeDuplicate
	outcomeRejected
	outcomeFailed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"delivered", "stored", "sms", "duplicate", "rejected", "failed"}

type metrics struct {
	connections prometheus.Gauge
	framesIn    prometheus.Counter
	framesOut   prometheus.Counter
	messages    [numOutcomes]prometheus.Counter
	queueDrops  prometheus.Counter
	smsRefused  prometheus.Counter
	// SMS fallback and offline store bounds (fallback.go).
	smsDeferred prometheus.Counter
	smsFailed   *prometheus.CounterVec
	expired     prometheus.Counter
	latency     prometheus.Histogram
	storeBatch  prometheus.Histogram
	udpDropped  *prometheus.CounterVec
	udpRebinds  prometheus.Counter
	// reauthClosed: sessions closed because their token stopped
	// authenticating (reauth.go).
	reauthClosed prometheus.Counter
	// authRefused: TCP connections refused before Auth because too many
	// were waiting to authenticate (server.go admitLocked).
	authRefused prometheus.Counter
	// storedRechecked: live sessions woken because the periodic look in
	// the offline store found messages waiting for them (stored_recheck.go).
	storedRechecked prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "phonebook_relay_connections",
			Help: "Authenticated relay connections on this node."}),
		framesIn: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_frames_in_total",
			Help: "Frames received from clients."}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_frames_out_total",
			Help: "Frames written to clients."}),
		queueDrops: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_slow_consumer_disconnects_total",
			Help: "Connections closed because their send queue was full."}),
		smsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_sms_fallback_refused_total",
			Help: "SMS fallbacks held back by the per-sender quota (the message stays stored)."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "phonebook_relay_send_latency_seconds",
			Help:    "Time from receiving a Send to answering its SendResult (delivered and acknowledged, or stored).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}),
		storeBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "phonebook_relay_store_batch_size",
			Help:    "Messages per offline-store transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
	}
	m.udpDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_relay_udp_dropped_total",
		Help: "UDP datagrams dropped: unknown_conn, bad_tag, malformed, too_large, rate_limited (unauthenticated, per source address), refused (logins)."},
		[]string{"reason"})
	m.reauthClosed = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_sessions_revoked_total",
		Help: "Live sessions closed because their token was revoked or expired, or the account blocked."})
	m.authRefused = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_pending_auth_refused_total",
		Help: "TCP connections refused at accept: too many waiting to authenticate, in all or from one address."})
	m.smsDeferred = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_sms_fallback_deferred_total",
		Help: "Immediate SMS fallbacks left to the sweeper because every hand-off slot was busy."})
	m.smsFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_relay_sms_fallback_failed_total",
		Help: "SMS fallbacks given up, by reason code: request_too_large, invalid_number, number_not_allowed, expired..."},
		[]string{"code"})
	m.expired = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_offline_expired_total",
		Help: "Stored messages deleted after relay.offline_ttl without being fetched."})
	m.storedRechecked = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_stored_rechecks_total",
		Help: "Live sessions woken by the periodic look in the offline store (relay.stored_recheck): messages whose wake-up was lost, or still being delivered."})
	m.udpRebinds = prometheus.NewCounter(prometheus.CounterOpts{Name: "phonebook_relay_udp_rebinds_total",
		Help: "UDP sessions that moved to a new client address (NAT rebinding)."})
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_relay_messages_total",
		Help: "Messages by outcome: delivered online, stored offline, sent as SMS, duplicate, rejected (invalid or rate limited), failed."},
		[]string{"outcome"})
	for i, n := range outcomeNames {
		m.messages[i] = vec.WithLabelValues(n)
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.framesIn, m.framesOut, m.queueDrops, m.smsRefused, m.latency, m.storeBatch, vec, m.udpDropped, m.udpRebinds, m.reauthClosed, m.authRefused,
			m.smsDeferred, m.smsFailed, m.expired, m.storedRechecked)
	}
	return m
}

func (m *metrics) outcome(o int) { m.messages[o].Inc() }
