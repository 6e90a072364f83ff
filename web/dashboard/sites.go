package dashboard

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/web/geomap"
)

// SiteShare is a site of a target and the vantage points it serves.
type SiteShare struct {
	// Code is the site code analysis read from identities (untrusted
	// text); Name its city, from the operator's list or the catalog.
	Code      string   `json:"code"`
	Name      string   `json:"name,omitempty"`
	Latitude  *float64 `json:"lat,omitempty"`
	Longitude *float64 `json:"lon,omitempty"`
	// Color is the site's colour on every map and timeline.
	Color         string  `json:"color"`
	VantagePoints int     `json:"vantage_points"`
	Share         float64 `json:"share"`
	// Declared: the target's own site list (or a global one) names it.
	Declared bool `json:"declared"`
}

// VPEntry is a vantage point on a catchment map: its site (the majority
// over its addresses' streams) and the site of each address.
type VPEntry struct {
	Name      string        `json:"name"`
	Site      string        `json:"site"`
	Latitude  *float64      `json:"lat,omitempty"`
	Longitude *float64      `json:"lon,omitempty"`
	Addresses []AddressSite `json:"addresses"`
}

// AddressSite is the site one address of the target reached from a vantage
// point, and how many streams and observations say so.
type AddressSite struct {
	Address           string  `json:"address"`
	Site              string  `json:"site"`
	Streams           int     `json:"streams"`
	TotalStreams      int     `json:"total_streams"`
	Observations      int     `json:"observations"`
	TotalObservations int     `json:"total_observations"`
	Confidence        float64 `json:"confidence"`
	Window            Window  `json:"window"`
}

// Window is a catchment window.
type Window struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

func windowOf(snap store.CatchmentSnapshot) *Window {
	if snap.WindowStart.IsZero() {
		return nil
	}
	return &Window{stamp(snap.WindowStart), stamp(snap.WindowEnd)}
}

// entries turns a snapshot (by vantage point, then address) into one entry
// per vantage point; with addr valid, only that address counts.
func entries(snap store.CatchmentSnapshot, addr netip.Addr) []VPEntry {
	var out []VPEntry
	for i := 0; i < len(snap.Entries); {
		j := i
		for j < len(snap.Entries) && snap.Entries[j].VantagePoint == snap.Entries[i].VantagePoint {
			j++
		}
		group := snap.Entries[i:j]
		i = j
		e := VPEntry{Name: group[0].VantagePoint, Latitude: group[0].Latitude, Longitude: group[0].Longitude}
		// The site most streams name over the addresses, ties to the one
		// with most observations, then the smaller code.
		type vote struct{ streams, obs int }
		votes := map[string]vote{}
		for _, c := range group {
			if addr.IsValid() && c.Address != addr {
				continue
			}
			e.Addresses = append(e.Addresses, AddressSite{
				Address: c.Address.String(), Site: c.Site, Streams: c.Streams, TotalStreams: c.TotalStreams,
				Observations: c.Observations, TotalObservations: c.TotalObservations, Confidence: c.Confidence,
				Window: Window{stamp(c.WindowStart), stamp(c.WindowEnd)},
			})
			v := votes[c.Site]
			votes[c.Site] = vote{v.streams + c.Streams, v.obs + c.Observations}
		}
		if len(e.Addresses) == 0 {
			continue
		}
		best := vote{-1, -1}
		for site, v := range votes {
			if v.streams > best.streams || v.streams == best.streams && (v.obs > best.obs || v.obs == best.obs && site < e.Site) {
				e.Site, best = site, v
			}
		}
		out = append(out, e)
	}
	return out
}

// placer places and names a target's sites: the operator's list wins,
// then the catalog (a "<cc>-<city>" code by its city part).
type placer map[string]analysis.Site

func newPlacer(t analysis.Target) placer {
	p := placer{}
	for _, s := range t.Sites {
		if _, ok := p[s.Code]; !ok {
			p[s.Code] = s
		}
	}
	return p
}

// place returns the site's name and coordinates (nil when unknown), and
// whether the target declares it.
func (p placer) place(code string) (name string, lat, lon *float64, declared bool) {
	if s, ok := p[code]; ok {
		declared, name = true, s.Name
		if s.HasCoords {
			la, lo := s.Latitude, s.Longitude
			return name, &la, &lo, true
		}
	}
	pl, ok := catalog.Lookup(code)
	if !ok {
		if i := strings.LastIndexByte(code, '-'); i >= 0 {
			pl, ok = catalog.Lookup(code[i+1:])
		}
	}
	if ok {
		if name == "" {
			name = pl.City
		}
		la, lo := pl.Latitude, pl.Longitude
		return name, &la, &lo, declared
	}
	return name, nil, nil, declared
}

// maxListedSites bounds the declared sites listed without a vantage point
// (a global site list may be long).
const maxListedSites = 200

// shares counts the vantage points per site: every site with one, and the
// target's declared sites (when not too many) with none. Most served
// first.
func shares(p placer, es []VPEntry) []SiteShare {
	count := map[string]int{}
	for _, e := range es {
		count[e.Site]++
	}
	if len(p) <= maxListedSites {
		for code := range p {
			if _, ok := count[code]; !ok {
				count[code] = 0
			}
		}
	}
	out := make([]SiteShare, 0, len(count))
	for code, n := range count {
		s := SiteShare{Code: code, Color: color(code), VantagePoints: n}
		s.Name, s.Latitude, s.Longitude, s.Declared = p.place(code)
		if len(es) > 0 {
			s.Share = float64(n) / float64(len(es))
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(x, y SiteShare) int {
		return cmp.Or(cmp.Compare(y.VantagePoints, x.VantagePoints), strings.Compare(x.Code, y.Code))
	})
	return out
}

// unserved is the colour of a vantage point no site serves.
const unserved = "#9e9e9e"

// color is a site's colour on every page (geomap's, so maps and timelines
// agree).
func color(site string) string {
	if site == "" {
		return unserved
	}
	return geomap.Color(site)
}

// colors maps every site of ss to its colour, for the replay script.
func colors(ss []SiteShare) map[string]string {
	m := make(map[string]string, len(ss))
	for _, s := range ss {
		m[s.Code] = s.Color
	}
	return m
}

// mapSites turns shares into the map's sites (those it can place).
func mapSites(ss []SiteShare) []geomap.Site {
	out := make([]geomap.Site, 0, len(ss))
	for _, s := range ss {
		if s.Latitude == nil || s.Longitude == nil {
			continue
		}
		out = append(out, geomap.Site{Code: s.Code, Name: s.Name, Latitude: *s.Latitude, Longitude: *s.Longitude,
			VantagePoints: s.VantagePoints, Share: s.Share})
	}
	return out
}

// mapVantagePoints turns entries into the map's dots (those with a
// location).
func mapVantagePoints(es []VPEntry) []geomap.VantagePoint {
	out := make([]geomap.VantagePoint, 0, len(es))
	for _, e := range es {
		if e.Latitude == nil || e.Longitude == nil {
			continue
		}
		out = append(out, geomap.VantagePoint{Name: e.Name, Latitude: *e.Latitude, Longitude: *e.Longitude, Site: e.Site})
	}
	return out
}
