package report

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
)

// maxLatencySites bounds the (target, site) pairs whose RTTs are kept; a
// hostile network can make rules name many sites.
const maxLatencySites = 1 << 12

// maxSiteMemo bounds the memo of identities already resolved to a site.
const maxSiteMemo = 1 << 16

// maxRTT is the largest RTT told apart; slower answers count as maxRTT.
const maxRTT = 2 * time.Minute

// siteRTTs collects, in one pass, the RTTs of the answers that named each
// site of each target. It resolves identities with the analyzer's
// resolvers, so it names the same sites as the catchment.
type siteRTTs struct {
	resolvers map[string]*identity.Resolver // shared with the analyzer
	memo      map[siteKey]string            // (target, identity) → site
	sites     map[siteKey]*rttHistogram     // (target, site) → RTTs
	other     map[string]int                // target → answers beyond maxLatencySites
}

type siteKey struct{ target, s string }

func newSiteRTTs(resolvers map[string]*identity.Resolver) *siteRTTs {
	return &siteRTTs{
		resolvers: resolvers,
		memo:      make(map[siteKey]string),
		sites:     make(map[siteKey]*rttHistogram),
		other:     make(map[string]int),
	}
}

// add counts o when it is an answer whose identity names a site and that
// has an RTT. Call it after the analyzer's Add, which creates the default
// resolver of an undeclared target.
func (s *siteRTTs) add(o analysis.Observation) {
	if o.Failure != "" || o.Identity == "" || o.RTT <= 0 {
		return
	}
	site, ok := s.memo[siteKey{o.Target, o.Identity}]
	if !ok {
		r := s.resolvers[o.Target]
		if r == nil {
			return
		}
		site = r.Resolve(o.Identity).Site
		if len(s.memo) < maxSiteMemo {
			s.memo[siteKey{o.Target, o.Identity}] = site
		}
	}
	if site == "" {
		return
	}
	k := siteKey{o.Target, site}
	h := s.sites[k]
	if h == nil {
		if len(s.sites) >= maxLatencySites {
			s.other[o.Target]++
			return
		}
		h = &rttHistogram{counts: make(map[time.Duration]int)}
		s.sites[k] = h
	}
	h.add(o.RTT)
}

// summary returns the latency of each site of target, most answers first,
// and the answers not counted.
func (s *siteRTTs) summary(target string) ([]SiteLatency, int) {
	out := []SiteLatency{}
	for k, h := range s.sites {
		if k.target != target {
			continue
		}
		out = append(out, SiteLatency{Site: k.s, Observations: h.n, MedianRTTMs: ms(h.median()), MinRTTMs: ms(h.min)})
	}
	slices.SortFunc(out, func(x, y SiteLatency) int {
		return cmp.Or(cmp.Compare(y.Observations, x.Observations), cmp.Compare(x.Site, y.Site))
	})
	return out, s.other[target]
}

// rttHistogram counts RTTs in buckets of 0.1 ms below 100 ms, 1 ms below
// 1 s, 10 ms below 10 s and 1 s up to maxRTT: at most about 3,000 buckets
// whatever the number of answers, fine enough to tell sites apart.
type rttHistogram struct {
	n      int
	min    time.Duration
	counts map[time.Duration]int // bucket floor → answers
}

func (h *rttHistogram) add(d time.Duration) {
	d = min(d, maxRTT)
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.n++
	h.counts[bucket(d)]++
}

// bucket is the floor of the bucket d falls in.
func bucket(d time.Duration) time.Duration {
	switch {
	case d < 100*time.Millisecond:
		return d.Truncate(100 * time.Microsecond)
	case d < time.Second:
		return d.Truncate(time.Millisecond)
	case d < 10*time.Second:
		return d.Truncate(10 * time.Millisecond)
	default:
		return d.Truncate(time.Second)
	}
}

// median is the floor of the bucket that holds the lower median, but never
// below the fastest answer.
func (h *rttHistogram) median() time.Duration {
	if h.n == 0 {
		return 0
	}
	want := (h.n + 1) / 2 // the lower median is the want-th smallest
	seen := 0
	for _, b := range slices.Sorted(maps.Keys(h.counts)) {
		if seen += h.counts[b]; seen >= want {
			return max(b, h.min)
		}
	}
	return h.min // not reached
}
