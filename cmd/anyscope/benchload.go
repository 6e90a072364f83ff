package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/anyscope/anyscope/agent/shipper"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/collector/targets"
)

// The load benchmark's simulated agents measure what the agent benchmark's
// acceptance point measures (benchTargets targets, both lab anycast
// addresses, every probe kind every benchInterval: about 40 results/s), and
// ship it the way the shipper does: whatever was measured since the last
// batch, after a short linger.

// loadDeliberate are the collector's rejection reasons that are backpressure
// by design (429 per-agent rate limit, 503 global ingest limit): a simulated
// agent waits as told and re-sends. Any other rejection is an error.
var loadDeliberate = map[string]bool{"rate_limited": true, "overloaded": true}

// BenchLoadCmd measures one collector under many agents posting at once.
type BenchLoadCmd struct {
	DB               string        `name:"db" help:"PostgreSQL to use (default: a throwaway private cluster). Never a production database: the run adds load-* agents and replaces the targets." placeholder:"DSN"`
	Agents           int           `help:"Simulated agents posting at once, each with its own token, HTTP client and sequence numbers." default:"200"`
	Duration         time.Duration `help:"How long the agents post." default:"5m"`
	Rate             float64       `help:"Results each agent measures per second; a batch carries what was measured since the agent's last one." default:"40"`
	Interval         time.Duration `help:"Mean time between two batches of one agent (exponentially distributed; 0: back to back)." default:"2s"`
	ReferenceBatches int           `name:"reference-batches" help:"Batches the single reference client commits one after the other, before the load." default:"200"`
	CollectorPool    int           `name:"collector-pool" help:"Database connections of the collector (pool_max_conns in its --db; 0: its default, 16); its default ingest limit is one less." default:"0"`
	CollectorArgs    []string      `name:"collector-arg" sep:"none" help:"Extra flag for the collector (repeatable), e.g. --collector-arg=--log-level=debug." placeholder:"FLAG"`
	Keep             bool          `help:"Keep the benchmark directory (database, collector log) and print its path."`
}

// Run prints the BENCH line last; a run with errors prints it too, then fails.
func (c *BenchLoadCmd) Run(ctx context.Context, log *slog.Logger) error {
	line, err := c.run(ctx, log)
	if line != "" {
		fmt.Println(line)
	}
	return err
}

func (c *BenchLoadCmd) run(ctx context.Context, log *slog.Logger) (line string, err error) {
	switch {
	case c.Agents < 1:
		return "", errors.New("--agents must be at least 1")
	case c.Duration < 5*time.Second:
		return "", errors.New("--duration must be at least 5s")
	case c.Rate <= 0 || c.Rate > 10000:
		return "", errors.New("--rate must be in (0, 10000] results/s")
	case c.Interval < 0:
		return "", errors.New("--interval must not be negative")
	case c.ReferenceBatches < 1:
		return "", errors.New("--reference-batches must be at least 1")
	case c.CollectorPool < 0:
		return "", errors.New("--collector-pool must not be negative")
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir, cleanup, err := workDir("anyscope-bench-load-", "benchmark", c.Keep)
	if err != nil {
		return "", err
	}
	defer cleanup()

	dsn := c.DB
	if dsn == "" {
		step("starting a private PostgreSQL cluster in %s", filepath.Join(dir, "pg"))
		cl, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Fsync: true, Logger: log})
		if err != nil {
			return "", err
		}
		defer cl.Stop(context.WithoutCancel(ctx))
		dsn = cl.ConnString("anyscope")
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return "", err
	}
	ts, err := targets.Parse("bench-targets.yaml", []byte(benchTargetsYAML(benchTargets, api.Kinds)))
	if err != nil {
		return "", err
	}
	if _, err := st.ApplyTargets(ctx, ts); err != nil {
		return "", err
	}
	var jobs []loadJob
	for _, t := range ts {
		for _, a := range t.Addresses {
			jobs = append(jobs, loadJob{target: t.Name, addr: a.String()})
		}
	}

	step("registering %d agents and the reference client", c.Agents)
	run := time.Now().UnixNano()
	names := make([]string, c.Agents+1) // the last is the reference client
	tokens := make([]string, c.Agents+1)
	for i := range names {
		names[i] = fmt.Sprintf("load-%03d-%d", i, run)
		if i == c.Agents {
			names[i] = fmt.Sprintf("load-ref-%d", run)
		}
		if _, tokens[i], err = st.AddAgent(ctx, store.AgentSpec{Name: names[i], Region: "loopback"}); err != nil {
			return "", err
		}
	}

	step("starting the collector (anyscope collector, a child process)")
	collDSN, err := withPoolSize(dsn, c.CollectorPool)
	if err != nil {
		return "", err
	}
	coll, err := startLoadCollector(ctx, self, dir, collDSN, c.CollectorArgs)
	if err != nil {
		return "", err
	}
	defer coll.stop()
	base := "http://" + coll.addr
	mkAgent := func(i int) (*loadAgent, error) {
		return newLoadAgent(names[i], tokens[i], base, uint64(run)+uint64(i), jobs)
	}

	// The reference: the same kind of batches, committed by one client
	// one after the other, on a collector that is otherwise idle.
	ref, err := mkAgent(c.Agents)
	if err != nil {
		return "", err
	}
	meanBatch := c.Rate * c.Interval.Seconds()
	if c.Interval == 0 {
		meanBatch = c.Rate // back to back: about a second's worth
	}
	warm := min(20, c.ReferenceBatches)
	step("reference: one client commits %d batches one after the other (after %d to warm up), about %.0f results each", c.ReferenceBatches, warm, meanBatch)
	for i := 0; i < warm+c.ReferenceBatches; i++ {
		if i == warm {
			ref.lat = ref.lat[:0]
		}
		n := max(1, int(math.Round(meanBatch*ref.gen.rng.ExpFloat64())))
		if err := ref.ship(ctx, ref.gen.results(n, time.Now()), time.Time{}); err != nil {
			return "", fmt.Errorf("reference client: %w", err)
		}
	}
	if ref.failures() > 0 {
		return "", fmt.Errorf("reference client: %s", ref.failureSummary())
	}
	refLat := latencyStats(ref.lat)

	agents := make([]*loadAgent, c.Agents)
	for i := range agents {
		if agents[i], err = mkAgent(i); err != nil {
			return "", err
		}
	}
	step("load: %d agents, each about %.0f results/s in a batch every ~%s, for %s", c.Agents, c.Rate, c.Interval, c.Duration)
	tck, _ := clockTicks()
	series := &procSeries{pid: coll.cmd.Process.Pid}
	var rssAt []rssSample
	sample := func() error {
		if err := series.sample(); err != nil {
			return fmt.Errorf("collector (log %s): %w", coll.log, err)
		}
		rssAt = append(rssAt, rssSample{at: series.last.at, kb: series.last.rssKB})
		return nil
	}
	if err := sample(); err != nil {
		return "", err
	}
	var progress loadProgress
	loadStart := time.Now()
	deadline := loadStart.Add(c.Duration)
	actx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() { a.run(actx, c.Rate, c.Interval, loadStart, deadline, &progress) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	defer func() { cancel(); <-done }() // on an early return too
	tick := time.NewTicker(time.Second)
	lastReport := loadStart
	var sampleErr error
sampling:
	for {
		select {
		case <-done:
			break sampling
		case <-tick.C:
			if sampleErr = sample(); sampleErr != nil {
				break sampling // the collector is gone
			}
			if time.Since(lastReport) >= 10*time.Second {
				lastReport = time.Now()
				fmt.Fprintf(os.Stderr, "    %3.0fs: %d requests answered, %d results acknowledged, collector RSS %.1f MB\n",
					time.Since(loadStart).Seconds(), progress.requests.Load(), progress.acked.Load(), kbToMB(series.last.rssKB))
			}
		}
	}
	tick.Stop()
	loadEnd := time.Now()
	if sampleErr != nil {
		return "", sampleErr
	}
	if err := sample(); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}

	// Server side: what the collector counted, by reason.
	metrics, err := scrapeMetrics(ctx, base+"/metrics")
	if err != nil {
		return "", err
	}
	step("stopping the collector")
	if err := coll.stop(); err != nil {
		return "", err
	}

	step("checking in PostgreSQL that every acknowledged result is stored exactly once")
	stored, err := loadStored(ctx, dsn, names[:c.Agents])
	if err != nil {
		return "", err
	}

	// Sum up.
	var (
		all                             []time.Duration
		codes                           = map[int]int{}
		requests, batches, acked, dups  int
		hopsAcked, sessionsAcked        int64
		failures                        int
		failureLines                    []string
		throttledWait                   time.Duration
		minBatch, maxBatch, sumBatchLen = math.MaxInt, 0, 0
	)
	for _, a := range agents {
		all = append(all, a.lat...)
		for code, n := range a.codes {
			codes[code] += n
			requests += n
		}
		batches += a.batches
		acked += int(a.acked)
		dups += a.dups
		hopsAcked += a.hops
		sessionsAcked += a.sessions
		throttledWait += a.waited
		if n := a.failures(); n > 0 {
			failures += n
			failureLines = append(failureLines, a.name+": "+a.failureSummary())
		}
		if a.batches > 0 {
			minBatch, maxBatch = min(minBatch, a.minBatch), max(maxBatch, a.maxBatch)
		}
		sumBatchLen += a.resultsSent
	}
	var lost []string
	for _, a := range agents {
		s := stored.agents[a.name]
		if s.count != s.distinct || s.count != s.max || s.max != int64(a.acked) {
			lost = append(lost, fmt.Sprintf("%s: stored %d results (%d distinct seqs, highest %d), acknowledged up to %d",
				a.name, s.count, s.distinct, s.max, a.acked))
		}
	}
	if stored.hops != hopsAcked || stored.sessions != sessionsAcked {
		lost = append(lost, fmt.Sprintf("children: stored %d trace hops and %d sessions, acknowledged %d and %d",
			stored.hops, stored.sessions, hopsAcked, sessionsAcked))
	}
	rejected := metrics.byLabel("anyscope_collector_requests_rejected_total", "reason")
	var serverErrs []string
	serverErrN := 0
	for _, reason := range slices.Sorted(maps.Keys(rejected)) {
		if n := int(rejected[reason]); n > 0 && !loadDeliberate[reason] {
			serverErrs = append(serverErrs, fmt.Sprintf("%s %d", reason, n))
			serverErrN += n
		}
	}
	errorsN := failures + len(lost) + serverErrN
	window := loadEnd.Sub(loadStart)
	lat := latencyStats(all)
	mem := rssTrend(rssAt, loadStart, loadEnd)
	hwm := max(kbToMB(series.last.hwmKB), kbToMB(series.maxRSSKB))
	cpu := series.stats(tck).cpuPct
	resultsPerS := float64(acked) / window.Seconds()

	fmt.Printf("load bench: %d simulated agents (each its own token, HTTP client and sequence numbers) posting gzip'd batches of every probe kind (%d targets × 2 addresses) for %s against one collector (pid %d)\n",
		c.Agents, benchTargets, window.Round(time.Millisecond), coll.cmd.Process.Pid)
	fmt.Printf("requests: %d (%.1f/s) — %s; throttled agents waited %s in all\n",
		requests, float64(requests)/window.Seconds(), statusSummary(codes), throttledWait.Round(time.Millisecond))
	avgBatch := 0.0
	if batches > 0 {
		avgBatch = float64(sumBatchLen) / float64(batches)
	} else {
		minBatch = 0
	}
	fmt.Printf("acknowledged: %d batches (%.0f results on average, %d–%d), %d results (%.0f results/s; the agents measure %.0f/s), %d of them duplicates\n",
		batches, avgBatch, minBatch, maxBatch, acked, resultsPerS, float64(c.Agents)*c.Rate, dups)
	fmt.Printf("ingest latency, client side (batch sent to acknowledgement read): p50 %s, p90 %s, p99 %s, max %s (%d samples)\n",
		ms(lat.p50), ms(lat.p90), ms(lat.p99), ms(lat.max), lat.n)
	fmt.Printf("reference, one client alone, same kind of batches one after the other: p50 %s, p99 %s (%d batches; its requests: %s)\n",
		ms(refLat.p50), ms(refLat.p99), refLat.n, statusSummary(ref.codes))
	fmt.Printf("under load: p99 = %s the reference p50, p50 = %s; the reference's own p99 = %s its p50\n",
		durRatio(lat.p99, refLat.p50), durRatio(lat.p50, refLat.p50), durRatio(refLat.p99, refLat.p50))
	if count, sum := metrics.histogram("anyscope_collector_ingest_seconds"); count > 0 {
		fmt.Printf("collector side: %.0f batches committed (the reference's too), COPY + commit %s on average\n", count, ms(time.Duration(sum/count*float64(time.Second))))
	}
	fmt.Printf("collector rejections (its /metrics): %s\n", reasonSummary(rejected))
	fmt.Printf("collector process: peak RSS (VmHWM) %.1f MB; mean RSS %.1f MB over the first %s, %.1f MB over the last (×%.2f); CPU %.0f%% of one core\n",
		hwm, mem.first, mem.window.Round(time.Second), mem.last, mem.last/max(mem.first, 1e-9), cpu)
	if len(lost) == 0 {
		fmt.Printf("exactly once: for each of the %d agents, results stored = distinct sequence numbers = highest stored = highest acknowledged (%d results, %d trace hops, %d sessions)\n",
			c.Agents, stored.total(), stored.hops, stored.sessions)
	}
	for _, l := range failureLines {
		fmt.Printf("ERROR %s\n", l)
	}
	for _, l := range lost {
		fmt.Printf("ERROR %s\n", l)
	}
	if len(serverErrs) > 0 {
		fmt.Printf("ERROR collector rejections that are not backpressure: %s\n", strings.Join(serverErrs, ", "))
	}
	line = fmt.Sprintf("BENCH load_p99_ms=%.1f results_per_s=%.0f collector_rss_mb=%.1f errors=%d",
		float64(lat.p99)/float64(time.Millisecond), resultsPerS, hwm, errorsN)
	if errorsN > 0 {
		return line, fmt.Errorf("%d errors (collector log: %s; --keep keeps it)", errorsN, coll.log)
	}
	if acked == 0 {
		return line, errors.New("no batch was acknowledged")
	}
	return line, nil
}

// loadJob is one (target, address) pair a simulated agent measures.
type loadJob struct{ target, addr string }

// loadSites are the identities simulated agents see: each agent is served
// by one site, as a real vantage point is, and now and then by another.
var loadSites = []struct{ host, nsid, pop string }{
	{"ns1.nl-ams.lab.example", "ams-1", "AMS"},
	{"ns2.de-fra.lab.example", "fra-1", "FRA"},
	{"ns1.gb-lhr.lab.example", "lhr-1", "LHR"},
	{"ns1.sg-sin.lab.example", "sin-1", "SIN"},
}

// loadGen produces one simulated agent's results: rounds of every probe
// kind, each round one job's DNS identity queries over UDP and TCP, a ping
// series, a Paris traceroute, an HTTP request and a session that ended,
// numbered 1, 2, 3, … like a real agent's.
type loadGen struct {
	rng  *rand.Rand
	seq  uint64
	jobs []loadJob
	site int   // index into loadSites
	rtt  int64 // base RTT in µs
	next int   // next job
}

func newLoadGen(seed uint64, jobs []loadJob) *loadGen {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &loadGen{rng: rng, jobs: jobs, site: rng.IntN(len(loadSites)), rtt: 2000 + rng.Int64N(80000)}
}

// results returns whole rounds measured just before now, at least n results.
func (g *loadGen) results(n int, now time.Time) []api.Result {
	var out []api.Result
	for len(out) < n {
		out = g.round(out, now.Add(-time.Duration(g.rng.Int64N(int64(time.Second)))))
	}
	return out
}

// fail says whether a transaction fails: about 2% do.
func (g *loadGen) fail() bool { return g.rng.IntN(50) == 0 }

func (g *loadGen) rttUS() int64 { return g.rtt + g.rng.Int64N(g.rtt/4+1) }

// round appends one round of one job to out.
func (g *loadGen) round(out []api.Result, at time.Time) []api.Result {
	j := g.jobs[g.next%len(g.jobs)]
	g.next++
	if g.rng.IntN(200) == 0 { // a switch to another site now and then
		g.site = g.rng.IntN(len(loadSites))
	}
	s := loadSites[g.site]
	first := g.seq + 1
	add := func(r api.Result) {
		g.seq++
		r.Seq, r.Round, r.Target, r.Address = g.seq, first, j.target, j.addr
		r.MeasuredAt = at.Add(time.Duration(g.seq-first) * time.Millisecond).UTC()
		out = append(out, r)
	}
	for _, tr := range []api.Transport{api.TransportUDP, api.TransportTCP} {
		for _, q := range []string{api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID} {
			r := api.Result{Kind: api.KindDNS, Transport: tr, Query: q}
			if g.fail() {
				r.Failure = api.FailureTimeout
			} else {
				r.RTTMicros = g.rttUS()
				d := &api.DNSValues{Rcode: "NOERROR", Size: 60 + len(s.host)}
				if q == api.QueryNSID {
					d.NSIDHex, d.NSIDText, d.Identity = fmt.Sprintf("%x", s.nsid), s.nsid, s.nsid
				} else {
					d.TXT, d.Identity = []string{s.host}, s.host
				}
				r.DNS = d
			}
			add(r)
		}
	}
	ping := api.Result{Kind: api.KindPing, Transport: api.TransportICMP, Query: api.QueryEcho}
	if g.fail() {
		ping.Failure = api.FailureTimeout
		ping.Ping = &api.PingValues{Sent: 3}
	} else {
		lo, hi := g.rttUS(), g.rttUS()
		lo, hi = min(lo, hi), max(lo, hi)
		ping.RTTMicros = (lo + hi) / 2
		ping.Ping = &api.PingValues{Sent: 3, Received: 3, MinUS: lo, AvgUS: (lo + hi) / 2, MaxUS: hi, StddevUS: (hi - lo) / 3, ReplyTTL: 57}
	}
	add(ping)
	add(g.trace(j))
	web := api.Result{Kind: api.KindHTTP, Transport: api.TransportTCP, Query: api.QueryGet}
	if g.fail() {
		web.Failure = api.FailureConnectionRefused
	} else {
		c := g.rttUS()
		web.RTTMicros = 2 * c
		web.HTTP = &api.HTTPValues{Scheme: "http", Status: 200, Identity: s.pop, Source: "header:X-Served-By",
			ConnectUS: c, FirstByteUS: 2 * c}
	}
	add(web)
	// About one session ends per round (two per address every 20s in the
	// agent benchmark's schedule), DNS and HTTP alike.
	sess := api.Result{Kind: api.KindSession, Transport: api.TransportTCP, Query: api.QuerySessionDNS}
	if g.rng.IntN(2) == 0 {
		sess.Query = api.QuerySessionHTTP
	}
	opened := at.Add(-benchSessionLife).UTC()
	v := &api.SessionValues{OpenedAt: opened, ClosedAt: at.UTC(), Queries: 4, End: api.EndLifeEnded}
	for k := range 4 {
		v.Answers = append(v.Answers, api.SessionAnswer{At: opened.Add(time.Duration(k) * 5 * time.Second), Identity: s.host, RTTUS: g.rttUS()})
	}
	if g.fail() {
		v.End, v.Answers = api.EndTimeout, v.Answers[:2]
		sess.Failure = api.FailureTimeout
	}
	sess.Session = v
	add(sess)
	return out
}

// trace is a Paris traceroute of 6 to 11 hops, some of them stars.
func (g *loadGen) trace(j loadJob) api.Result {
	r := api.Result{Kind: api.KindTrace, Transport: api.TransportUDP, Query: api.QueryParis}
	n := 6 + g.rng.IntN(6)
	v := &api.TraceValues{Flow: "udp sport=33000 dport=33435", Engine: "anyscope", Reached: true, Stop: "reached"}
	v6 := strings.Contains(j.addr, ":")
	for ttl := 1; ttl <= n; ttl++ {
		h := api.TraceHop{TTL: ttl}
		switch {
		case ttl == n:
			h.Addr, h.ICMPType, h.ICMPCode = j.addr, 3, 3
			if v6 {
				h.ICMPType, h.ICMPCode = 1, 4
			}
		case g.rng.IntN(8) == 0: // a star
		case v6:
			h.Addr, h.ICMPType = fmt.Sprintf("2001:db8:100::%x", ttl), 3
		default:
			h.Addr, h.ICMPType = fmt.Sprintf("198.51.100.%d", ttl), 11
		}
		if h.Addr != "" {
			h.RTTUS, h.ReplyTTL = g.rtt*int64(ttl)/int64(n)+g.rng.Int64N(500), 64-ttl
		}
		v.Hops = append(v.Hops, h)
	}
	if g.fail() {
		v.Hops, v.Reached, v.Stop = v.Hops[:n-1], false, "gap_limit"
	} else {
		r.RTTMicros = v.Hops[n-1].RTTUS
	}
	r.Trace = v
	return r
}

// loadAgent is one simulated agent: the real shipper client (its own HTTP
// client and connection), its own results and what happened to its
// uploads. It is used by one goroutine.
type loadAgent struct {
	name   string
	gen    *loadGen
	client *shipper.Client
	timer  *timedTransport

	batchSeq  uint64
	pending   []api.Result
	generated int // results the generator has produced in the load phase

	lat         []time.Duration // of every request answered 200
	codes       map[int]int     // answers by status; 0: no answer (network error)
	requests    int
	batches     int
	resultsSent int // in acknowledged batches
	minBatch    int
	maxBatch    int
	acked       uint64 // highest acknowledged seq
	dups        int
	hops        int64 // trace hops in acknowledged batches
	sessions    int64 // sessions in acknowledged batches
	waited      time.Duration
	errs        []string // the first few failures
	errN        int
}

func newLoadAgent(name, token, base string, seed uint64, jobs []loadJob) (*loadAgent, error) {
	tt := &timedTransport{base: &http.Transport{
		MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute, DisableCompression: true,
		ResponseHeaderTimeout: 2 * time.Minute,
	}}
	cl, err := shipper.NewClient(shipper.ClientOptions{
		URL: base, Token: token, Agent: name, Timeout: 2 * time.Minute,
		HTTPClient: &http.Client{Transport: tt},
	})
	if err != nil {
		return nil, err
	}
	a := &loadAgent{name: name, gen: newLoadGen(seed, jobs), client: cl, timer: tt, codes: map[int]int{}, minBatch: math.MaxInt}
	tt.record = func(code int, d time.Duration) {
		a.codes[code]++
		a.requests++
		if code == http.StatusOK {
			a.lat = append(a.lat, d)
		}
	}
	return a, nil
}

// loadProgress is what the agents have done so far, for progress lines.
type loadProgress struct{ requests, acked atomic.Int64 }

// run posts batches until deadline: it waits an exponentially distributed
// time (mean interval), then ships everything measured since the last
// batch at rate results/s, at most api.MaxBatchResults at once.
func (a *loadAgent) run(ctx context.Context, rate float64, interval time.Duration, start, deadline time.Time, p *loadProgress) {
	// Agents start at random moments of the first interval, as after a
	// collector restart, never in lock-step.
	next := start.Add(time.Duration(a.gen.rng.Float64() * float64(interval)))
	for {
		if next.After(deadline) {
			next = deadline
		}
		if err := sleepCtx(ctx, time.Until(next)); err != nil {
			return
		}
		now := time.Now()
		if !now.Before(deadline) {
			return
		}
		if due := int(rate * now.Sub(start).Seconds()); due > a.generated {
			rs := a.gen.results(due-a.generated, now)
			a.generated += len(rs)
			a.pending = append(a.pending, rs...)
		}
		if len(a.pending) > 0 {
			n := min(len(a.pending), api.MaxBatchResults)
			before := a.requests
			if err := a.ship(ctx, a.pending[:n], deadline); err == nil {
				a.pending = a.pending[n:]
				p.acked.Add(int64(n))
			}
			p.requests.Add(int64(a.requests - before))
		}
		next = time.Now().Add(time.Duration(a.gen.rng.ExpFloat64() * float64(interval)))
	}
}

// ship uploads rs until the collector acknowledges them, honouring 429 and
// 503 with Retry-After as the shipper does. After deadline (when set) a
// throttled batch is given up: the collector throttles before it stores, so
// nothing of it was stored. Any other failure is counted and retried with
// backoff, unless the collector refuses the batch for good.
func (a *loadAgent) ship(ctx context.Context, rs []api.Result, deadline time.Time) error {
	bo := &shipper.Backoff{Min: time.Second, Cap: 10 * time.Second}
	for {
		a.batchSeq++
		ack, err := a.client.Upload(ctx, &api.Batch{Agent: a.name, BatchSeq: a.batchSeq, Results: rs})
		if err == nil {
			a.batches++
			a.resultsSent += len(rs)
			a.minBatch, a.maxBatch = min(a.minBatch, len(rs)), max(a.maxBatch, len(rs))
			a.dups += ack.Duplicates
			for _, r := range rs {
				a.acked = max(a.acked, r.Seq)
				if r.Trace != nil {
					a.hops += int64(len(r.Trace.Hops))
				}
				if r.Session != nil {
					a.sessions++
				}
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *shipper.StatusError
		var wait time.Duration
		switch {
		case errors.As(err, &se) && (se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable):
			// Backpressure. Whether a 503 was deliberate (the ingest
			// limit) or not (the database) the collector's own counters
			// tell; they are checked at the end.
			wait = se.RetryAfter
			if wait <= 0 {
				wait = bo.Next()
			}
			wait = min(wait, shipper.MaxRetryAfter)
		case errors.As(err, &se) && !se.Temporary():
			a.fail(err)
			return err
		default:
			a.fail(err)
			wait = bo.Next()
		}
		if !deadline.IsZero() && time.Now().Add(wait).After(deadline) {
			return err
		}
		a.waited += wait
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

func (a *loadAgent) fail(err error) {
	a.errN++
	if len(a.errs) < 3 {
		a.errs = append(a.errs, err.Error())
	}
}

// failures counts what went wrong beyond backpressure: errors of uploads,
// and answers that are neither 200 nor 429/503.
func (a *loadAgent) failures() int { return a.errN }

func (a *loadAgent) failureSummary() string {
	return fmt.Sprintf("%d failed uploads, e.g. %s", a.errN, strings.Join(a.errs, "; "))
}

// timedTransport times each request from sending to the answer read and
// closed, and records its status (0 for no answer).
type timedTransport struct {
	base   http.RoundTripper
	record func(code int, d time.Duration)
}

func (t *timedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.record(0, 0)
		return nil, err
	}
	resp.Body = &timedBody{ReadCloser: resp.Body, done: func() { t.record(resp.StatusCode, time.Since(start)) }}
	return resp, nil
}

type timedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *timedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// latency summarises request latencies.
type latency struct {
	n                  int
	p50, p90, p99, max time.Duration
}

func latencyStats(ds []time.Duration) latency {
	s := slices.Clone(ds)
	slices.Sort(s)
	l := latency{n: len(s)}
	if len(s) == 0 {
		return l
	}
	l.p50, l.p90, l.p99, l.max = percentile(s, 50), percentile(s, 90), percentile(s, 99), s[len(s)-1]
	return l
}

// percentile is the nearest-rank percentile p of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func durRatio(a, b time.Duration) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("×%.1f", float64(a)/float64(b))
}

func statusSummary(codes map[int]int) string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(codes)) {
		name := fmt.Sprint(c)
		if c == 0 {
			name = "no answer"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, codes[c]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func reasonSummary(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func kbToMB(kb uint64) float64 { return float64(kb) * 1024 / 1e6 }

// rssSample is the collector's VmRSS at one moment.
type rssSample struct {
	at time.Time
	kb uint64
}

// memTrend compares the collector's mean RSS at the start and at the end
// of the load: bounded memory keeps them close.
type memTrend struct {
	window      time.Duration
	first, last float64 // MB
}

// rssTrend averages the samples of the first and the last minute of
// [from, to] (a quarter of it when shorter than four minutes).
func rssTrend(samples []rssSample, from, to time.Time) memTrend {
	w := min(time.Minute, to.Sub(from)/4)
	t := memTrend{window: w}
	var a, b []float64
	for _, s := range samples {
		if !s.at.After(from.Add(w)) {
			a = append(a, kbToMB(s.kb))
		}
		if !s.at.Before(to.Add(-w)) {
			b = append(b, kbToMB(s.kb))
		}
	}
	mean := func(xs []float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		sum := 0.0
		for _, x := range xs {
			sum += x
		}
		return sum / float64(len(xs))
	}
	t.first, t.last = mean(a), mean(b)
	return t
}

// withPoolSize sets pool_max_conns in a connection string (a URL or
// key=value pairs); n = 0 leaves it as it is.
func withPoolSize(dsn string, n int) (string, error) {
	if n == 0 {
		return dsn, nil
	}
	return withDSNParam(dsn, "pool_max_conns", strconv.Itoa(n))
}

// loadCollector is the collector child process.
type loadCollector struct {
	cmd    *exec.Cmd
	addr   string
	log    string
	stopFn func() error
	once   sync.Once
	err    error
}

// stop interrupts the collector and waits for it (once); an exit status
// other than 0 is an error: a race-detector build exits 66 after a report.
func (c *loadCollector) stop() error {
	c.once.Do(func() { c.err = c.stopFn() })
	return c.err
}

// startLoadCollector runs `anyscope collector` on a loopback port and waits
// until it serves. Unlike startCollector it keeps the process, so that its
// memory can be read from /proc, and reports how it exited.
func startLoadCollector(ctx context.Context, self, dir, dsn string, extra []string) (*loadCollector, error) {
	readyFile := filepath.Join(dir, "collector.addr")
	logPath := filepath.Join(dir, "collector.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := append([]string{"collector", "--db", dsn, "--listen", "127.0.0.1:0", "--ready-file", readyFile}, extra...)
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	c := &loadCollector{cmd: cmd, log: logPath}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	c.stopFn = func() error {
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("collector exited badly (log %s): %w", logPath, err)
			}
			return nil
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("collector did not stop within 30s of SIGINT (log %s)", logPath)
		}
	}
	addr, err := waitForFile(ctx, readyFile, 30*time.Second)
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("collector did not start (log in %s): %w", logPath, err)
	}
	c.addr = addr
	return c, nil
}

// promFamilies are the metric families a /metrics page exposes, by name.
type promFamilies map[string]*dto.MetricFamily

// scrapeMetrics reads a Prometheus text exposition.
func scrapeMetrics(ctx context.Context, url string) (promFamilies, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("collector metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("collector metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("collector metrics: %w", err)
	}
	return fams, nil
}

// byLabel sums a counter family's values by one label's value.
func (f promFamilies) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// histogram returns a histogram family's observation count and sum.
func (f promFamilies) histogram(name string) (count, sum float64) {
	for _, m := range f[name].GetMetric() {
		count += float64(m.GetHistogram().GetSampleCount())
		sum += m.GetHistogram().GetSampleSum()
	}
	return count, sum
}

// storedCounts is what PostgreSQL holds of one agent's results.
type storedCounts struct{ count, distinct, max int64 }

// loadStoredCounts is what PostgreSQL holds of the simulated agents.
type loadStoredCounts struct {
	agents         map[string]storedCounts
	hops, sessions int64
}

func (s loadStoredCounts) total() int64 {
	var n int64
	for _, a := range s.agents {
		n += a.count
	}
	return n
}

// loadStored counts, per agent, the stored results, their distinct
// sequence numbers and the highest one, and the trace hops and sessions of
// all of them.
func loadStored(ctx context.Context, dsn string, names []string) (loadStoredCounts, error) {
	s := loadStoredCounts{agents: map[string]storedCounts{}}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return s, fmt.Errorf("checking stored results: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT a.name, count(r.seq), count(DISTINCT r.seq), coalesce(max(r.seq), 0)
		FROM agents a LEFT JOIN results r ON r.agent_id = a.id
		WHERE a.name = ANY($1) GROUP BY a.name`, names)
	if err != nil {
		return s, fmt.Errorf("checking stored results: %w", err)
	}
	for rows.Next() {
		var name string
		var c storedCounts
		if err := rows.Scan(&name, &c.count, &c.distinct, &c.max); err != nil {
			rows.Close()
			return s, fmt.Errorf("checking stored results: %w", err)
		}
		s.agents[name] = c
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("checking stored results: %w", err)
	}
	for _, q := range []struct {
		table string
		dst   *int64
	}{{"trace_hops", &s.hops}, {"sessions", &s.sessions}} {
		err := conn.QueryRow(ctx, `SELECT count(*) FROM `+q.table+` t JOIN agents a ON a.id = t.agent_id WHERE a.name = ANY($1)`, names).Scan(q.dst)
		if err != nil {
			return s, fmt.Errorf("checking stored %s: %w", q.table, err)
		}
	}
	return s, nil
}
