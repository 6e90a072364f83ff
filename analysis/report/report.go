// Package report builds and renders the catchment report of anycast targets:
// each site's share of vantage points, each vantage point's site, PoP
// switches, incidents, how fast each site answers, unresolved identities and
// failures, the results vantage points lost before upload, and, compared
// with an earlier window, what changed.
//
// Build reads one window of observations in a single streaming pass and
// keeps only bounded state; Compare relates two reports. The renderers are
// WriteJSON (the stable contract for programs), WriteMarkdown, WriteHTML (one
// self-contained page with the catchment map, no script, a content security
// policy) and WriteCSV (the catchment table for spreadsheets). Every string
// measured from the network (identities, vantage point names, site codes from
// rules) is untrusted text and each renderer escapes it for its format.
package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/analyzer"
	"github.com/anyscope/anyscope/analysis/catchment"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Errors callers branch on.
var (
	// ErrInvalid is wrapped when Options make no sense.
	ErrInvalid = errors.New("invalid report options")
	// ErrUnknownTarget is wrapped when Options.Target names no target.
	ErrUnknownTarget = errors.New("unknown target")
)

// DefaultSpan is the length of the window when Options.Since is zero.
const DefaultSpan = 24 * time.Hour

// Options select what a report covers.
type Options struct {
	// Since and Until bound the window [Since, Until). A zero Until is now;
	// a zero Since is DefaultSpan before Until.
	Since, Until time.Time
	// Target restricts the report to one target; "" reports all.
	Target string
	// Round is how close answers of different streams must be to be
	// compared (catchment.Config.Round); zero is catchment.DefaultRound.
	Round time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Report is the catchment report. Field names are a stable contract.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
	Targets     []Target  `json:"targets"`
	// Gaps lists the results vantage points measured in the window and
	// lost before they reached the collector (when the source knows):
	// missing data, never failures, so no incident comes from them. They
	// are not per target: an agent loses results of every target it
	// measures alike.
	Gaps []Gap `json:"gaps"`
}

// Gap is a run of results one vantage point lost before upload.
type Gap struct {
	VantagePoint string `json:"vantage_point"`
	// FirstSeq and LastSeq bound the run of the agent's sequence numbers;
	// Results of them were lost.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Results  uint64 `json:"results"`
	// LostFrom and LostTo bound when the lost results were measured; null
	// when unknown.
	LostFrom *time.Time `json:"lost_from"`
	LostTo   *time.Time `json:"lost_to"`
	// Reason is spool_full (the agent's spool reached its size limit and
	// dropped its oldest results), segment_lost (a spool file was missing
	// or unreadable) or record_corrupt (a spooled result no longer read
	// back).
	Reason api.GapReason `json:"reason"`
}

// Target is the report for one anycast target.
type Target struct {
	Name string `json:"name"`
	// Observations counts every observation in the window.
	Observations int `json:"observations"`
	// VantagePoints counts vantage points with a resolved observation: the
	// denominator of every site's share.
	VantagePoints int          `json:"vantage_points"`
	Sites         []Site       `json:"sites"`
	Catchment     []Catchment  `json:"catchment"`
	Switches      []Switch     `json:"switches"`
	Unresolved    []Unresolved `json:"unresolved"`
	// UnresolvedOther counts observations of identities beyond the
	// catchment.MaxUnresolved kept.
	UnresolvedOther int            `json:"unresolved_other,omitempty"`
	Failures        map[string]int `json:"failures"`
	Disagreements   []Disagreement `json:"disagreements"`
	// Incidents: black holes, outages and broken vantage points that
	// overlap the window (end null while open).
	Incidents []Incident `json:"incidents"`
	// Instability lists the vantage points that switched, with their
	// flips per day.
	Instability []Instability `json:"instability"`
	// ImpossibleRTTs lists (vantage point, site) pairs with answers faster
	// than light in fibre allows from the site's location.
	ImpossibleRTTs []Latency `json:"impossible_rtts"`
	// Inflation lists vantage points served by a site much farther than
	// the target's nearest site.
	Inflation []Inflation `json:"inflation"`
	// Assignments lists each vantage point under the site it counts for in
	// Sites (its majority site across the target's addresses), with its
	// location when known.
	Assignments []Assignment `json:"assignments"`
	// SiteLatency is how fast each site answered, from the RTTs of the
	// answers that named it.
	SiteLatency []SiteLatency `json:"site_latency"`
	// SiteLatencyOther counts answers with an RTT at sites beyond the
	// maxLatencySites kept.
	SiteLatencyOther int `json:"site_latency_other,omitempty"`
	// Changes is set by Compare: what differs from an earlier window.
	Changes *Changes `json:"changes,omitempty"`
}

// Assignment is the site one vantage point counts under.
type Assignment struct {
	VantagePoint string `json:"vantage_point"`
	// Site is "" when none of its observations resolved.
	Site         string  `json:"site"`
	Observations int     `json:"observations"`
	Confidence   float64 `json:"confidence"`
	// Latitude and Longitude are where the vantage point is, when known.
	Latitude  *float64 `json:"latitude,omitempty"`
	Longitude *float64 `json:"longitude,omitempty"`
}

// SiteLatency summarises the RTTs of the answers that named one site, over
// every vantage point. The median is the lower median, to 0.1 ms below
// 100 ms, 1 ms below 1 s and 10 ms beyond (see rttHistogram).
type SiteLatency struct {
	Site string `json:"site"`
	// Observations counts the answers with an RTT.
	Observations int     `json:"observations"`
	MedianRTTMs  float64 `json:"median_rtt_ms"`
	MinRTTMs     float64 `json:"min_rtt_ms"`
}

// Incident is a period during which something failed.
type Incident struct {
	Kind          analysis.IncidentKind `json:"kind"`
	Site          string                `json:"site"`
	Address       *netip.Addr           `json:"address,omitempty"`
	Start         time.Time             `json:"start"`
	End           *time.Time            `json:"end"`
	VantagePoints []string              `json:"vantage_points"`
	Evidence      analysis.Evidence     `json:"evidence"`
}

// Instability is how often one vantage point changed site.
type Instability struct {
	VantagePoint string   `json:"vantage_point"`
	Switches     int      `json:"switches"`
	FlipsPerDay  float64  `json:"flips_per_day"`
	Sites        []string `json:"sites"`
}

// Latency is an RTT check that failed: the site cannot be where it is
// said to be, or the vantage point is not where it says.
type Latency struct {
	VantagePoint  string  `json:"vantage_point"`
	Site          string  `json:"site"`
	DistanceKm    float64 `json:"distance_km"`
	MinPossibleMs float64 `json:"min_possible_ms"`
	MinRTTMs      float64 `json:"min_rtt_ms"`
	Impossible    int     `json:"impossible"`
	Checked       int     `json:"checked"`
}

// Inflation is a vantage point served from too far away.
type Inflation struct {
	VantagePoint      string  `json:"vantage_point"`
	Site              string  `json:"site"`
	Nearest           string  `json:"nearest"`
	DistanceKm        float64 `json:"distance_km"`
	NearestDistanceKm float64 `json:"nearest_distance_km"`
	Factor            float64 `json:"factor"`
}

// Site is a site of a target and the vantage points it serves. Each
// vantage point counts once, under its majority site across the target's
// addresses. Sites the operator declared appear even when they serve none.
type Site struct {
	Site          string   `json:"site"`
	Name          string   `json:"name,omitempty"`
	Declared      bool     `json:"declared,omitempty"`
	Latitude      *float64 `json:"latitude,omitempty"`
	Longitude     *float64 `json:"longitude,omitempty"`
	VantagePoints int      `json:"vantage_points"`
	// Share is VantagePoints over the target's VantagePoints (0..1).
	Share float64 `json:"share"`
}

// Catchment is the site that served one vantage point at one address.
type Catchment struct {
	VantagePoint string     `json:"vantage_point"`
	Address      netip.Addr `json:"address"`
	// Site is the majority site, "" when no observation resolved.
	Site         string  `json:"site"`
	Observations int     `json:"observations"`
	Confidence   float64 `json:"confidence"`
	// Sites lists every site seen when there was more than one.
	Sites         []SiteCount `json:"sites,omitempty"`
	Transports    []Stream    `json:"transports,omitempty"`
	Unresolved    int         `json:"unresolved,omitempty"`
	Failures      int         `json:"failures,omitempty"`
	Disagreements int         `json:"disagreements,omitempty"`
	// Method is empty when identities named the site, else how the site
	// (then a cluster label) was inferred: "traceroute" ("via <router>")
	// or "latency" ("~<IATA>").
	Method string `json:"method,omitempty"`
}

// SiteCount is how many observations named a site.
type SiteCount struct {
	Site         string `json:"site"`
	Observations int    `json:"observations"`
}

// Stream is a catchment seen by one kind of question over one transport.
type Stream struct {
	Kind         api.Kind      `json:"kind"`
	Transport    api.Transport `json:"transport"`
	Query        string        `json:"query"`
	Site         string        `json:"site"`
	Observations int           `json:"observations"`
	Confidence   float64       `json:"confidence"`
	Unresolved   int           `json:"unresolved,omitempty"`
	Failures     int           `json:"failures,omitempty"`
	Switches     int           `json:"switches,omitempty"`
}

// Switch is a PoP switch of one stream.
type Switch struct {
	VantagePoint string        `json:"vantage_point"`
	Address      netip.Addr    `json:"address"`
	Kind         api.Kind      `json:"kind"`
	Transport    api.Transport `json:"transport"`
	Query        string        `json:"query"`
	From         string        `json:"from"`
	To           string        `json:"to"`
	// At is the first observation at To; LastFrom the last at From.
	At       time.Time `json:"at"`
	LastFrom time.Time `json:"last_from"`
	// FailuresBetween counts failed observations between the two.
	FailuresBetween int `json:"failures_between,omitempty"`
	// Cause is withdrawal, routing, load_balancing or unknown; Evidence
	// says why in one sentence.
	Cause    analysis.Cause `json:"cause"`
	Evidence string         `json:"evidence,omitempty"`
	// TCPBroke: a long-lived TCP session of this vantage point broke at
	// the switch.
	TCPBroke bool `json:"tcp_broke,omitempty"`
}

// Unresolved is an identity no rule explained.
type Unresolved struct {
	Identity     string `json:"identity"`
	Observations int    `json:"observations"`
}

// Answer is one side of a disagreement.
type Answer struct {
	Kind      api.Kind      `json:"kind"`
	Transport api.Transport `json:"transport"`
	Query     string        `json:"query"`
	Site      string        `json:"site"`
}

// Disagreement: two streams of one vantage point and address named
// different sites in the same round, Rounds times between First and Last.
type Disagreement struct {
	VantagePoint string     `json:"vantage_point"`
	Address      netip.Addr `json:"address"`
	A            Answer     `json:"a"`
	B            Answer     `json:"b"`
	Rounds       int        `json:"rounds"`
	First        time.Time  `json:"first"`
	Last         time.Time  `json:"last"`
}

// checkEvery is how many observations pass between two looks at ctx.
const checkEvery = 4096

// Build reads targets and observations from src and builds the report. It
// holds one state per stream, never the observations themselves.
func Build(ctx context.Context, src analysis.Source, opts Options) (*Report, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	generated := now().UTC()
	until, since := opts.Until.UTC(), opts.Since.UTC()
	if opts.Until.IsZero() {
		until = generated
	}
	if opts.Since.IsZero() {
		since = until.Add(-DefaultSpan)
	}
	if !since.Before(until) {
		return nil, fmt.Errorf("%w: since %s is not before until %s", ErrInvalid, since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	if opts.Round < 0 {
		return nil, fmt.Errorf("%w: negative round %s", ErrInvalid, opts.Round)
	}

	all, err := src.Targets(ctx)
	if err != nil {
		return nil, fmt.Errorf("read targets: %w", err)
	}
	declared := make(map[string]analysis.Target)
	var chosen []analysis.Target
	for _, t := range all {
		if opts.Target != "" && t.Name != opts.Target {
			continue
		}
		declared[t.Name] = t
		chosen = append(chosen, t)
	}
	if opts.Target != "" && len(declared) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTarget, opts.Target)
	}
	var vps []analysis.VantagePoint
	if vs, ok := src.(analysis.VantagePointSource); ok {
		if vps, err = vs.VantagePoints(ctx); err != nil {
			return nil, fmt.Errorf("read vantage points: %w", err)
		}
	}
	an, err := analyzer.New(chosen, vps, analyzer.Config{Window: catchment.Window{Since: since, Until: until}, Round: opts.Round})
	if err != nil {
		return nil, err
	}
	lat := newSiteRTTs(an.Resolvers())
	n := 0
	err = src.Observations(ctx, since, until, opts.Target, func(o analysis.Observation) error {
		if n++; n%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if opts.Target != "" && o.Target != opts.Target {
			return nil
		}
		an.Add(o)
		lat.add(o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read observations: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	located := make(map[string]analysis.VantagePoint, len(vps))
	for _, vp := range vps {
		if vp.HasCoords {
			located[vp.Name] = vp
		}
	}
	r := assemble(an.Findings(), declared, located, generated, since, until)
	for i := range r.Targets {
		t := &r.Targets[i]
		t.SiteLatency, t.SiteLatencyOther = lat.summary(t.Name)
	}
	if gs, ok := src.(analysis.GapSource); ok {
		lost, err := gs.Gaps(ctx, since, until)
		if err != nil {
			return nil, fmt.Errorf("read gaps: %w", err)
		}
		for _, g := range lost {
			r.Gaps = append(r.Gaps, reportGap(g))
		}
	}
	return r, nil
}

func reportGap(g analysis.Gap) Gap {
	out := Gap{VantagePoint: g.VantagePoint, FirstSeq: g.FirstSeq, LastSeq: g.LastSeq, Results: g.Count, Reason: g.Reason}
	if !g.LostFrom.IsZero() {
		t := g.LostFrom.UTC()
		out.LostFrom = &t
	}
	if !g.LostTo.IsZero() {
		t := g.LostTo.UTC()
		out.LostTo = &t
	}
	return out
}

// assemble groups the accumulator's results by target.
func assemble(f analyzer.Findings, declared map[string]analysis.Target, located map[string]analysis.VantagePoint, generated, since, until time.Time) *Report {
	targets := make(map[string]*Target)
	get := func(name string) *Target {
		t := targets[name]
		if t == nil {
			t = &Target{
				Name: name, Sites: []Site{}, Catchment: []Catchment{}, Switches: []Switch{},
				Unresolved: []Unresolved{}, Failures: map[string]int{}, Disagreements: []Disagreement{},
				Incidents: []Incident{}, Instability: []Instability{}, ImpossibleRTTs: []Latency{}, Inflation: []Inflation{},
				Assignments: []Assignment{}, SiteLatency: []SiteLatency{},
			}
			targets[name] = t
		}
		return t
	}
	for name := range declared {
		get(name)
	}
	for _, s := range f.Targets {
		t := get(s.Target)
		t.Observations = s.Observations
		t.UnresolvedOther = s.UnresolvedOther
		for _, u := range s.Unresolved {
			t.Unresolved = append(t.Unresolved, Unresolved{Identity: u.Identity, Observations: u.Observations})
		}
		for f, n := range s.Failures {
			t.Failures[string(f)] = n
		}
	}
	for _, c := range f.Catchments {
		t := get(c.Target)
		rc := Catchment{
			VantagePoint: c.VantagePoint, Address: c.Address, Site: c.Site,
			Observations: c.Observations, Confidence: round(c.Confidence),
			Unresolved: c.Unresolved, Failures: c.Failures, Disagreements: c.Disagreements,
		}
		if len(c.Sites) > 1 {
			for _, s := range c.Sites {
				rc.Sites = append(rc.Sites, SiteCount{Site: s.Site, Observations: s.Observations})
			}
		}
		for _, s := range c.Streams {
			rc.Transports = append(rc.Transports, Stream{
				Kind: s.Kind, Transport: s.Transport, Query: s.Query, Site: s.Site,
				Observations: s.Observations, Confidence: round(s.Confidence),
				Unresolved: s.Unresolved, Failures: s.Failures, Switches: s.Switches,
			})
		}
		t.Catchment = append(t.Catchment, rc)
	}
	for _, x := range f.Inferred {
		t := get(x.Target)
		rc := Catchment{VantagePoint: x.VantagePoint, Address: x.Address, Site: x.Cluster, Observations: x.Observations,
			Confidence: round(x.Confidence), Method: string(x.Method)}
		if i := slices.IndexFunc(t.Catchment, func(c Catchment) bool { return c.VantagePoint == x.VantagePoint && c.Address == x.Address }); i >= 0 {
			rc.Failures, rc.Unresolved = t.Catchment[i].Failures, t.Catchment[i].Unresolved
			t.Catchment[i] = rc
		} else {
			t.Catchment = append(t.Catchment, rc)
		}
	}
	for _, t := range targets {
		slices.SortFunc(t.Catchment, func(x, y Catchment) int {
			return cmp.Or(cmp.Compare(x.VantagePoint, y.VantagePoint), x.Address.Compare(y.Address))
		})
	}
	for _, s := range f.Switches {
		t := get(s.Target)
		t.Switches = append(t.Switches, Switch{
			VantagePoint: s.VantagePoint, Address: s.Address, Kind: s.Kind, Transport: s.Transport, Query: s.Query,
			From: s.From, To: s.To, At: s.At.UTC(), LastFrom: s.LastFrom.UTC(), FailuresBetween: s.Failures,
			Cause: s.Cause, Evidence: s.Evidence, TCPBroke: s.TCPBroke,
		})
	}
	// A vantage-point incident spans targets: it is listed under each
	// target the vantage point measured.
	measured := map[string][]string{} // vantage point → targets
	for _, c := range f.Catchments {
		if ts := measured[c.VantagePoint]; !slices.Contains(ts, c.Target) {
			measured[c.VantagePoint] = append(ts, c.Target)
		}
	}
	for _, in := range f.Incidents {
		ri := Incident{Kind: in.Kind, Site: in.Site, Start: in.Start.UTC(), VantagePoints: slices.Clone(in.VantagePoints), Evidence: in.Evidence}
		if ri.VantagePoints == nil {
			ri.VantagePoints = []string{}
		}
		if in.Address.IsValid() {
			a := in.Address
			ri.Address = &a
		}
		if !in.End.IsZero() {
			e := in.End.UTC()
			ri.End = &e
		}
		names := []string{in.Target}
		if in.Target == "" {
			names = nil
			for _, vp := range in.VantagePoints {
				for _, t := range measured[vp] {
					if !slices.Contains(names, t) {
						names = append(names, t)
					}
				}
			}
		}
		for _, name := range names {
			if _, ok := declared[name]; !ok && len(declared) > 0 && in.Target == "" {
				continue
			}
			t := get(name)
			t.Incidents = append(t.Incidents, ri)
		}
	}
	for _, x := range f.Instability {
		if x.Switches == 0 {
			continue
		}
		t := get(x.Target)
		t.Instability = append(t.Instability, Instability{VantagePoint: x.VantagePoint, Switches: x.Switches, FlipsPerDay: round(x.FlipsPerDay), Sites: x.Sites})
	}
	for _, l := range f.Latency {
		if l.Impossible == 0 {
			continue
		}
		t := get(l.Target)
		t.ImpossibleRTTs = append(t.ImpossibleRTTs, Latency{
			VantagePoint: l.VantagePoint, Site: l.Site, DistanceKm: math.Round(l.DistanceKm),
			MinPossibleMs: ms(l.MinPossible), MinRTTMs: ms(l.MinRTT), Impossible: l.Impossible, Checked: l.Checked,
		})
	}
	for _, x := range f.Inflation {
		t := get(x.Target)
		t.Inflation = append(t.Inflation, Inflation{
			VantagePoint: x.VantagePoint, Site: x.Site, Nearest: x.Nearest,
			DistanceKm: math.Round(x.Distance), NearestDistanceKm: math.Round(x.NearestDistance), Factor: round(x.Factor),
		})
	}
	for _, d := range f.Disagreements {
		t := get(d.Target)
		t.Disagreements = append(t.Disagreements, Disagreement{
			VantagePoint: d.VantagePoint, Address: d.Address,
			A: Answer(d.A), B: Answer(d.B), Rounds: d.Rounds, First: d.First.UTC(), Last: d.Last.UTC(),
		})
	}
	served := make(map[string]map[string]int) // target → site → vantage points
	for _, a := range f.Assignments {
		t := get(a.Target)
		ra := Assignment{VantagePoint: a.VantagePoint, Site: a.Site, Observations: a.Observations, Confidence: round(a.Confidence)}
		if vp, ok := located[a.VantagePoint]; ok {
			lat, lon := vp.Latitude, vp.Longitude
			ra.Latitude, ra.Longitude = &lat, &lon
		}
		t.Assignments = append(t.Assignments, ra)
		if a.Site == "" {
			continue
		}
		if served[a.Target] == nil {
			served[a.Target] = make(map[string]int)
		}
		served[a.Target][a.Site]++
	}
	r := &Report{GeneratedAt: generated, Since: since, Until: until, Targets: make([]Target, 0, len(targets)), Gaps: []Gap{}}
	for name, t := range targets {
		slices.SortFunc(t.Assignments, func(x, y Assignment) int { return cmp.Compare(x.VantagePoint, y.VantagePoint) })
		t.Sites = sites(declared[name], served[name], t.Catchment)
		for _, n := range served[name] {
			t.VantagePoints += n
		}
		for i := range t.Sites {
			if t.VantagePoints > 0 {
				t.Sites[i].Share = round(float64(t.Sites[i].VantagePoints) / float64(t.VantagePoints))
			}
		}
		r.Targets = append(r.Targets, *t)
	}
	slices.SortFunc(r.Targets, func(x, y Target) int { return cmp.Compare(x.Name, y.Name) })
	return r
}

// sites lists the declared sites and every site seen, sorted by vantage
// points served (most first), then code.
func sites(t analysis.Target, served map[string]int, cs []Catchment) []Site {
	byCode := make(map[string]*Site)
	add := func(code string) *Site {
		s := byCode[code]
		if s == nil {
			s = &Site{Site: code}
			byCode[code] = s
		}
		return s
	}
	for _, d := range t.Sites {
		code := strings.ToUpper(strings.TrimSpace(d.Code))
		if code == "" {
			continue
		}
		s := add(code)
		s.Name, s.Declared = d.Name, true
		if d.HasCoords {
			lat, lon := d.Latitude, d.Longitude
			s.Latitude, s.Longitude = &lat, &lon
		}
	}
	for code, n := range served {
		add(code).VantagePoints = n
	}
	for _, c := range cs {
		for _, sc := range c.Sites {
			add(sc.Site)
		}
		if c.Site != "" {
			add(c.Site)
		}
	}
	out := make([]Site, 0, len(byCode))
	for _, s := range byCode {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(x, y Site) int {
		if c := cmp.Compare(y.VantagePoints, x.VantagePoints); c != 0 {
			return c
		}
		return cmp.Compare(x.Site, y.Site)
	})
	return out
}

// ms is a duration in milliseconds with microsecond precision.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// round keeps four decimals, enough for a share and stable in golden files.
func round(x float64) float64 { return math.Round(x*1e4) / 1e4 }
