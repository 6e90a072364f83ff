// Package analyzer runs every analysis over one stream of observations, in
// one pass: it resolves each identity once, feeds the catchment accumulator
// (catchments, PoP switches and their causes, CHAOS/NSID disagreements,
// instability) and the incident detector (black holes, outages, broken
// vantage points), and checks every RTT against the location of the site
// that answered (light in fibre covers about 100 km per ms of RTT).
//
// The report, the one-shot `anyscope analyze` and the incremental analyzer
// service all use it, so they always agree.
package analyzer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/catchment"
	"github.com/anyscope/anyscope/analysis/geo"
	"github.com/anyscope/anyscope/analysis/identity"
	"github.com/anyscope/anyscope/analysis/incident"
	"github.com/anyscope/anyscope/analysis/inference"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ErrInvalid is wrapped when a Config or target makes no sense.
var ErrInvalid = errors.New("analyzer: invalid configuration")

// Config tunes an Analyzer.
type Config struct {
	// Window selects the observations that count toward catchments and
	// switches (catchment.Config.Window).
	Window catchment.Window
	// Round is catchment.Config.Round.
	Round time.Duration
	// Incident configures the incident detector.
	Incident incident.Config
}

// Analyzer is not safe for concurrent use.
type Analyzer struct {
	acc       *catchment.Accumulator
	det       *incident.Detector
	resolvers map[string]*identity.Resolver
	cache     map[cacheKey]string
	places    map[cacheKey]place // (target, site) → where it is
	vps       map[string]analysis.VantagePoint
	latency   map[latencyKey]*Latency
	window    catchment.Window
	// For targets that answer no identity: traceroute path ends and RTTs.
	traces *inference.Traces
	rtts   *inference.Latency
}

type cacheKey struct{ target, s string }

type place struct {
	lat, lon float64
	ok       bool
}

type latencyKey struct{ target, vp, site string }

// maxCache bounds the memo of resolved identities.
const maxCache = 1 << 17

// New returns an Analyzer for targets (their rules and declared sites) and
// vantage points (their locations; may be nil).
func New(targets []analysis.Target, vps []analysis.VantagePoint, cfg Config) (*Analyzer, error) {
	resolvers := make(map[string]*identity.Resolver, len(targets))
	places := make(map[cacheKey]place)
	for _, t := range targets {
		r, err := identity.NewResolver(t)
		if err != nil {
			return nil, fmt.Errorf("%w: target %q: %w", ErrInvalid, t.Name, err)
		}
		resolvers[t.Name] = r
		for _, s := range t.Sites {
			if s.HasCoords {
				places[cacheKey{t.Name, strings.ToUpper(strings.TrimSpace(s.Code))}] = place{s.Latitude, s.Longitude, true}
			}
		}
	}
	det, err := incident.New(cfg.Incident)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	a := &Analyzer{
		acc:       catchment.New(resolvers, catchment.Config{Window: cfg.Window, Round: cfg.Round}),
		det:       det,
		resolvers: resolvers,
		cache:     make(map[cacheKey]string),
		places:    places,
		vps:       make(map[string]analysis.VantagePoint, len(vps)),
		latency:   make(map[latencyKey]*Latency),
		window:    cfg.Window,
		traces:    &inference.Traces{},
		rtts:      &inference.Latency{},
	}
	for _, vp := range vps {
		a.vps[vp.Name] = vp
	}
	return a, nil
}

// Add feeds one observation. Observations should arrive in time order (as
// analysis.Source yields them).
func (a *Analyzer) Add(o analysis.Observation) {
	a.acc.Add(o)
	site := ""
	if o.Failure == "" && o.Identity != "" {
		site = a.site(o.Target, o.Identity)
	}
	a.det.Add(o, site)
	if !a.window.Contains(o.At) {
		return
	}
	if site != "" && o.RTT > 0 {
		a.checkLatency(o, site)
	}
	// What stands in for identity where a target gives none: where its
	// traceroutes end, and its RTTs (pings, and answers naming no site).
	if o.Failure != "" {
		return
	}
	switch {
	case o.Kind == api.KindTrace && len(o.PathEnd) > 0:
		a.traces.AddTrace(o.VantagePoint, o.Target, o.Address, o.At, o.PathEnd)
	case o.RTT > 0 && (o.Kind == api.KindPing || site == "" && o.Kind != api.KindTrace):
		if vp, ok := a.vps[o.VantagePoint]; ok && vp.HasCoords {
			a.rtts.AddRTT(vp, o.Target, o.Address, o.RTT)
		}
	}
}

// site resolves an identity to a site code ("" when none), memoised.
func (a *Analyzer) site(target, id string) string {
	k := cacheKey{target, id}
	if s, ok := a.cache[k]; ok {
		return s
	}
	r := a.resolvers[target]
	if r == nil {
		r = identity.Default(target)
		a.resolvers[target] = r
	}
	s := r.Resolve(id).Site
	if len(a.cache) < maxCache {
		a.cache[k] = s
	}
	return s
}

// where locates a target's site: declared coordinates win, then the
// catalog's place for the code.
func (a *Analyzer) where(target, site string) place {
	k := cacheKey{target, site}
	if p, ok := a.places[k]; ok {
		return p
	}
	var p place
	if pl, ok := catalog.Lookup(site); ok {
		p = place{pl.Latitude, pl.Longitude, true}
	} else if i := strings.LastIndexByte(site, '-'); i >= 0 {
		// "FI-HEL": a country-city pair names its city last.
		if pl, ok := catalog.Lookup(site[i+1:]); ok {
			p = place{pl.Latitude, pl.Longitude, true}
		}
	}
	a.places[k] = p
	return p
}

// Latency is how one vantage point's RTTs to a site compare with physics.
type Latency struct {
	Target, VantagePoint, Site string
	// DistanceKm is the great-circle distance from the vantage point to
	// the site; MinPossible the RTT light in fibre needs for it.
	DistanceKm  float64
	MinPossible time.Duration
	// Checked counts observations with an RTT; Impossible those faster
	// than MinPossible: the site that answered cannot be where its name
	// says (a wrong identity rule, a mislabelled server, or a VP whose
	// location is wrong).
	Checked, Impossible int
	MinRTT              time.Duration
}

func (a *Analyzer) checkLatency(o analysis.Observation, site string) {
	vp, ok := a.vps[o.VantagePoint]
	if !ok || !vp.HasCoords {
		return
	}
	k := latencyKey{o.Target, o.VantagePoint, site}
	l := a.latency[k]
	if l == nil {
		p := a.where(o.Target, site)
		if !p.ok {
			a.latency[k] = nil
			return
		}
		v := geo.Plausible(vp.Latitude, vp.Longitude, p.lat, p.lon, 0)
		l = &Latency{Target: o.Target, VantagePoint: o.VantagePoint, Site: site, DistanceKm: v.Distance, MinPossible: v.MinRTT}
		a.latency[k] = l
	}
	l.Checked++
	if o.RTT < l.MinPossible {
		l.Impossible++
	}
	if l.MinRTT == 0 || o.RTT < l.MinRTT {
		l.MinRTT = o.RTT
	}
}

// Findings is everything an analysis found.
type Findings struct {
	Targets       []catchment.TargetSummary
	Catchments    []catchment.Catchment
	Assignments   []catchment.Assignment
	Switches      []catchment.Switch
	Disagreements []catchment.Disagreement
	Instability   []catchment.VantagePointInstability
	Incidents     []analysis.Incident
	// Latency lists, per (target, vantage point, site), the RTT check;
	// only pairs whose site and vantage point are located.
	Latency []Latency
	// Inflation lists vantage points served by a site much farther than
	// the target's nearest site.
	Inflation []Inflation
	// Inferred are the catchments of (vantage point, target, address)
	// pairs no identity resolved, from where their traceroutes end ("via
	// <router>") or, failing that, from RTTs alone (iGreedy: "~<IATA>").
	Inferred []inference.Assignment
	Stats    catchment.Stats
}

// Findings returns what the observations fed so far show.
func (a *Analyzer) Findings() Findings {
	f := Findings{
		Targets: a.acc.Targets(), Catchments: a.acc.Catchments(), Assignments: a.acc.Assignments(),
		Switches: a.acc.Switches(), Disagreements: a.acc.Disagreements(), Instability: a.acc.Instability(),
		Stats: a.acc.Stats(),
	}
	f.Incidents = MergeAddresses(a.det.Incidents())
	if !a.window.Since.IsZero() || !a.window.Until.IsZero() {
		f.Incidents = slices.DeleteFunc(f.Incidents, func(in analysis.Incident) bool {
			end := in.End
			if end.IsZero() {
				end = in.Start
			}
			return (!a.window.Until.IsZero() && !in.Start.Before(a.window.Until)) || (!a.window.Since.IsZero() && end.Before(a.window.Since) && !in.Open())
		})
	}
	for _, l := range a.latency {
		if l != nil {
			f.Latency = append(f.Latency, *l)
		}
	}
	slices.SortFunc(f.Latency, func(x, y Latency) int {
		return cmp.Or(cmp.Compare(x.Target, y.Target), cmp.Compare(x.VantagePoint, y.VantagePoint), cmp.Compare(x.Site, y.Site))
	})
	f.Inflation = a.inflation(f.Assignments)
	f.Inferred = a.inferred(f.Catchments)
	return f
}

// inferred returns the inferred catchments of pairs without a resolved
// site.
func (a *Analyzer) inferred(cs []catchment.Catchment) []inference.Assignment {
	res, err := inference.Infer(a.traces, a.rtts)
	if err != nil {
		return nil // only invalid options fail, and these are the defaults
	}
	type key struct {
		vp, target string
		addr       netip.Addr
	}
	named := make(map[key]bool, len(cs))
	for _, c := range cs {
		if c.Site != "" {
			named[key{c.VantagePoint, c.Target, c.Address}] = true
		}
	}
	var out []inference.Assignment
	for _, x := range res.Assignments {
		if x.Cluster != "" && !named[key{x.VantagePoint, x.Target, x.Address}] {
			out = append(out, x)
		}
	}
	return out
}

// Run reads targets, vantage points (when src knows them) and the
// observations of [cfg.Window.Since, cfg.Window.Until) of target ("" for
// all) from src, and analyses them.
func Run(ctx context.Context, src analysis.Source, target string, cfg Config) (Findings, error) {
	targets, err := src.Targets(ctx)
	if err != nil {
		return Findings{}, fmt.Errorf("read targets: %w", err)
	}
	var vps []analysis.VantagePoint
	if vs, ok := src.(analysis.VantagePointSource); ok {
		if vps, err = vs.VantagePoints(ctx); err != nil {
			return Findings{}, fmt.Errorf("read vantage points: %w", err)
		}
	}
	a, err := New(targets, vps, cfg)
	if err != nil {
		return Findings{}, err
	}
	n := 0
	err = src.Observations(ctx, cfg.Window.Since, cfg.Window.Until, target, func(o analysis.Observation) error {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if target != "" && o.Target != target {
			return nil
		}
		a.Add(o)
		return nil
	})
	if err != nil {
		return Findings{}, fmt.Errorf("read observations: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Findings{}, err
	}
	return a.Findings(), nil
}

// Inflation is a vantage point of Target served from much farther away than
// the target's nearest site.
type Inflation struct {
	Target string
	geo.Inflation
}

// inflation compares each located vantage point's site with the nearest
// site of its target. A target's sites are those it declares plus every
// site seen serving it that the catalog locates.
func (a *Analyzer) inflation(as []catchment.Assignment) []Inflation {
	byTarget := map[string][]geo.Serving{}
	for _, x := range as {
		vp, ok := a.vps[x.VantagePoint]
		if x.Site == "" || !ok || !vp.HasCoords {
			continue
		}
		byTarget[x.Target] = append(byTarget[x.Target], geo.Serving{VantagePoint: vp, Site: x.Site})
	}
	var out []Inflation
	for target, serving := range byTarget {
		t := analysis.Target{Name: target}
		seen := map[string]bool{}
		for _, s := range serving {
			if seen[s.Site] {
				continue
			}
			seen[s.Site] = true
			if p := a.where(target, s.Site); p.ok {
				t.Sites = append(t.Sites, analysis.Site{Code: s.Site, Latitude: p.lat, Longitude: p.lon, HasCoords: true})
			}
		}
		rep, err := geo.PathInflation(t, serving, geo.InflationOptions{})
		if err != nil {
			continue // only invalid options fail, and these are the defaults
		}
		for _, f := range rep.Findings {
			out = append(out, Inflation{Target: target, Inflation: f})
		}
	}
	slices.SortFunc(out, func(x, y Inflation) int {
		return cmp.Or(cmp.Compare(x.Target, y.Target), cmp.Compare(y.Excess, x.Excess), cmp.Compare(x.VantagePoint, y.VantagePoint))
	})
	return out
}

// Switches returns the switches seen so far, with their causes.
func (a *Analyzer) Switches() []catchment.Switch { return a.acc.Switches() }

// Incidents returns the incidents seen so far, open ones with a zero End.
func (a *Analyzer) Incidents() []analysis.Incident { return MergeAddresses(a.det.Incidents()) }

// MergeAddresses merges the incidents of one target that differ only by
// address — same kind, site and vantage points, overlapping in time — into
// one incident over all its addresses (Address zero): a site black-holed
// for IPv4 and IPv6 alike is one incident, not two. Incidents that differ
// in anything else stay apart.
func MergeAddresses(in []analysis.Incident) []analysis.Incident {
	out := make([]analysis.Incident, 0, len(in))
	for _, x := range in {
		merged := false
		for i := range out {
			y := &out[i]
			if y.Kind != x.Kind || y.Target != x.Target || y.Site != x.Site || !slices.Equal(y.VantagePoints, x.VantagePoints) ||
				!x.Address.IsValid() || (y.Address.IsValid() && y.Address == x.Address) || !overlap(*y, x) {
				continue
			}
			y.Address = netip.Addr{}
			if x.Start.Before(y.Start) {
				y.Start = x.Start
			}
			if y.Open() || x.Open() {
				y.End = time.Time{}
			} else if x.End.After(y.End) {
				y.End = x.End
			}
			y.Evidence = mergeEvidence(y.Evidence, x.Evidence)
			merged = true
			break
		}
		if !merged {
			x.Evidence.Failed = maps.Clone(x.Evidence.Failed)
			out = append(out, x)
		}
	}
	return out
}

func overlap(x, y analysis.Incident) bool {
	endX, endY := x.End, y.End
	return (x.Open() || !endX.Before(y.Start)) && (y.Open() || !endY.Before(x.Start))
}

func mergeEvidence(x, y analysis.Evidence) analysis.Evidence {
	if x.Failed == nil && len(y.Failed) > 0 {
		x.Failed = map[string]int{}
	}
	for k, n := range y.Failed {
		x.Failed[k] += n
	}
	x.Healthy = max(x.Healthy, y.Healthy)
	x.CatchmentSize = max(x.CatchmentSize, y.CatchmentSize)
	for _, p := range y.PathEnds {
		if !slices.Contains(x.PathEnds, p) && len(x.PathEnds) < incident.MaxPathEnds {
			x.PathEnds = append(x.PathEnds, p)
		}
	}
	return x
}

// Resolvers returns the identity resolvers of the targets, by name (shared:
// do not modify).
func (a *Analyzer) Resolvers() map[string]*identity.Resolver { return a.resolvers }
