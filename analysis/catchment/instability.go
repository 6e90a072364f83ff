package catchment

import (
	"cmp"
	"slices"
	"time"
)

// VantagePointInstability is how often one vantage point flipped between
// sites of one target: the anycast instability of Wei & Heidemann (about 1%
// of RIPE Atlas vantage points in 2017, several % since).
type VantagePointInstability struct {
	VantagePoint string
	Target       string
	// Switches counts flips: the switches of all the vantage point's
	// streams of the target (every address, kind, transport and query),
	// those of one round counted once. Switches share a round when both
	// carry the same round number, or, when either has none, when they are
	// within Config.Round of the first switch of the flip.
	Switches int
	// Span is the observed time, from the vantage point's first to its
	// last observation of the target.
	Span time.Duration
	// FlipsPerDay is Switches per 24 hours of Span (0 when Span is 0).
	FlipsPerDay float64
	// Sites lists every site seen, most observations first, then by code.
	Sites []string
}

type vpTarget struct{ vp, target string }

// Instability returns one entry per (vantage point, target) seen, stable
// ones included (Switches 0), sorted by target then vantage point.
func (a *Accumulator) Instability() []VantagePointInstability {
	type acc struct {
		first, last time.Time
		sites       []SiteCount
		switches    []int
	}
	all := make(map[vpTarget]*acc)
	for _, p := range a.pairs {
		k := vpTarget{p.key.vp, p.key.target}
		x := all[k]
		if x == nil {
			x = &acc{}
			all[k] = x
		}
		for _, s := range p.streams {
			if !s.started {
				continue
			}
			if x.first.IsZero() || s.first.Before(x.first) {
				x.first = s.first
			}
			if s.last.After(x.last) {
				x.last = s.last
			}
		}
		for _, sc := range p.sites {
			x.sites = merge(x.sites, sc)
		}
	}
	for i := range a.switches {
		sw := &a.switches[i]
		x := all[vpTarget{sw.VantagePoint, sw.Target}]
		x.switches = append(x.switches, i)
	}
	out := make([]VantagePointInstability, 0, len(all))
	for k, x := range all {
		vi := VantagePointInstability{VantagePoint: k.vp, Target: k.target, Span: x.last.Sub(x.first), Sites: []string{}}
		vi.Switches = a.flips(x.switches)
		if vi.Span > 0 {
			vi.FlipsPerDay = float64(vi.Switches) * float64(24*time.Hour) / float64(vi.Span)
		}
		sorted, _, _, _ := majority(x.sites)
		for _, sc := range sorted {
			vi.Sites = append(vi.Sites, sc.Site)
		}
		out = append(out, vi)
	}
	slices.SortFunc(out, func(x, y VantagePointInstability) int {
		if c := cmp.Compare(x.Target, y.Target); c != 0 {
			return c
		}
		return cmp.Compare(x.VantagePoint, y.VantagePoint)
	})
	return out
}

// flips counts the switches idx as flips, one per round.
func (a *Accumulator) flips(idx []int) int {
	a.sortByTime(idx)
	n := 0
	var anchor *switchRec
	for _, i := range idx {
		sw := &a.switches[i]
		if anchor != nil {
			if anchor.round != 0 && sw.round != 0 {
				if anchor.round == sw.round {
					continue
				}
			} else if sw.At.Sub(anchor.At) <= a.cfg.Round {
				continue
			}
		}
		anchor = sw
		n++
	}
	return n
}

// merge adds sc's counts to the site counts of sites.
func merge(sites []SiteCount, sc SiteCount) []SiteCount {
	for i := range sites {
		if sites[i].Site == sc.Site {
			sites[i].Observations += sc.Observations
			if sc.Last.After(sites[i].Last) {
				sites[i].Last = sc.Last
			}
			return sites
		}
	}
	return append(sites, sc)
}
