package incident

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Incidents judges what is still pending and returns every incident found so
// far, sorted by start, kind, target and site (then address and first
// vantage point); open incidents have a zero End.
func (d *Detector) Incidents() []analysis.Incident {
	for range 2 { // a vantage_point verdict may mark other addresses
		for _, g := range d.groupList {
			if g.dirty {
				d.evaluate(g)
			}
		}
	}
	out := make([]analysis.Incident, 0, len(d.incidents))
	for _, in := range d.incidents {
		if !in.dropped {
			out = append(out, d.export(in))
		}
	}
	slices.SortFunc(out, compareIncidents)
	return out
}

func compareIncidents(x, y analysis.Incident) int {
	if c := x.Start.Compare(y.Start); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Kind, y.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Target, y.Target); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Site, y.Site); c != 0 {
		return c
	}
	if c := x.Address.Compare(y.Address); c != 0 {
		return c
	}
	return slices.Compare(x.VantagePoints, y.VantagePoints)
}

func (d *Detector) export(in *incident) analysis.Incident {
	out := analysis.Incident{
		Kind: in.kind, Target: in.target, Address: in.addr, Site: in.site,
		Start:         time.Unix(0, in.start).UTC(),
		VantagePoints: make([]string, 0, len(in.members)),
		Evidence: analysis.Evidence{
			Healthy:  in.healthy,
			PathEnds: slices.Clone(in.ends),
			Note:     d.note(in),
		},
	}
	if in.end != 0 {
		out.End = time.Unix(0, in.end).UTC()
	}
	for vp := range in.members {
		out.VantagePoints = append(out.VantagePoints, d.vps[vp].name)
	}
	slices.Sort(out.VantagePoints)
	for c, n := range in.counts {
		if n > 0 {
			if out.Evidence.Failed == nil {
				out.Evidence.Failed = make(map[string]int)
			}
			out.Evidence.Failed[string(classFailure(c))] = n
		}
	}
	if in.kind == analysis.IncidentBlackhole {
		out.Evidence.CatchmentSize = in.catchment
	}
	return out
}

// note explains the verdict in one sentence.
func (d *Detector) note(in *incident) string {
	var b strings.Builder
	switch in.kind {
	case analysis.IncidentBlackhole:
		fmt.Fprintf(&b, "%d of the %d vantage points last served by site %s stopped getting answers (%s) while %d of other sites kept answering",
			len(in.members), max(in.catchment, len(in.members)), clean(in.site), in.dominant(), in.healthy)
		b.WriteString(in.traceClause("traceroutes from them"))
		if in.catchment == 1 && in.reaches == 0 {
			b.WriteString("; it is the site's only vantage point here, so its own network cannot be ruled out")
		}
	case analysis.IncidentOutage:
		fmt.Fprintf(&b, "%d of %d recent vantage points failed (%s) with %d sites down; %d kept answering",
			len(in.members), max(in.recentAtOpen, len(in.members)), in.dominant(), in.sitesDown, in.healthy)
		b.WriteString(in.traceClause("traceroutes from them"))
	case analysis.IncidentVantagePoint:
		if in.addresses == 1 {
			fmt.Fprintf(&b, "%s failed towards the only address it measures (%s)", clean(in.v.name), in.dominant())
		} else {
			fmt.Fprintf(&b, "%s failed towards all %d addresses it measures (%s)", clean(in.v.name), in.addresses, in.dominant())
		}
		switch in.why {
		case vpBroken:
			fmt.Fprintf(&b, " while up to %d vantage points of the same sites kept answering", in.healthy)
		case vpAlone:
			b.WriteString(", alone at several sites that no other vantage point saw fail")
		case vpTraceDies:
			b.WriteString(", alone at its site")
		}
		b.WriteString(in.traceClause("its traceroutes"))
	}
	b.WriteString(".")
	return b.String()
}

// dominant names the most frequent failure.
func (in *incident) dominant() string {
	best := -1
	for c, n := range in.counts {
		if n > 0 && (best < 0 || n > in.counts[best]) {
			best = c
		}
	}
	if best < 0 {
		return "no failure recorded"
	}
	return "mostly " + string(classFailure(best))
}

// traceClause says what the traceroutes taken during the failure showed.
func (in *incident) traceClause(whose string) string {
	switch {
	case in.reaches > 0 && in.dies == 0:
		return "; " + whose + " still reach the hops where healthy ones ended (the site's upstream)"
	case in.dies > 0 && in.reaches == 0:
		return "; " + whose + " end before the hops where healthy ones ended"
	case in.dies > 0:
		return fmt.Sprintf("; of %s, %d still reach the hops where healthy ones ended and %d do not", whose, in.reaches, in.dies)
	}
	return ""
}

// clean makes untrusted text safe for a one-line note.
func clean(s string) string {
	return api.Clip(strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s))
}
