package inference

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/geo"
	"github.com/anyscope/anyscope/analysis/synth"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// vpAt is a vantage point at a catalog place.
func vpAt(t testing.TB, name, code string) analysis.VantagePoint {
	t.Helper()
	p, ok := catalog.Lookup(code)
	if !ok {
		t.Fatalf("no catalog place %s", code)
	}
	return analysis.VantagePoint{Name: name, Latitude: p.Latitude, Longitude: p.Longitude, HasCoords: true}
}

// places looks catalog places up, to use as geo.Options.Candidates.
func places(t testing.TB, codes ...string) []catalog.Place {
	t.Helper()
	var out []catalog.Place
	for _, c := range codes {
		p, ok := catalog.Lookup(c)
		if !ok {
			t.Fatalf("no catalog place %s", c)
		}
		out = append(out, p)
	}
	return out
}

func TestLatency(t *testing.T) {
	t.Parallel()
	const target = "example.org"
	addr := netip.MustParseAddr("192.0.2.53")
	ms := time.Millisecond
	type rtt struct {
		vp   string
		at   string // catalog code the vantage point sits at
		rtts []time.Duration
	}
	tests := []struct {
		name string
		opts geo.Options
		in   []rtt
		want []Assignment
	}{
		{
			// Two small discs far apart prove two sites; a large disc
			// that holds one of them joins it with confidence 1, one
			// that holds both joins the nearer with confidence 1/2.
			name: "two sites",
			opts: geo.Options{Candidates: places(t, "AMS", "SIN", "FRA", "BOM")},
			in: []rtt{
				{"ams", "AMS", []time.Duration{5 * ms, 2 * ms, 3 * ms}},
				{"sin", "SIN", []time.Duration{3 * ms}},
				{"jfk", "JFK", []time.Duration{75 * ms}},
				{"bom", "BOM", []time.Duration{90 * ms, 80 * ms}},
			},
			want: []Assignment{
				{VantagePoint: "ams", Cluster: "~AMS", Observations: 3, Confidence: 1},
				{VantagePoint: "bom", Cluster: "~SIN", Observations: 2, Confidence: 0.5},
				{VantagePoint: "jfk", Cluster: "~AMS", Observations: 1, Confidence: 1},
				{VantagePoint: "sin", Cluster: "~SIN", Observations: 1, Confidence: 1},
			},
		},
		{
			// Frankfurt's disc overlaps Amsterdam's without holding AMS:
			// with one iGreedy round it holds no enumerated site.
			name: "disc holding no site stays unassigned",
			opts: geo.Options{Candidates: places(t, "AMS", "FRA"), MaxIterations: 1},
			in: []rtt{
				{"ams", "AMS", []time.Duration{2 * ms}},
				{"fra", "FRA", []time.Duration{3 * ms}},
			},
			want: []Assignment{
				{VantagePoint: "ams", Cluster: "~AMS", Observations: 1, Confidence: 1},
				{VantagePoint: "fra", Cluster: "", Observations: 1, Confidence: 0},
			},
		},
		{
			name: "second round places it",
			opts: geo.Options{Candidates: places(t, "AMS", "FRA")},
			in: []rtt{
				{"ams", "AMS", []time.Duration{2 * ms}},
				{"fra", "FRA", []time.Duration{3 * ms}},
			},
			want: []Assignment{
				{VantagePoint: "ams", Cluster: "~AMS", Observations: 1, Confidence: 1},
				{VantagePoint: "fra", Cluster: "~FRA", Observations: 1, Confidence: 1},
			},
		},
		{
			// No candidate inside the disc: the site is put at the vantage
			// point and named by its coordinates.
			name: "no candidate place",
			opts: geo.Options{Candidates: places(t, "SIN")},
			in:   []rtt{{"ams", "AMS", []time.Duration{2 * ms}}},
			want: []Assignment{{VantagePoint: "ams", Cluster: "~52.31,4.76", Observations: 1, Confidence: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := NewLatency(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.in {
				v := vpAt(t, r.vp, r.at)
				for _, d := range r.rtts {
					l.AddRTT(v, target, addr, d)
				}
			}
			res, err := l.Result()
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.want {
				tt.want[i].Target, tt.want[i].Address, tt.want[i].Method = target, addr, MethodLatency
			}
			checkAssignments(t, res.Assignments, tt.want)
			checkClusterCounts(t, res)
		})
	}
}

func TestLatencyClusters(t *testing.T) {
	t.Parallel()
	l, err := NewLatency(geo.Options{Candidates: places(t, "AMS", "FRA")})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("192.0.2.53")
	l.AddRTT(vpAt(t, "ams", "AMS"), "example.org", addr, 2*time.Millisecond)
	l.AddRTT(vpAt(t, "ams2", "AMS"), "example.org", addr, 4*time.Millisecond)
	l.AddRTT(vpAt(t, "fra", "FRA"), "example.org", addr, 3*time.Millisecond)
	res, err := l.Result()
	if err != nil {
		t.Fatal(err)
	}
	ams, fra := places(t, "AMS")[0], places(t, "FRA")[0]
	want := []Cluster{
		{Target: "example.org", Address: addr, Label: "~AMS", Method: MethodLatency, VantagePoints: 2, Latitude: ams.Latitude, Longitude: ams.Longitude, HasCoords: true, Proven: true},
		{Target: "example.org", Address: addr, Label: "~FRA", Method: MethodLatency, VantagePoints: 1, Latitude: fra.Latitude, Longitude: fra.Longitude, HasCoords: true, Proven: false},
	}
	if got := fmt.Sprint(res.Clusters); got != fmt.Sprint(want) {
		t.Errorf("clusters\n got %v\nwant %v", got, want)
	}
}

func TestLatencyDropped(t *testing.T) {
	t.Parallel()
	addr := netip.MustParseAddr("192.0.2.53")
	good := analysis.VantagePoint{Name: "vp", Latitude: 50, Longitude: 8, HasCoords: true}
	tests := []struct {
		name string
		vp   analysis.VantagePoint
		addr netip.Addr
		rtt  time.Duration
	}{
		{"zero rtt", good, addr, 0},
		{"negative rtt", good, addr, -time.Millisecond},
		{"no coordinates", analysis.VantagePoint{Name: "vp"}, addr, time.Millisecond},
		{"latitude out of range", analysis.VantagePoint{Name: "vp", Latitude: 91, HasCoords: true}, addr, time.Millisecond},
		{"longitude not a number", analysis.VantagePoint{Name: "vp", Longitude: nan(), HasCoords: true}, addr, time.Millisecond},
		{"invalid address", good, netip.Addr{}, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var l Latency
			l.AddRTT(tt.vp, "example.org", tt.addr, tt.rtt)
			if l.Dropped() != 1 {
				t.Errorf("Dropped() = %d, want 1", l.Dropped())
			}
			res, err := l.Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Assignments) != 0 {
				t.Errorf("assignments %v, want none", res.Assignments)
			}
		})
	}
}

func TestNewLatencyInvalid(t *testing.T) {
	t.Parallel()
	for _, opts := range []geo.Options{{MaxIterations: -1}, {Alpha: 2}} {
		if _, err := NewLatency(opts); !errors.Is(err, geo.ErrInvalid) {
			t.Errorf("NewLatency(%+v) error %v, want geo.ErrInvalid", opts, err)
		}
	}
}

// TestLatencySyntheticWorld feeds the ping RTTs of synthetic worlds (8
// sites, 400 vantage points) into a Latency and measures the inferred
// clusters against the worlds' truth:
//   - purity: the share of assigned vantage points whose true site is the
//     majority true site of their cluster;
//   - coverage: the share of vantage points assigned.
//
// Latency sees geography, not BGP: a vantage point served by a farther site
// is assigned to the nearer one its disc also holds. So purity is bounded by
// the share of vantage points served by their nearest site (all of them in
// the "geographic" world, about three quarters in the default one), and the
// test asserts that purity reaches 90% of that bound, and that assignments
// of confidence 1 (a disc holding one enumerated site) are pure whatever
// BGP does.
func TestLatencySyntheticWorld(t *testing.T) {
	t.Parallel()
	const (
		sites           = 8
		vps             = 400
		minRelative     = 0.9  // purity / share served by their nearest site
		minSurePurity   = 0.95 // purity of confidence-1 assignments
		minCoverage     = 0.9
		minSureCoverage = 0.25
	)
	tests := []struct {
		name         string
		seed         int64
		nearestShare float64
	}{
		{"geographic catchments", 5, 1},
		{"BGP is not geography", 5, synth.DefaultNearestShare},
		{"BGP is not geography, other world", 6, synth.DefaultNearestShare},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
			w, err := synth.New(synth.Config{
				Seed: tt.seed, Sites: sites, VantagePoints: vps, Targets: 1,
				Start: start, Duration: 3 * synth.DefaultInterval, Ping: true,
				NearestShare: tt.nearestShare,
			})
			if err != nil {
				t.Fatal(err)
			}
			res, err := feedPings(t, w).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Assignments) != vps {
				t.Fatalf("%d assignments, want %d", len(res.Assignments), vps)
			}
			checkClusterCounts(t, res)
			bound := nearestShare(t, w, start)
			_, assigned, purity := measure(t, w, start, res.Assignments, 0)
			_, sure, surePurity := measure(t, w, start, res.Assignments, 1)
			coverage, sureCoverage := float64(assigned)/vps, float64(sure)/vps
			t.Logf("%d clusters for %d true sites; coverage %.3f; purity %.3f (served by their nearest site: %.3f); confidence 1: %d vantage points, purity %.3f",
				len(res.Clusters), sites, coverage, purity, bound, sure, surePurity)
			if purity < minRelative*bound {
				t.Errorf("purity %.3f, want at least %.2f × %.3f", purity, minRelative, bound)
			}
			if surePurity < minSurePurity {
				t.Errorf("purity of confidence-1 assignments %.3f, want at least %.2f", surePurity, minSurePurity)
			}
			if coverage < minCoverage || sureCoverage < minSureCoverage {
				t.Errorf("coverage %.3f, of confidence 1 %.3f; want at least %.2f and %.2f", coverage, sureCoverage, minCoverage, minSureCoverage)
			}
		})
	}
}

// nearestShare is the share of w's vantage points that target 0 serves
// from its site nearest to them, at at.
func nearestShare(t testing.TB, w *synth.World, at time.Time) float64 {
	t.Helper()
	target := w.Targets()[0]
	vps := w.VantagePoints()
	n := 0
	for _, v := range vps {
		best, bestKm := "", math.Inf(1)
		for _, s := range target.Sites {
			if d := catalog.Distance(v.Latitude, v.Longitude, s.Latitude, s.Longitude); d < bestKm {
				best, bestKm = s.Code, d
			}
		}
		if site, ok := w.Truth(target.Name, v.Name, at); ok && site == best {
			n++
		}
	}
	return float64(n) / float64(len(vps))
}

// feedPings feeds every successful ping of w into a Latency.
func feedPings(t testing.TB, w *synth.World) *Latency {
	t.Helper()
	byName := make(map[string]analysis.VantagePoint)
	for _, v := range w.VantagePoints() {
		byName[v.Name] = v
	}
	var l Latency
	err := w.Observations(func(o analysis.Observation) error {
		if o.Kind == api.KindPing && o.Failure == api.FailureNone {
			l.AddRTT(byName[o.VantagePoint], o.Target, o.Address, o.RTT)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &l
}

// measure returns, over the assignments with at least minConfidence: how
// many there are, how many are assigned, and the purity of the assigned
// against w's truth at at (a world without events serves each vantage
// point from one site all along).
func measure(t testing.TB, w *synth.World, at time.Time, as []Assignment, minConfidence float64) (all, assigned int, purity float64) {
	t.Helper()
	counts := make(map[string]map[string]int) // cluster → true site → VPs
	for _, a := range as {
		if a.Confidence < minConfidence {
			continue
		}
		all++
		if a.Cluster == "" {
			continue
		}
		site, ok := w.Truth(a.Target, a.VantagePoint, at)
		if !ok {
			t.Fatalf("no truth for %s %s", a.Target, a.VantagePoint)
		}
		if counts[a.Cluster] == nil {
			counts[a.Cluster] = make(map[string]int)
		}
		counts[a.Cluster][site]++
		assigned++
	}
	majority := 0
	for _, c := range counts {
		best := 0
		for _, n := range c {
			best = max(best, n)
		}
		majority += best
	}
	if assigned > 0 {
		purity = float64(majority) / float64(assigned)
	}
	return all, assigned, purity
}

func BenchmarkLatency12000(b *testing.B) {
	w, err := synth.New(synth.Config{
		Seed: 12, Sites: 50, VantagePoints: 12000, Targets: 1,
		Duration: synth.DefaultInterval, Ping: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	byName := make(map[string]analysis.VantagePoint)
	for _, v := range w.VantagePoints() {
		byName[v.Name] = v
	}
	type ping struct {
		vp     analysis.VantagePoint
		target string
		addr   netip.Addr
		rtt    time.Duration
	}
	var pings []ping
	err = w.Observations(func(o analysis.Observation) error {
		if o.Kind == api.KindPing && o.Failure == api.FailureNone {
			pings = append(pings, ping{byName[o.VantagePoint], o.Target, o.Address, o.RTT})
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var l Latency
		for _, p := range pings {
			l.AddRTT(p.vp, p.target, p.addr, p.rtt)
		}
		res, err := l.Result()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Assignments) != len(byName) {
			b.Fatalf("%d assignments, want %d", len(res.Assignments), len(byName))
		}
	}
	b.ReportMetric(float64(len(pings)), "pings/op")
}
