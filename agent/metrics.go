package agent

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

type metrics struct {
	probes          *prometheus.CounterVec
	refused         prometheus.Gauge
	skipped         prometheus.Gauge
	jobs            prometheus.Gauge
	dropped         *prometheus.CounterVec
	scheduleFetches *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, sp *spool.Spool) (*metrics, error) {
	const ns, sub = "anyscope", "agent"
	m := &metrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "probes_total",
			Help: "Probe transactions by kind, transport and classified failure (none on success).",
		}, []string{"kind", "transport", "failure"}),
		refused: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_addresses",
			Help: "Scheduled (target, address) pairs refused because the local allow-list does not cover the address.",
		}),
		skipped: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "skipped_schedule_entries",
			Help: "Scheduled targets or addresses not measured because they are invalid or beyond the agent's job limit.",
		}),
		jobs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "scheduled_jobs",
			Help: "(target, address) pairs being measured.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "results_dropped_total",
			Help: "Results lost before reaching the spool, by reason: invalid (a probe bug) or spool (a write failure).",
		}, []string{"reason"}),
		scheduleFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "schedule_fetches_total",
			Help: "Schedule fetches from the collector by outcome (ok or error).",
		}, []string{"outcome"}),
	}
	for _, f := range append([]api.Failure{api.FailureNone}, api.Failures...) {
		for _, tr := range []api.Transport{api.TransportUDP, api.TransportTCP} {
			m.probes.WithLabelValues(string(api.KindDNS), string(tr), failureLabel(f))
		}
	}
	m.dropped.WithLabelValues("invalid")
	m.dropped.WithLabelValues("spool")
	m.scheduleFetches.WithLabelValues("ok")
	m.scheduleFetches.WithLabelValues("error")

	pendingResults := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "spool_pending_results",
		Help: "Results in the spool not yet acknowledged by the collector.",
	}, func() float64 { n, _, _ := sp.Stats(); return float64(n) })
	pendingBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "spool_pending_bytes",
		Help: "Bytes of spooled results not yet acknowledged by the collector.",
	}, func() float64 { _, b, _ := sp.Stats(); return float64(b) })
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "spool_oldest_pending_age_seconds",
		Help: "Age of the oldest result not yet acknowledged by the collector; 0 when none is pending.",
	}, func() float64 {
		_, _, t := sp.Stats()
		if t.IsZero() {
			return 0
		}
		return time.Since(t).Seconds()
	})
	pendingGaps := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "spool_pending_gaps",
		Help: "Gaps (runs of results the spool lost) not yet acknowledged by the collector.",
	}, func() float64 { _, n := sp.Losses(); return float64(n) })
	losses := &spoolLosses{sp: sp,
		results: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "spool_dropped_results_total"),
			"Results the spool lost, by reason: spool_full (dropped, oldest first, to stay under spool_max_bytes), segment_lost (a segment missing or unreadable at start), record_corrupt (a record that no longer read back). Each loss is reported to the collector as a gap.",
			[]string{"reason"}, nil),
		gaps: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "spool_gaps_total"),
			"Gaps recorded for the results the spool lost, by reason (a gap that grows as a full spool keeps dropping counts once).",
			[]string{"reason"}, nil),
	}
	for _, c := range []prometheus.Collector{m.probes, m.refused, m.skipped, m.jobs, m.dropped, m.scheduleFetches, pendingResults, pendingBytes, oldest, pendingGaps, losses} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

// spoolLosses exports the spool's own counts of what it lost.
type spoolLosses struct {
	sp            *spool.Spool
	results, gaps *prometheus.Desc
}

func (c *spoolLosses) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.results
	ch <- c.gaps
}

func (c *spoolLosses) Collect(ch chan<- prometheus.Metric) {
	byReason, _ := c.sp.Losses()
	for _, r := range api.GapReasons {
		l := byReason[r]
		ch <- prometheus.MustNewConstMetric(c.results, prometheus.CounterValue, float64(l.Results), string(r))
		ch <- prometheus.MustNewConstMetric(c.gaps, prometheus.CounterValue, float64(l.Gaps), string(r))
	}
}
