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
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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
			Help: "Requests answered with an error, by reason.",
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
	}
	for _, c := range []prometheus.Collector{m.ingested, m.duplicates, m.batches, m.schedules, m.rejected, m.ingestSeconds, m.lastSeen} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
