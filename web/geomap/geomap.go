// Package geomap draws catchment maps: which anycast site serves each
// vantage point, on a map of the world, as one self-contained SVG element.
// The dashboard and the reports both draw their maps here, so they always
// agree.
//
// An anycast address is announced from many sites; BGP sends each vantage
// point to one of them, its catchment. On the map every vantage point is a
// small dot in the colour of the site that answered it (grey when none
// did), every site a larger labelled marker in its colour, and a legend
// lists the sites by their share of the vantage points. Optional
// great-circle lines join each vantage point to its site: long lines show
// traffic travelling far past nearer sites, often the first sign of a
// routing problem.
//
// The world is Natural Earth's 1:110m land and country borders (public
// domain, from the npm package world-atlas), generated into data/world.txt
// by internal/gen and embedded. The projection is Equal Earth, an
// equal-area projection: a region's share of the map is its share of the
// globe. Everything that does not depend on the data (ocean, graticule,
// land, borders) is turned into path data once per width and cached, so a
// map of 12,000 vantage points costs little more than writing its dots.
//
// Every string on a map may come from the network (a DNS server names
// itself in its hostname.bind answer), so each is escaped for XML, with
// controls and invalid UTF-8 replaced; link URLs must be relative paths or
// http(s) URLs. The SVG holds no script: tooltips are <title> elements, and
// each dot carries data-vp and data-site attributes for the dashboard's
// own script to use.
package geomap

//go:generate go run ./internal/gen -npm world-atlas@2.0.2 -o data/world.txt

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
)

// Site is an anycast site on the map.
type Site struct {
	Code, Name          string  // untrusted text: escaped by the renderer
	Latitude, Longitude float64 // degrees; a site with a NaN or infinite coordinate gets no marker
	VantagePoints       int     // how many it serves (legend)
	Share               float64 // 0..1 of the target's vantage points (legend)
}

// VantagePoint is a dot coloured by the site that serves it ("" = none: grey).
type VantagePoint struct {
	Name                string
	Latitude, Longitude float64 // degrees; NaN or infinite: not drawn
	Site                string
}

// Map is what Render draws.
type Map struct {
	Title         string
	Sites         []Site
	VantagePoints []VantagePoint
	Lines         bool // great-circle lines from each vantage point to its site
	Width         int  // px; 0 = 960 (height follows the projection's aspect)
	// Link, when set, makes each vantage point dot a link: Link(name) is the
	// URL (escaped). A URL that is neither a relative path nor an http(s)
	// URL (javascript:, data:, //host, …) is refused: that dot gets no link.
	Link func(vantagePoint string) string
}

// DefaultWidth is the width of a map whose Width is 0.
const DefaultWidth = 960

// MinWidth and MaxWidth bound Map.Width.
const (
	MinWidth = 240
	MaxWidth = 8192
)

// ErrInvalidMap is wrapped by Render's errors about the Map itself.
var ErrInvalidMap = errors.New("geomap: invalid map")

// Text lengths shown on the map, in characters; longer strings are cut
// with "…" (tooltips keep more).
const (
	codeChars    = 12
	nameChars    = 24
	tooltipChars = 200
)

// Colours of the map itself.
const (
	oceanColor     = "#dbe8f3"
	oceanEdge      = "#9fb9cf"
	graticuleColor = "#c9dcec"
	landColor      = "#f1eee6"
	borderColor    = "#cbc4b5"
)

// Render writes the map as one <svg> element (no XML prolog):
// self-contained, without script, sized by its viewBox (Width wide).
func Render(w io.Writer, m Map) error {
	width := m.Width
	if width == 0 {
		width = DefaultWidth
	}
	if width < MinWidth || width > MaxWidth {
		return fmt.Errorf("%w: width %d, want %d..%d (or 0 for %d)", ErrInvalidMap, width, MinWidth, MaxWidth, DefaultWidth)
	}
	bg, err := backgroundFor(width)
	if err != nil {
		return err
	}
	// Text and markers grow more slowly than the map, so that they stay
	// readable at the map's own size.
	f := min(max(math.Sqrt(float64(width)/DefaultWidth), 0.75), 2)
	r := &renderer{out: w, buf: make([]byte, 0, flushAt+4096), m: &m, width: width, f: f}
	r.layout()
	r.render(bg)
	r.flush()
	return r.err
}

// flushAt is how much output the renderer gathers before writing it.
const flushAt = 64 << 10

type renderer struct {
	out   io.Writer
	buf   []byte
	err   error
	m     *Map
	width int
	f     float64 // text and marker sizes are those of a 960 px map times f

	top, mapH, legendTop, height float64
	legend                       []legendRow
	sites                        map[string]int // code → index in m.Sites (the first one)
	cols, rows                   int
}

// legendRow is one line of the legend: a site, or the vantage points no
// site answered (site == -1).
type legendRow struct {
	site  int
	code  string
	count int
	share float64
}

func (r *renderer) flush() {
	if r.err == nil && len(r.buf) > 0 {
		_, r.err = r.out.Write(r.buf)
	}
	r.buf = r.buf[:0]
}

func (r *renderer) maybeFlush() {
	if len(r.buf) >= flushAt {
		r.flush()
	}
}

func (r *renderer) s(s string) { r.buf = append(r.buf, s...) }

// text writes untrusted text escaped, cut to limit characters (0: no cut).
func (r *renderer) text(s string, limit int) { r.buf = appendEscaped(r.buf, s, limit) }

// num writes a length in tenths of a pixel.
func (r *renderer) num(v float64) { r.buf = appendTenths(r.buf, tenths(v)) }

// attr writes ` name="value"` with a number value.
func (r *renderer) attr(name string, v float64) {
	r.buf = append(r.buf, ' ')
	r.buf = append(r.buf, name...)
	r.buf = append(r.buf, '=', '"')
	r.num(v)
	r.buf = append(r.buf, '"')
}

// layout sorts the legend and places the title band, the map and the
// legend.
func (r *renderer) layout() {
	m := r.m
	r.sites = make(map[string]int, len(m.Sites))
	for i, s := range m.Sites {
		if _, ok := r.sites[s.Code]; !ok {
			r.sites[s.Code] = i
		}
		r.legend = append(r.legend, legendRow{site: i, code: s.Code, count: s.VantagePoints, share: s.Share})
	}
	slices.SortStableFunc(r.legend, func(a, b legendRow) int {
		as, bs := a.share, b.share
		if math.IsNaN(as) {
			as = math.Inf(-1)
		}
		if math.IsNaN(bs) {
			bs = math.Inf(-1)
		}
		return cmp.Or(cmp.Compare(bs, as), cmp.Compare(b.count, a.count), cmp.Compare(a.code, b.code))
	})
	none := 0
	for _, vp := range m.VantagePoints {
		if vp.Site == "" {
			none++
		}
	}
	if none > 0 {
		r.legend = append(r.legend, legendRow{site: -1, count: none, share: float64(none) / float64(len(m.VantagePoints))})
	}
	if m.Title != "" {
		r.top = 30 * r.f
	}
	r.mapH = mapHeight(r.width)
	r.legendTop = r.top + r.mapH
	r.cols = min(max(int(float64(r.width)/(220*r.f)), 1), 6)
	r.rows = (len(r.legend) + r.cols - 1) / r.cols
	r.height = r.legendTop
	if r.rows > 0 {
		r.height += (14 + 18*float64(r.rows)) * r.f
	}
}

func (r *renderer) render(bg *background) {
	m := r.m
	r.s(`<svg xmlns="http://www.w3.org/2000/svg" class="geomap" viewBox="0 0 `)
	r.num(float64(r.width))
	r.s(" ")
	r.num(r.height)
	r.s(`"`)
	r.attr("width", float64(r.width))
	r.attr("height", r.height)
	r.s(` role="img" font-family="sans-serif"`)
	if m.Title != "" {
		r.s(` aria-label="`)
		r.text(m.Title, tooltipChars)
		r.s(`"><title>`)
		r.text(m.Title, tooltipChars)
		r.s(`</title><text x="`)
		r.num(8 * r.f)
		r.s(`" y="`)
		r.num(21 * r.f)
		r.s(`" font-size="`)
		r.num(16 * r.f)
		r.s(`" font-weight="bold" fill="#222">`)
		r.text(m.Title, 80)
		r.s("</text>\n")
	} else {
		r.s(">\n")
	}
	if r.top > 0 {
		r.s(`<g transform="translate(0 `)
		r.num(r.top)
		r.s(`)">`)
	} else {
		r.s("<g>")
	}
	r.s(`<path class="ocean" fill="` + oceanColor + `" stroke="` + oceanEdge + `" d="`)
	r.s(bg.sphere)
	r.s(`"/>` + "\n" + `<path class="graticule" fill="none" stroke="` + graticuleColor + `" stroke-width=".5" d="`)
	r.s(bg.graticule)
	r.s(`"/>` + "\n" + `<path class="land" fill="` + landColor + `" d="`)
	r.s(bg.land)
	r.s(`"/>` + "\n" + `<path class="borders" fill="none" stroke="` + borderColor + `" stroke-width=".5" d="`)
	r.s(bg.borders)
	r.s(`"/>` + "\n")
	r.maybeFlush()

	groups := r.groups()
	if m.Lines {
		r.lines(groups)
	}
	r.dots(groups)
	r.markers()
	r.s("</g>\n")
	r.legendRows()
	r.s("</svg>\n")
}

// group is the vantage points (indices) of one site code.
type group struct {
	code string
	vps  []int
}

// groups gathers the vantage points by site: those of no site first (drawn
// underneath), then by the legend's order (large catchments under small
// ones), then codes the map has no site for, by code. Within a group, the
// input order.
func (r *renderer) groups() []group {
	idx := map[string]int{}
	var gs []group
	add := func(code string) {
		if _, ok := idx[code]; !ok {
			idx[code] = len(gs)
			gs = append(gs, group{code: code})
		}
	}
	add("")
	for _, l := range r.legend {
		if l.site >= 0 {
			add(l.code)
		}
	}
	known := len(gs)
	for _, vp := range r.m.VantagePoints {
		add(vp.Site)
	}
	slices.SortFunc(gs[known:], func(a, b group) int { return cmp.Compare(a.code, b.code) })
	for i, g := range gs {
		idx[g.code] = i
	}
	for i, vp := range r.m.VantagePoints {
		g := &gs[idx[vp.Site]]
		g.vps = append(g.vps, i)
	}
	return slices.DeleteFunc(gs, func(g group) bool { return len(g.vps) == 0 })
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// lines draws a great circle from each vantage point to its site, one path
// per site.
func (r *renderer) lines(groups []group) {
	r.s(`<g class="lines" fill="none" stroke-width="`)
	r.num(.7 * r.f)
	r.s(`" stroke-opacity=".45">` + "\n")
	var (
		buf     []latLon
		scratch []float64
	)
	scale := float64(r.width)
	for _, g := range groups {
		si, ok := r.sites[g.code]
		if g.code == "" || !ok {
			continue
		}
		s := r.m.Sites[si]
		if !finite(s.Latitude, s.Longitude) {
			continue
		}
		b := latLon{}
		b.lat, b.lon = normalize(s.Latitude, s.Longitude)
		start := len(r.buf)
		r.s(`<path data-site="`)
		r.text(g.code, 0)
		r.s(`" stroke="` + Color(g.code) + `" d="`)
		empty := len(r.buf)
		for _, i := range g.vps {
			vp := &r.m.VantagePoints[i]
			if !finite(vp.Latitude, vp.Longitude) {
				continue
			}
			a := latLon{}
			a.lat, a.lon = normalize(vp.Latitude, vp.Longitude)
			buf = greatCircle(a, b, buf, func(piece []latLon) {
				r.buf, scratch = appendLine(r.buf, piece, scratch, scale)
			})
			r.maybeFlushInside(&start, &empty)
		}
		if len(r.buf) == empty && start >= 0 {
			r.buf = r.buf[:start]
			continue
		}
		r.s(`"/>` + "\n")
	}
	r.s("</g>\n")
}

// maybeFlushInside flushes in the middle of an element, after which it can
// no longer be taken back (start, empty = -1).
func (r *renderer) maybeFlushInside(start, empty *int) {
	if len(r.buf) >= flushAt {
		r.flush()
		*start, *empty = -1, -1
	}
}

// appendLine appends path data for a polyline of points in degrees; pts
// is scratch space for their unit coordinates.
func appendLine(b []byte, line []latLon, pts []float64, scale float64) ([]byte, []float64) {
	pts = pts[:0]
	for _, p := range line {
		x, y := unit(p.lat, p.lon)
		pts = append(pts, x, y)
	}
	return appendPath(b, pts, scale, false), pts
}

// dots draws the vantage points, grouped by site.
func (r *renderer) dots(groups []group) {
	r.s(`<g class="vps" stroke="#333" stroke-width="`)
	r.num(.3 * r.f)
	r.s(`">` + "\n")
	rad := 2.2 * r.f
	for _, g := range groups {
		r.s(`<g fill="` + Color(g.code) + `" data-site="`)
		r.text(g.code, 0)
		r.s(`">` + "\n")
		// What the tooltip says after the arrow is the same for the group.
		var to []byte
		if g.code == "" {
			to = []byte("no answer")
		} else {
			to = appendEscaped(to, g.code, codeChars)
			if si, ok := r.sites[g.code]; ok && r.m.Sites[si].Name != "" {
				to = append(to, " ("...)
				to = appendEscaped(to, r.m.Sites[si].Name, nameChars)
				to = append(to, ')')
			}
		}
		site := appendEscaped(nil, g.code, 0)
		for _, i := range g.vps {
			vp := &r.m.VantagePoints[i]
			if !finite(vp.Latitude, vp.Longitude) {
				continue
			}
			x, y := Project(vp.Latitude, vp.Longitude, r.width)
			link := ""
			if r.m.Link != nil {
				if u := r.m.Link(vp.Name); safeURL(u) {
					link = u
				}
			}
			if link != "" {
				r.s(`<a href="`)
				r.text(link, 0)
				r.s(`">`)
			}
			r.s(`<circle`)
			r.attr("cx", x)
			r.attr("cy", y)
			r.attr("r", rad)
			r.s(` data-vp="`)
			r.text(vp.Name, 0)
			r.s(`" data-site="`)
			r.buf = append(r.buf, site...)
			r.s(`"><title>`)
			r.text(vp.Name, tooltipChars)
			r.s(" → ")
			r.buf = append(r.buf, to...)
			r.s("</title></circle>")
			if link != "" {
				r.s("</a>")
			}
			r.s("\n")
			r.maybeFlush()
		}
		r.s("</g>\n")
	}
	r.s("</g>\n")
}

// markers draws the sites: a circle in the site's colour and its code.
func (r *renderer) markers() {
	r.s(`<g class="sites" stroke-linejoin="round">` + "\n")
	for _, l := range r.legend {
		if l.site < 0 {
			continue
		}
		s := &r.m.Sites[l.site]
		if !finite(s.Latitude, s.Longitude) {
			continue
		}
		x, y := Project(s.Latitude, s.Longitude, r.width)
		r.s(`<g class="site" data-site="`)
		r.text(s.Code, 0)
		r.s(`"><title>`)
		r.siteTooltip(l)
		r.s(`</title><circle`)
		r.attr("cx", x)
		r.attr("cy", y)
		r.attr("r", 5*r.f)
		r.s(` fill="` + Color(s.Code) + `" stroke="#fff"`)
		r.attr("stroke-width", 1.5*r.f)
		r.s(`/><text`)
		// The label goes right of the marker, or left of it near the
		// map's east edge.
		if x > float64(r.width)-60*r.f {
			r.attr("x", x-7*r.f)
			r.s(` text-anchor="end"`)
		} else {
			r.attr("x", x+7*r.f)
		}
		r.attr("y", y+4*r.f)
		r.attr("font-size", 11*r.f)
		r.s(` font-weight="bold" fill="#222" stroke="#fff" paint-order="stroke"`)
		r.attr("stroke-width", 3*r.f)
		r.s(`>`)
		r.text(s.Code, codeChars)
		r.s("</text></g>\n")
	}
	r.s("</g>\n")
}

// siteTooltip writes "Name (CODE): 123 vantage points, 12.3%".
func (r *renderer) siteTooltip(l legendRow) {
	s := &r.m.Sites[l.site]
	if s.Name != "" {
		r.text(s.Name, tooltipChars)
		r.s(" (")
		r.text(s.Code, tooltipChars)
		r.s(")")
	} else {
		r.text(s.Code, tooltipChars)
	}
	r.s(": ")
	r.count(l)
}

// count writes "123 vantage points, 12.3%".
func (r *renderer) count(l legendRow) {
	r.buf = strconv.AppendInt(r.buf, int64(l.count), 10)
	if l.count == 1 {
		r.s(" vantage point, ")
	} else {
		r.s(" vantage points, ")
	}
	r.percent(l.share)
}

func (r *renderer) percent(share float64) {
	if !finite(share) {
		r.s("–")
		return
	}
	r.buf = strconv.AppendFloat(r.buf, share*100, 'f', 1, 64)
	r.s("%")
}

// legendRows lists the sites by share, in columns: swatch, code, name,
// vantage points and share.
func (r *renderer) legendRows() {
	if len(r.legend) == 0 {
		return
	}
	f := r.f
	colW := float64(r.width) / float64(r.cols)
	r.s(`<g class="legend" font-size="`)
	r.num(12 * f)
	r.s(`" fill="#222">` + "\n")
	for i, l := range r.legend {
		col, row := i/r.rows, i%r.rows
		x := float64(col)*colW + 8*f
		y := r.legendTop + (10+18*float64(row))*f
		r.s(`<g data-site="`)
		if l.site >= 0 {
			r.text(l.code, 0)
		}
		r.s(`"><title>`)
		if l.site >= 0 {
			r.siteTooltip(l)
		} else {
			r.s("no answer: ")
			r.count(l)
		}
		r.s(`</title><rect`)
		r.attr("x", x)
		r.attr("y", y+1*f)
		r.attr("width", 10*f)
		r.attr("height", 10*f)
		r.s(` fill="` + Color(l.code) + `"/><text`)
		r.attr("x", x+15*f)
		r.attr("y", y+10*f)
		r.s(`>`)
		if l.site >= 0 {
			s := &r.m.Sites[l.site]
			r.s(`<tspan font-weight="bold">`)
			r.text(s.Code, 8)
			r.s(`</tspan>`)
			if s.Name != "" {
				r.s(" ")
				r.text(s.Name, 12)
			}
		} else {
			r.s("no answer")
		}
		r.s(`</text><text`)
		r.attr("x", float64(col+1)*colW-10*f)
		r.attr("y", y+10*f)
		r.s(` text-anchor="end">`)
		r.buf = strconv.AppendInt(r.buf, int64(l.count), 10)
		r.s(" · ")
		r.percent(l.share)
		r.s("</text></g>\n")
	}
	r.s("</g>\n")
}
