package report

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/web/geomap"
)

// ContentSecurityPolicy is the policy the HTML report declares: nothing may
// load or run; only the inline style sheet and data: images are allowed.
const ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

// HTML tables list at most this many rows of a long list (moved vantage
// points, switches by vantage point, an incident's vantage points); the
// JSON report keeps them all.
const (
	maxHTMLRows      = 500
	maxHTMLSwitchVPs = 50
	maxHTMLNames     = 20
)

// WriteHTML writes r as one self-contained HTML page: an inline style
// sheet, an inline SVG catchment map per target (web/geomap), tables, and
// nothing else: no script, no external resource, and a content security
// policy (ContentSecurityPolicy) that forbids both. html/template escapes
// every string by context; strings from the network are in addition cut to
// a readable length and their invisible or bidirectional formatting
// characters shown as \uXXXX.
func WriteHTML(w io.Writer, r *Report) error {
	page := htmlPage{Report: r, CSP: ContentSecurityPolicy, Gaps: r.Gaps}
	for _, g := range r.Gaps {
		page.GapsLost += g.Results
	}
	if len(page.Gaps) > maxHTMLRows {
		page.GapsMore = len(page.Gaps) - maxHTMLRows
		page.Gaps = page.Gaps[:maxHTMLRows]
	}
	for i := range r.Targets {
		t, err := newHTMLTarget(i, &r.Targets[i])
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		page.Targets = append(page.Targets, t)
	}
	bw := bufio.NewWriter(w)
	if err := htmlTemplate.Execute(bw, page); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// htmlPage is what the template sees: the report, with its Targets
// shadowed by their prepared sections and its Gaps by the rows shown.
type htmlPage struct {
	*Report
	CSP      string
	Targets  []htmlTarget
	Gaps     []Gap
	GapsMore int
	GapsLost uint64
}

// htmlTarget is a target with what its page section shows precomputed.
type htmlTarget struct {
	*Target
	ID            string // "t<i>": never derived from untrusted names
	Failed        int
	UnresolvedObs int
	OpenIncidents int
	// Map is the inline SVG from geomap.Render, trusted because geomap
	// escapes everything it writes; "" when nothing could be placed.
	Map     template.HTML
	MapNote string
	// Switch summary.
	ByCause     []countRow
	ByVP        []vpSwitches
	ByVPMore    int
	SwitchedVPs int
	TCPBroke    int
	FailureRows []countRow
	Moved       []Move
	MovedMore   int
	MapSites    int
	MapVPs      int
	Unlocated   []string // sites not on the map
	VPsNoCoord  int
}

type countRow struct {
	Name  string
	Count int
}

type vpSwitches struct {
	VantagePoint string
	Switches     int
	TCPBroke     int
	Causes       string
	FlipsPerDay  string
}

func newHTMLTarget(i int, t *Target) (htmlTarget, error) {
	h := htmlTarget{Target: t, ID: "t" + strconv.Itoa(i)}
	for _, n := range t.Failures {
		h.Failed += n
	}
	h.UnresolvedObs = t.UnresolvedOther
	for _, u := range t.Unresolved {
		h.UnresolvedObs += u.Observations
	}
	for _, in := range t.Incidents {
		if in.End == nil {
			h.OpenIncidents++
		}
	}

	causes := map[string]int{}
	type vpAcc struct {
		n, broke int
		causes   map[string]int
	}
	vps := map[string]*vpAcc{}
	for _, s := range t.Switches {
		causes[string(s.Cause)]++
		a := vps[s.VantagePoint]
		if a == nil {
			a = &vpAcc{causes: map[string]int{}}
			vps[s.VantagePoint] = a
		}
		a.n++
		a.causes[string(s.Cause)]++
		if s.TCPBroke {
			a.broke++
			h.TCPBroke++
		}
	}
	h.ByCause = countRows(causes)
	flips := map[string]float64{}
	for _, x := range t.Instability {
		flips[x.VantagePoint] = x.FlipsPerDay
	}
	for vp, a := range vps {
		row := vpSwitches{VantagePoint: vp, Switches: a.n, TCPBroke: a.broke, FlipsPerDay: "—"}
		var cs []string
		for _, c := range countRows(a.causes) {
			cs = append(cs, fmt.Sprintf("%s %d", c.Name, c.Count))
		}
		row.Causes = strings.Join(cs, ", ")
		if f, ok := flips[vp]; ok {
			row.FlipsPerDay = strconv.FormatFloat(f, 'f', 1, 64)
		}
		h.ByVP = append(h.ByVP, row)
	}
	h.SwitchedVPs = len(h.ByVP)
	slices.SortFunc(h.ByVP, func(x, y vpSwitches) int {
		return cmp.Or(cmp.Compare(y.Switches, x.Switches), cmp.Compare(x.VantagePoint, y.VantagePoint))
	})
	if len(h.ByVP) > maxHTMLSwitchVPs {
		h.ByVPMore = len(h.ByVP) - maxHTMLSwitchVPs
		h.ByVP = h.ByVP[:maxHTMLSwitchVPs]
	}
	h.FailureRows = countRows(t.Failures)
	if t.Changes != nil {
		h.Moved = t.Changes.Moved
		if len(h.Moved) > maxHTMLRows {
			h.MovedMore = len(h.Moved) - maxHTMLRows
			h.Moved = h.Moved[:maxHTMLRows]
		}
	}
	if err := h.drawMap(); err != nil {
		return h, err
	}
	return h, nil
}

// countRows sorts counts by count (most first), then name.
func countRows(m map[string]int) []countRow {
	out := make([]countRow, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, countRow{k, m[k]})
	}
	slices.SortStableFunc(out, func(x, y countRow) int { return cmp.Compare(y.Count, x.Count) })
	return out
}

// drawMap places the target's located sites and vantage points on the
// catchment map: a site where the operator declared it, else where the
// catalog puts its code (or the city of a "cc-city" code).
func (h *htmlTarget) drawMap() error {
	m := geomap.Map{Title: "Catchment of " + text(h.Name), Lines: true}
	for _, s := range h.Sites {
		lat, lon, ok := siteLocation(s)
		if !ok {
			h.Unlocated = append(h.Unlocated, s.Site)
			continue
		}
		name := s.Name
		if name == "" {
			if p, ok := catalog.Lookup(s.Site); ok {
				name = p.City
			}
		}
		m.Sites = append(m.Sites, geomap.Site{
			Code: s.Site, Name: name, Latitude: lat, Longitude: lon,
			VantagePoints: s.VantagePoints, Share: s.Share,
		})
	}
	for _, a := range h.Assignments {
		if a.Latitude == nil || a.Longitude == nil {
			h.VPsNoCoord++
			continue
		}
		m.VantagePoints = append(m.VantagePoints, geomap.VantagePoint{
			Name: a.VantagePoint, Latitude: *a.Latitude, Longitude: *a.Longitude, Site: a.Site,
		})
	}
	h.MapSites, h.MapVPs = len(m.Sites), len(m.VantagePoints)
	if len(m.Sites) == 0 && len(m.VantagePoints) == 0 {
		h.MapNote = "Nothing to place on the map: no site and no vantage point has a known location."
		return nil
	}
	var buf bytes.Buffer
	if err := geomap.Render(&buf, m); err != nil {
		return fmt.Errorf("target %q: map: %w", h.Name, err)
	}
	h.Map = template.HTML(buf.String()) // geomap escapes every string it writes
	return nil
}

// siteLocation is where a site is: its declared coordinates, else the
// catalog's place for its code, else for the city part of "FI-HEL". A
// cluster inferred from latency, "~NYC", is near the place of its code;
// one inferred from traceroutes, "via <router>", is nowhere known.
func siteLocation(s Site) (lat, lon float64, ok bool) {
	if s.Latitude != nil && s.Longitude != nil {
		return *s.Latitude, *s.Longitude, true
	}
	code := strings.TrimPrefix(s.Site, "~")
	if p, ok := catalog.Lookup(code); ok {
		return p.Latitude, p.Longitude, true
	}
	if i := strings.LastIndexByte(code, '-'); i >= 0 {
		if p, ok := catalog.Lookup(code[i+1:]); ok {
			return p.Latitude, p.Longitude, true
		}
	}
	return 0, 0, false
}

// maxHTMLText bounds the runes of an untrusted string shown in the page.
const maxHTMLText = 200

// text prepares untrusted text for the page (html/template escapes it
// afterwards): invalid UTF-8 becomes U+FFFD, control, invisible and
// bidirectional formatting characters are shown as \uXXXX so they cannot
// hide or reorder what is around them, and long text is cut.
func text(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == maxHTMLText {
			b.WriteString("…")
			break
		}
		n++
		switch {
		case r == utf8.RuneError:
			b.WriteRune(utf8.RuneError)
		case invisible(r):
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// siteText is a site code for the page, "—" when none.
func siteText(s string) string {
	if s == "" {
		return "—"
	}
	return text(s)
}

// names shows at most maxHTMLNames names.
func names(ns []string) string {
	shown := ns
	if len(shown) > maxHTMLNames {
		shown = shown[:maxHTMLNames]
	}
	parts := make([]string, len(shown))
	for i, n := range shown {
		parts[i] = text(n)
	}
	out := strings.Join(parts, ", ")
	if len(ns) > len(shown) {
		out += fmt.Sprintf(" and %d more", len(ns)-len(shown))
	}
	return out
}

func msText(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) }

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"text":    text,
	"site":    siteText,
	"names":   names,
	"stamp":   stamp,
	"percent": percent,
	"points":  points,
	"ms":      msText,
	"failure": func(f string) string { return text(f) },
	"color":   geomap.Color,
	"bar":     func(share float64) string { return strconv.FormatFloat(100*share, 'f', 1, 64) },
}).Parse(htmlSource))

// htmlSource is the page. Every {{...}} is escaped by html/template for its
// context; the only trusted HTML is .Map.
const htmlSource = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{.CSP}}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Anycast catchment report, {{stamp .Since}} to {{stamp .Until}}</title>
<style>
:root { color-scheme: light; --ink: #1d2329; --muted: #5c6670; --rule: #d5dbe1; --band: #f3f5f7; --accent: #1f5f99; --bad: #a8321e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 1.5rem; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 .5rem; padding-top: 1rem; border-top: 3px solid var(--accent); }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
p, ul { margin: .4rem 0; }
.muted, caption, figcaption { color: var(--muted); }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .3rem 1rem; }
a { color: var(--accent); }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(10rem, 1fr)); gap: .5rem; margin: .8rem 0; }
dl.facts div { background: var(--band); border-radius: 6px; padding: .5rem .7rem; }
dl.facts dt { font-size: .8rem; color: var(--muted); }
dl.facts dd { margin: 0; font-size: 1.25rem; font-weight: 600; font-variant-numeric: tabular-nums; }
dl.facts .bad dd { color: var(--bad); }
table { border-collapse: collapse; margin: .4rem 0 .8rem; font-size: .9rem; }
caption { text-align: left; font-size: .85rem; padding-bottom: .2rem; }
th, td { border-bottom: 1px solid var(--rule); padding: .25rem .6rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: var(--band); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
.sw { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .35em; vertical-align: -.05em; border: 1px solid rgba(0,0,0,.25); }
.bar { display: inline-block; height: .7em; background: var(--accent); opacity: .55; vertical-align: middle; margin-left: .4em; }
.open { color: var(--bad); font-weight: 600; }
.up { color: #1d7a3a; } .down { color: var(--bad); }
figure.map { margin: .8rem 0; }
figure.map svg { width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 6px; background: #fff; }
details { margin: .4rem 0 .8rem; }
summary { cursor: pointer; color: var(--accent); }
code { font-size: .9em; }
footer { margin-top: 3rem; color: var(--muted); font-size: .8rem; }
@media print { body { max-width: none; } h2 { break-before: page; } }
</style>
</head>
<body>
<header>
<h1>Anycast catchment report</h1>
<p class="muted">Window {{stamp .Since}} to {{stamp .Until}} (UTC) · generated {{stamp .GeneratedAt}} · {{len .Targets}} target{{if ne (len .Targets) 1}}s{{end}}</p>
{{- if gt (len .Targets) 1}}
<nav><ul>{{if .Gaps}}<li><a href="#lost">Data lost at agents</a></li>{{end}}{{range .Targets}}<li><a href="#{{.ID}}">{{text .Name}}</a></li>{{end}}</ul></nav>
{{- end}}
</header>
{{- if .Gaps}}
<section id="lost">
<h2>Data lost at agents</h2>
<p>{{.GapsLost}} result{{if ne .GapsLost 1}}s{{end}} in {{len .Report.Gaps}} gap{{if ne (len .Report.Gaps) 1}}s{{end}} were measured and lost before they reached the collector (the agent's spool was full or damaged). They are missing data, not failures: no incident is built from them.</p>
<table>
<thead><tr><th>Vantage point</th><th>Lost from</th><th>Lost to</th><th class="n">Results</th><th class="n">Sequence numbers</th><th>Reason</th></tr></thead>
<tbody>
{{- range .Gaps}}
<tr><td>{{text .VantagePoint}}</td><td class="t">{{with .LostFrom}}{{stamp .}}{{else}}unknown{{end}}</td><td class="t">{{with .LostTo}}{{stamp .}}{{else}}unknown{{end}}</td><td class="n">{{.Results}}</td><td class="n">{{.FirstSeq}}–{{.LastSeq}}</td><td>{{text (print .Reason)}}</td></tr>
{{- end}}
</tbody>
</table>
{{- if .GapsMore}}
<p class="muted">… and {{.GapsMore}} more (see the JSON report).</p>
{{- end}}
</section>
{{- end}}
{{range .Targets}}
<section id="{{.ID}}">
<h2>Target {{text .Name}}</h2>
<dl class="facts">
<div><dt>Observations</dt><dd>{{.Observations}}</dd></div>
<div{{if .Failed}} class="bad"{{end}}><dt>Failed</dt><dd>{{.Failed}}</dd></div>
<div><dt>Unresolved identity</dt><dd>{{.UnresolvedObs}}</dd></div>
<div><dt>Vantage points with a site</dt><dd>{{.VantagePoints}}</dd></div>
<div><dt>Sites</dt><dd>{{len .Sites}}</dd></div>
<div><dt>Switches</dt><dd>{{len .Switches}}</dd></div>
<div{{if .OpenIncidents}} class="bad"{{end}}><dt>Incidents (open)</dt><dd>{{len .Incidents}} ({{.OpenIncidents}})</dd></div>
</dl>
{{- with .Changes}}
<h3>What changed since the window {{stamp .Since}} to {{stamp .Until}}</h3>
<p>{{len .Moved}} vantage point and address pair{{if ne (len .Moved) 1}}s{{end}} changed site; {{.Appeared}} appeared, {{.Gone}} were gone; {{len .NewIncidents}} new incident{{if ne (len .NewIncidents) 1}}s{{end}}.</p>
{{- if .Shares}}
<table>
<caption>Share of vantage points per site, before and now</caption>
<thead><tr><th>Site</th><th class="n">Vantage points before</th><th class="n">now</th><th class="n">Share before</th><th class="n">now</th><th class="n">Change</th></tr></thead>
<tbody>
{{- range .Shares}}
<tr><td><span class="sw" style="background-color: {{color .Site}}"></span>{{site .Site}}</td><td class="n">{{.VantagePointsBefore}}</td><td class="n">{{.VantagePointsAfter}}</td><td class="n">{{percent .ShareBefore}}</td><td class="n">{{percent .ShareAfter}}</td><td class="n{{if gt .Delta 0.0}} up{{else if lt .Delta 0.0}} down{{end}}">{{points .Delta}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
{{- end}}
{{- if .Moved}}
<table>
<caption>Vantage points whose site changed</caption>
<thead><tr><th>Vantage point</th><th>Address</th><th>Before</th><th>Now</th></tr></thead>
<tbody>
{{- range .Moved}}
<tr><td>{{text .VantagePoint}}</td><td>{{.Address}}</td><td>{{site .Before}}</td><td>{{site .After}}</td></tr>
{{- end}}
</tbody>
</table>
{{- if .MovedMore}}
<p class="muted">… and {{.MovedMore}} more (see the JSON report).</p>
{{- end}}
{{- end}}
{{- with .Changes}}{{if .NewIncidents}}
<table>
<caption>New incidents</caption>
<thead><tr><th>Kind</th><th>Site</th><th>Address</th><th>Start</th><th>End</th><th>Vantage points</th></tr></thead>
<tbody>
{{- range .NewIncidents}}
<tr><td>{{text (print .Kind)}}</td><td>{{site .Site}}</td><td>{{with .Address}}{{.}}{{else}}all{{end}}</td><td class="t">{{stamp .Start}}</td><td class="t">{{with .End}}{{stamp .}}{{else}}<span class="open">open</span>{{end}}</td><td>{{names .VantagePoints}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}{{end}}

<h3>Catchment map</h3>
{{- if .Map}}
<figure class="map">
{{.Map}}
<figcaption>{{.MapVPs}} vantage point{{if ne .MapVPs 1}}s{{end}} coloured by the site that serves them (grey: none resolved), lines to their site; {{.MapSites}} site{{if ne .MapSites 1}}s{{end}} placed.{{if .Unlocated}} Not on the map (unknown location): {{names .Unlocated}}.{{end}}{{if .VPsNoCoord}} {{.VPsNoCoord}} vantage point{{if ne .VPsNoCoord 1}}s have{{else}} has{{end}} no known location.{{end}}</figcaption>
</figure>
{{- else}}
<p class="muted">{{.MapNote}}</p>
{{- end}}

<h3>Sites</h3>
{{- if .Sites}}
<table>
<thead><tr><th>Site</th><th>Name</th><th>Declared</th><th class="n">Vantage points</th><th class="n">Share</th></tr></thead>
<tbody>
{{- range .Sites}}
<tr><td><span class="sw" style="background-color: {{color .Site}}"></span>{{site .Site}}</td><td>{{text .Name}}</td><td>{{if .Declared}}yes{{else}}no{{end}}</td><td class="n">{{.VantagePoints}}</td><td class="n">{{percent .Share}}<span class="bar" style="width: {{bar .Share}}px"></span></td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>None.</p>
{{- end}}

<h3>Latency by site</h3>
{{- if .SiteLatency}}
<table>
<caption>RTTs of the answers that named each site, from every vantage point</caption>
<thead><tr><th>Site</th><th class="n">Answers</th><th class="n">Median RTT (ms)</th><th class="n">Fastest RTT (ms)</th></tr></thead>
<tbody>
{{- range .SiteLatency}}
<tr><td><span class="sw" style="background-color: {{color .Site}}"></span>{{site .Site}}</td><td class="n">{{.Observations}}</td><td class="n">{{ms .MedianRTTMs}}</td><td class="n">{{ms .MinRTTMs}}</td></tr>
{{- end}}
{{- if .SiteLatencyOther}}
<tr><td>(other sites)</td><td class="n">{{.SiteLatencyOther}}</td><td></td><td></td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>No answer with an RTT named a site.</p>
{{- end}}

<h3>Incidents</h3>
{{- if .Incidents}}
<table>
<thead><tr><th>Kind</th><th>Site</th><th>Address</th><th>Start</th><th>End</th><th>Vantage points</th><th>Evidence</th></tr></thead>
<tbody>
{{- range .Incidents}}
<tr><td>{{text (print .Kind)}}</td><td>{{site .Site}}</td><td>{{with .Address}}{{.}}{{else}}all{{end}}</td><td class="t">{{stamp .Start}}</td><td class="t">{{with .End}}{{stamp .}}{{else}}<span class="open">open</span>{{end}}</td><td>{{names .VantagePoints}}</td><td>{{text .Evidence.Note}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>None.</p>
{{- end}}

<h3>Switches</h3>
{{- if .Switches}}
<p>{{len .Switches}} switch{{if ne (len .Switches) 1}}es{{end}} of {{.SwitchedVPs}} vantage point{{if ne .SwitchedVPs 1}}s{{end}}; {{.TCPBroke}} broke a TCP session.</p>
<table>
<caption>By cause</caption>
<thead><tr><th>Cause</th><th class="n">Switches</th></tr></thead>
<tbody>
{{- range .ByCause}}
<tr><td>{{text .Name}}</td><td class="n">{{.Count}}</td></tr>
{{- end}}
</tbody>
</table>
<table>
<caption>By vantage point{{if .ByVPMore}} (the {{len .ByVP}} that switched most){{end}}</caption>
<thead><tr><th>Vantage point</th><th class="n">Switches</th><th class="n">Flips per day</th><th>Causes</th><th class="n">TCP sessions broken</th></tr></thead>
<tbody>
{{- range .ByVP}}
<tr><td>{{text .VantagePoint}}</td><td class="n">{{.Switches}}</td><td class="n">{{.FlipsPerDay}}</td><td>{{text .Causes}}</td><td class="n">{{.TCPBroke}}</td></tr>
{{- end}}
</tbody>
</table>
{{- if .ByVPMore}}
<p class="muted">… and {{.ByVPMore}} more vantage points (see the JSON report).</p>
{{- end}}
{{- else}}
<p>None.</p>
{{- end}}

<h3>Unresolved identities</h3>
{{- if .UnresolvedObs}}
<table>
<caption>Answers no rule turned into a site (shown as text, as received)</caption>
<thead><tr><th>Identity</th><th class="n">Observations</th></tr></thead>
<tbody>
{{- range .Unresolved}}
<tr><td><code>{{if .Identity}}{{text .Identity}}{{else}}(empty){{end}}</code></td><td class="n">{{.Observations}}</td></tr>
{{- end}}
{{- if .UnresolvedOther}}
<tr><td>(other identities)</td><td class="n">{{.UnresolvedOther}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>None.</p>
{{- end}}

<h3>Failures</h3>
{{- if .FailureRows}}
<table>
<thead><tr><th>Failure</th><th class="n">Count</th></tr></thead>
<tbody>
{{- range .FailureRows}}
<tr><td>{{failure .Name}}</td><td class="n">{{.Count}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>None.</p>
{{- end}}
{{- if .ImpossibleRTTs}}

<h3>Impossible RTTs</h3>
<table>
<caption>Answers faster than light in fibre allows from where the site is said to be</caption>
<thead><tr><th>Vantage point</th><th>Site</th><th class="n">Distance (km)</th><th class="n">Minimum possible (ms)</th><th class="n">Fastest (ms)</th><th class="n">Impossible / checked</th></tr></thead>
<tbody>
{{- range .ImpossibleRTTs}}
<tr><td>{{text .VantagePoint}}</td><td>{{site .Site}}</td><td class="n">{{printf "%.0f" .DistanceKm}}</td><td class="n">{{printf "%.3f" .MinPossibleMs}}</td><td class="n">{{printf "%.3f" .MinRTTMs}}</td><td class="n">{{.Impossible}} / {{.Checked}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
{{- if .Inflation}}

<h3>Path inflation</h3>
<table>
<caption>Vantage points served by a site much farther than the nearest one</caption>
<thead><tr><th>Vantage point</th><th>Served by</th><th class="n">Distance (km)</th><th>Nearest site</th><th class="n">Distance (km)</th><th class="n">Factor</th></tr></thead>
<tbody>
{{- range .Inflation}}
<tr><td>{{text .VantagePoint}}</td><td>{{site .Site}}</td><td class="n">{{printf "%.0f" .DistanceKm}}</td><td>{{site .Nearest}}</td><td class="n">{{printf "%.0f" .NearestDistanceKm}}</td><td class="n">{{printf "%.1f" .Factor}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}

<details>
<summary>Catchment of each vantage point ({{len .Catchment}} rows)</summary>
<table>
<thead><tr><th>Vantage point</th><th>Address</th><th>Site</th><th class="n">Observations</th><th class="n">Confidence</th><th class="n">Unresolved</th><th class="n">Failures</th></tr></thead>
<tbody>
{{- range .Catchment}}
<tr><td>{{text .VantagePoint}}</td><td>{{.Address}}</td><td>{{site .Site}}{{if .Method}} <span class="muted">(inferred from {{text .Method}})</span>{{end}}</td><td class="n">{{.Observations}}</td><td class="n">{{percent .Confidence}}</td><td class="n">{{.Unresolved}}</td><td class="n">{{.Failures}}</td></tr>
{{- end}}
</tbody>
</table>
</details>
</section>
{{end}}
<footer>anyscope report · self-contained: no script, no external resource.</footer>
</body>
</html>
`
