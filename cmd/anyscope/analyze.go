package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/analyzer"
	"github.com/anyscope/anyscope/analysis/catchment"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

// AnalyzeCmd computes catchments, switches and incidents and keeps them in
// the database.
type AnalyzeCmd struct {
	DBFlags
	Since      string        `help:"One-shot: start of the window (RFC 3339 time, or a duration back from now)." default:"24h"`
	Until      string        `help:"One-shot: end of the window; empty: now." default:""`
	Target     string        `help:"One-shot: only this target (default: all)."`
	Every      time.Duration `help:"Keep running: every this often, analyse what arrived since the previous run (e.g. 30s). Zero: one shot over the window." default:"0s"`
	Once       bool          `help:"With --every: run one incremental step and exit."`
	Name       string        `help:"Name under which the incremental analyzer records how far it has read." default:"default"`
	Warmup     time.Duration `help:"Incremental: on start, replay this much already analysed history so switches and incidents continue where they were." default:"1h"`
	Settle     time.Duration `help:"Incremental: leave results received in the last this long for the next run (an ingest transaction still open may commit them with an earlier receive time)." default:"10s"`
	CPUProfile string        `name:"cpuprofile" hidden:"" help:"Write a CPU profile of the analysis to this file."`
	MemProfile string        `name:"memprofile" hidden:"" help:"Write a heap profile taken after the analysis to this file."`
	MaxLate    time.Duration `name:"max-late" help:"Incremental: ignore results measured this long before the previous run (imports of old data are analysed with a one-shot run over their window)." default:"48h"`
	Health     string        `name:"health-listen" help:"With --every: serve GET /healthz on this address, failing (503) until the first pass and when the last successful one is older than three intervals (at least a minute)." placeholder:"HOST:PORT"`
}

// Run analyses once, or keeps analysing.
func (c *AnalyzeCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Health != "" && c.Every <= 0 {
		return fmt.Errorf("--health-listen serves the health of the incremental analyzer: give --every too")
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if c.Every > 0 || c.Once {
		every := c.Every
		if every <= 0 {
			every = 30 * time.Second
		}
		var health *passHealth
		if c.Health != "" {
			health = newPassHealth(every, time.Now)
			stop, err := serveHealth(c.Health, health, log)
			if err != nil {
				return err
			}
			defer stop()
		}
		inc, err := newIncremental(ctx, st, c.Name, c.Warmup, c.Settle, c.MaxLate, log)
		if err != nil {
			return err
		}
		for {
			stats, err := inc.step(ctx)
			health.record(err)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Error("analyze step failed; retrying at the next tick", "err", err)
			} else {
				log.Info("analyzed", "results", stats.rows, "switches", stats.saved.Switches, "incidents", stats.saved.Incidents,
					"catchments", stats.saved.Catchments, "received_through", stats.through, "took", stats.took.Round(time.Millisecond))
			}
			if c.Once {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(every):
			}
		}
	}

	now := time.Now()
	since, err := parseWhen(c.Since, now)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	until := now
	if c.Until != "" {
		if until, err = parseWhen(c.Until, now); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
	}
	if !since.Before(until) {
		return fmt.Errorf("--since %s is not before --until %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	since, until = since.UTC(), until.UTC()
	if c.CPUProfile != "" {
		pf, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	f, err := analyzer.Run(ctx, st, c.Target, analyzer.Config{Window: catchment.Window{Since: since, Until: until}})
	if err != nil {
		return err
	}
	analysed := time.Since(start)
	if c.MemProfile != "" {
		pf, err := os.Create(c.MemProfile)
		if err != nil {
			return err
		}
		runtime.GC()
		if err := pprof.WriteHeapProfile(pf); err != nil {
			return err
		}
		pf.Close()
	}
	saved, err := st.SaveFindings(ctx, findingsRows(f, since, until, true))
	if err != nil {
		return err
	}
	var peakMB float64
	if p, err := readProc(os.Getpid()); err == nil {
		peakMB = float64(p.hwmKB) * 1024 / 1e6
	}
	log.Info("analyzed", "since", since, "until", until, "observations", f.Stats.Added, "peak_rss_mb", int(peakMB),
		"catchments", saved.Catchments, "switches", saved.Switches, "incidents", saved.Incidents,
		"analysis", analysed.Round(time.Millisecond), "total", time.Since(start).Round(time.Millisecond))
	return nil
}

// findingsRows turns an analysis into the rows the store keeps: one
// catchment row per stream over [since, until).
func findingsRows(f analyzer.Findings, since, until time.Time, replace bool) store.Findings {
	out := store.Findings{Since: since, Until: until, Replace: replace, Incidents: f.Incidents}
	for _, c := range f.Catchments {
		for _, s := range c.Streams {
			if s.Site == "" {
				continue
			}
			out.Catchments = append(out.Catchments, store.CatchmentRow{
				VantagePoint: c.VantagePoint, Target: c.Target, Address: c.Address,
				Kind: s.Kind, Transport: s.Transport, Query: s.Query,
				Site: s.Site, Observations: s.Observations, Confidence: s.Confidence,
			})
		}
	}
	out.Switches = switchRows(f.Switches)
	return out
}

func switchRows(sw []catchment.Switch) []store.SwitchRow {
	out := make([]store.SwitchRow, 0, len(sw))
	for _, s := range sw {
		out = append(out, store.SwitchRow{
			VantagePoint: s.VantagePoint, Target: s.Target, Address: s.Address,
			Kind: s.Kind, Transport: s.Transport, Query: s.Query,
			At: s.At, LastFrom: s.LastFrom, From: s.From, To: s.To,
			Cause: s.Cause, TCPBroke: s.TCPBroke, Failures: s.Failures,
		})
	}
	return out
}

// incremental is the state of `analyze --every`: one long-lived analyzer
// (current sites, open incidents) and the hourly catchment buckets being
// filled. Each step reads what arrived since the previous one and saves, in
// one transaction with the new watermark, what changed: catchment rows whose
// site changed, every touched row every flushEvery, new or re-judged
// switches, and incidents.
type incremental struct {
	st      *store.Store
	name    string
	settle  time.Duration
	maxLate time.Duration
	log     *slog.Logger
	an      *analyzer.Analyzer
	buckets map[time.Time]*catchment.Accumulator
	through time.Time // every result received at or before it is analysed
	// measured is the newest measurement time analysed: history is
	// replayed back from it, not from the wall clock (results can arrive
	// long after they were measured).
	measured time.Time
	born     time.Time

	written   map[rowKey]string         // catchment rows saved, with their site
	dirty     map[pairKey]bool          // pairs touched since the last flush
	touched   map[pairKey]bool          // pairs touched in this step
	switches  map[switchKey]switchState // switches saved, with their verdict
	incidents map[string]bool           // keys of the incidents saved since the last rebuild
	lastFlush time.Time
}

// pairKey is a vantage point and address of a target in one bucket; rowKey
// one of its streams: a catchment row.
type pairKey struct {
	bucket     time.Time
	vp, target string
	addr       netip.Addr
}

type rowKey struct {
	pairKey
	stream streamID
}

type streamID struct {
	kind      api.Kind
	transport api.Transport
	query     string
}

type switchKey struct {
	vp, target string
	addr       netip.Addr
	stream     streamID
	at         time.Time
}

type switchState struct {
	cause analysis.Cause
	broke bool
}

// bucket is the span of the catchment rows the incremental analyzer keeps.
const bucket = time.Hour

// keepBuckets is how many hourly buckets stay open for late results (the
// current hour and the one before).
const keepBuckets = 2

// flushEvery is how often every catchment row touched is saved, whether its
// site changed or not (its counts did).
const flushEvery = 5 * time.Minute

// rebuildAfter bounds how long one analyzer lives before it is rebuilt from
// the warm-up window, which bounds its memory (switch history).
const rebuildAfter = 24 * time.Hour

type stepStats struct {
	rows    int
	saved   store.SaveStats
	through time.Time
	took    time.Duration
}

func newIncremental(ctx context.Context, st *store.Store, name string, warmup, settle, maxLate time.Duration, log *slog.Logger) (*incremental, error) {
	through, measured, err := st.AnalyzerState(ctx, name)
	if err != nil {
		return nil, err
	}
	inc := &incremental{st: st, name: name, settle: settle, maxLate: maxLate, log: log, through: through, measured: measured}
	if err := inc.rebuild(ctx, warmup); err != nil {
		return nil, err
	}
	return inc, nil
}

// rebuild starts a fresh analyzer and replays already analysed results into
// it — the warm-up window, and at least the open catchment buckets — so
// switches, incidents and hourly catchments continue where they were.
func (inc *incremental) rebuild(ctx context.Context, warmup time.Duration) error {
	targets, err := inc.st.Targets(ctx)
	if err != nil {
		return err
	}
	vps, err := inc.st.VantagePoints(ctx)
	if err != nil {
		return err
	}
	an, err := analyzer.New(targets, vps, analyzer.Config{})
	if err != nil {
		return err
	}
	inc.an, inc.buckets, inc.born = an, map[time.Time]*catchment.Accumulator{}, time.Now()
	inc.written, inc.dirty, inc.touched, inc.switches = map[rowKey]string{}, map[pairKey]bool{}, map[pairKey]bool{}, map[switchKey]switchState{}
	inc.incidents = map[string]bool{}
	inc.lastFlush = time.Now()
	if inc.through.IsZero() {
		return nil
	}
	newest := inc.measured
	if newest.IsZero() || newest.After(inc.through) {
		newest = inc.through
	}
	since := newest.Truncate(bucket).Add(-(keepBuckets - 1) * bucket)
	if w := newest.Add(-warmup); w.Before(since) {
		since = w
	}
	stats, err := inc.st.Scan(ctx, store.ScanOptions{Since: since, ReceivedThrough: inc.through}, func(o analysis.Observation) error {
		inc.feed(o)
		return nil
	})
	if err != nil {
		return err
	}
	// What the previous process held may not all be saved: the rows stay
	// dirty, so the first flush writes the open buckets whole; until then
	// only changes of site are written. Switches already judged are saved
	// again only if their verdict changes.
	for _, s := range inc.an.Switches() {
		inc.switches[keyOf(s)] = switchState{s.Cause, s.TCPBroke}
	}
	for b, acc := range inc.buckets {
		for _, c := range acc.Catchments() {
			for _, s := range c.Streams {
				inc.written[rowKey{pairKey{b, c.VantagePoint, c.Target, c.Address}, streamID{s.Kind, s.Transport, s.Query}}] = s.Site
			}
		}
	}
	clear(inc.touched)
	inc.log.Info("analyzer warmed up", "results", stats.Rows, "since", since)
	return nil
}

// feed adds one observation to the analyzer and to its hourly bucket.
func (inc *incremental) feed(o analysis.Observation) {
	inc.an.Add(o)
	b := o.At.Truncate(bucket)
	acc := inc.buckets[b]
	if acc == nil {
		acc = catchment.New(inc.an.Resolvers(), catchment.Config{Window: catchment.Window{Since: b, Until: b.Add(bucket)}})
		inc.buckets[b] = acc
	}
	acc.Add(o)
	k := pairKey{b, o.VantagePoint, o.Target, o.Address}
	inc.dirty[k] = true
	inc.touched[k] = true
}

func keyOf(s catchment.Switch) switchKey {
	return switchKey{s.VantagePoint, s.Target, s.Address, streamID{s.Kind, s.Transport, s.Query}, s.At}
}

// step analyses what arrived since the previous step and saves what
// changed, with the new watermark, in one transaction.
func (inc *incremental) step(ctx context.Context) (stepStats, error) {
	start := time.Now()
	var ss stepStats
	if time.Since(inc.born) > rebuildAfter {
		if err := inc.rebuild(ctx, time.Hour); err != nil {
			return ss, err
		}
	}
	through := time.Now().Add(-inc.settle).UTC()
	if !through.After(inc.through) {
		return ss, nil
	}
	opts := store.ScanOptions{ReceivedAfter: inc.through, ReceivedThrough: through}
	if !inc.through.IsZero() {
		// Results measured long before the watermark are history, not news:
		// a one-shot analyze over their window handles imports of old data.
		opts.Since = inc.through.Add(-inc.maxLate)
	}
	var newest time.Time
	scan, err := inc.st.Scan(ctx, opts, func(o analysis.Observation) error {
		inc.feed(o)
		if o.At.After(newest) {
			newest = o.At
		}
		return nil
	})
	if err != nil {
		return ss, err
	}
	ss.rows = scan.Rows

	f := store.Findings{Analyzer: inc.name, ReceivedThrough: through, MeasuredThrough: newest}
	flush := time.Since(inc.lastFlush) >= flushEvery
	written := map[rowKey]string{}
	// A flush writes every pair touched since the last one; a step in
	// between only the streams of this step's pairs whose site changed.
	pairs := inc.touched
	if flush {
		pairs = inc.dirty
	}
	for k := range pairs {
		acc := inc.buckets[k.bucket]
		if acc == nil {
			continue
		}
		acc.EachStream(k.vp, k.target, k.addr, func(s catchment.StreamCatchment) {
			rk := rowKey{k, streamID{s.Kind, s.Transport, s.Query}}
			if s.Site == "" || (!flush && inc.written[rk] == s.Site) {
				return
			}
			written[rk] = s.Site
			f.Catchments = append(f.Catchments, store.CatchmentRow{
				VantagePoint: k.vp, Target: k.target, Address: k.addr,
				Kind: s.Kind, Transport: s.Transport, Query: s.Query,
				Site: s.Site, Observations: s.Observations, Confidence: s.Confidence,
				WindowStart: k.bucket, WindowEnd: k.bucket.Add(bucket),
			})
		})
	}
	// Switches: new ones, and those whose cause or TCP mark changed with
	// what arrived. Incidents: open ones and those that ended lately.
	savedSwitches := map[switchKey]switchState{}
	for _, s := range inc.an.Switches() {
		k, v := keyOf(s), switchState{s.Cause, s.TCPBroke}
		if old, ok := inc.switches[k]; !ok || old != v {
			savedSwitches[k] = v
			f.Switches = append(f.Switches, switchRows([]catchment.Switch{s})...)
		}
	}
	recent := inc.through.Add(-2 * bucket)
	known := map[string]bool{}
	for _, in := range inc.an.Incidents() {
		known[store.IncidentKey(in)] = true
		if in.Open() || !in.End.Before(recent) {
			f.Incidents = append(f.Incidents, in)
		}
	}
	for k := range inc.incidents {
		if !known[k] {
			f.DeleteIncidents = append(f.DeleteIncidents, k)
		}
	}
	saved, err := inc.st.SaveFindings(ctx, f)
	if err != nil {
		return ss, err
	}
	// Saved: only now does the state move on.
	inc.through = through
	if newest.After(inc.measured) {
		inc.measured = newest
	}
	for k, site := range written {
		inc.written[k] = site
	}
	maps.Copy(inc.switches, savedSwitches)
	for _, k := range f.DeleteIncidents {
		delete(inc.incidents, k)
	}
	for _, in := range f.Incidents {
		inc.incidents[store.IncidentKey(in)] = true
	}
	clear(inc.touched)
	if flush {
		inc.lastFlush = time.Now()
		clear(inc.dirty)
	}
	// Buckets too old for late results are closed, right after a flush
	// saved all their rows.
	if flush && !newest.IsZero() {
		for b := range inc.buckets {
			if b.Before(newest.Truncate(bucket).Add(-(keepBuckets - 1) * bucket)) {
				delete(inc.buckets, b)
				for k := range inc.written {
					if k.bucket == b {
						delete(inc.written, k)
					}
				}
			}
		}
	}
	ss.saved, ss.through, ss.took = saved, through, time.Since(start)
	return ss, nil
}
