package geo

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/anyscope/anyscope/analysis/catalog"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults of Options.
const (
	// DefaultMaxIterations bounds iGreedy's collapse-and-rerun rounds.
	DefaultMaxIterations = 10
	// DefaultAlpha weighs a candidate place's support (how many of the
	// discs only its site can explain contain it) against its closeness to
	// the disc's centre. On synthetic worlds (package synth) the two agree
	// nearly always: most of those discs are much larger than the kept disc
	// and contain every candidate alike.
	DefaultAlpha = 0.5
)

// Measurement is the smallest round-trip time one vantage point measured to
// one anycast address (the minimum over many pings is the one closest to
// pure propagation).
type Measurement struct {
	VantagePoint string // untrusted name, carried through as data
	Latitude     float64
	Longitude    float64
	RTT          time.Duration
}

// Options tune Enumerate. The zero value is iGreedy with its defaults.
type Options struct {
	// Candidates are the places a site may be at; nil means catalog.All().
	Candidates []catalog.Place
	// MaxIterations bounds the collapse-and-rerun rounds (0: default).
	MaxIterations int
	// Alpha in [0, 1] weighs support against distance when placing a disc
	// on a candidate (0: DefaultAlpha; a negative value means 0, distance
	// only).
	Alpha float64
}

// EnumeratedSite is one site iGreedy found: a disc that no other chosen
// disc overlaps, placed on the most likely candidate inside it.
type EnumeratedSite struct {
	// Latitude and Longitude locate the site: Place's, or the disc's centre
	// when no candidate lies inside the disc (then Place is zero).
	Latitude  float64
	Longitude float64
	Place     catalog.Place
	// Radius is the disc's radius in km: the vantage point's RTT ×
	// KmPerMsRTT. The site is within Radius of the vantage point.
	Radius float64
	// VantagePoint is the measurement whose disc found the site.
	VantagePoint string
	// Iteration is 1 for the sites of the first maximum independent set,
	// which the geometry alone proves distinct; sites found after
	// collapsing discs to places (Iteration > 1) rest on those placements.
	Iteration int
}

// Enumeration is the result of Enumerate.
type Enumeration struct {
	// Sites in the order found: by iteration, then by ascending radius.
	Sites []EnumeratedSite
	// Anycast is true when the first iteration found two or more disjoint
	// discs: no single site can explain the measurements.
	Anycast bool
	// Iterations is the number of rounds that found sites.
	Iterations int
	// Uninformative counts measurements whose disc covers the whole Earth
	// (RTT ≥ 200 ms); they are left out.
	Uninformative int
}

// disc is one measurement's disc, ready for dot-product tests.
type disc struct {
	c      vec
	lat    float64
	lon    float64
	radius float64
	cosR   float64 // cosine and sine of the angle radius subtends
	sinR   float64
	vp     string
}

// contains reports whether point v lies in d (edge included, give or take
// rounding).
func (d *disc) contains(v vec) bool { return d.c.dot(v) >= d.cosR-1e-12 }

// overlaps reports whether d and o share a point: their centres are at most
// the sum of their radii apart, tested as cos(angle) ≥ cos(a+b) = cos a cos
// b − sin a sin b, without a trigonometric call.
func (d *disc) overlaps(o *disc) bool {
	if d.radius+o.radius >= halfCircumferenceKm {
		return true
	}
	return d.c.dot(o.c) >= d.cosR*o.cosR-d.sinR*o.sinR-1e-12
}

// Enumerate counts and locates the sites behind one anycast address from
// per-vantage-point minimum RTTs, with iGreedy:
//
//  1. every measurement is a disc of radius RTT × KmPerMsRTT around its
//     vantage point, holding the server that answered;
//  2. a greedy maximum independent set, smallest discs first, keeps discs
//     that overlap none already kept: each holds a different site;
//  3. each kept disc is placed on a candidate place inside it. iGreedy
//     picks the most populous city; the catalog has no populations (nor
//     airport sizes), so every candidate counts and the choice is the best
//     mix (Alpha) of closeness to the disc's centre (the vantage point
//     with the smallest RTT is likely near the site) and support: how many
//     of the discs that overlap this kept disc and no other one contain the
//     place (if the kept discs hold different sites, those discs were
//     answered by this disc's site, so the place consistent with more of
//     them is more likely);
//  4. discs that contain a chosen place are explained by it and dropped;
//     steps 2–4 run again on the rest, where a disc may now be kept that
//     only overlapped a kept disc without containing its place, until no
//     disc is left or MaxIterations.
//
// Sites of the first iteration are proven distinct by geometry alone;
// later ones trade precision for recall, as in iGreedy: when a placement is
// off (a city 200 km from the real site), a disc around the real site that
// misses the chosen city becomes a second, spurious site. Iteration tells
// them apart, and MaxIterations 1 keeps only the proof.
//
// Measurements with coordinates out of range or a negative RTT are an
// error wrapping ErrInvalid. Enumerate sorts by radius and files discs and
// places in a latitude/longitude grid, so that 12,000 measurements take
// tens of milliseconds.
func Enumerate(ms []Measurement, opts Options) (Enumeration, error) {
	if err := opts.fill(); err != nil {
		return Enumeration{}, err
	}
	var out Enumeration
	discs := make([]disc, 0, len(ms))
	for i, m := range ms {
		if !validCoords(m.Latitude, m.Longitude) {
			return Enumeration{}, fmt.Errorf("%w: measurement %d (%q): coordinates %v, %v", ErrInvalid, i, api.Clip(m.VantagePoint), m.Latitude, m.Longitude)
		}
		if m.RTT < 0 {
			return Enumeration{}, fmt.Errorf("%w: measurement %d (%q): negative RTT %v", ErrInvalid, i, api.Clip(m.VantagePoint), m.RTT)
		}
		r := MaxDistance(m.RTT)
		if r >= halfCircumferenceKm {
			out.Uninformative++
			continue
		}
		discs = append(discs, disc{
			c: toVec(m.Latitude, m.Longitude), lat: m.Latitude, lon: m.Longitude, vp: m.VantagePoint,
			radius: r, cosR: math.Cos(r / earthRadiusKm), sinR: math.Sin(r / earthRadiusKm),
		})
	}
	// Smallest first; ties by name and then position, so the result does
	// not depend on how the caller ordered equal discs.
	slices.SortFunc(discs, func(a, b disc) int {
		return cmp.Or(cmp.Compare(a.radius, b.radius), cmp.Compare(a.vp, b.vp), cmp.Compare(a.lat, b.lat), cmp.Compare(a.lon, b.lon))
	})

	places := opts.places()
	e := enumerator{discs: discs, places: places, opts: opts}

	active := make([]int32, len(discs))
	for i := range active {
		active[i] = int32(i)
	}
	for iter := 1; iter <= opts.MaxIterations && len(active) > 0; iter++ {
		mis, kept := e.independent(active)
		if len(mis) == 0 {
			break
		}
		out.Iterations = iter
		if iter == 1 {
			out.Anycast = len(mis) > 1
		}
		chosen := newGrid()
		points := make([]vec, 0, len(mis))
		owned := e.exclusive(active, mis, kept)
		for k, i := range mis {
			s := e.place(i, owned[k])
			s.Iteration = iter
			out.Sites = append(out.Sites, s)
			chosen.add(int32(len(points)), s.Latitude, s.Longitude)
			points = append(points, toVec(s.Latitude, s.Longitude))
		}
		// Collapse: a disc holding a chosen place is explained by it.
		rest := active[:0]
		for _, i := range active {
			d := &discs[i]
			explained := false
			chosen.near(d.lat, d.lon, d.radius, func(p int32) bool {
				explained = d.contains(points[p])
				return !explained
			})
			if !explained {
				rest = append(rest, i)
			}
		}
		active = rest
	}
	return out, nil
}

func (o *Options) fill() error {
	if o.MaxIterations < 0 {
		return fmt.Errorf("%w: MaxIterations %d", ErrInvalid, o.MaxIterations)
	}
	if o.MaxIterations == 0 {
		o.MaxIterations = DefaultMaxIterations
	}
	switch {
	case o.Alpha > 1:
		return fmt.Errorf("%w: Alpha %v is above 1", ErrInvalid, o.Alpha)
	case o.Alpha < 0:
		o.Alpha = 0
	case o.Alpha == 0:
		o.Alpha = DefaultAlpha
	}
	for i, p := range o.Candidates {
		if !validCoords(p.Latitude, p.Longitude) {
			return fmt.Errorf("%w: candidate %d (%q): coordinates %v, %v", ErrInvalid, i, api.Clip(p.Code), p.Latitude, p.Longitude)
		}
	}
	return nil
}

// placeIndex is a set of candidate places filed in a grid.
type placeIndex struct {
	places []catalog.Place
	vecs   []vec
	grid   *grid
}

func newPlaceIndex(places []catalog.Place) *placeIndex {
	x := &placeIndex{places: places, vecs: make([]vec, len(places)), grid: newGrid()}
	for i, p := range places {
		x.vecs[i] = toVec(p.Latitude, p.Longitude)
		x.grid.add(int32(i), p.Latitude, p.Longitude)
	}
	return x
}

// catalogIndex indexes catalog.All() once, on first use.
var catalogIndex = sync.OnceValue(func() *placeIndex { return newPlaceIndex(catalog.All()) })

func (o *Options) places() *placeIndex {
	if o.Candidates == nil {
		return catalogIndex()
	}
	return newPlaceIndex(o.Candidates)
}

// enumerator holds one Enumerate call's state.
type enumerator struct {
	discs  []disc
	places *placeIndex
	opts   Options
}

// independent returns a greedy maximum independent set of the active discs
// (ascending radius): a disc is kept when it overlaps no disc kept before.
// It also returns the kept discs filed in a grid by their index in the set.
func (e *enumerator) independent(active []int32) ([]int32, *grid) {
	kept := newGrid()
	var mis []int32
	for _, i := range active {
		d := &e.discs[i]
		overlaps := false
		// Kept discs are no larger than d, so any that overlaps it has its
		// centre within 2 × d.radius.
		kept.near(d.lat, d.lon, 2*d.radius, func(k int32) bool {
			o := &e.discs[mis[k]]
			overlaps = d.overlaps(o)
			return !overlaps
		})
		if !overlaps {
			kept.add(int32(len(mis)), d.lat, d.lon)
			mis = append(mis, i)
		}
	}
	return mis, kept
}

// exclusive returns, for each disc of the independent set mis, the active
// discs that overlap it and no other disc of the set: if the set's discs
// each hold a different site, those discs can only have been answered by
// that disc's site, so they all contain it.
func (e *enumerator) exclusive(active, mis []int32, kept *grid) [][]int32 {
	maxR := 0.0
	for _, i := range mis {
		maxR = max(maxR, e.discs[i].radius)
	}
	owned := make([][]int32, len(mis))
	for _, i := range active {
		d := &e.discs[i]
		owner, n := int32(-1), 0
		kept.near(d.lat, d.lon, d.radius+maxR, func(k int32) bool {
			o := &e.discs[mis[k]]
			if d.overlaps(o) {
				owner = k
				n++
			}
			return n < 2
		})
		if n == 1 {
			owned[owner] = append(owned[owner], i)
		}
	}
	return owned
}

// place locates disc i on its most likely candidate place; owned are the
// discs only its site can explain (exclusive).
func (e *enumerator) place(i int32, owned []int32) EnumeratedSite {
	d := &e.discs[i]
	s := EnumeratedSite{Latitude: d.lat, Longitude: d.lon, Radius: d.radius, VantagePoint: d.vp}

	var inside []int32
	e.places.grid.near(d.lat, d.lon, d.radius, func(p int32) bool {
		if d.contains(e.places.vecs[p]) {
			inside = append(inside, p)
		}
		return true
	})
	if len(inside) == 0 {
		return s
	}

	support := make([]int, len(inside))
	best := 0
	for k, p := range inside {
		v := e.places.vecs[p]
		for _, j := range owned {
			if e.discs[j].contains(v) {
				support[k]++
			}
		}
		best = max(best, support[k])
	}
	bestK, bestScore := -1, 0.0
	for k, p := range inside {
		dist := 0.0
		if d.radius > 0 {
			dist = d.c.km(e.places.vecs[p]) / d.radius
		}
		unsupported := 0.0
		if best > 0 {
			unsupported = 1 - float64(support[k])/float64(best)
		}
		score := (1-e.opts.Alpha)*dist + e.opts.Alpha*unsupported
		if bestK < 0 || score < bestScore {
			bestK, bestScore = k, score
		}
	}
	pl := e.places.places[inside[bestK]]
	s.Place, s.Latitude, s.Longitude = pl, pl.Latitude, pl.Longitude
	return s
}
