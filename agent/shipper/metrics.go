package shipper

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	uploads    *prometheus.CounterVec
	latency    prometheus.Histogram
	accepted   prometheus.Counter
	duplicates prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "anyscope", Subsystem: "shipper", Name: "uploads_total",
			Help: "Batch uploads to the collector by outcome: ok, throttled, server_error, rejected, bad_answer, network_error.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "anyscope", Subsystem: "shipper", Name: "upload_duration_seconds",
			Help:    "Time from sending a batch to the collector's answer.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "anyscope", Subsystem: "shipper", Name: "results_accepted_total",
			Help: "Results the collector stored for the first time.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "anyscope", Subsystem: "shipper", Name: "results_duplicate_total",
			Help: "Results the collector already had (re-sent after a lost acknowledgement).",
		}),
	}
	for _, o := range []string{"ok", "throttled", "server_error", "rejected", "bad_answer", "network_error"} {
		m.uploads.WithLabelValues(o)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.uploads, m.latency, m.accepted, m.duplicates} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("shipper: registering metrics: %w", err)
		}
	}
	return m, nil
}
