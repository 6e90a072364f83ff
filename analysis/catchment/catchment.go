// Package catchment finds which anycast site serves each vantage point (its
// catchment) and when a vantage point moves to another site (a switch: a
// change of site, never merely of server), in one streaming pass.
package catchment

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// DefaultRound is the default Config.Round.
const DefaultRound = 10 * time.Second

// Bounds on what an Accumulator remembers beyond its streams.
const (
	// MaxUnresolved is the number of distinct unresolved identities kept per
	// target; observations of further identities are only counted.
	MaxUnresolved = 1000
	// maxCache bounds the memo of resolved identities.
	maxCache = 1 << 16
)

// Window is the half-open time interval [Since, Until); a zero bound leaves
// that side open.
type Window struct {
	Since, Until time.Time
}

// Contains reports whether t falls in the window.
func (w Window) Contains(t time.Time) bool {
	if !w.Since.IsZero() && t.Before(w.Since) {
		return false
	}
	if !w.Until.IsZero() && !t.Before(w.Until) {
		return false
	}
	return true
}

// Config tunes an Accumulator.
type Config struct {
	// Window selects the observations that count; others are ignored.
	Window Window
	// Round is how close in time two answers of one (vantage point, target,
	// address) must be to belong to one round, where answers of different
	// streams (CHAOS and NSID, UDP and TCP) are compared. It is used only
	// for observations without a round number (Observation.Round); those
	// that have one are compared within their round exactly. Zero means
	// DefaultRound.
	Round time.Duration
}

// StreamKey names a stream: one kind of question asked over one transport
// by one vantage point of one address of a target. Switches are found
// within a stream only.
type StreamKey struct {
	VantagePoint string
	Target       string
	Address      netip.Addr
	Kind         api.Kind
	Transport    api.Transport
	Query        string
}

// pairKey names a catchment: a vantage point and an address of a target.
type pairKey struct {
	vp, target string
	addr       netip.Addr
}

// Catchment is the site that served one vantage point at one address of a
// target over the window.
type Catchment struct {
	VantagePoint string
	Target       string
	Address      netip.Addr
	// Site is the site most observations named; "" when none resolved.
	// Ties go to the site seen last, then to the smaller code.
	Site string
	// Observations counts successful observations whose identity resolved.
	Observations int
	// Confidence is the share of Observations that named Site (0 when none).
	Confidence float64
	// Sites lists every site seen, most observations first.
	Sites []SiteCount
	// Streams breaks the catchment down by kind, transport and query.
	Streams []StreamCatchment
	// Unresolved counts successful observations whose identity named no site.
	Unresolved int
	// Failures counts failed observations.
	Failures int
	// Disagreements counts, over all rounds, the pairs of streams that named
	// different sites in one round (see Disagreement).
	Disagreements int
}

// SiteCount is how often a site was named, and when last.
type SiteCount struct {
	Site         string
	Observations int
	Last         time.Time
}

// StreamCatchment is the catchment seen by one stream.
type StreamCatchment struct {
	Kind         api.Kind
	Transport    api.Transport
	Query        string
	Site         string
	Observations int
	Confidence   float64
	Unresolved   int
	Failures     int
	Switches     int
}

// Assignment is the site that served a vantage point for a target, across
// all of the target's addresses.
type Assignment struct {
	VantagePoint string
	Target       string
	// Site is the majority site; "" when no observation resolved.
	Site         string
	Observations int
	Confidence   float64
}

// Switch is a change of site between two consecutive successful, resolved
// observations of one stream. Failures in between do not hide it; a change of
// server within a site is not a switch.
type Switch struct {
	VantagePoint string
	Target       string
	Address      netip.Addr
	Kind         api.Kind
	Transport    api.Transport
	Query        string
	From, To     string
	// At is the time of the first observation at To.
	At time.Time
	// LastFrom is the time of the last observation at From.
	LastFrom time.Time
	// Failures counts failed observations of the stream between the two.
	Failures int
}

// Answer is one stream's answer in a disagreement.
type Answer struct {
	Kind      api.Kind
	Transport api.Transport
	Query     string
	Site      string
}

// Disagreement records that two streams of one vantage point and address
// (say CHAOS over UDP and NSID over UDP) named different sites in the same
// round, Rounds times between First and Last. Each is a separate
// transaction and may reach a different site; that is a finding, not noise.
type Disagreement struct {
	VantagePoint string
	Target       string
	Address      netip.Addr
	// A sorts before B by kind, transport and query.
	A, B        Answer
	Rounds      int
	First, Last time.Time
}

// Unresolved counts the observations of one identity no rule explained.
type Unresolved struct {
	Target string
	// Identity is the normalised server identity (identity.Resolution.Server).
	Identity     string
	Observations int
}

// TargetSummary holds a target's totals.
type TargetSummary struct {
	Target string
	// Observations counts every observation in the window; Resolved those
	// that were successful and named a site.
	Observations int
	Resolved     int
	// Unresolved lists identities no rule explained, most observed first;
	// UnresolvedOther counts observations of identities beyond MaxUnresolved.
	Unresolved      []Unresolved
	UnresolvedOther int
	// Failures counts failed observations by classified failure.
	Failures map[api.Failure]int
}

// Stats describes what an Accumulator was fed.
type Stats struct {
	// Added counts observations counted; Ignored those outside the window.
	Added, Ignored int
	// OutOfOrder counts observations older than their stream's previous
	// one: they count toward catchments but not toward switches or
	// disagreements.
	OutOfOrder int
}

// Accumulator builds catchments, switches and disagreements from
// observations fed in time order per stream (as analysis.Source yields
// them). Disagreements compare the latest answers of a vantage point's
// streams, so they are complete only when observations arrive in global
// time order; any other order misses some but never invents one. An
// Accumulator is not safe for concurrent use.
type Accumulator struct {
	cfg       Config
	resolvers map[string]*identity.Resolver
	cache     map[cacheKey]identity.Resolution

	streams  map[StreamKey]*stream
	pairs    map[pairKey]*pair
	targets  map[string]*targetState
	switches []Switch
	disagree map[disagreeKey]*Disagreement
	stats    Stats
}

type cacheKey struct{ target, identity string }

type stream struct {
	key   StreamKey
	pair  *pair
	sites []SiteCount

	unresolved, failures, switches int
	started                        bool
	last                           time.Time // latest At seen

	cur       string    // site of the latest resolved observation
	curLast   time.Time // time of that observation
	curRound  uint64    // its probe round, 0 when the source does not know
	failSince int       // failures since then
}

type pair struct {
	key           pairKey
	sites         []SiteCount
	streams       []*stream
	unresolved    int
	failures      int
	disagreements int
}

type targetState struct {
	observations, resolved int
	unresolved             map[string]int
	unresolvedOther        int
	failures               map[api.Failure]int
}

type disagreeKey struct {
	pair pairKey
	a, b Answer
}

// New returns an empty Accumulator. resolvers maps target names to their
// resolvers; a target without one is resolved by the built-in rules alone.
// The map is not modified.
func New(resolvers map[string]*identity.Resolver, cfg Config) *Accumulator {
	if cfg.Round <= 0 {
		cfg.Round = DefaultRound
	}
	rs := make(map[string]*identity.Resolver, len(resolvers))
	for name, r := range resolvers {
		if r != nil {
			rs[name] = r
		}
	}
	return &Accumulator{
		cfg:       cfg,
		resolvers: rs,
		cache:     make(map[cacheKey]identity.Resolution),
		streams:   make(map[StreamKey]*stream),
		pairs:     make(map[pairKey]*pair),
		targets:   make(map[string]*targetState),
		disagree:  make(map[disagreeKey]*Disagreement),
	}
}

// Add feeds one observation.
func (a *Accumulator) Add(o analysis.Observation) {
	if !a.cfg.Window.Contains(o.At) || !namesSite(o.Kind) {
		a.stats.Ignored++
		return
	}
	a.stats.Added++
	s := a.stream(o)
	p := s.pair
	ts := a.target(o.Target)
	ts.observations++

	inOrder := !s.started || !o.At.Before(s.last)
	if !inOrder {
		a.stats.OutOfOrder++
	} else {
		s.started, s.last = true, o.At
	}

	if o.Failure != api.FailureNone {
		ts.failures[o.Failure]++
		s.failures++
		p.failures++
		if inOrder {
			s.failSince++
		}
		return
	}

	res := a.resolve(o.Target, o.Identity)
	if res.Site == "" {
		s.unresolved++
		p.unresolved++
		if _, ok := ts.unresolved[res.Server]; ok || len(ts.unresolved) < MaxUnresolved {
			ts.unresolved[res.Server]++
		} else {
			ts.unresolvedOther++
		}
		return
	}
	ts.resolved++
	s.sites = count(s.sites, res.Site, o.At)
	p.sites = count(p.sites, res.Site, o.At)
	if !inOrder {
		return
	}
	a.compare(s, res.Site, o.At, o.Round)
	if s.cur != "" && s.cur != res.Site {
		s.switches++
		a.switches = append(a.switches, Switch{
			VantagePoint: s.key.VantagePoint, Target: s.key.Target, Address: s.key.Address,
			Kind: s.key.Kind, Transport: s.key.Transport, Query: s.key.Query,
			From: s.cur, To: res.Site, At: o.At, LastFrom: s.curLast, Failures: s.failSince,
		})
	}
	s.cur, s.curLast, s.curRound, s.failSince = res.Site, o.At, o.Round, 0
}

// namesSite reports whether results of kind carry an identity string that
// names the serving site (DNS, HTTP identity, sessions); ping and traceroute
// carry latency and paths, which catchment by identity does not use.
func namesSite(k api.Kind) bool {
	return k != api.KindPing && k != api.KindTrace
}

// compare records a disagreement with every other stream of the pair whose
// latest answer, in the same round, named another site. Answers with round
// numbers share a round when the numbers are equal; others when they are
// within Config.Round of each other.
func (a *Accumulator) compare(s *stream, site string, at time.Time, round uint64) {
	p := s.pair
	for _, o := range p.streams {
		if o == s || o.cur == "" || o.cur == site {
			continue
		}
		if round != 0 && o.curRound != 0 {
			if round != o.curRound {
				continue
			}
		} else if d := at.Sub(o.curLast); d > a.cfg.Round || d < -a.cfg.Round {
			continue
		}
		x := Answer{Kind: s.key.Kind, Transport: s.key.Transport, Query: s.key.Query, Site: site}
		y := Answer{Kind: o.key.Kind, Transport: o.key.Transport, Query: o.key.Query, Site: o.cur}
		if compareAnswer(y, x) < 0 {
			x, y = y, x
		}
		k := disagreeKey{pair: p.key, a: x, b: y}
		first := at
		if o.curLast.Before(first) {
			first = o.curLast
		}
		d := a.disagree[k]
		if d == nil {
			d = &Disagreement{VantagePoint: p.key.vp, Target: p.key.target, Address: p.key.addr, A: x, B: y, First: first, Last: at}
			a.disagree[k] = d
		}
		d.Rounds++
		if first.Before(d.First) {
			d.First = first
		}
		if at.After(d.Last) {
			d.Last = at
		}
		p.disagreements++
	}
}

func (a *Accumulator) stream(o analysis.Observation) *stream {
	k := StreamKey{VantagePoint: o.VantagePoint, Target: o.Target, Address: o.Address, Kind: o.Kind, Transport: o.Transport, Query: o.Query}
	if s := a.streams[k]; s != nil {
		return s
	}
	pk := pairKey{vp: o.VantagePoint, target: o.Target, addr: o.Address}
	p := a.pairs[pk]
	if p == nil {
		p = &pair{key: pk}
		a.pairs[pk] = p
	}
	s := &stream{key: k, pair: p}
	p.streams = append(p.streams, s)
	a.streams[k] = s
	return s
}

func (a *Accumulator) target(name string) *targetState {
	ts := a.targets[name]
	if ts == nil {
		ts = &targetState{unresolved: make(map[string]int), failures: make(map[api.Failure]int)}
		a.targets[name] = ts
	}
	return ts
}

func (a *Accumulator) resolve(target, id string) identity.Resolution {
	k := cacheKey{target, id}
	if res, ok := a.cache[k]; ok {
		return res
	}
	r := a.resolvers[target]
	if r == nil {
		r = identity.Default(target)
		a.resolvers[target] = r
	}
	res := r.Resolve(id)
	if len(a.cache) < maxCache {
		a.cache[k] = res
	}
	return res
}

// count adds one observation of site at t.
func count(sites []SiteCount, site string, t time.Time) []SiteCount {
	for i := range sites {
		if sites[i].Site == site {
			sites[i].Observations++
			if t.After(sites[i].Last) {
				sites[i].Last = t
			}
			return sites
		}
	}
	return append(sites, SiteCount{Site: site, Observations: 1, Last: t})
}

// majority returns the sites sorted with the majority first (most
// observations, then seen last, then smaller code), the majority's code,
// the total and the majority's share.
func majority(sites []SiteCount) (sorted []SiteCount, site string, total int, share float64) {
	sorted = slices.Clone(sites)
	slices.SortFunc(sorted, func(x, y SiteCount) int {
		if c := cmp.Compare(y.Observations, x.Observations); c != 0 {
			return c
		}
		if c := y.Last.Compare(x.Last); c != 0 {
			return c
		}
		return cmp.Compare(x.Site, y.Site)
	})
	for _, s := range sorted {
		total += s.Observations
	}
	if total == 0 {
		return sorted, "", 0, 0
	}
	return sorted, sorted[0].Site, total, float64(sorted[0].Observations) / float64(total)
}

func compareAnswer(x, y Answer) int {
	if c := cmp.Compare(x.Kind, y.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Transport, y.Transport); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Query, y.Query); c != 0 {
		return c
	}
	return cmp.Compare(x.Site, y.Site)
}

func comparePair(x, y pairKey) int {
	if c := cmp.Compare(x.target, y.target); c != 0 {
		return c
	}
	if c := cmp.Compare(x.vp, y.vp); c != 0 {
		return c
	}
	return x.addr.Compare(y.addr)
}

// Catchments returns one catchment per (vantage point, target, address) seen,
// sorted by target, vantage point and address.
func (a *Accumulator) Catchments() []Catchment {
	out := make([]Catchment, 0, len(a.pairs))
	for _, p := range a.pairs {
		sorted, site, total, share := majority(p.sites)
		c := Catchment{
			VantagePoint: p.key.vp, Target: p.key.target, Address: p.key.addr,
			Site: site, Observations: total, Confidence: share, Sites: sorted,
			Unresolved: p.unresolved, Failures: p.failures, Disagreements: p.disagreements,
		}
		for _, s := range p.streams {
			_, site, total, share := majority(s.sites)
			c.Streams = append(c.Streams, StreamCatchment{
				Kind: s.key.Kind, Transport: s.key.Transport, Query: s.key.Query,
				Site: site, Observations: total, Confidence: share,
				Unresolved: s.unresolved, Failures: s.failures, Switches: s.switches,
			})
		}
		slices.SortFunc(c.Streams, func(x, y StreamCatchment) int {
			return compareAnswer(Answer{x.Kind, x.Transport, x.Query, ""}, Answer{y.Kind, y.Transport, y.Query, ""})
		})
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y Catchment) int {
		return comparePair(pairKey{x.VantagePoint, x.Target, x.Address}, pairKey{y.VantagePoint, y.Target, y.Address})
	})
	return out
}

// Assignments returns, per (vantage point, target), the majority site across
// the target's addresses, sorted by target and vantage point.
func (a *Accumulator) Assignments() []Assignment {
	type vpKey struct{ vp, target string }
	sums := make(map[vpKey][]SiteCount)
	for _, p := range a.pairs {
		k := vpKey{p.key.vp, p.key.target}
		acc := sums[k]
		for _, s := range p.sites {
			found := false
			for i := range acc {
				if acc[i].Site == s.Site {
					acc[i].Observations += s.Observations
					if s.Last.After(acc[i].Last) {
						acc[i].Last = s.Last
					}
					found = true
					break
				}
			}
			if !found {
				acc = append(acc, s)
			}
		}
		sums[k] = acc
	}
	out := make([]Assignment, 0, len(sums))
	for k, sites := range sums {
		_, site, total, share := majority(sites)
		out = append(out, Assignment{VantagePoint: k.vp, Target: k.target, Site: site, Observations: total, Confidence: share})
	}
	slices.SortFunc(out, func(x, y Assignment) int {
		if c := cmp.Compare(x.Target, y.Target); c != 0 {
			return c
		}
		return cmp.Compare(x.VantagePoint, y.VantagePoint)
	})
	return out
}

// Switches returns every switch, sorted by time, then by stream.
func (a *Accumulator) Switches() []Switch {
	out := slices.Clone(a.switches)
	slices.SortStableFunc(out, func(x, y Switch) int {
		if c := x.At.Compare(y.At); c != 0 {
			return c
		}
		return compareStream(streamOf(x), streamOf(y))
	})
	if out == nil {
		out = []Switch{}
	}
	return out
}

func streamOf(s Switch) StreamKey {
	return StreamKey{s.VantagePoint, s.Target, s.Address, s.Kind, s.Transport, s.Query}
}

func compareStream(x, y StreamKey) int {
	if c := comparePair(pairKey{x.VantagePoint, x.Target, x.Address}, pairKey{y.VantagePoint, y.Target, y.Address}); c != 0 {
		return c
	}
	return compareAnswer(Answer{x.Kind, x.Transport, x.Query, ""}, Answer{y.Kind, y.Transport, y.Query, ""})
}

// Disagreements returns every disagreement, sorted by first time, vantage
// point, address and streams.
func (a *Accumulator) Disagreements() []Disagreement {
	out := make([]Disagreement, 0, len(a.disagree))
	for _, d := range a.disagree {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(x, y Disagreement) int {
		if c := x.First.Compare(y.First); c != 0 {
			return c
		}
		if c := comparePair(pairKey{x.VantagePoint, x.Target, x.Address}, pairKey{y.VantagePoint, y.Target, y.Address}); c != 0 {
			return c
		}
		if c := compareAnswer(x.A, y.A); c != 0 {
			return c
		}
		return compareAnswer(x.B, y.B)
	})
	return out
}

// Targets returns a summary per target seen, sorted by name.
func (a *Accumulator) Targets() []TargetSummary {
	out := make([]TargetSummary, 0, len(a.targets))
	for name, ts := range a.targets {
		sum := TargetSummary{
			Target: name, Observations: ts.observations, Resolved: ts.resolved,
			Unresolved: make([]Unresolved, 0, len(ts.unresolved)), UnresolvedOther: ts.unresolvedOther,
			Failures: make(map[api.Failure]int, len(ts.failures)),
		}
		for id, n := range ts.unresolved {
			sum.Unresolved = append(sum.Unresolved, Unresolved{Target: name, Identity: id, Observations: n})
		}
		slices.SortFunc(sum.Unresolved, func(x, y Unresolved) int {
			if c := cmp.Compare(y.Observations, x.Observations); c != 0 {
				return c
			}
			return cmp.Compare(x.Identity, y.Identity)
		})
		for f, n := range ts.failures {
			sum.Failures[f] = n
		}
		out = append(out, sum)
	}
	slices.SortFunc(out, func(x, y TargetSummary) int { return cmp.Compare(x.Target, y.Target) })
	return out
}

// Stats returns what the Accumulator was fed.
func (a *Accumulator) Stats() Stats { return a.stats }

// Catchments computes the catchments of obs, which may be in any order (they
// are sorted by time first). It is a convenience over Accumulator for
// observations already in memory.
func Catchments(obs []analysis.Observation, resolvers map[string]*identity.Resolver, w Window) []Catchment {
	return feed(obs, resolvers, w).Catchments()
}

// Switches computes the switches in obs, which may be in any order (they are
// sorted by time first).
func Switches(obs []analysis.Observation, resolvers map[string]*identity.Resolver, w Window) []Switch {
	return feed(obs, resolvers, w).Switches()
}

func feed(obs []analysis.Observation, resolvers map[string]*identity.Resolver, w Window) *Accumulator {
	sorted := slices.Clone(obs)
	slices.SortStableFunc(sorted, func(x, y analysis.Observation) int { return x.At.Compare(y.At) })
	a := New(resolvers, Config{Window: w})
	for _, o := range sorted {
		a.Add(o)
	}
	return a
}
