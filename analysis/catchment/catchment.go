// Package catchment finds which anycast site serves each vantage point (its
// catchment) and when a vantage point moves to another site (a switch: a
// change of site, never merely of server), in one streaming pass.
//
// Each switch is given a cause once everything has been seen, because what
// happens after a switch tells why it happened: a site whose whole catchment
// leaves together and which is then seen no more was withdrawn; a vantage
// point that keeps alternating between a few sites while its long-lived
// connections survive sits behind a per-flow load balancer; one that moves
// alone and stays saw a routing change. Switches during which a long-lived
// TCP connection of the same vantage point broke are marked: those are the
// flips users feel. Per vantage point, Instability counts flips per day.
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

// DefaultWithdrawalSpan is the shortest span within which a site's
// catchment must move to count as withdrawn (and the span when a family's
// probe interval is unknown): three probe intervals are usually longer, and
// BGP usually reconverges within them. It is short so that a site withdrawn
// for half a minute, then restored, is read as such in a lab or with agents
// probing every few seconds; with RIPE Atlas's 240 s the span is 12 minutes.
const DefaultWithdrawalSpan = 15 * time.Second

// Bounds on what an Accumulator remembers beyond its streams.
const (
	// MaxUnresolved is the number of distinct unresolved identities kept per
	// target; observations of further identities are only counted.
	MaxUnresolved = 1000
	// maxCache bounds the memo of resolved identities.
	maxCache = 1 << 16
	// maxRecent is how many broken sessions and how many switches each
	// (vantage point, target, address) remembers for TCPBroke marking.
	maxRecent = 64
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
	// WithdrawalSpan is how close in time the vantage points of a site must
	// leave it to count as one withdrawal, and how long the site must then
	// stay unseen (see Switch.Cause). Zero means three typical probe
	// intervals of the stream family, at least DefaultWithdrawalSpan.
	WithdrawalSpan time.Duration
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
	// Cause is why the vantage point moved, decided over everything the
	// Accumulator saw (see Accumulator.Switches for the rules).
	Cause analysis.Cause
	// TCPBroke is true when a long-lived connection (session, any query)
	// of the same vantage point to the same address broke (reset, timeout,
	// identity changed: analysis.Session.Broke) around the switch: it was
	// open at At, or ended within two of the stream's probe intervals of
	// At. Each (vantage point, target, address) remembers its latest 64
	// broken sessions and 64 switches for this, so sessions and switches
	// may arrive in either order.
	TCPBroke bool
	// FromCatchment counts the vantage points of the stream family (same
	// target, address, kind, transport and query) that were at From just
	// before the switch, this one included.
	FromCatchment int
	// Moved counts the vantage points of the family, this one included,
	// that left From within the withdrawal span of At.
	Moved int
	// Evidence explains the cause in one sentence.
	Evidence string
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
	list     []*stream // streams in creation order
	pairs    map[pairKey]*pair
	targets  map[string]*targetState
	switches []switchRec
	disagree map[disagreeKey]*Disagreement
	stats    Stats

	// classifiedAt is stats.Added when causes were last decided, -1 never.
	classifiedAt int
}

// switchRec is a switch with what the cause pass needs to know of it.
type switchRec struct {
	Switch
	stream *stream
	round  uint64 // probe round of the observation at To, 0 when unknown
	// interval is the stream's mean probe interval when it switched.
	interval time.Duration
	// stay counts resolved observations at To after At, until the
	// stream's next switch; followed is true once there is one.
	stay     int
	followed bool
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

	idx      int       // creation order
	first    time.Time // first observation
	inOrder  int       // observations in time order (first included)
	firstRes time.Time // first in-order resolved observation
	lastSw   int       // 1 + index of its latest switch, 0 when none
}

// interval is the stream's mean time between observations so far; 0 with
// fewer than two.
func (s *stream) interval() time.Duration {
	if s.inOrder < 2 {
		return 0
	}
	return s.last.Sub(s.first) / time.Duration(s.inOrder-1)
}

type pair struct {
	key           pairKey
	sites         []SiteCount
	streams       []*stream
	unresolved    int
	failures      int
	disagreements int

	// sessions counts established long-lived connections, broken those
	// that broke (analysis.Session.Broke).
	sessions, broken int
	// lives holds the latest broken sessions, recent the indexes of the
	// latest switches (rings of at most maxRecent, allocated on first use).
	lives      []life
	livesNext  int
	recent     []int
	recentNext int
}

// life is when one broken session was open, in Unix nanoseconds.
type life struct{ opened, closed int64 }

// covers reports whether a session that lived l broke at a switch at t: it
// was open at t, or ended within two probe intervals of t.
func (l life) covers(t time.Time, interval time.Duration) bool {
	n := t.UnixNano()
	if l.opened <= n && n <= l.closed {
		return true
	}
	d := l.closed - n
	if d < 0 {
		d = -d
	}
	return d <= 2*int64(interval)
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

		classifiedAt: -1,
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
		if !s.started {
			s.first = o.At
		}
		s.started, s.last = true, o.At
		s.inOrder++
	}
	if o.Kind == api.KindSession && o.Session != nil {
		a.session(p, o.At, o.Session)
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
	switch {
	case s.cur == "":
		s.firstRes = o.At
	case s.cur != res.Site:
		a.addSwitch(s, res.Site, o.At, o.Round)
	case s.lastSw > 0:
		a.switches[s.lastSw-1].stay++
	}
	s.cur, s.curLast, s.curRound, s.failSince = res.Site, o.At, o.Round, 0
}

// addSwitch records that s moved to site to at time at, and marks it
// TCPBroke when a remembered broken session of its pair covers it.
func (a *Accumulator) addSwitch(s *stream, to string, at time.Time, round uint64) {
	s.switches++
	if s.lastSw > 0 {
		a.switches[s.lastSw-1].followed = true
	}
	rec := switchRec{
		Switch: Switch{
			VantagePoint: s.key.VantagePoint, Target: s.key.Target, Address: s.key.Address,
			Kind: s.key.Kind, Transport: s.key.Transport, Query: s.key.Query,
			From: s.cur, To: to, At: at, LastFrom: s.curLast, Failures: s.failSince,
		},
		stream: s, round: round, interval: s.interval(),
	}
	p := s.pair
	for _, l := range p.lives {
		if l.covers(at, rec.interval) {
			rec.TCPBroke = true
			break
		}
	}
	a.switches = append(a.switches, rec)
	s.lastSw = len(a.switches)
	if len(p.recent) < maxRecent {
		p.recent = append(p.recent, len(a.switches)-1)
	} else {
		p.recent[p.recentNext] = len(a.switches) - 1
		p.recentNext = (p.recentNext + 1) % maxRecent
	}
}

// session counts one long-lived connection of pair p opened at opened and,
// when it broke, marks the pair's remembered switches it covers and
// remembers it for switches still to come.
func (a *Accumulator) session(p *pair, opened time.Time, ss *analysis.Session) {
	if ss.End == "" || ss.End == api.EndConnectFailed {
		return // never established: neither a flow that stayed nor one that broke
	}
	p.sessions++
	if !ss.Broke() {
		return
	}
	p.broken++
	l := life{opened: opened.UnixNano(), closed: opened.UnixNano()}
	if ss.ClosedAt.After(opened) {
		l.closed = ss.ClosedAt.UnixNano()
	}
	for _, i := range p.recent {
		if sw := &a.switches[i]; l.covers(sw.At, sw.interval) {
			sw.TCPBroke = true
		}
	}
	if len(p.lives) < maxRecent {
		p.lives = append(p.lives, l)
	} else {
		p.lives[p.livesNext] = l
		p.livesNext = (p.livesNext + 1) % maxRecent
	}
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
	s := &stream{key: k, pair: p, idx: len(a.list)}
	p.streams = append(p.streams, s)
	a.streams[k] = s
	a.list = append(a.list, s)
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
		out = append(out, p.catchment())
	}
	slices.SortFunc(out, func(x, y Catchment) int {
		return comparePair(pairKey{x.VantagePoint, x.Target, x.Address}, pairKey{y.VantagePoint, y.Target, y.Address})
	})
	return out
}

// Catchment returns the catchment of one vantage point at one address of a
// target, if it was seen: what Catchments holds for it, without building
// the others.
func (a *Accumulator) Catchment(vantagePoint, target string, addr netip.Addr) (Catchment, bool) {
	p := a.pairs[pairKey{vantagePoint, target, addr}]
	if p == nil {
		return Catchment{}, false
	}
	return p.catchment(), true
}

// EachStream calls fn with the catchment of each stream of one vantage point
// at one address of a target (what Catchment's Streams holds, in no
// particular order, without building the rest); it reports whether the pair
// was seen. It allocates nothing: it is what an incremental analysis asks
// of every pair that changed.
func (a *Accumulator) EachStream(vantagePoint, target string, addr netip.Addr, fn func(StreamCatchment)) bool {
	p := a.pairs[pairKey{vantagePoint, target, addr}]
	if p == nil {
		return false
	}
	for _, s := range p.streams {
		best, total := -1, 0
		for i := range s.sites {
			total += s.sites[i].Observations
			if best < 0 || before(s.sites[i], s.sites[best]) {
				best = i
			}
		}
		sc := StreamCatchment{
			Kind: s.key.Kind, Transport: s.key.Transport, Query: s.key.Query,
			Unresolved: s.unresolved, Failures: s.failures, Switches: s.switches,
		}
		if best >= 0 && total > 0 {
			sc.Site, sc.Observations = s.sites[best].Site, total
			sc.Confidence = float64(s.sites[best].Observations) / float64(total)
		}
		fn(sc)
	}
	return true
}

// before is majority's order: most observations, then seen last, then the
// smaller code.
func before(x, y SiteCount) bool {
	if x.Observations != y.Observations {
		return x.Observations > y.Observations
	}
	if c := x.Last.Compare(y.Last); c != 0 {
		return c > 0
	}
	return x.Site < y.Site
}

func (p *pair) catchment() Catchment {
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
	return c
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

// Switches returns every switch, sorted by time, then by stream, each with
// its cause, decided over everything added so far (a later call after more
// Adds decides again). Vantage points are compared within a stream family:
// the streams of one target, address, kind, transport and query. The span
// is Config.WithdrawalSpan, or three times the family's median probe
// interval, at least DefaultWithdrawalSpan. A vantage point is at a site
// from its first answer there to its last before it moves; one that stops
// answering counts there for one more span; one that comes back within a
// span never left. The rules, in precedence order:
//
//   - analysis.CauseWithdrawal, the site went away: of the vantage points
//     at From just before the switch (FromCatchment), at least 80% and at
//     least two (Moved) left From within one span of At either way, and
//     none was at From in the span after the last of them left (or up to
//     the family's last observation, when sooner). A site with a single
//     vantage point cannot show co-movement: its switch is a withdrawal
//     when nobody is at From again up to the family's last observation,
//     at least one span after the switch (else it is judged below). And
//     the site coming back: at least two vantage points, and at least 80%
//     of those there when it was last seen, arrive at To within one span
//     of each other after nobody had been at To for at least a span.
//   - analysis.CauseLoadBalancing, per-flow balancing: over the whole
//     window the stream returned at least twice to a site it had already
//     been at, among at most four sites, and fewer than half of the
//     vantage point's established sessions to the address broke (without
//     sessions, alternation alone decides; Evidence says so).
//   - analysis.CauseRouting: the vantage point stayed at To for at least
//     two more resolved observations, or for one when the stream does not
//     switch again, and the withdrawal test failed (the rest of From's
//     catchment did not leave with it, or From was still seen).
//   - analysis.CauseUnknown: anything else, for example a switch on the
//     stream's last observation, or an alternating vantage point whose
//     sessions broke (per-packet balancing or flapping routes, said in
//     Evidence).
func (a *Accumulator) Switches() []Switch {
	a.classify()
	out := make([]Switch, len(a.switches))
	for i := range a.switches {
		out[i] = a.switches[i].Switch
	}
	slices.SortStableFunc(out, func(x, y Switch) int {
		if c := x.At.Compare(y.At); c != 0 {
			return c
		}
		return compareStream(streamOf(x), streamOf(y))
	})
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
