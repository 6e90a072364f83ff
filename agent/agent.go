// Package agent runs on a vantage point: it fetches its schedule from the
// collector, probes the scheduled anycast addresses that its local allow-list
// permits at jittered (Poisson) intervals, spools every result on disk and
// ships it to the collector.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/probe"
	"github.com/anyscope/anyscope/agent/shipper"
	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// scheduleCache is the file in the spool directory holding the last good
// schedule, so that the agent keeps measuring while the collector is down,
// across restarts too.
const scheduleCache = "schedule.json"

// spoolCommitWindow spaces the spool's fsyncs: the rounds that end within
// it share one (a round waits at most this long for its results to be
// durable), instead of one fsync per round.
const spoolCommitWindow = 200 * time.Millisecond

// prober runs one kind of probe against one address.
type prober interface {
	Probe(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, transport api.Transport) []api.Result
}

// sessioner keeps long-lived sessions to one address back to back, handing
// each ended session's result to emit, until ctx ends.
type sessioner interface {
	Loop(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, query string, emit func(api.Result))
}

// transports says over which transports one round of a kind probes, in
// order, and which queries a failure result (a panic) stands for.
var transports = map[api.Kind][]api.Transport{
	api.KindDNS:   {api.TransportUDP, api.TransportTCP},
	api.KindPing:  {api.TransportICMP},
	api.KindTrace: {api.TransportUDP},
	api.KindHTTP:  {api.TransportTCP},
}

// Agent measures the targets of its schedule and ships the results.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	spool    *spool.Spool
	client   *shipper.Client
	shipper  *shipper.Shipper
	probers  map[api.Kind]prober
	sessions sessioner
	sem      chan struct{} // bounds concurrent rounds
	wake     chan struct{} // tells the shipper that results are waiting

	// Seams for tests: the delay before a job's first round, the delay
	// between rounds, and the backoff of schedule fetches.
	offset   func(key string, mean time.Duration) time.Duration
	interval func(mean time.Duration) time.Duration
	backoff  func() *shipper.Backoff

	applied []api.ScheduleTarget // the targets applied last; used by Run's goroutine only

	mu       sync.Mutex
	refused  map[netip.Addr]bool // addresses already logged as refused
	fatal    error
	stopRun  context.CancelFunc
	closeErr error
	closed   bool
}

// New validates cfg, opens the spool and registers the agent's metrics on
// reg (nil: a private registry). Run starts measuring.
func New(cfg *Config, logger *slog.Logger, reg prometheus.Registerer) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent: nil config")
	}
	c := *cfg
	if err := c.check(lines{}); err != nil {
		return nil, fmt.Errorf("agent: config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	log := logger.With("agent", c.Name)
	a := &Agent{
		cfg:      c,
		log:      log,
		sem:      make(chan struct{}, c.Concurrency),
		wake:     make(chan struct{}, 1),
		offset:   startOffset,
		interval: poissonInterval,
		backoff:  func() *shipper.Backoff { return &shipper.Backoff{Min: time.Second, Cap: time.Minute} },
		refused:  map[netip.Addr]bool{},
	}
	if err := a.newProbers(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var err error
	a.client, err = shipper.NewClient(shipper.ClientOptions{URL: c.Collector, Token: c.token, Agent: c.Name, TLS: c.TLS.shipper(), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	// Segments are at most a quarter of the cap, so that a full spool drops
	// a quarter of its results at most at once.
	a.spool, err = spool.Open(c.SpoolDir, spool.Options{Logger: log, CommitWindow: spoolCommitWindow,
		MaxBytes: c.SpoolMaxBytes, SegmentBytes: min(spool.DefaultSegmentBytes, c.SpoolMaxBytes/4)})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.shipper, err = shipper.New(a.spool, a.client, shipper.Options{Logger: log, Registerer: reg})
	if err == nil {
		a.m, err = newMetrics(reg, a.spool)
	}
	if err != nil {
		a.spool.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	attrs := []any{"collector", c.Collector, "spool", c.SpoolDir, "allow", c.Allow, "next_seq", a.spool.NextSeq()}
	if l := c.Location; l != nil {
		attrs = append(attrs, "lat", *l.Lat, "lon", *l.Lon, "provider", l.Provider, "region", l.Region)
	}
	log.Info("agent: ready", attrs...)
	return a, nil
}

// Run measures until ctx ends (or, with Config.Once, for one round), then
// ships what it can and closes the spool; call it once. It returns an error
// only for infrastructure faults: in once mode no usable schedule or results
// left unshipped, in any mode a spool that can no longer be written.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.Once {
		return a.RunOnce(ctx)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	a.stopRun = cancel
	a.mu.Unlock()

	if err := a.hello(ctx, 0); err != nil {
		return err
	}
	var shipping sync.WaitGroup
	shipCtx, stopShipping := context.WithCancel(context.WithoutCancel(ctx))
	shipping.Go(func() { _ = a.shipper.Run(shipCtx, a.wake) })

	jobs := newScheduler(ctx, a)
	if s, err := a.loadSchedule(); err != nil {
		a.log.Warn("agent: cached schedule unusable", "err", err)
	} else if s != nil {
		a.log.Info("agent: measuring with the cached schedule until the collector answers", "generated_at", s.GeneratedAt)
		jobs.apply(s)
	}
	bo := a.backoff()
	for ctx.Err() == nil {
		wait := jitter(a.cfg.ScheduleRefresh, 0.1)
		s, err := a.client.Schedule(ctx)
		if err == nil {
			err = a.checkSchedule(s)
		}
		switch {
		case ctx.Err() != nil:
		case err != nil:
			a.m.scheduleFetches.WithLabelValues("error").Inc()
			wait = bo.Next()
			a.log.Warn("agent: cannot fetch the schedule; keeping the current one", "err", err, "retry_in", wait)
		default:
			a.m.scheduleFetches.WithLabelValues("ok").Inc()
			bo.Reset()
			if jobs.apply(s) {
				if err := a.saveSchedule(s); err != nil {
					a.log.Warn("agent: cannot cache the schedule", "err", err)
				}
			}
		}
		sleep(ctx, wait)
	}
	jobs.stop()
	stopShipping()
	shipping.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fatal
}

// RunOnce measures every scheduled address once (UDP and TCP, all identity
// queries), ships everything and closes the spool, whatever Config.Once
// says. The schedule comes from the collector, or from the cache when the
// collector cannot be reached.
func (a *Agent) RunOnce(ctx context.Context) error {
	defer a.Close()
	if err := a.hello(ctx, 3); err != nil {
		return err
	}
	s, err := a.fetchSchedule(ctx, 3)
	if err != nil {
		cached, cerr := a.loadSchedule()
		if cerr != nil || cached == nil {
			return fmt.Errorf("agent: no schedule: %w", errors.Join(err, cerr))
		}
		a.log.Warn("agent: collector unreachable; using the cached schedule", "err", err)
		s = cached
	} else if err := a.saveSchedule(s); err != nil {
		a.log.Warn("agent: cannot cache the schedule", "err", err)
	}
	specs := a.plan(s)
	a.m.jobs.Set(float64(len(specs)))
	var wg sync.WaitGroup
	for _, j := range specs {
		wg.Go(func() { a.round(ctx, j, j.target()) })
	}
	wg.Wait()
	a.mu.Lock()
	fatal := a.fatal
	a.mu.Unlock()
	if fatal != nil {
		return fatal
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("agent: interrupted: %w", err)
	}
	return a.shipper.Flush(ctx)
}

// fetchSchedule fetches and checks the schedule, trying up to attempts times.
func (a *Agent) fetchSchedule(ctx context.Context, attempts int) (*api.Schedule, error) {
	bo := a.backoff()
	var err error
	for i := range attempts {
		if i > 0 {
			sleep(ctx, bo.Next())
		}
		var s *api.Schedule
		s, err = a.client.Schedule(ctx)
		if err == nil {
			err = a.checkSchedule(s)
		}
		if err == nil {
			a.m.scheduleFetches.WithLabelValues("ok").Inc()
			return s, nil
		}
		a.m.scheduleFetches.WithLabelValues("error").Inc()
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// hello announces the agent and its configured location to the collector.
// With a fresh spool (none of its results on disk, as after a lost spool
// directory) it must succeed before anything is measured, because the
// collector's highest stored sequence number reseeds the numbering; it is
// retried until then (at most attempts times when attempts > 0). Otherwise
// one failed attempt is only logged: measuring goes on while the collector
// is down.
func (a *Agent) hello(ctx context.Context, attempts int) error {
	fresh := a.spool.Fresh()
	var loc *api.Location
	if l := a.cfg.Location; l != nil && l.Lat != nil && l.Lon != nil {
		loc = &api.Location{Latitude: *l.Lat, Longitude: *l.Lon, Provider: l.Provider, Region: l.Region}
	}
	bo := a.backoff()
	for attempt := 1; ; attempt++ {
		w, err := a.client.Hello(ctx, version(), loc)
		if err == nil {
			if fresh && w.LastSeq > 0 {
				if err := a.spool.Reseed(w.LastSeq); err != nil {
					return fmt.Errorf("agent: %w", err)
				}
				a.log.Warn("agent: the spool is empty but the collector holds results of this agent (was the spool directory lost?): numbering continues after them",
					"last_seq", w.LastSeq)
			}
			return nil
		}
		if !fresh {
			a.log.Warn("agent: hello to the collector failed; measuring anyway", "err", err)
			return nil
		}
		var se *shipper.StatusError
		if errors.As(err, &se) && !se.Temporary() {
			return fmt.Errorf("agent: the collector refused this agent: %w", err)
		}
		if attempts > 0 && attempt >= attempts {
			return fmt.Errorf("agent: new spool and no answer from the collector (it tells where numbering continues): %w", err)
		}
		wait := bo.Next()
		a.log.Warn("agent: new spool; waiting for the collector before measuring", "err", err, "retry_in", wait)
		sleep(ctx, wait)
		if ctx.Err() != nil {
			return fmt.Errorf("agent: %w", ctx.Err())
		}
	}
}

// version is the agent's build version, sent in its hello.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// newProbers builds one prober per kind, all paced by one limiter.
func (a *Agent) newProbers() error {
	c := &a.cfg
	lim := newLimiter(c.MaxRate, c.MaxTargetRate)
	dns, err := probe.NewDNS(probe.DNSOptions{Timeout: c.Timeout, Port: c.DNSPort, Limiter: lim})
	if err != nil {
		return err
	}
	ping, err := probe.NewPing(probe.PingOptions{Limiter: lim})
	if err != nil {
		return err
	}
	http, err := probe.NewHTTP(probe.HTTPOptions{Limiter: lim})
	if err != nil {
		return err
	}
	trace, err := probe.NewTrace(probe.TraceOptions{Limiter: lim})
	if err != nil {
		return err
	}
	sessions, err := probe.NewSession(probe.SessionOptions{Port: c.DNSPort, Limiter: lim})
	if err != nil {
		return err
	}
	a.probers = map[api.Kind]prober{api.KindDNS: dns, api.KindPing: ping, api.KindTrace: trace, api.KindHTTP: http}
	a.sessions = sessions
	return nil
}

// round probes one address over each transport of its kind (DNS: UDP, then
// TCP) and spools the results together, as one round. Only the probing
// holds a concurrency slot, not the wait for the spool's fsync.
func (a *Agent) round(ctx context.Context, j job, t api.ScheduleTarget) {
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	var results []api.Result
	for _, tr := range transports[j.kind] {
		results = append(results, a.probe(ctx, j, t, tr)...)
	}
	<-a.sem
	if ctx.Err() != nil {
		// Shutdown interrupted the round: what it saw is not a measurement.
		return
	}
	a.record(results)
}

// probe runs one probe, turning a panic into results that say so.
func (a *Agent) probe(ctx context.Context, j job, t api.ScheduleTarget, tr api.Transport) (results []api.Result) {
	start := time.Now().UTC()
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("agent: probe panicked", "target", j.name, "address", j.addr, "transport", tr,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			results = nil
			for _, q := range panicQueries(j, t, tr) {
				results = append(results, api.Result{
					MeasuredAt: start, Target: j.name, Address: j.addr.String(),
					Kind: j.kind, Transport: tr, Query: q, Failure: api.FailurePanic,
				})
			}
		}
	}()
	return a.probers[j.kind].Probe(ctx, t, j.addr, tr)
}

// panicQueries are the queries a round of j over tr would have measured.
func panicQueries(j job, t api.ScheduleTarget, tr api.Transport) []string {
	switch j.kind {
	case api.KindDNS:
		return []string{api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID}
	case api.KindPing:
		return []string{api.QueryEcho}
	case api.KindTrace:
		return []string{api.QueryParis}
	case api.KindHTTP:
		if spec := t.HTTP; spec != nil && spec.Method == api.QueryHead {
			return []string{api.QueryHead}
		}
		return []string{api.QueryGet}
	}
	return nil
}

// record counts results, spools the valid ones and wakes the shipper.
func (a *Agent) record(results []api.Result) {
	valid := results[:0:0]
	for _, r := range results {
		a.m.probes.WithLabelValues(string(r.Kind), string(r.Transport), failureLabel(r.Failure)).Inc()
		check := r
		check.Seq = 1 // numbered by the spool
		if err := check.Validate(); err != nil {
			a.m.dropped.WithLabelValues("invalid").Inc()
			a.log.Error("agent: dropping an invalid result", "target", r.Target, "address", r.Address, "err", err)
			continue
		}
		valid = append(valid, r)
	}
	if len(valid) == 0 {
		return
	}
	if _, err := a.spool.Append(valid); err != nil {
		a.m.dropped.WithLabelValues("spool").Add(float64(len(valid)))
		a.log.Error("agent: cannot spool results; they are lost", "results", len(valid), "err", err)
		if errors.Is(err, spool.ErrBroken) {
			a.fail(err)
		}
		return
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// fail stops Run with err.
func (a *Agent) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fatal == nil {
		a.fatal = fmt.Errorf("agent: %w", err)
	}
	if a.stopRun != nil {
		a.stopRun()
	}
}

// Close closes the spool. Run calls it on return; call it only when Run is
// never called.
func (a *Agent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		a.closeErr = a.spool.Close()
	}
	return a.closeErr
}

// checkSchedule rejects a schedule meant for another agent.
func (a *Agent) checkSchedule(s *api.Schedule) error {
	if s.Agent != a.cfg.Name {
		return fmt.Errorf("schedule is for agent %q, this agent is %q (is the token right?)", s.Agent, a.cfg.Name)
	}
	return nil
}

// loadSchedule reads the cached schedule; nil without error when there is
// none.
func (a *Agent) loadSchedule() (*api.Schedule, error) {
	b, err := os.ReadFile(filepath.Join(a.cfg.SpoolDir, scheduleCache))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s api.Schedule
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", scheduleCache, err)
	}
	if err := a.checkSchedule(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// saveSchedule caches s atomically.
func (a *Agent) saveSchedule(s *api.Schedule) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(a.cfg.SpoolDir, scheduleCache)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func failureLabel(f api.Failure) string {
	if f == api.FailureNone {
		return "none"
	}
	return string(f)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
