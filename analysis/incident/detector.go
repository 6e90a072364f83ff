package incident

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults of Config.
const (
	DefaultInterval         = 10 * time.Second
	DefaultMinFailures      = 2
	DefaultMinVantagePoints = 1
	DefaultOutageShare      = 0.9
	DefaultCatchmentShare   = 0.8
)

// MaxPathEnds is the most traceroute path ends an incident's evidence keeps.
const MaxPathEnds = 16

// Bounds and factors of the rules (see the package documentation).
const (
	// maxStreams bounds the streams kept per (vantage point, target,
	// address); observations of further streams are ignored.
	maxStreams = 16
	// maxInterval caps a learned interval (an agent probes at least daily).
	maxInterval = int64(7 * 24 * time.Hour)
	// minEval is the shortest time between two evaluations of an address.
	minEval = int64(500 * time.Millisecond)
	// maxScan: a vantage point's pairs are found by a scan up to this many,
	// by the map beyond.
	maxScan = 16

	recentIntervals = 6 // a pair is recent for this many of its intervals
	mergeIntervals  = 2 // incidents closer than this merge (flapping)
	absorbIntervals = 3 // an outage absorbs black holes this much older
	departIntervals = 2 // departures this long before a start mean a withdrawal
	lingerIntervals = 6 // members left this long after the last recovery are let go
	minStreak       = 3 // answers from a site before leaving it is a departure
)

// ErrConfig is returned by New for an invalid Config.
var ErrConfig = errors.New("incident: invalid config")

// Config tunes a Detector. Zero values mean the defaults.
type Config struct {
	// Interval is the probe interval assumed for a stream until it has
	// learned its own from the spacing of its observations.
	Interval time.Duration
	// MinFailures is how many consecutive failed observations of every
	// stream make a (vantage point, target, address) failing.
	MinFailures int
	// MinVantagePoints is the fewest failing vantage points that make a
	// black hole or an outage.
	MinVantagePoints int
	// OutageShare is the share of the recent vantage points of an address
	// that must fail for an outage.
	OutageShare float64
	// CatchmentShare is the share of a site's recent catchment that must
	// fail for the site to be down (a black hole, or part of an outage).
	CatchmentShare float64
}

func (c *Config) check() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("%w: negative interval %v", ErrConfig, c.Interval)
	case c.MinFailures < 0:
		return fmt.Errorf("%w: negative min failures %d", ErrConfig, c.MinFailures)
	case c.MinVantagePoints < 0:
		return fmt.Errorf("%w: negative min vantage points %d", ErrConfig, c.MinVantagePoints)
	case math.IsNaN(c.OutageShare) || c.OutageShare < 0 || c.OutageShare > 1:
		return fmt.Errorf("%w: outage share %v is not in [0, 1]", ErrConfig, c.OutageShare)
	case math.IsNaN(c.CatchmentShare) || c.CatchmentShare < 0 || c.CatchmentShare > 1:
		return fmt.Errorf("%w: catchment share %v is not in [0, 1]", ErrConfig, c.CatchmentShare)
	case c.Interval > time.Duration(maxInterval):
		return fmt.Errorf("%w: interval %v is longer than %v", ErrConfig, c.Interval, time.Duration(maxInterval))
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MinFailures == 0 {
		c.MinFailures = DefaultMinFailures
	}
	if c.MinVantagePoints == 0 {
		c.MinVantagePoints = DefaultMinVantagePoints
	}
	if c.OutageShare == 0 {
		c.OutageShare = DefaultOutageShare
	}
	if c.CatchmentShare == 0 {
		c.CatchmentShare = DefaultCatchmentShare
	}
	return nil
}

// Stats describes what a Detector was fed.
type Stats struct {
	// Added counts observations used (health or traceroute); Ignored those
	// that say nothing about health (ping, agent-side faults, unusable
	// times, streams beyond the bound).
	Added, Ignored int
	// OutOfOrder counts observations older than what their stream or pair
	// had already seen: they change no state.
	OutOfOrder int
}

// Detector finds incidents in observations fed in time order (small
// disorder is tolerated: older observations than a stream has seen are
// skipped). It is not safe for concurrent use.
type Detector struct {
	cfg      Config
	interval int64 // cfg.Interval in ns

	vpIDs     map[string]int32
	vps       []*vantage
	targetIDs map[string]int32
	// lastTarget caches the latest target's id: observations of few
	// targets interleave.
	lastTarget   string
	lastTargetID int32
	groups       map[groupKey]*group
	groupList    []*group
	pairs        map[pairKey]*pair

	incidents []*incident
	last      map[lastKey]*incident // latest incident per identity, for merging
	stamp     uint64                // evaluation counter
	stats     Stats
}

type groupKey struct {
	target int32
	addr   netip.Addr
}

type pairKey struct {
	vp, target int32
	addr       netip.Addr
}

// New returns an empty Detector.
func New(cfg Config) (*Detector, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Detector{
		cfg:       cfg,
		interval:  int64(cfg.Interval),
		vpIDs:     make(map[string]int32),
		targetIDs: make(map[string]int32),
		groups:    make(map[groupKey]*group),
		pairs:     make(map[pairKey]*pair),
		last:      make(map[lastKey]*incident),
	}, nil
}

// outcome is what an observation says about health.
type outcome uint8

const (
	ignored outcome = iota
	answered
	failed
	traced
)

// classify tells answers from failures. Sessions answered when they got a
// first answer, however they ended.
func classify(o *analysis.Observation) outcome {
	switch o.Kind {
	case api.KindTrace:
		return traced
	case api.KindSession:
		if o.Identity != "" || o.RTT > 0 {
			return answered
		}
	case api.KindDNS, api.KindHTTP:
	default:
		return ignored
	}
	if o.Failure.Responsive() {
		return answered
	}
	if failureClass(o.Failure) < 0 {
		return ignored
	}
	return failed
}

// nClass is the number of failures that mean "no answer" (failureClass);
// agent-side faults are not among them.
const nClass = 7

// failureClass indexes the failures that mean "no answer" for counting; -1
// for others.
func failureClass(f api.Failure) int {
	switch f {
	case api.FailureTimeout:
		return 0
	case api.FailureConnectionRefused:
		return 1
	case api.FailureConnectionReset:
		return 2
	case api.FailureConnectionClosed:
		return 3
	case api.FailureHostUnreachable:
		return 4
	case api.FailureNetworkUnreachable:
		return 5
	case api.FailureDNSBogus:
		return 6
	}
	return -1
}

// classFailure is the inverse of failureClass.
func classFailure(i int) api.Failure {
	return [nClass]api.Failure{
		api.FailureTimeout, api.FailureConnectionRefused, api.FailureConnectionReset,
		api.FailureConnectionClosed, api.FailureHostUnreachable, api.FailureNetworkUnreachable,
		api.FailureDNSBogus,
	}[i]
}

// Add feeds one observation. site is the site the caller resolved from
// o.Identity: "" when the observation failed or its identity named no site.
func (d *Detector) Add(o analysis.Observation, site string) {
	out := classify(&o)
	if sec := o.At.Unix(); out == ignored || sec <= 0 || sec > 1<<32 {
		d.stats.Ignored++
		return
	}
	t := o.At.UnixNano()
	p := d.pair(o.VantagePoint, o.Target, o.Address)
	if out == traced {
		d.stats.Added++
		d.traced(p, o.PathEnd)
		return
	}
	s := p.stream(o.Kind, o.Transport, o.Query)
	if s == nil {
		d.stats.Ignored++
		return
	}
	if s.seen && t < s.last || out == failed && t < p.lastOK || out == answered && p.state != healthy && t < p.failStart {
		d.stats.OutOfOrder++
		return
	}
	d.stats.Added++
	s.observe(t)
	g, v := p.g, d.vps[p.vp]
	p.lastSeen = max(p.lastSeen, t)
	g.now = max(g.now, t)
	v.lastSeen = max(v.lastSeen, t)
	if out == answered {
		d.answered(p, v, t, site)
	} else {
		d.failed(p, s, v, t, failureClass(o.Failure))
	}
	if g.dirty && g.now >= g.nextEval {
		d.evaluate(g)
	}
}

// pair returns the state of (vp, target, addr), creating it.
func (d *Detector) pair(vpName, target string, addr netip.Addr) *pair {
	vp, ok := d.vpIDs[vpName]
	if !ok {
		vp = int32(len(d.vps))
		d.vpIDs[vpName] = vp
		d.vps = append(d.vps, &vantage{id: vp, name: vpName})
	}
	tid := d.lastTargetID
	if target != d.lastTarget || len(d.targetIDs) == 0 {
		if tid, ok = d.targetIDs[target]; !ok {
			tid = int32(len(d.targetIDs))
			d.targetIDs[target] = tid
		}
		d.lastTarget, d.lastTargetID = target, tid
	}
	v := d.vps[vp]
	pk := pairKey{vp: vp, target: tid, addr: addr}
	if len(v.pairs) <= maxScan {
		for _, p := range v.pairs {
			if p.target == tid && p.g.addr == addr {
				return p
			}
		}
	} else if p := d.pairs[pk]; p != nil {
		return p
	}
	gk := groupKey{target: tid, addr: addr}
	g := d.groups[gk]
	if g == nil {
		g = &group{target: target, addr: addr, siteIdx: map[string]int32{"": 0}, sites: []site{{}}, interval: d.interval}
		d.groups[gk] = g
		d.groupList = append(d.groupList, g)
	}
	p := &pair{vp: vp, target: tid, g: g}
	d.pairs[pk] = p
	g.pairs = append(g.pairs, p)
	v.pairs = append(v.pairs, p)
	return p
}

// Stats returns what the Detector was fed.
func (d *Detector) Stats() Stats { return d.stats }
