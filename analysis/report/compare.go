package report

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
)

// Changes is what differs between a target's report and the same target in
// an earlier window (usually the previous report's).
type Changes struct {
	// Since and Until are the earlier window.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Moved lists the (vantage point, address) pairs measured in both
	// windows whose site differs ("" when none resolved).
	Moved []Move `json:"moved"`
	// Appeared and Gone count the (vantage point, address) pairs measured
	// in only this window, or only the earlier one.
	Appeared int `json:"appeared"`
	Gone     int `json:"gone"`
	// Shares lists every site that served a vantage point in either
	// window, in this window's order, then the sites that served none now.
	Shares []ShareChange `json:"shares"`
	// NewIncidents lists this window's incidents that the earlier window
	// did not have open at its end (or with the same start, when the
	// windows overlap).
	NewIncidents []Incident `json:"new_incidents"`
}

// Move is a vantage point whose site at one address changed.
type Move struct {
	VantagePoint string     `json:"vantage_point"`
	Address      netip.Addr `json:"address"`
	Before       string     `json:"before"`
	After        string     `json:"after"`
}

// ShareChange is how a site's share of vantage points changed.
type ShareChange struct {
	Site                string  `json:"site"`
	ShareBefore         float64 `json:"share_before"`
	ShareAfter          float64 `json:"share_after"`
	Delta               float64 `json:"delta"`
	VantagePointsBefore int     `json:"vantage_points_before"`
	VantagePointsAfter  int     `json:"vantage_points_after"`
}

// Compare sets the Changes of every target of r against the same target
// in earlier (an empty target when earlier does not have it).
func Compare(r, earlier *Report) {
	before := make(map[string]*Target, len(earlier.Targets))
	for i := range earlier.Targets {
		before[earlier.Targets[i].Name] = &earlier.Targets[i]
	}
	for i := range r.Targets {
		t := &r.Targets[i]
		e := before[t.Name]
		if e == nil {
			e = &Target{Name: t.Name}
		}
		c := changes(t, e)
		c.Since, c.Until = earlier.Since, earlier.Until
		t.Changes = c
	}
}

func changes(t, e *Target) *Changes {
	c := &Changes{Moved: []Move{}, Shares: []ShareChange{}, NewIncidents: []Incident{}}

	type pair struct {
		vp   string
		addr netip.Addr
	}
	was := make(map[pair]string, len(e.Catchment))
	for _, x := range e.Catchment {
		was[pair{x.VantagePoint, x.Address}] = x.Site
	}
	for _, x := range t.Catchment {
		k := pair{x.VantagePoint, x.Address}
		site, ok := was[k]
		if !ok {
			c.Appeared++
			continue
		}
		delete(was, k)
		if site != x.Site {
			c.Moved = append(c.Moved, Move{VantagePoint: x.VantagePoint, Address: x.Address, Before: site, After: x.Site})
		}
	}
	c.Gone = len(was)

	old := make(map[string]Site, len(e.Sites))
	for _, s := range e.Sites {
		old[s.Site] = s
	}
	seen := make(map[string]bool, len(t.Sites))
	for _, s := range t.Sites {
		seen[s.Site] = true
		o := old[s.Site]
		if s.VantagePoints == 0 && o.VantagePoints == 0 {
			continue
		}
		c.Shares = append(c.Shares, shareChange(s.Site, o, s))
	}
	for _, o := range e.Sites {
		if !seen[o.Site] && o.VantagePoints > 0 {
			c.Shares = append(c.Shares, shareChange(o.Site, o, Site{}))
		}
	}

	open := make(map[string][]Incident, len(e.Incidents))
	for _, in := range e.Incidents {
		open[incidentKey(in)] = append(open[incidentKey(in)], in)
	}
	for _, in := range t.Incidents {
		known := slices.ContainsFunc(open[incidentKey(in)], func(x Incident) bool {
			return x.End == nil || x.Start.Equal(in.Start)
		})
		if !known {
			c.NewIncidents = append(c.NewIncidents, in)
		}
	}
	return c
}

func shareChange(site string, before, after Site) ShareChange {
	return ShareChange{
		Site: site, ShareBefore: before.Share, ShareAfter: after.Share, Delta: round(after.Share - before.Share),
		VantagePointsBefore: before.VantagePoints, VantagePointsAfter: after.VantagePoints,
	}
}

// incidentKey says which incidents of two windows can be the same one: same
// kind, site and address, and for a vantage point's own failure, the same
// vantage points.
func incidentKey(in Incident) string {
	var b strings.Builder
	b.WriteString(string(in.Kind))
	b.WriteByte(0)
	b.WriteString(in.Site)
	b.WriteByte(0)
	if in.Address != nil {
		b.WriteString(in.Address.String())
	}
	if in.Kind == analysis.IncidentVantagePoint {
		for _, vp := range in.VantagePoints {
			b.WriteByte(0)
			b.WriteString(vp)
		}
	}
	return b.String()
}
