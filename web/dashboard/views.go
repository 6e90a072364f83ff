package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/web/geomap"
)

// Bounds on what one page lists (the JSON twin lists everything its reads
// returned).
const (
	// maxTableRows bounds a page's table of vantage points or movers.
	maxTableRows = 1_000
	// maxOverviewTargets bounds the targets the overview summarises.
	maxOverviewTargets = 50
	// maxOpenIncidents bounds the open incidents the overview lists.
	maxOpenIncidents = 100
	// maxIncidentVPs bounds the vantage points an incident lists on a page.
	maxIncidentVPs = 50
	// overviewWorkers is how many targets the overview reads at once.
	overviewWorkers = 4
)

// Agents' health thresholds.
const (
	// SilentAfter: an agent that has not uploaded for this long is silent.
	SilentAfter = 10 * time.Minute
	// BacklogAfter: an agent whose median upload lag exceeds this has a
	// backlog in its spool.
	BacklogAfter = 5 * time.Minute
	// GapHorizon is how far back the agents page lists results agents
	// lost.
	GapHorizon = 7 * 24 * time.Hour
)

// vpURL is the page of a vantage point.
func vpURL(name string) string { return "/vantage-points/" + url.PathEscape(name) }

func renderMap(m geomap.Map) (template.HTML, error) {
	var b bytes.Buffer
	if err := geomap.Render(&b, m); err != nil {
		return "", fmt.Errorf("map: %w", err)
	}
	// The renderer escapes every name it draws (its contract).
	return template.HTML(b.String()), nil
}

// target returns the named target.
func (d *Dashboard) target(ctx context.Context, r *http.Request) (analysis.Target, error) {
	n, err := name(r, "name")
	if err != nil {
		return analysis.Target{}, err
	}
	ts, err := d.src.Targets(ctx)
	if err != nil {
		return analysis.Target{}, err
	}
	for _, t := range ts {
		if t.Name == n {
			return t, nil
		}
	}
	return analysis.Target{}, errNotFound("no target %q", n)
}

func addresses(t analysis.Target) []string {
	out := make([]string, len(t.Addresses))
	for i, a := range t.Addresses {
		out[i] = a.String()
	}
	return out
}

// ---- overview

// Overview is the front page: every target with its sites' shares of
// vantage points now, and the open incidents.
type Overview struct {
	At      time.Time       `json:"at"`
	Targets []TargetSummary `json:"targets"`
	// MoreTargets counts targets not summarised (beyond the first
	// maxOverviewTargets by name).
	MoreTargets        int            `json:"more_targets,omitempty"`
	OpenIncidents      []IncidentView `json:"open_incidents"`
	IncidentsTruncated bool           `json:"open_incidents_truncated,omitempty"`
}

// Title names the page.
func (Overview) Title() string { return "Overview" }

// TargetSummary is one target on the overview.
type TargetSummary struct {
	Name          string      `json:"name"`
	Addresses     []string    `json:"addresses"`
	Window        *Window     `json:"window,omitempty"`
	VantagePoints int         `json:"vantage_points"`
	Sites         []SiteShare `json:"sites"`
}

func (d *Dashboard) overview(ctx context.Context, r *http.Request, _ bool) (string, any, error) {
	now := d.now().UTC()
	ts, err := d.src.Targets(ctx)
	if err != nil {
		return "", nil, err
	}
	o := Overview{At: now}
	if len(ts) > maxOverviewTargets {
		o.MoreTargets, ts = len(ts)-maxOverviewTargets, ts[:maxOverviewTargets]
	}
	o.Targets = make([]TargetSummary, len(ts))
	errs := make([]error, len(ts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, overviewWorkers)
	for i, t := range ts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			snap, err := d.src.CatchmentAt(ctx, t.Name, now)
			if err != nil {
				errs[i] = err
				return
			}
			es := entries(snap, netip.Addr{})
			o.Targets[i] = TargetSummary{Name: t.Name, Addresses: addresses(t), Window: windowOf(snap),
				VantagePoints: len(es), Sites: shares(newPlacer(t), es)}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "", nil, err
		}
	}
	in, truncated, err := d.src.Incidents(ctx, store.IncidentQuery{Until: now.Add(24 * time.Hour), Open: true, Limit: maxOpenIncidents})
	if err != nil {
		return "", nil, err
	}
	o.OpenIncidents, o.IncidentsTruncated = incidentViews(in, now), truncated
	return "overview", o, nil
}

// ---- catchment map

// Catchment is a target's catchment as of a time, with what the replay
// slider needs.
type Catchment struct {
	Target    string   `json:"target"`
	Addresses []string `json:"addresses"`
	// Address, when set, restricts the catchment to one address.
	Address string    `json:"address,omitempty"`
	At      time.Time `json:"at"`
	Window  *Window   `json:"window,omitempty"`
	// Located counts the vantage points with a location (on the map).
	Located       int               `json:"located"`
	Sites         []SiteShare       `json:"sites"`
	Colors        map[string]string `json:"colors"`
	VantagePoints []VPEntry         `json:"vantage_points"`
	Truncated     bool              `json:"truncated,omitempty"`
	Replay        Replay            `json:"replay"`

	Map       template.HTML `json:"-"`
	TableRows []VPEntry     `json:"-"`
}

// Title names the page.
func (c Catchment) Title() string { return c.Target + " catchment" }

// Replay is the span the time slider replays: Steps steps of StepSeconds
// from Since; the last step is Until.
type Replay struct {
	Since       time.Time `json:"since"`
	Until       time.Time `json:"until"`
	StepSeconds int       `json:"step_seconds"`
	Steps       int       `json:"steps"`
}

// maxReplaySteps bounds the slider's positions.
const maxReplaySteps = 240

func replay(until time.Time, span time.Duration) Replay {
	step := time.Hour // the incremental analyzer's catchment windows
	for span/step > maxReplaySteps {
		step *= 2
	}
	steps := int(span / step)
	return Replay{Since: until.Add(-time.Duration(steps) * step), Until: until, StepSeconds: int(step / time.Second), Steps: steps}
}

func (d *Dashboard) catchment(ctx context.Context, r *http.Request, html bool) (string, any, error) {
	t, err := d.target(ctx, r)
	if err != nil {
		return "", nil, err
	}
	now := d.now().UTC()
	at, err := timeParam(r, "at", now, now)
	if err != nil {
		return "", nil, err
	}
	addr, err := addressParam(r)
	if err != nil {
		return "", nil, err
	}
	span := 24 * time.Hour
	if s, err := param(r, "replay"); err != nil {
		return "", nil, err
	} else if s != "" {
		if span, err = time.ParseDuration(s); err != nil || span < time.Hour || span > MaxSpan {
			return "", nil, errBadRequest("parameter replay %q: want a duration from 1h to %s", s, MaxSpan)
		}
	}
	snap, err := d.src.CatchmentAt(ctx, t.Name, at)
	if err != nil {
		return "", nil, err
	}
	es := entries(snap, addr)
	c := Catchment{Target: t.Name, Addresses: addresses(t), At: at, Window: windowOf(snap),
		VantagePoints: es, Truncated: snap.Truncated, Replay: replay(at, span)}
	if addr.IsValid() {
		c.Address = addr.String()
	}
	c.Sites = shares(newPlacer(t), es)
	c.Colors = colors(c.Sites)
	dots := mapVantagePoints(es)
	c.Located = len(dots)
	if html {
		c.TableRows = es[:min(len(es), maxTableRows)]
		c.Map, err = renderMap(geomap.Map{
			Title: t.Name + " catchment, " + stamp(at), Sites: mapSites(c.Sites), VantagePoints: dots, Link: vpURL,
		})
		if err != nil {
			return "", nil, err
		}
	}
	return "catchment", c, nil
}

// ---- catchment diff

// Diff compares a target's catchment at two times: who moved where.
type Diff struct {
	Target     string    `json:"target"`
	Addresses  []string  `json:"addresses"`
	Address    string    `json:"address,omitempty"`
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	FromWindow *Window   `json:"from_window,omitempty"`
	ToWindow   *Window   `json:"to_window,omitempty"`
	// Compared counts the vantage points present at both times; Moved
	// those of them whose site changed; Appeared and Disappeared those
	// present at one time only.
	Compared    int    `json:"compared"`
	Moved       int    `json:"moved"`
	Appeared    int    `json:"appeared"`
	Disappeared int    `json:"disappeared"`
	Flows       []Flow `json:"flows"`
	Movers      []Move `json:"movers"`
	// Sites: the shares at To, with the shares at From beside them.
	Sites     []SiteDelta       `json:"sites"`
	Colors    map[string]string `json:"colors"`
	Truncated bool              `json:"truncated,omitempty"`

	Map       template.HTML `json:"-"`
	TableRows []Move        `json:"-"`
}

// Title names the page.
func (d Diff) Title() string { return d.Target + " catchment diff" }

// Flow is how many vantage points moved from one site to another ("" is
// none: appeared or disappeared).
type Flow struct {
	From          string `json:"from"`
	To            string `json:"to"`
	VantagePoints int    `json:"vantage_points"`
}

// Move is one vantage point that changed site.
type Move struct {
	VantagePoint string   `json:"vantage_point"`
	From         string   `json:"from"`
	To           string   `json:"to"`
	Latitude     *float64 `json:"lat,omitempty"`
	Longitude    *float64 `json:"lon,omitempty"`
}

// SiteDelta is a site's catchment at both times.
type SiteDelta struct {
	SiteShare
	Before      int     `json:"vantage_points_before"`
	BeforeShare float64 `json:"share_before"`
}

// Change is the difference in vantage points.
func (s SiteDelta) Change() int { return s.VantagePoints - s.Before }

func (d *Dashboard) diff(ctx context.Context, r *http.Request, html bool) (string, any, error) {
	t, err := d.target(ctx, r)
	if err != nil {
		return "", nil, err
	}
	now := d.now().UTC()
	to, err := timeParam(r, "to", now, now)
	if err != nil {
		return "", nil, err
	}
	from, err := timeParam(r, "from", now, to.Add(-24*time.Hour))
	if err != nil {
		return "", nil, err
	}
	addr, err := addressParam(r)
	if err != nil {
		return "", nil, err
	}
	before, err := d.src.CatchmentAt(ctx, t.Name, from)
	if err != nil {
		return "", nil, err
	}
	after, err := d.src.CatchmentAt(ctx, t.Name, to)
	if err != nil {
		return "", nil, err
	}
	bs, as := entries(before, addr), entries(after, addr)
	df := Diff{Target: t.Name, Addresses: addresses(t), From: from, To: to, FromWindow: windowOf(before), ToWindow: windowOf(after),
		Truncated: before.Truncated || after.Truncated}
	if addr.IsValid() {
		df.Address = addr.String()
	}
	was := make(map[string]VPEntry, len(bs))
	for _, e := range bs {
		was[e.Name] = e
	}
	flows := map[[2]string]int{}
	for _, e := range as {
		b, ok := was[e.Name]
		delete(was, e.Name)
		switch {
		case !ok:
			df.Appeared++
		case b.Site == e.Site:
			df.Compared++
			continue
		default:
			df.Compared++
			df.Moved++
		}
		flows[[2]string{b.Site, e.Site}]++
		df.Movers = append(df.Movers, Move{VantagePoint: e.Name, From: b.Site, To: e.Site, Latitude: e.Latitude, Longitude: e.Longitude})
	}
	for _, b := range was {
		df.Disappeared++
		flows[[2]string{b.Site, ""}]++
		df.Movers = append(df.Movers, Move{VantagePoint: b.Name, From: b.Site, Latitude: b.Latitude, Longitude: b.Longitude})
	}
	slices.SortFunc(df.Movers, func(x, y Move) int { return strings.Compare(x.VantagePoint, y.VantagePoint) })
	for k, n := range flows {
		df.Flows = append(df.Flows, Flow{From: k[0], To: k[1], VantagePoints: n})
	}
	slices.SortFunc(df.Flows, func(x, y Flow) int {
		return cmp.Or(cmp.Compare(y.VantagePoints, x.VantagePoints), strings.Compare(x.From, y.From), strings.Compare(x.To, y.To))
	})
	p := newPlacer(t)
	prev := map[string]SiteShare{}
	for _, s := range shares(p, bs) {
		prev[s.Code] = s
	}
	for _, s := range shares(p, as) {
		b := prev[s.Code]
		delete(prev, s.Code)
		df.Sites = append(df.Sites, SiteDelta{SiteShare: s, Before: b.VantagePoints, BeforeShare: b.Share})
	}
	for _, b := range prev { // sites that lost every vantage point
		s := b
		s.VantagePoints, s.Share = 0, 0
		df.Sites = append(df.Sites, SiteDelta{SiteShare: s, Before: b.VantagePoints, BeforeShare: b.Share})
	}
	slices.SortFunc(df.Sites, func(x, y SiteDelta) int {
		return cmp.Or(cmp.Compare(y.VantagePoints, x.VantagePoints), cmp.Compare(y.Before, x.Before), strings.Compare(x.Code, y.Code))
	})
	df.Colors = map[string]string{}
	for _, s := range df.Sites {
		df.Colors[s.Code] = s.Color
	}
	if html {
		df.TableRows = df.Movers[:min(len(df.Movers), maxTableRows)]
		// The movers on a map, coloured by where they went, with lines to it.
		var dots []geomap.VantagePoint
		involved := map[string]bool{}
		for _, m := range df.Movers {
			involved[m.From], involved[m.To] = true, true
			if m.Latitude != nil && m.Longitude != nil {
				dots = append(dots, geomap.VantagePoint{Name: m.VantagePoint, Latitude: *m.Latitude, Longitude: *m.Longitude, Site: m.To})
			}
		}
		var sites []SiteShare
		for _, s := range df.Sites {
			if involved[s.Code] {
				sites = append(sites, s.SiteShare)
			}
		}
		df.Map, err = renderMap(geomap.Map{
			Title: t.Name + " movers, " + stamp(from) + " to " + stamp(to), Sites: mapSites(sites), VantagePoints: dots,
			Lines: true, Link: vpURL,
		})
		if err != nil {
			return "", nil, err
		}
	}
	return "diff", df, nil
}

// ---- incidents

// Incidents lists black holes, outages and broken vantage points with
// their evidence.
type Incidents struct {
	Target    string         `json:"target,omitempty"`
	Since     time.Time      `json:"since"`
	Until     time.Time      `json:"until"`
	Open      bool           `json:"open_only,omitempty"`
	Incidents []IncidentView `json:"incidents"`
	Truncated bool           `json:"truncated,omitempty"`
}

// Title names the page.
func (Incidents) Title() string { return "Incidents" }

// IncidentView is one incident as pages show it.
type IncidentView struct {
	Key     string     `json:"key"`
	Kind    string     `json:"kind"`
	Target  string     `json:"target,omitempty"`
	Address string     `json:"address,omitempty"`
	Site    string     `json:"site,omitempty"`
	Start   time.Time  `json:"start"`
	End     *time.Time `json:"end,omitempty"`
	Open    bool       `json:"open"`
	// Duration so far (open incidents) or in all.
	Duration      string            `json:"duration"`
	VantagePoints []string          `json:"vantage_points"`
	Evidence      analysis.Evidence `json:"evidence"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// Listed is the vantage points a page lists; More how many it leaves out.
func (i IncidentView) Listed() []string {
	return i.VantagePoints[:min(len(i.VantagePoints), maxIncidentVPs)]
}

// More counts the vantage points a page leaves out.
func (i IncidentView) More() int { return max(0, len(i.VantagePoints)-maxIncidentVPs) }

// Failures lists the failed observations by classified failure, most first.
func (i IncidentView) Failures() []Count {
	var out []Count
	for k, n := range i.Evidence.Failed {
		out = append(out, Count{k, n})
	}
	slices.SortFunc(out, func(x, y Count) int { return cmp.Or(cmp.Compare(y.N, x.N), strings.Compare(x.Key, y.Key)) })
	return out
}

// Count is a labelled number.
type Count struct {
	Key string
	N   int
}

func incidentViews(in []store.StoredIncident, now time.Time) []IncidentView {
	out := make([]IncidentView, 0, len(in))
	for _, i := range in {
		v := IncidentView{Key: i.Key, Kind: string(i.Kind), Target: i.Target, Site: i.Site, Start: i.Start, Open: i.Open(),
			VantagePoints: i.VantagePoints, Evidence: i.Evidence, UpdatedAt: i.UpdatedAt}
		if v.VantagePoints == nil {
			v.VantagePoints = []string{}
		}
		if i.Address.IsValid() {
			v.Address = i.Address.String()
		}
		end := now
		if !i.Open() {
			e := i.End
			v.End, end = &e, e
		}
		v.Duration = human(end.Sub(i.Start))
		out = append(out, v)
	}
	return out
}

func (d *Dashboard) incidents(ctx context.Context, r *http.Request, _ bool) (string, any, error) {
	now := d.now().UTC()
	since, until, err := window(r, now, 7*24*time.Hour)
	if err != nil {
		return "", nil, err
	}
	q := store.IncidentQuery{Since: since, Until: until}
	if q.Target, err = param(r, "target"); err != nil {
		return "", nil, err
	}
	if q.Target != "" && !api.ValidName(q.Target) {
		return "", nil, errBadRequest("parameter target %q is not a valid name", q.Target)
	}
	open, err := param(r, "open")
	if err != nil {
		return "", nil, err
	}
	q.Open = open == "1" || open == "true"
	in, truncated, err := d.src.Incidents(ctx, q)
	if err != nil {
		return "", nil, err
	}
	return "incidents", Incidents{Target: q.Target, Since: since, Until: until, Open: q.Open,
		Incidents: incidentViews(in, now), Truncated: truncated}, nil
}

// ---- agents

// Agents is the agents' health.
type Agents struct {
	At     time.Time   `json:"at"`
	Total  int         `json:"total"`
	Agents []AgentView `json:"agents"`
	// Gaps lists the results agents measured within GapHorizon and lost
	// before upload (a full or damaged spool), newest first: missing
	// data, not failures. GapsShown of them are on the page.
	Gaps      []GapView `json:"gaps"`
	GapsShown int       `json:"-"`
}

// GapView is a run of results one agent lost.
type GapView struct {
	Agent    string     `json:"agent"`
	FirstSeq uint64     `json:"first_seq"`
	LastSeq  uint64     `json:"last_seq"`
	Results  uint64     `json:"results"`
	LostFrom *time.Time `json:"lost_from"` // null when unknown
	LostTo   *time.Time `json:"lost_to"`
	Reason   string     `json:"reason"`
	Received time.Time  `json:"received_at"`
}

// maxGapRows bounds the gaps the agents page shows (its JSON has all).
const maxGapRows = 200

// Title names the page.
func (Agents) Title() string { return "Agents" }

// AgentView is one agent's health.
type AgentView struct {
	Name           string     `json:"name"`
	Latitude       *float64   `json:"lat,omitempty"`
	Longitude      *float64   `json:"lon,omitempty"`
	Provider       string     `json:"provider,omitempty"`
	Region         string     `json:"region,omitempty"`
	LastSeen       *time.Time `json:"last_seen,omitempty"`
	LastSeq        int64      `json:"last_seq"`
	NewestMeasured *time.Time `json:"newest_measured,omitempty"`
	// Received counts results received in the last hour (a sample of at
	// most store.LagSample); their upload lag, received − measured.
	Received   int     `json:"received_last_hour"`
	LagMedian  float64 `json:"lag_median_seconds"`
	LagMax     float64 `json:"lag_max_seconds"`
	LagSampled bool    `json:"lag_sampled,omitempty"`
	// Status: "ok", "backlog" (results wait in the spool), "silent" (no
	// upload for SilentAfter) or "never" (never uploaded).
	Status string `json:"status"`
	// SeenAgo is how long ago it last uploaded.
	SeenAgo string `json:"seen_ago,omitempty"`
}

// maxAgents bounds the agents listed.
const maxAgents = 2_000

func (d *Dashboard) agents(ctx context.Context, r *http.Request, _ bool) (string, any, error) {
	now := d.now().UTC()
	hs, total, err := d.src.AgentsHealth(ctx, now, maxAgents)
	if err != nil {
		return "", nil, err
	}
	a := Agents{At: now, Total: total, Agents: make([]AgentView, 0, len(hs))}
	for _, h := range hs {
		v := AgentView{Name: h.Name, Latitude: h.Latitude, Longitude: h.Longitude, Provider: h.Provider, Region: h.Region,
			LastSeen: h.LastSeen, LastSeq: h.LastSeq, NewestMeasured: h.NewestMeasured, Received: h.Received,
			LagMedian: h.LagMedian.Seconds(), LagMax: h.LagMax.Seconds(), LagSampled: h.Received >= store.LagSample}
		switch {
		case h.LastSeen == nil:
			v.Status = "never"
		case now.Sub(*h.LastSeen) > SilentAfter:
			v.Status = "silent"
		case h.LagMedian > BacklogAfter:
			v.Status = "backlog"
		default:
			v.Status = "ok"
		}
		if h.LastSeen != nil {
			v.SeenAgo = human(now.Sub(*h.LastSeen))
		}
		a.Agents = append(a.Agents, v)
	}
	gs, err := d.src.Gaps(ctx, now.Add(-GapHorizon), time.Time{})
	if err != nil {
		return "", nil, err
	}
	a.Gaps = make([]GapView, 0, len(gs))
	for i := len(gs) - 1; i >= 0; i-- {
		g := gs[i]
		v := GapView{Agent: g.VantagePoint, FirstSeq: g.FirstSeq, LastSeq: g.LastSeq, Results: g.Count,
			Reason: string(g.Reason), Received: g.ReceivedAt}
		if !g.LostFrom.IsZero() {
			t := g.LostFrom
			v.LostFrom = &t
		}
		if !g.LostTo.IsZero() {
			t := g.LostTo
			v.LostTo = &t
		}
		a.Gaps = append(a.Gaps, v)
	}
	a.GapsShown = min(len(a.Gaps), maxGapRows)
	return "agents", a, nil
}

// ---- vantage point

// VantagePoint is one vantage point in detail.
type VantagePoint struct {
	Name       string       `json:"name"`
	Latitude   *float64     `json:"lat,omitempty"`
	Longitude  *float64     `json:"lon,omitempty"`
	Provider   string       `json:"provider,omitempty"`
	Region     string       `json:"region,omitempty"`
	LastSeen   *time.Time   `json:"last_seen,omitempty"`
	LastSeq    int64        `json:"last_seq"`
	At         time.Time    `json:"at"`
	Catchments []StreamView `json:"catchments"`
	// Identities and RTTs summarise Results.
	Identities        []IdentityCount `json:"identities"`
	RTTs              []RTTStat       `json:"rtts"`
	Results           []ResultView    `json:"results"`
	Trace             *TraceView      `json:"last_trace,omitempty"`
	Switches          []SwitchView    `json:"switches"`
	SwitchesTruncated bool            `json:"switches_truncated,omitempty"`
}

// Title names the page.
func (v VantagePoint) Title() string { return "Vantage point " + v.Name }

// StreamView is where one stream of the vantage point goes.
type StreamView struct {
	Target       string  `json:"target"`
	Address      string  `json:"address"`
	Stream       string  `json:"stream"`
	Site         string  `json:"site"`
	Color        string  `json:"color"`
	Observations int     `json:"observations"`
	Confidence   float64 `json:"confidence"`
	Window       Window  `json:"window"`
}

// IdentityCount is an identity string the vantage point saw, how often,
// and when last.
type IdentityCount struct {
	Target   string    `json:"target"`
	Address  string    `json:"address"`
	Identity string    `json:"identity"`
	Count    int       `json:"count"`
	Last     time.Time `json:"last"`
}

// RTTStat summarises the successful RTTs of one target address and probe.
type RTTStat struct {
	Target  string  `json:"target"`
	Address string  `json:"address"`
	Probe   string  `json:"probe"`
	Count   int     `json:"count"`
	MinMs   float64 `json:"min_ms"`
	MedMs   float64 `json:"median_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// ResultView is one recent observation.
type ResultView struct {
	Target     string    `json:"target"`
	Address    string    `json:"address"`
	Probe      string    `json:"probe"`
	MeasuredAt time.Time `json:"measured_at"`
	Failure    string    `json:"failure,omitempty"`
	Rcode      string    `json:"rcode,omitempty"`
	Identity   string    `json:"identity,omitempty"`
	RTTMs      float64   `json:"rtt_ms,omitempty"`
}

// TraceView is a traceroute.
type TraceView struct {
	Target     string    `json:"target"`
	Address    string    `json:"address"`
	Transport  string    `json:"transport"`
	MeasuredAt time.Time `json:"measured_at"`
	Flow       string    `json:"flow"`
	Stop       string    `json:"stop"`
	Reached    bool      `json:"reached"`
	Failure    string    `json:"failure,omitempty"`
	Hops       []HopView `json:"hops"`
}

// HopView is one probe of a traceroute; an empty Addr is a star.
type HopView struct {
	TTL      int     `json:"ttl"`
	Attempt  int     `json:"attempt"`
	Addr     string  `json:"addr,omitempty"`
	RTTMs    float64 `json:"rtt_ms,omitempty"`
	ICMP     string  `json:"icmp,omitempty"`
	ReplyTTL int     `json:"reply_ttl,omitempty"`
}

// SwitchView is one PoP switch.
type SwitchView struct {
	VantagePoint string    `json:"vantage_point"`
	Target       string    `json:"target"`
	Address      string    `json:"address"`
	Stream       string    `json:"stream"`
	At           time.Time `json:"at"`
	LastFrom     time.Time `json:"last_from"`
	From         string    `json:"from"`
	To           string    `json:"to"`
	Cause        string    `json:"cause"`
	CauseDetail  string    `json:"cause_detail,omitempty"`
	TCPBroke     bool      `json:"tcp_broke"`
	Failures     int       `json:"failures"`
}

func switchView(s store.SwitchRow) SwitchView {
	return SwitchView{VantagePoint: s.VantagePoint, Target: s.Target, Address: s.Address.String(),
		Stream: stream(string(s.Kind), string(s.Transport), s.Query), At: s.At, LastFrom: s.LastFrom,
		From: s.From, To: s.To, Cause: string(s.Cause), CauseDetail: s.CauseDetail, TCPBroke: s.TCPBroke, Failures: s.Failures}
}

func stream(kind, transport, query string) string {
	return kind + "/" + transport + "/" + query
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Recent results a vantage point page reads by default, and at most.
const (
	defaultRecent = 200
	maxVPSwitches = 100
)

func (d *Dashboard) vantagePoint(ctx context.Context, r *http.Request, _ bool) (string, any, error) {
	n, err := name(r, "name")
	if err != nil {
		return "", nil, err
	}
	limit, err := intParam(r, "n", defaultRecent, 1, store.MaxRecentResults)
	if err != nil {
		return "", nil, err
	}
	now := d.now().UTC()
	a, err := d.src.AgentByName(ctx, n)
	if err != nil {
		return "", nil, err
	}
	v := VantagePoint{Name: a.Name, Latitude: a.Latitude, Longitude: a.Longitude, Provider: a.Provider, Region: a.Region,
		LastSeen: a.LastSeen, LastSeq: a.LastSeq, At: now}
	cs, err := d.src.VantagePointCatchments(ctx, n, now)
	if err != nil {
		return "", nil, err
	}
	v.Catchments = make([]StreamView, 0, len(cs))
	for _, c := range cs {
		v.Catchments = append(v.Catchments, StreamView{Target: c.Target, Address: c.Address.String(),
			Stream: stream(string(c.Kind), string(c.Transport), c.Query), Site: c.Site, Color: color(c.Site),
			Observations: c.Observations, Confidence: c.Confidence, Window: Window{stamp(c.WindowStart), stamp(c.WindowEnd)}})
	}
	rs, err := d.src.RecentResults(ctx, n, now, limit)
	if err != nil {
		return "", nil, err
	}
	v.Results = make([]ResultView, 0, len(rs))
	type key struct{ target, addr, probe string }
	ids := map[[3]string]*IdentityCount{}
	rtts := map[key][]time.Duration{}
	for _, x := range rs {
		probe := stream(string(x.Kind), string(x.Transport), x.Query)
		v.Results = append(v.Results, ResultView{Target: x.Target, Address: x.Address.String(), Probe: probe,
			MeasuredAt: x.MeasuredAt, Failure: string(x.Failure), Rcode: x.Rcode, Identity: x.Identity, RTTMs: ms(x.RTT)})
		if x.Identity != "" {
			k := [3]string{x.Target, x.Address.String(), x.Identity}
			if c := ids[k]; c != nil {
				c.Count++
			} else {
				ids[k] = &IdentityCount{Target: k[0], Address: k[1], Identity: k[2], Count: 1, Last: x.MeasuredAt}
			}
		}
		if x.Failure == "" && x.RTT > 0 {
			k := key{x.Target, x.Address.String(), probe}
			rtts[k] = append(rtts[k], x.RTT)
		}
	}
	for _, c := range ids {
		v.Identities = append(v.Identities, *c)
	}
	slices.SortFunc(v.Identities, func(x, y IdentityCount) int {
		return cmp.Or(strings.Compare(x.Target, y.Target), strings.Compare(x.Address, y.Address), cmp.Compare(y.Count, x.Count), strings.Compare(x.Identity, y.Identity))
	})
	for k, ds := range rtts {
		slices.Sort(ds)
		v.RTTs = append(v.RTTs, RTTStat{Target: k.target, Address: k.addr, Probe: k.probe, Count: len(ds),
			MinMs: ms(ds[0]), MedMs: ms(ds[len(ds)/2]), MaxMs: ms(ds[len(ds)-1])})
	}
	slices.SortFunc(v.RTTs, func(x, y RTTStat) int {
		return cmp.Or(strings.Compare(x.Target, y.Target), strings.Compare(x.Address, y.Address), strings.Compare(x.Probe, y.Probe))
	})
	tr, ok, err := d.src.LastTrace(ctx, n, now)
	if err != nil {
		return "", nil, err
	}
	if ok {
		tv := &TraceView{Target: tr.Target, Transport: string(tr.Transport), MeasuredAt: tr.MeasuredAt, Flow: tr.Flow,
			Stop: tr.Stop, Reached: tr.Reached, Failure: string(tr.Failure), Hops: make([]HopView, 0, len(tr.Hops))}
		if tr.Address.IsValid() {
			tv.Address = tr.Address.String()
		}
		for _, h := range tr.Hops {
			hv := HopView{TTL: h.TTL, Attempt: h.Attempt}
			if h.Addr.IsValid() {
				hv.Addr, hv.RTTMs, hv.ReplyTTL = h.Addr.String(), ms(h.RTT), h.ReplyTTL
				hv.ICMP = fmt.Sprintf("%d/%d", h.ICMPType, h.ICMPCode)
			}
			tv.Hops = append(tv.Hops, hv)
		}
		v.Trace = tv
	}
	sw, truncated, err := d.src.Switches(ctx, store.SwitchQuery{VantagePoint: n, Since: now.Add(-store.HealthHorizon),
		Until: now.Add(time.Minute), Limit: maxVPSwitches, Newest: true})
	if err != nil {
		return "", nil, err
	}
	v.Switches, v.SwitchesTruncated = make([]SwitchView, 0, len(sw)), truncated
	for _, s := range sw {
		v.Switches = append(v.Switches, switchView(s))
	}
	return "vantagepoint", v, nil
}

// human formats a duration for people: 3d4h, 2h5m, 4m10s, 12s.
func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}
