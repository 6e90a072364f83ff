package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	ingested      prometheus.Counter
	duplicates    prometheus.Counter
	batches       prometheus.Counter
	schedules     prometheus.Counter
	rejected      *prometheus.CounterVec
	ingestSeconds prometheus.Histogram
	lastSeen      *prometheus.GaugeVec
	gaps          prometheus.Counter

	rateLimited    *prometheus.CounterVec
	ingestInFlight prometheus.Gauge
	ingestWaiting  prometheus.Gauge
	ingestQueued   *prometheus.CounterVec
	ingestWait     prometheus.Histogram
	tlsReloads     *prometheus.CounterVec
	tlsNotAfter    prometheus.Gauge
}

// Reasons of rejection that exist before they first happen, so that alerts
// on them see zero rather than nothing.
var rejectReasons = []string{"rate_limited", "overloaded", "cert_mismatch", "no_client_cert"}

// newMetrics registers the collector's metrics on reg; requests and results
// are the rate limiter's buckets (nil when off).
func newMetrics(reg prometheus.Registerer, requests, results *buckets) (*metrics, error) {
	const ns, sub = "anyscope", "collector"
	m := &metrics{
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "results_ingested_total",
			Help: "Results stored for the first time.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "results_duplicate_total",
			Help: "Re-delivered results that were already stored (acknowledged, not stored again).",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "batches_total",
			Help: "Batches committed and acknowledged.",
		}),
		schedules: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "schedules_served_total",
			Help: "Schedules handed to agents.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_rejected_total",
			Help: "Requests answered with an error, by reason (rate_limited: 429, overloaded: 503, cert_mismatch: 403, …).",
		}, []string{"reason"}),
		ingestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "ingest_seconds",
			Help:    "Time to COPY a batch and commit it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		lastSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "agent_last_seen_timestamp_seconds",
			Help: "When each agent last delivered a batch (Unix time).",
		}, []string{"agent"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limited_total",
			Help: "Requests answered 429 by the per-agent limit, by bucket: requests (per token) or results (per agent).",
		}, []string{"bucket"}),
		ingestInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "ingest_in_flight",
			Help: "Results requests holding an ingest slot (being decoded or stored).",
		}),
		ingestWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "ingest_waiting",
			Help: "Results requests waiting for an ingest slot.",
		}),
		ingestQueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "ingest_waits_total",
			Help: "Results requests that found every ingest slot taken and waited, by outcome: admitted, overloaded (503), canceled.",
		}, []string{"outcome"}),
		ingestWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "ingest_wait_seconds",
			Help:    "How long results requests that found every ingest slot taken waited for one.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 13),
		}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tls_reloads_total",
			Help: "Changed TLS certificate files loaded (ok) or refused, the previous certificate staying in use (error).",
		}, []string{"result"}),
		tlsNotAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "tls_certificate_expiry_timestamp_seconds",
			Help: "When the served TLS certificate expires (Unix time); 0 without TLS.",
		}),
	}
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	for _, b := range []string{"requests", "results"} {
		m.rateLimited.WithLabelValues(b)
	}
	for _, o := range []string{"admitted", "overloaded", "canceled"} {
		m.ingestQueued.WithLabelValues(o)
	}
	for _, r := range []string{"ok", "error"} {
		m.tlsReloads.WithLabelValues(r)
	}
	m.gaps = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "gaps_stored_total",
		Help: "Gap records stored: runs of results agents lost before upload (spool full, spool file lost); re-deliveries not counted.",
	})
	cs := []prometheus.Collector{m.gaps, m.ingested, m.duplicates, m.batches, m.schedules, m.rejected, m.ingestSeconds, m.lastSeen,
		m.rateLimited, m.ingestInFlight, m.ingestWaiting, m.ingestQueued, m.ingestWait, m.tlsReloads, m.tlsNotAfter}
	for name, b := range map[string]*buckets{"requests": requests, "results": results} {
		if b == nil {
			continue
		}
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limiter_buckets",
			Help:        "Token buckets the per-agent rate limiter keeps (idle ones are forgotten), by bucket.",
			ConstLabels: prometheus.Labels{"bucket": name},
		}, func() float64 { return float64(b.len()) }))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
