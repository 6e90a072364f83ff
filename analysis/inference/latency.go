package inference

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/geo"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// nearPrefix starts the label of a latency cluster.
const nearPrefix = "~"

// edgeKm is how far outside a disc's edge a site still counts as inside:
// a metre, so that rounding never leaves out the site a disc found itself.
const edgeKm = 0.001

// Latency accumulates each vantage point's smallest RTT per target address
// and infers catchments from them with iGreedy (see the package
// documentation). The zero value enumerates with iGreedy's defaults over
// the whole catalog.
type Latency struct {
	opts    geo.Options
	pairs   map[pairKey]*minRTT
	dropped int
}

// minRTT is what Latency remembers of one vantage point at one address.
type minRTT struct {
	lat, lon float64 // the vantage point's latest coordinates
	rtt      time.Duration
	n        int
}

// NewLatency returns a Latency that enumerates sites with opts (the zero
// value: iGreedy's defaults over the whole catalog). Invalid options are an
// error wrapping geo.ErrInvalid.
func NewLatency(opts geo.Options) (*Latency, error) {
	if _, err := geo.Enumerate(nil, opts); err != nil {
		return nil, fmt.Errorf("inference: latency options: %w", err)
	}
	return &Latency{opts: opts, pairs: make(map[pairKey]*minRTT)}, nil
}

// AddRTT counts one round-trip time measured from vp to addr, a target's
// address (a ping, or any RTT to the anycast address itself). Only the
// smallest is kept: it is the closest to pure propagation. RTTs that are
// not positive, and those of vantage points without valid coordinates or
// to an invalid address, are dropped and counted (Dropped).
func (l *Latency) AddRTT(vp analysis.VantagePoint, target string, addr netip.Addr, rtt time.Duration) {
	addr = canonical(addr)
	if rtt <= 0 || !addr.IsValid() || !vp.HasCoords || !validCoords(vp.Latitude, vp.Longitude) {
		l.dropped++
		return
	}
	if l.pairs == nil {
		l.pairs = make(map[pairKey]*minRTT)
	}
	k := pairKey{vp.Name, target, addr}
	p := l.pairs[k]
	if p == nil {
		p = &minRTT{rtt: rtt}
		l.pairs[k] = p
	}
	p.lat, p.lon = vp.Latitude, vp.Longitude
	p.rtt = min(p.rtt, rtt)
	p.n++
}

// Dropped counts the RTTs AddRTT could not use.
func (l *Latency) Dropped() int { return l.dropped }

func validCoords(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}

// Result enumerates, per target address, the sites behind the vantage
// points' smallest RTTs and assigns each vantage point to the nearest
// enumerated site inside its disc; a vantage point whose disc holds none is
// reported unassigned (Cluster ""). An error from geo.Enumerate is wrapped.
func (l *Latency) Result() (Result, error) {
	groups := make(map[addrKey][]pairKey)
	for k := range l.pairs {
		a := addrKey{k.target, k.addr}
		groups[a] = append(groups[a], k)
	}
	keys := make([]addrKey, 0, len(groups))
	for a := range groups {
		keys = append(keys, a)
	}
	slices.SortFunc(keys, compareAddrKey)

	var out Result
	for _, a := range keys {
		vps := groups[a]
		slices.SortFunc(vps, func(x, y pairKey) int { return cmp.Compare(x.vp, y.vp) })
		if err := l.assign(a, vps, &out); err != nil {
			return Result{}, err
		}
	}
	return out, nil
}

// assign enumerates one address's sites and assigns its vantage points.
func (l *Latency) assign(a addrKey, vps []pairKey, out *Result) error {
	ms := make([]geo.Measurement, len(vps))
	for i, k := range vps {
		p := l.pairs[k]
		ms[i] = geo.Measurement{VantagePoint: k.vp, Latitude: p.lat, Longitude: p.lon, RTT: p.rtt}
	}
	e, err := geo.Enumerate(ms, l.opts)
	if err != nil {
		return fmt.Errorf("inference: %q %v: %w", api.Clip(a.target), a.addr, err)
	}

	// One cluster per distinct label: sites placed on no catalog place are
	// named by their coordinates.
	var sites []Cluster
	for _, s := range e.Sites {
		label := nearPrefix + s.Place.Code
		if s.Place.Code == "" {
			label = fmt.Sprintf("%s%.2f,%.2f", nearPrefix, s.Latitude, s.Longitude)
		}
		if slices.ContainsFunc(sites, func(c Cluster) bool { return c.Label == label }) {
			continue
		}
		sites = append(sites, Cluster{
			Target: a.target, Address: a.addr, Label: label, Method: MethodLatency,
			Latitude: s.Latitude, Longitude: s.Longitude, HasCoords: true,
			Proven: s.Iteration == 1,
		})
	}

	for _, k := range vps {
		p := l.pairs[k]
		radius := geo.MaxDistance(p.rtt) + edgeKm
		best, bestKm, inside := -1, math.Inf(1), 0
		for i := range sites {
			d := catalog.Distance(p.lat, p.lon, sites[i].Latitude, sites[i].Longitude)
			if d > radius {
				continue
			}
			inside++
			if d < bestKm || d == bestKm && sites[i].Label < sites[best].Label {
				best, bestKm = i, d
			}
		}
		as := Assignment{VantagePoint: k.vp, Target: k.target, Address: k.addr, Observations: p.n, Method: MethodLatency}
		if best >= 0 {
			sites[best].VantagePoints++
			as.Cluster = sites[best].Label
			as.Confidence = 1 / float64(inside)
		}
		out.Assignments = append(out.Assignments, as)
	}
	var cs []Cluster
	for _, c := range sites {
		if c.VantagePoints > 0 {
			cs = append(cs, c)
		}
	}
	sortClusters(cs)
	out.Clusters = append(out.Clusters, cs...)
	return nil
}
