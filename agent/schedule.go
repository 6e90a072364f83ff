package agent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/anyscope/anyscope/agent/probe"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Bounds on what the collector can ask for.
const (
	minInterval = time.Second
	maxInterval = 24 * time.Hour
	maxJobs     = 10000
)

// job is one probe kind on one (target, address) pair, run at a mean
// interval (or, for sessions, continuously). Jobs are compared as values: a
// changed interval, NSID name or HTTP spec is a new job.
type job struct {
	name  string
	kind  api.Kind
	qname string
	addr  netip.Addr
	mean  time.Duration
	// http is the target's HTTP spec as JSON ("" when none): a comparable
	// form of it.
	http string
	life time.Duration
	// session is the session protocol (api.QuerySessionDNS or
	// QuerySessionHTTP) of a session job.
	session string
}

func (j job) target() api.ScheduleTarget {
	t := api.ScheduleTarget{Name: j.name, NSIDQName: j.qname, SessionLifeSeconds: j.life.Seconds()}
	if j.http != "" {
		t.HTTP = new(api.HTTPSpec)
		json.Unmarshal([]byte(j.http), t.HTTP) // marshalled by plan: cannot fail
	}
	return t
}

// key names the job for its start offset: every job of an agent starts at
// its own moment.
func (j job) key(agent string) string {
	return agent + "\x00" + j.name + "\x00" + j.addr.String() + "\x00" + string(j.kind) + "\x00" + j.session
}

// plan turns a schedule into jobs: targets with the dns probe, valid names,
// intervals and addresses, and only addresses on the local allow-list. The
// others are refused: logged once per address and counted, never probed.
func (a *Agent) plan(s *api.Schedule) []job {
	var jobs []job
	seen := map[job]bool{}
	refused, skipped, overflow := 0, 0, 0
	for _, t := range s.Targets {
		kinds := a.kinds(t)
		if len(kinds) == 0 {
			continue
		}
		log := a.log.With("target", t.Name)
		if !api.ValidName(t.Name) {
			log.Warn("agent: schedule target has an invalid name; skipped")
			skipped++
			continue
		}
		mean, ok := interval(t.IntervalSeconds)
		if !ok {
			log.Warn("agent: schedule target has an invalid interval; skipped", "interval_s", t.IntervalSeconds)
			skipped++
			continue
		}
		qname, err := probe.NSIDQName(t)
		if err != nil {
			log.Warn("agent: schedule target skipped", "err", err)
			skipped++
			continue
		}
		var spec string
		if t.HTTP != nil {
			if err := probe.CheckHTTPSpec(t.HTTP); err != nil {
				log.Warn("agent: schedule target has an invalid HTTP spec; skipped", "err", err)
				skipped++
				continue
			}
			b, _ := json.Marshal(t.HTTP)
			spec = string(b)
		}
		life, _ := interval(t.SessionLifeSeconds)
		for _, s := range t.Addresses {
			addr, err := netip.ParseAddr(s)
			if err != nil || addr.Zone() != "" {
				log.Warn("agent: schedule target has an invalid address; skipped", "address", s)
				skipped++
				continue
			}
			addr = addr.Unmap()
			if !a.cfg.Allowed(addr) {
				refused++
				a.refuse(addr, t.Name)
				continue
			}
			for _, k := range kinds {
				j := job{name: t.Name, kind: k.kind, session: k.session, qname: qname, addr: addr, mean: mean, http: spec, life: life}
				switch {
				case seen[j]:
				case len(jobs) == maxJobs:
					overflow++
				default:
					seen[j] = true
					jobs = append(jobs, j)
				}
			}
		}
	}
	if overflow > 0 {
		a.log.Error("agent: schedule has more (target, address) pairs than the agent measures; ignoring the rest",
			"limit", maxJobs, "ignored", overflow)
	}
	a.m.refused.Set(float64(refused))
	a.m.skipped.Set(float64(skipped + overflow))
	return jobs
}

// kindJob is a probe kind to run on a target (with its session protocol).
type kindJob struct {
	kind    api.Kind
	session string
}

// kinds lists the probe kinds of t this agent runs: the ones it has a
// prober for; a session runs over DNS when the target has the dns probe and
// over HTTP when it has an HTTP spec. Unknown kinds (a newer collector) are
// skipped.
func (a *Agent) kinds(t api.ScheduleTarget) []kindJob {
	var out []kindJob
	for _, k := range t.Probes {
		switch {
		case k == api.KindSession:
			if a.sessions == nil {
				continue
			}
			if slices.Contains(t.Probes, api.KindDNS) {
				out = append(out, kindJob{kind: k, session: api.QuerySessionDNS})
			}
			if t.HTTP != nil {
				out = append(out, kindJob{kind: k, session: api.QuerySessionHTTP})
			}
		case a.probers[k] != nil:
			if k == api.KindHTTP && t.HTTP == nil {
				continue
			}
			out = append(out, kindJob{kind: k})
		}
	}
	return out
}

// interval converts a schedule's interval, clamped to sane bounds.
func interval(seconds float64) (time.Duration, bool) {
	if math.IsNaN(seconds) || math.IsInf(seconds, 0) || seconds <= 0 {
		return 0, false
	}
	return min(max(time.Duration(seconds*float64(time.Second)), minInterval), maxInterval), true
}

// refuse logs, once per address, that the schedule asks for an address the
// allow-list does not cover.
func (a *Agent) refuse(addr netip.Addr, target string) {
	a.mu.Lock()
	logged := a.refused[addr]
	a.refused[addr] = true
	a.mu.Unlock()
	if !logged {
		a.log.Warn("agent: REFUSING to probe an address outside the allow-list", "target", target, "address", addr)
	}
}

// scheduler runs one goroutine per job and follows schedule changes.
type scheduler struct {
	ctx     context.Context
	a       *Agent
	running map[job]context.CancelFunc
	wg      sync.WaitGroup
}

func newScheduler(ctx context.Context, a *Agent) *scheduler {
	return &scheduler{ctx: ctx, a: a, running: map[job]context.CancelFunc{}}
}

// apply starts and stops jobs to match s, and reports whether s differs from
// the schedule applied last.
func (s *scheduler) apply(sched *api.Schedule) bool {
	a := s.a
	if a.applied != nil && reflect.DeepEqual(a.applied, sched.Targets) {
		return false
	}
	a.applied = slices.Clone(sched.Targets)
	if a.applied == nil {
		a.applied = []api.ScheduleTarget{}
	}
	want := map[job]bool{}
	for _, j := range a.plan(sched) {
		want[j] = true
	}
	for j, stop := range s.running {
		if !want[j] {
			stop()
			delete(s.running, j)
		}
	}
	for j := range want {
		if _, ok := s.running[j]; ok {
			continue
		}
		ctx, stop := context.WithCancel(s.ctx)
		s.running[j] = stop
		s.wg.Go(func() { a.loop(ctx, j) })
	}
	a.m.jobs.Set(float64(len(s.running)))
	a.log.Info("agent: schedule applied", "targets", len(sched.Targets), "jobs", len(s.running), "generated_at", sched.GeneratedAt)
	return true
}

// stop ends every job and waits for them.
func (s *scheduler) stop() {
	for _, stop := range s.running {
		stop()
	}
	s.wg.Wait()
}

// loop runs j's rounds: the first after a start offset derived from the
// agent, target and address (so agents and jobs never fire in lock-step),
// then at memoryless intervals measured from the start of each round.
func (a *Agent) loop(ctx context.Context, j job) {
	ctx = withTarget(ctx, j.name)
	// A changed target is another job: its spec is decoded once here.
	t := j.target()
	next := time.Now().Add(a.offset(j.key(a.cfg.Name), j.mean))
	if j.kind == api.KindSession {
		// A session is continuous: it reconnects as soon as one ends.
		sleep(ctx, time.Until(next))
		if ctx.Err() == nil {
			a.sessions.Loop(ctx, t, j.addr, j.session, func(r api.Result) { a.record([]api.Result{r}) })
		}
		return
	}
	for {
		sleep(ctx, time.Until(next))
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		a.round(ctx, j, t)
		next = start.Add(a.interval(j.mean))
	}
}

// startOffset spreads first rounds deterministically over [0, mean). The
// key is hashed with SHA-256 because keys differ mostly at their end (the
// last octet of an address), where a raw FNV hash barely moves its high bits:
// every address of a target would start together.
func startOffset(key string, mean time.Duration) time.Duration {
	sum := sha256.Sum256([]byte(key))
	u := float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53) // uniform in [0, 1)
	return time.Duration(u * float64(mean))
}

// poissonInterval draws the gap to the next round from an exponential
// distribution with the given mean (rounds form a Poisson process, so samples
// are unbiased and agents drift apart), truncated to [mean/10, 4·mean] so no
// gap is absurdly short or long.
func poissonInterval(mean time.Duration) time.Duration {
	d := time.Duration(rand.ExpFloat64() * float64(mean))
	return min(max(d, mean/10), 4*mean)
}

// jitter spreads d uniformly by ±frac.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 + frac*(2*rand.Float64()-1)))
}

// limiter is the agent's packet-rate ceiling: every prober waits on it
// before each packet. It paces the whole agent (max_rate) and each target
// (max_target_rate, the target named in the context by withTarget).
type limiter struct {
	all       *probe.Pacer
	perSecond float64
	mu        sync.Mutex
	targets   map[string]*probe.Pacer
}

func newLimiter(all, perTarget float64) *limiter {
	return &limiter{all: probe.NewPacer(all), perSecond: perTarget, targets: map[string]*probe.Pacer{}}
}

// Wait blocks until both the target's budget and the agent's allow one
// more packet.
func (l *limiter) Wait(ctx context.Context) error {
	_, err := l.WaitSeries(ctx, 1, 0)
	return err
}

// WaitSeries books n packets every apart on the target's pacer and the
// agent's at once (see probe.WaitPacers).
func (l *limiter) WaitSeries(ctx context.Context, n int, every time.Duration) (time.Duration, error) {
	name, ok := ctx.Value(targetKey{}).(string)
	if !ok {
		return probe.WaitPacers(ctx, n, every, l.all)
	}
	l.mu.Lock()
	p := l.targets[name]
	if p == nil {
		p = probe.NewPacer(l.perSecond)
		l.targets[name] = p
	}
	l.mu.Unlock()
	// Always the target's first, then the agent's.
	return probe.WaitPacers(ctx, n, every, p, l.all)
}

type targetKey struct{}

// withTarget names the target whose packets ctx's probes send.
func withTarget(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, targetKey{}, name)
}
