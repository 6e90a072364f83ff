package geo_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/geo"
)

// world is a hand-made anycast service: vantage points each reaching the
// nearest of some sites, with RTT = distance/100 km × inflation + access.
type world struct {
	sites     [][2]float64
	inflation float64
	accessMs  float64
}

func (w world) measure(name string, lat, lon float64) geo.Measurement {
	best := math.Inf(1)
	for _, s := range w.sites {
		best = min(best, catalog.Distance(lat, lon, s[0], s[1]))
	}
	ms := best/geo.KmPerMsRTT*w.inflation + w.accessMs
	return geo.Measurement{VantagePoint: name, Latitude: lat, Longitude: lon, RTT: time.Duration(ms * float64(time.Millisecond))}
}

// cluster puts n vantage points within about spreadKm of centre.
func (w world) cluster(prefix string, centre [2]float64, n int, spreadKm float64, rng *rand.Rand) []geo.Measurement {
	var out []geo.Measurement
	for i := range n {
		dLat := (rng.Float64()*2 - 1) * spreadKm / 111
		dLon := (rng.Float64()*2 - 1) * spreadKm / 111 / math.Cos(centre[0]*math.Pi/180)
		out = append(out, w.measure(fmt.Sprintf("%s-%d", prefix, i), centre[0]+dLat, centre[1]+dLon))
	}
	return out
}

func mustEnumerate(t testing.TB, ms []geo.Measurement, opts geo.Options) geo.Enumeration {
	t.Helper()
	e, err := geo.Enumerate(ms, opts)
	if err != nil {
		t.Fatalf("Enumerate: %v", err)
	}
	return e
}

// nearestSite is the distance from (lat, lon) to the closest enumerated site.
func nearestSite(e geo.Enumeration, at [2]float64) float64 {
	best := math.Inf(1)
	for _, s := range e.Sites {
		best = min(best, catalog.Distance(at[0], at[1], s.Latitude, s.Longitude))
	}
	return best
}

func TestEnumerateTwoFarClusters(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 1))
	w := world{sites: [][2]float64{amsterdam, singapore}, inflation: 1.5, accessMs: 2}
	ms := slices.Concat(
		w.cluster("eu", amsterdam, 20, 300, rng),
		w.cluster("asia", singapore, 20, 300, rng),
		// Far vantage points: large discs that overlap the others.
		w.cluster("us", newYork, 10, 500, rng),
		w.cluster("au", sydney, 10, 500, rng),
	)
	e := mustEnumerate(t, ms, geo.Options{})
	if !e.Anycast {
		t.Errorf("Anycast = false, want true")
	}
	if len(e.Sites) != 2 {
		t.Fatalf("found %d sites, want 2: %+v", len(e.Sites), e.Sites)
	}
	for _, want := range [][2]float64{amsterdam, singapore} {
		if d := nearestSite(e, want); d > 300 {
			t.Errorf("no site within 300 km of %v (nearest %.0f km): %+v", want, d, e.Sites)
		}
	}
	for _, s := range e.Sites {
		if s.Iteration != 1 || s.Place.Code == "" || s.Radius <= 0 || s.VantagePoint == "" {
			t.Errorf("site %+v: want iteration 1, a place, a radius and a vantage point", s)
		}
		if s.Latitude != s.Place.Latitude || s.Longitude != s.Place.Longitude {
			t.Errorf("site %+v is not at its place", s)
		}
	}
}

func TestEnumerateUnicast(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(2, 2))
	w := world{sites: [][2]float64{frankfurt}, inflation: 1.3, accessMs: 1}
	ms := slices.Concat(
		w.cluster("eu", frankfurt, 40, 800, rng),
		w.cluster("us", newYork, 10, 500, rng),
		w.cluster("asia", singapore, 10, 500, rng),
	)
	e := mustEnumerate(t, ms, geo.Options{})
	if e.Anycast {
		t.Errorf("Anycast = true for one site: %+v", e.Sites)
	}
	// Every disc holds Frankfurt, so the first iteration keeps one disc.
	// Later iterations may add inferred sites when the placement misses
	// Frankfurt (iGreedy's recall-for-precision trade); they must say so.
	var proven []geo.EnumeratedSite
	for _, s := range e.Sites {
		if s.Iteration == 1 {
			proven = append(proven, s)
		}
	}
	if len(proven) != 1 {
		t.Fatalf("first iteration found %d sites, want 1: %+v", len(proven), e.Sites)
	}
	if d := nearestSite(geo.Enumeration{Sites: proven}, frankfurt); d > 400 {
		t.Errorf("site %.0f km from Frankfurt: %+v", d, proven[0])
	}
	e = mustEnumerate(t, ms, geo.Options{MaxIterations: 1})
	if e.Anycast || len(e.Sites) != 1 || e.Iterations != 1 {
		t.Errorf("MaxIterations 1: %+v, want exactly the one proven site", e)
	}
}

// TestEnumerateCandidates: with a candidate list, sites are placed on those
// places only; a disc holding none stays at its vantage point.
func TestEnumerateCandidates(t *testing.T) {
	t.Parallel()
	ams := catalog.Place{Code: "AMS", City: "Amsterdam", Country: "NL", Latitude: 52.3105, Longitude: 4.7683, Kind: catalog.KindAirport}
	ms := []geo.Measurement{
		{VantagePoint: "near-ams", Latitude: amsterdam[0], Longitude: amsterdam[1], RTT: 2 * time.Millisecond},
		{VantagePoint: "sydney", Latitude: sydney[0], Longitude: sydney[1], RTT: 3 * time.Millisecond},
	}
	e := mustEnumerate(t, ms, geo.Options{Candidates: []catalog.Place{ams}})
	if len(e.Sites) != 2 || !e.Anycast {
		t.Fatalf("got %+v, want two sites", e)
	}
	byVP := map[string]geo.EnumeratedSite{}
	for _, s := range e.Sites {
		byVP[s.VantagePoint] = s
	}
	if got := byVP["near-ams"]; got.Place != ams || got.Latitude != ams.Latitude {
		t.Errorf("near-ams site = %+v, want placed on AMS", got)
	}
	if got := byVP["sydney"]; got.Place != (catalog.Place{}) || got.Latitude != sydney[0] || got.Longitude != sydney[1] {
		t.Errorf("sydney site = %+v, want the disc's centre and no place", got)
	}
}

// TestEnumerateSupport: between two candidates at the same distance from a
// disc's centre, the one more other discs contain wins.
func TestEnumerateSupport(t *testing.T) {
	t.Parallel()
	west := catalog.Place{Code: "WWW1", City: "West", Country: "ZZ", Latitude: 0, Longitude: -1}
	east := catalog.Place{Code: "EEE1", City: "East", Country: "ZZ", Latitude: 0, Longitude: 1}
	ms := []geo.Measurement{
		{VantagePoint: "centre", Latitude: 0, Longitude: 0, RTT: 1200 * time.Microsecond}, // 120 km: holds both
		{VantagePoint: "east-1", Latitude: 0, Longitude: 2, RTT: 1500 * time.Microsecond}, // holds east only
		{VantagePoint: "east-2", Latitude: 0.5, Longitude: 1.5, RTT: 1500 * time.Microsecond},
	}
	for _, order := range [][]geo.Measurement{ms, {ms[2], ms[1], ms[0]}} {
		e := mustEnumerate(t, order, geo.Options{Candidates: []catalog.Place{west, east}})
		if len(e.Sites) != 1 || e.Sites[0].Place.Code != "EEE1" {
			t.Errorf("sites = %+v, want one, at EEE1", e.Sites)
		}
	}
}

// TestEnumerateIterates: a disc that overlaps a kept disc without holding
// its chosen place is kept in the next iteration.
func TestEnumerateIterates(t *testing.T) {
	t.Parallel()
	a := catalog.Place{Code: "AAA", City: "A", Country: "ZZ", Latitude: 0, Longitude: 0}
	b := catalog.Place{Code: "BBB", City: "B", Country: "ZZ", Latitude: 0, Longitude: 8}
	ms := []geo.Measurement{
		// 300 km around a point 0.5° (56 km) east of A: holds A, not B.
		{VantagePoint: "at-a", Latitude: 0, Longitude: 0.5, RTT: 3 * time.Millisecond},
		// 400 km around 5° east (556 km from A): overlaps at-a's disc
		// (centres 500 km apart), does not hold A, holds B (334 km).
		{VantagePoint: "toward-b", Latitude: 0, Longitude: 5, RTT: 4 * time.Millisecond},
	}
	e := mustEnumerate(t, ms, geo.Options{Candidates: []catalog.Place{a, b}})
	if e.Anycast {
		t.Errorf("Anycast = true; the two discs overlap, so the first iteration proves one site")
	}
	if len(e.Sites) != 2 || e.Iterations != 2 {
		t.Fatalf("got %+v, want two sites in two iterations", e)
	}
	if e.Sites[0].Place.Code != "AAA" || e.Sites[0].Iteration != 1 || e.Sites[1].Place.Code != "BBB" || e.Sites[1].Iteration != 2 {
		t.Errorf("sites = %+v, want AAA (iteration 1) then BBB (iteration 2)", e.Sites)
	}
	e = mustEnumerate(t, ms, geo.Options{Candidates: []catalog.Place{a, b}, MaxIterations: 1})
	if len(e.Sites) != 1 || e.Iterations != 1 {
		t.Errorf("MaxIterations 1: got %+v, want one site", e)
	}
}

func TestEnumerateEdgeCases(t *testing.T) {
	t.Parallel()
	t.Run("no measurements", func(t *testing.T) {
		e := mustEnumerate(t, nil, geo.Options{})
		if len(e.Sites) != 0 || e.Anycast || e.Iterations != 0 {
			t.Errorf("got %+v, want nothing", e)
		}
	})
	t.Run("uninformative", func(t *testing.T) {
		e := mustEnumerate(t, []geo.Measurement{
			{VantagePoint: "slow", Latitude: 10, Longitude: 10, RTT: 250 * time.Millisecond},
			{VantagePoint: "ok", Latitude: 10, Longitude: 10, RTT: 10 * time.Millisecond},
		}, geo.Options{})
		if e.Uninformative != 1 || len(e.Sites) != 1 || e.Sites[0].VantagePoint != "ok" {
			t.Errorf("got %+v, want the 250 ms disc left out", e)
		}
	})
	t.Run("zero rtt", func(t *testing.T) {
		e := mustEnumerate(t, []geo.Measurement{{VantagePoint: "here", Latitude: 1, Longitude: 2}}, geo.Options{})
		if len(e.Sites) != 1 || e.Sites[0].Latitude != 1 || e.Sites[0].Longitude != 2 {
			t.Errorf("got %+v, want one site at the vantage point", e)
		}
	})
}

func TestEnumerateInvalid(t *testing.T) {
	t.Parallel()
	good := geo.Measurement{VantagePoint: "vp", Latitude: 1, Longitude: 1, RTT: time.Millisecond}
	tests := []struct {
		name string
		ms   []geo.Measurement
		opts geo.Options
	}{
		{"latitude out of range", []geo.Measurement{good, {VantagePoint: "x", Latitude: 91}}, geo.Options{}},
		{"longitude out of range", []geo.Measurement{{VantagePoint: "x", Longitude: -181}}, geo.Options{}},
		{"NaN", []geo.Measurement{{VantagePoint: "x", Latitude: math.NaN()}}, geo.Options{}},
		{"negative rtt", []geo.Measurement{{VantagePoint: "x", RTT: -1}}, geo.Options{}},
		{"negative iterations", []geo.Measurement{good}, geo.Options{MaxIterations: -1}},
		{"alpha above 1", []geo.Measurement{good}, geo.Options{Alpha: 1.5}},
		{"bad candidate", []geo.Measurement{good}, geo.Options{Candidates: []catalog.Place{{Code: "X", Latitude: 100}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := geo.Enumerate(tt.ms, tt.opts); !errors.Is(err, geo.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestEnumerateOrderIndependent: shuffling the measurements changes nothing.
func TestEnumerateOrderIndependent(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 5))
	w := world{sites: [][2]float64{amsterdam, singapore, newYork, sydney}, inflation: 1.6, accessMs: 3}
	ms := slices.Concat(
		w.cluster("eu", amsterdam, 50, 1500, rng),
		w.cluster("asia", singapore, 30, 1500, rng),
		w.cluster("us", newYork, 30, 1500, rng),
		w.cluster("au", sydney, 10, 1500, rng),
	)
	want := mustEnumerate(t, ms, geo.Options{})
	if len(want.Sites) < 4 {
		t.Errorf("found %d sites of 4: %+v", len(want.Sites), want.Sites)
	}
	for range 5 {
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		if got := mustEnumerate(t, ms, geo.Options{}); !slices.Equal(got.Sites, want.Sites) {
			t.Fatalf("shuffled input: %+v, want %+v", got.Sites, want.Sites)
		}
	}
}

// BenchmarkEnumerate runs iGreedy on 12,000 vantage points (RIPE Atlas's
// size) of a 50-site service.
func BenchmarkEnumerate(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 7))
	places := catalog.All()
	var w world
	for range 50 {
		p := places[rng.IntN(len(places))]
		w.sites = append(w.sites, [2]float64{p.Latitude, p.Longitude})
	}
	w.inflation, w.accessMs = 1.5, 4
	ms := make([]geo.Measurement, 12000)
	for i := range ms {
		p := places[rng.IntN(len(places))]
		ms[i] = w.measure(fmt.Sprint(i), p.Latitude+rng.Float64()*0.5, p.Longitude+rng.Float64()*0.5)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := geo.Enumerate(ms, geo.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ms))*float64(b.N)/b.Elapsed().Seconds(), "measurements/s")
}
