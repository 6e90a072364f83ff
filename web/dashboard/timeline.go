package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/collector/store"
)

// Timeline bounds.
const (
	// maxTimelineSwitches bounds the switches one timeline reads.
	maxTimelineSwitches = 20_000
	// maxTimelineRows bounds the vantage points drawn.
	maxTimelineRows = 500
	// allRowsUpTo: a target with at most this many vantage points shows
	// them all, the stable ones too; beyond it only those that switched.
	allRowsUpTo = 200
)

// Timeline is a target's switches over a window: a row per vantage point,
// coloured by the site serving it, with a mark at each switch.
type Timeline struct {
	Target    string        `json:"target"`
	Addresses []string      `json:"addresses"`
	Address   string        `json:"address,omitempty"`
	Since     time.Time     `json:"since"`
	Until     time.Time     `json:"until"`
	Rows      []TimelineRow `json:"rows"`
	// Switches counts the switches read; Truncated says more happened
	// (the first maxTimelineSwitches are shown).
	Switches  int  `json:"switches"`
	Truncated bool `json:"truncated,omitempty"`
	// Stable counts the vantage points not drawn because they did not
	// switch; MoreRows those not drawn beyond maxTimelineRows.
	Stable   int         `json:"stable_not_drawn"`
	MoreRows int         `json:"rows_not_drawn"`
	Sites    []SiteShare `json:"sites"`
	Broke    int         `json:"tcp_broke"`

	SVG *timelineSVG `json:"-"`
}

// Title names the page.
func (t Timeline) Title() string { return t.Target + " switch timeline" }

// TimelineRow is one vantage point's sites over the window.
type TimelineRow struct {
	VantagePoint string       `json:"vantage_point"`
	Segments     []Segment    `json:"segments"`
	Switches     []SwitchView `json:"switches"`
}

// Segment is a span served by one site.
type Segment struct {
	Site  string    `json:"site"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

func (d *Dashboard) timeline(ctx context.Context, r *http.Request, html bool) (string, any, error) {
	t, err := d.target(ctx, r)
	if err != nil {
		return "", nil, err
	}
	now := d.now().UTC()
	since, until, err := window(r, now, 24*time.Hour)
	if err != nil {
		return "", nil, err
	}
	addr, err := addressParam(r)
	if err != nil {
		return "", nil, err
	}
	snap, err := d.src.CatchmentAt(ctx, t.Name, since)
	if err != nil {
		return "", nil, err
	}
	sw, truncated, err := d.src.Switches(ctx, store.SwitchQuery{Target: t.Name, Since: since, Until: until, Limit: maxTimelineSwitches})
	if err != nil {
		return "", nil, err
	}
	tl := Timeline{Target: t.Name, Addresses: addresses(t), Since: since, Until: until, Truncated: truncated}
	if addr.IsValid() {
		tl.Address = addr.String()
	}
	start := map[string]string{}
	for _, e := range entries(snap, addr) {
		start[e.Name] = e.Site
	}
	byVP := map[string][]store.SwitchRow{}
	for _, s := range sw {
		if addr.IsValid() && s.Address != addr {
			continue
		}
		byVP[s.VantagePoint] = append(byVP[s.VantagePoint], s)
		tl.Switches++
		if s.TCPBroke {
			tl.Broke++
		}
	}
	names := make([]string, 0, len(start)+len(byVP))
	all := len(start) <= allRowsUpTo
	for vp := range start {
		if all || len(byVP[vp]) > 0 {
			names = append(names, vp)
		} else {
			tl.Stable++
		}
	}
	for vp := range byVP {
		if _, ok := start[vp]; !ok {
			names = append(names, vp)
		}
	}
	slices.Sort(names)
	if len(names) > maxTimelineRows {
		tl.MoreRows, names = len(names)-maxTimelineRows, names[:maxTimelineRows]
	}
	end := until
	if now.Before(end) {
		end = now // nothing is known about the future
	}
	if end.Before(since) {
		end = since
	}
	count := map[string]int{}
	for _, vp := range names {
		row := TimelineRow{VantagePoint: vp, Switches: []SwitchView{}, Segments: []Segment{}}
		ss := byVP[vp]
		cur, from := start[vp], since
		if _, ok := start[vp]; !ok && len(ss) > 0 {
			cur = ss[0].From
		}
		for _, s := range ss {
			row.Switches = append(row.Switches, switchView(s))
			if s.To == cur {
				continue // another stream of the vantage point made the same move
			}
			if cur != "" && s.At.After(from) {
				row.Segments = append(row.Segments, Segment{cur, from, s.At})
			}
			cur, from = s.To, s.At
		}
		if cur != "" && end.After(from) {
			row.Segments = append(row.Segments, Segment{cur, from, end})
		}
		for _, g := range row.Segments {
			count[g.Site]++
		}
		tl.Rows = append(tl.Rows, row)
	}
	p := newPlacer(t)
	for code := range count {
		s := SiteShare{Code: code, Color: color(code)}
		s.Name, s.Latitude, s.Longitude, s.Declared = p.place(code)
		tl.Sites = append(tl.Sites, s)
	}
	slices.SortFunc(tl.Sites, func(x, y SiteShare) int { return strings.Compare(x.Code, y.Code) })
	if html {
		tl.SVG = drawTimeline(tl)
	}
	return "timeline", tl, nil
}

// timelineSVG is a timeline laid out for drawing (the template writes the
// SVG; html/template escapes every name in it).
type timelineSVG struct {
	Width, Height float64
	Left, Right   float64 // the plot's horizontal extent
	AxisY         float64
	Ticks         []tick
	Rows          []svgRow
}

type tick struct {
	X     float64
	Label string
}

type svgRow struct {
	Y, TextY     float64
	VantagePoint string
	Rects        []svgRect
	Marks        []svgMark
}

type svgRect struct {
	X, W  float64
	Fill  string
	Title string
}

type svgMark struct {
	X     float64
	Broke bool
	Title string
}

// Timeline geometry, px.
const (
	tlWidth  = 960.0
	tlLeft   = 170.0
	tlRight  = 10.0
	tlTop    = 28.0
	tlRow    = 16.0
	tlBar    = 12.0
	tlBottom = 8.0
)

func drawTimeline(tl Timeline) *timelineSVG {
	s := &timelineSVG{Width: tlWidth, Left: tlLeft, Right: tlWidth - tlRight, AxisY: tlTop - 6}
	s.Height = tlTop + float64(len(tl.Rows))*tlRow + tlBottom
	span := tl.Until.Sub(tl.Since)
	x := func(t time.Time) float64 {
		f := float64(t.Sub(tl.Since)) / float64(span)
		return tlLeft + min(max(f, 0), 1)*(s.Right-tlLeft)
	}
	step := tickStep(span)
	for t := tl.Since.Truncate(step); !t.After(tl.Until); t = t.Add(step) {
		if t.Before(tl.Since) {
			continue
		}
		layout := "15:04"
		if step >= 24*time.Hour || t.Hour() == 0 && t.Minute() == 0 {
			layout = "Jan 2"
		}
		s.Ticks = append(s.Ticks, tick{x(t), t.UTC().Format(layout)})
	}
	for i, r := range tl.Rows {
		y := tlTop + float64(i)*tlRow
		row := svgRow{Y: y, TextY: y + tlBar - 2, VantagePoint: r.VantagePoint}
		for _, g := range r.Segments {
			x0, x1 := x(g.Start), x(g.End)
			row.Rects = append(row.Rects, svgRect{X: x0, W: max(x1-x0, 0.5), Fill: color(g.Site),
				Title: fmt.Sprintf("%s: %s from %s to %s", r.VantagePoint, g.Site, stamp(g.Start), stamp(g.End))})
		}
		for _, w := range r.Switches {
			title := fmt.Sprintf("%s %s %s: %s → %s at %s; cause: %s", r.VantagePoint, w.Address, w.Stream, w.From, w.To, stamp(w.At), w.Cause)
			if w.CauseDetail != "" {
				title += " (" + w.CauseDetail + ")"
			}
			if w.Failures > 0 {
				title += fmt.Sprintf("; %d failed in between", w.Failures)
			}
			if w.TCPBroke {
				title += "; a TCP session broke"
			}
			row.Marks = append(row.Marks, svgMark{X: x(w.At), Broke: w.TCPBroke, Title: title})
		}
		s.Rows = append(s.Rows, row)
	}
	return s
}

// tickStep picks an axis step giving at most about eight ticks.
func tickStep(span time.Duration) time.Duration {
	for _, s := range []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour,
		3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 2 * 24 * time.Hour, 7 * 24 * time.Hour} {
		if span/s <= 8 {
			return s
		}
	}
	return 7 * 24 * time.Hour
}
