// Package synth generates synthetic anycast worlds for tests and benchmarks:
// sites at real airports, vantage points spread like RIPE Atlas probes,
// catchments that mostly but not always follow geography, round-trip times
// that obey the speed of light in fibre, server identities in the naming
// conventions real operators use, and scripted events (withdrawals, black
// holes, load-balanced flappers, broken vantage points, upload gaps,
// outages) whose ground truth the world can tell (Truth).
//
// A world is deterministic: the same Config gives the same observations,
// byte for byte. Every random draw is a hash of the seed and of what is drawn
// (which vantage point, target, round), so observations stream round by
// round without being stored, and Truth answers for any instant without
// replaying them.
//
// Modelling choices, so that tests know what they test against:
//   - sites are distinct cities: the first a random hub airport (a list of
//     exchange-point cities standing in for "large airports", which the
//     catalog does not mark), each next the farthest from those chosen of a
//     few random hubs; other airports only when a world wants more sites;
//   - vantage points lie within 50 km of random catalog airports, half of
//     them in Europe, a quarter in North America (RIPE Atlas's skew);
//   - a vantage point reaches, per target, its nearest site with probability
//     NearestShare and otherwise one of its next Alternatives nearest sites
//     (BGP is not geography); the choice is fixed for the pair;
//   - RTT = distance/geo.KmPerMsRTT × inflation (per vantage point and target,
//     uniform in [InflationMin, InflationMax]) + access delay (per vantage
//     point, uniform in [AccessMinMs, AccessMaxMs]) + noise (per
//     observation, uniform in [0, JitterMs)); never below the physical
//     minimum;
//   - each site has 1–3 servers; each observation is answered by one of them
//     at random (a change of server within a site is not a switch);
//   - a Flapper alternates between its sites from round to round; sessions
//     and traceroutes are not generated.
package synth

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/geo"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ErrInvalidConfig is wrapped by every error New returns.
var ErrInvalidConfig = errors.New("invalid synthetic world")

// Defaults for zero Config fields.
const (
	DefaultInterval     = 240 * time.Second // RIPE Atlas built-in DNS measurements
	DefaultJitterMs     = 1.0
	DefaultInflationMin = 1.2
	DefaultInflationMax = 2.0
	DefaultAccessMinMs  = 1.0
	DefaultAccessMaxMs  = 10.0
	DefaultNearestShare = 0.75
	DefaultAlternatives = 3
	// DefaultVPJitterKm is how far at most a vantage point lies from the
	// catalog place it is placed near.
	DefaultVPJitterKm = 50.0
)

// defaultStart is the first instant of a world whose Config.Start is zero.
var defaultStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// MaxTargets is the most targets a world has: each gets its own IPv4
// address from a documentation range (192.0.2.1–254, 198.51.100.1–254).
const MaxTargets = 508

// Config describes a world. Zero fields take the defaults above (so zero
// noise or access delay cannot be asked for: use a tiny value).
type Config struct {
	Seed int64
	// Sites is how many distinct sites the world has (at least 1); target
	// 0 uses them all, every other target a subset of at least half.
	Sites         int
	VantagePoints int // at least 1
	Targets       int // 1..MaxTargets
	// Start, Duration and Interval: every vantage point probes every
	// target once per Interval, from its own offset in [0, Interval),
	// for Duration (more than zero). A zero Start is 2025-01-01 00:00 UTC.
	Start    time.Time
	Duration time.Duration
	Interval time.Duration
	// Queries are the DNS identity queries of a round, each one
	// observation over UDP (api.QueryHostnameBind, QueryIDServer,
	// QueryNSID); default hostname.bind.
	Queries []string
	// Ping adds one ping observation (ICMP echo, its RTT, no identity) per
	// vantage point, target and round, for latency geography.
	Ping bool

	JitterMs                   float64 // per-observation noise bound, ms
	InflationMin, InflationMax float64 // path inflation, at least 1
	AccessMinMs, AccessMaxMs   float64 // access delay per vantage point, ms
	// NearestShare is the probability that a vantage point reaches its
	// nearest site of a target, in (0, 1]; Alternatives how many of the
	// next nearest it may reach otherwise.
	NearestShare float64
	Alternatives int

	Events []Event
}

// World is a generated world. It is immutable and safe for concurrent use.
type World struct {
	cfg      Config
	queries  []string
	start    int64 // Unix ns
	end      int64 // Unix ns, exclusive
	interval int64 // ns
	rounds   int

	sites      []site
	siteByCode map[string]int

	vps      []vantagePoint
	vpByName map[string]int
	order    []int32 // vantage point indices by ascending offset

	targets      []target
	targetByName map[string]int

	dist  []float64 // km, [vp*len(sites)+site]
	pairs []pair    // [vp*len(targets)+target]

	events   []event
	byTarget [][]int32 // event indices (Withdraw, Blackhole, Outage) per target
	byVP     [][]int32 // event indices (Flapper, VantagePointDown, Gap) per vantage point
}

type site struct {
	place   catalog.Place
	servers int
}

type vantagePoint struct {
	analysis.VantagePoint
	access float64 // ms
	offset int64   // ns into each interval
}

type target struct {
	name       string
	addr4      netip.Addr
	addr6      netip.Addr
	sites      []int  // world site indices, ascending
	member     []bool // per world site
	identities [][]string
}

// pair is what is fixed for one vantage point and one target.
type pair struct {
	site      int32   // the site BGP picks when every site is up
	inflation float64 // path inflation factor
}

// New validates cfg, applies defaults and builds the world.
func New(cfg Config) (*World, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	w := &World{
		cfg:          cfg,
		queries:      cfg.Queries,
		start:        cfg.Start.UnixNano(),
		end:          cfg.Start.Add(cfg.Duration).UnixNano(),
		interval:     int64(cfg.Interval),
		siteByCode:   make(map[string]int),
		vpByName:     make(map[string]int),
		targetByName: make(map[string]int),
	}
	w.rounds = int((cfg.Duration + cfg.Interval - 1) / cfg.Interval)
	if err := w.placeSites(); err != nil {
		return nil, err
	}
	w.placeVantagePoints()
	w.makeTargets()
	w.makeCatchments()
	w.byTarget = make([][]int32, len(w.targets))
	w.byVP = make([][]int32, len(w.vps))
	for i, ev := range cfg.Events {
		e, err := w.compile(i, ev)
		if err != nil {
			return nil, err
		}
		k := int32(len(w.events))
		w.events = append(w.events, e)
		if e.vp >= 0 {
			w.byVP[e.vp] = append(w.byVP[e.vp], k)
		} else {
			w.byTarget[e.target] = append(w.byTarget[e.target], k)
		}
	}
	return w, nil
}

func (c *Config) fill() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Sites < 1:
		return bad("Sites %d: want at least 1", c.Sites)
	case c.VantagePoints < 1:
		return bad("VantagePoints %d: want at least 1", c.VantagePoints)
	case c.Targets < 1 || c.Targets > MaxTargets:
		return bad("Targets %d: want 1..%d", c.Targets, MaxTargets)
	case c.Duration <= 0:
		return bad("Duration %v: want more than zero", c.Duration)
	case c.Interval < 0:
		return bad("Interval %v is negative", c.Interval)
	}
	if c.Start.IsZero() {
		c.Start = defaultStart
	}
	c.Start = c.Start.UTC()
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if len(c.Queries) == 0 {
		c.Queries = []string{api.QueryHostnameBind}
	} else {
		c.Queries = slices.Clone(c.Queries)
	}
	for _, q := range c.Queries {
		switch q {
		case api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID:
		default:
			return bad("query %q: want %s, %s or %s", api.Clip(q), api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID)
		}
	}
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.JitterMs, DefaultJitterMs)
	def(&c.InflationMin, DefaultInflationMin)
	def(&c.InflationMax, DefaultInflationMax)
	def(&c.AccessMinMs, DefaultAccessMinMs)
	def(&c.AccessMaxMs, DefaultAccessMaxMs)
	def(&c.NearestShare, DefaultNearestShare)
	if c.Alternatives == 0 {
		c.Alternatives = DefaultAlternatives
	}
	switch {
	case !(c.JitterMs >= 0) || math.IsInf(c.JitterMs, 0):
		return bad("JitterMs %v", c.JitterMs)
	case !(c.InflationMin >= 1) || !(c.InflationMax >= c.InflationMin) || math.IsInf(c.InflationMax, 0):
		return bad("inflation %v..%v: want 1 ≤ min ≤ max", c.InflationMin, c.InflationMax)
	case !(c.AccessMinMs >= 0) || !(c.AccessMaxMs >= c.AccessMinMs) || math.IsInf(c.AccessMaxMs, 0):
		return bad("access delay %v..%v ms: want 0 ≤ min ≤ max", c.AccessMinMs, c.AccessMaxMs)
	case !(c.NearestShare > 0 && c.NearestShare <= 1):
		return bad("NearestShare %v: want (0, 1]", c.NearestShare)
	case c.Alternatives < 0:
		return bad("Alternatives %d is negative", c.Alternatives)
	}
	return nil
}

// Rounds is how many probe rounds the world has.
func (w *World) Rounds() int { return w.rounds }

// Sites returns every site of the world (target 0's site list), ordered as
// chosen.
func (w *World) Sites() []analysis.Site {
	out := make([]analysis.Site, len(w.sites))
	for i, s := range w.sites {
		out[i] = analysisSite(s.place)
	}
	return out
}

func analysisSite(p catalog.Place) analysis.Site {
	return analysis.Site{Code: p.Code, Name: p.City, Latitude: p.Latitude, Longitude: p.Longitude, HasCoords: true}
}

// VantagePoints returns the vantage points, by name.
func (w *World) VantagePoints() []analysis.VantagePoint {
	out := make([]analysis.VantagePoint, len(w.vps))
	for i, v := range w.vps {
		out[i] = v.VantagePoint
	}
	return out
}

// Targets returns the targets with their addresses (observations go to the
// IPv4 one) and declared sites, with coordinates. They declare no rules:
// the built-in identity conventions resolve their servers.
func (w *World) Targets() []analysis.Target {
	out := make([]analysis.Target, len(w.targets))
	for i, t := range w.targets {
		sites := make([]analysis.Site, len(t.sites))
		for k, s := range t.sites {
			sites[k] = analysisSite(w.sites[s].place)
		}
		out[i] = analysis.Target{Name: t.name, Addresses: []netip.Addr{t.addr4, t.addr6}, Sites: sites}
	}
	return out
}

// Servers returns the identity strings of the servers of a target's site
// (nil when the target has no such site).
func (w *World) Servers(targetName, siteCode string) []string {
	t, s, err := w.targetSite(targetName, siteCode)
	if err != nil {
		return nil
	}
	return slices.Clone(w.targets[t].identities[s])
}

// Truth returns the site serving vantage point vp for target at instant
// at, per the scripted events; ok is false when it gets no answer (a black
// hole, an outage, its network down, every site withdrawn) or when the
// names are unknown. During a Gap the vantage point is still served: only
// its observations are missing. A flapper's site is the one of the round
// at holds.
func (w *World) Truth(targetName, vpName string, at time.Time) (string, bool) {
	t, ok := w.targetByName[targetName]
	if !ok {
		return "", false
	}
	v, ok := w.vpByName[vpName]
	if !ok {
		return "", false
	}
	ns := at.UnixNano()
	r := int64(0)
	if d := ns - w.start - w.vps[v].offset; d > 0 {
		r = d / w.interval
	}
	s, ok := w.serve(v, t, int(r), ns)
	if !ok {
		return "", false
	}
	return w.sites[s].place.Code, true
}

// serve returns the site answering vantage point v for target t in round r
// at instant at (Unix ns), or false when none answers.
func (w *World) serve(v, t, r int, at int64) (int, bool) {
	s := int(w.pairs[v*len(w.targets)+t].site)
	tev, vev := w.byTarget[t], w.byVP[v]
	if len(tev) == 0 && len(vev) == 0 {
		return s, true
	}
	for _, i := range vev {
		e := &w.events[i]
		if !e.active(at) {
			continue
		}
		switch {
		case e.kind == evDown:
			return -1, false
		case e.kind == evFlapper && e.target == t:
			s = e.sites[r%len(e.sites)]
		}
	}
	for _, i := range tev {
		if e := &w.events[i]; e.kind == evOutage && e.active(at) {
			return -1, false
		}
	}
	if w.withdrawn(t, s, at) {
		s = w.nearestUp(v, t, at)
		if s < 0 {
			return -1, false
		}
	}
	for _, i := range tev {
		if e := &w.events[i]; e.kind == evBlackhole && e.site == s && e.active(at) {
			return -1, false
		}
	}
	return s, true
}

func (w *World) withdrawn(t, s int, at int64) bool {
	for _, i := range w.byTarget[t] {
		if e := &w.events[i]; e.kind == evWithdraw && e.site == s && e.active(at) {
			return true
		}
	}
	return false
}

// nearestUp is v's nearest site of t that is not withdrawn at at, or -1.
func (w *World) nearestUp(v, t int, at int64) int {
	best, bestD := -1, math.Inf(1)
	row := w.dist[v*len(w.sites) : (v+1)*len(w.sites)]
	for _, s := range w.targets[t].sites {
		if row[s] < bestD && !w.withdrawn(t, s, at) {
			best, bestD = s, row[s]
		}
	}
	return best
}

// gapped reports whether vantage point v uploads nothing at at.
func (w *World) gapped(v int, at int64) bool {
	for _, i := range w.byVP[v] {
		if e := &w.events[i]; e.kind == evGap && e.active(at) {
			return true
		}
	}
	return false
}

// rttMs is the RTT in ms from v to site s for target t, before noise.
func (w *World) rttMs(v, t, s int) float64 {
	p := w.pairs[v*len(w.targets)+t]
	return w.dist[v*len(w.sites)+s]/geo.KmPerMsRTT*p.inflation + w.vps[v].access
}

// identityStyles are naming conventions of real operators (DOMAIN.md) that
// the built-in identity rules resolve to the site's IATA code. Target i
// uses style i mod len.
var identityStyles = []func(p catalog.Place, server int) string{
	// K-root: ns1.fi-hel.k.ripe.net
	func(p catalog.Place, n int) string {
		return fmt.Sprintf("ns%d.%s-%s.synth.example", n, strings.ToLower(p.Country), strings.ToLower(p.Code))
	},
	// L-root: mia01.l.root-servers.org
	func(p catalog.Place, n int) string {
		return fmt.Sprintf("%s%02d.synth.example", strings.ToLower(p.Code), n)
	},
	// Quad9: res100.ams.rrdns.pch.net
	func(p catalog.Place, n int) string {
		return fmt.Sprintf("res%d.%s.synth.example", 100+n, strings.ToLower(p.Code))
	},
	// M-root: M-NRT-JPNAP-1
	func(p catalog.Place, n int) string { return fmt.Sprintf("M-%s-SYNTH-%d", p.Code, n) },
	// E-root: c01.MCI.eroot
	func(p catalog.Place, n int) string { return fmt.Sprintf("c%02d.%s.synth", n, p.Code) },
}

// maxServers is the most servers a site has.
const maxServers = 3

// resolvable reports whether every identity style of p resolves to p's
// code with the built-in rules (a code that is a stop word, such as POP or
// EXT, would not).
func resolvable(p catalog.Place) bool {
	if len(p.Code) != 3 {
		return false
	}
	r := identity.Default("")
	for _, style := range identityStyles {
		for n := 1; n <= maxServers; n++ {
			if r.Resolve(style(p, n)).Site != p.Code {
				return false
			}
		}
	}
	return true
}
