package geo

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/anyscope/anyscope/analysis/catalog"
)

func mkDisc(lat, lon, r float64) *disc {
	return &disc{c: toVec(lat, lon), lat: lat, lon: lon, radius: r, cosR: math.Cos(r / earthRadiusKm), sinR: math.Sin(r / earthRadiusKm)}
}

// TestVecKmAgreesWithCatalog: the dot-product geometry Enumerate uses
// measures the same distances as catalog.Distance.
func TestVecKmAgreesWithCatalog(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		lat1, lon1 := rng.Float64()*180-90, rng.Float64()*360-180
		lat2, lon2 := rng.Float64()*180-90, rng.Float64()*360-180
		want := catalog.Distance(lat1, lon1, lat2, lon2)
		got := toVec(lat1, lon1).km(toVec(lat2, lon2))
		if math.Abs(got-want) > 1e-6*max(1, want) {
			t.Fatalf("(%v,%v)-(%v,%v): vec %v km, catalog %v km", lat1, lon1, lat2, lon2, got, want)
		}
		if r := want * 1.0001; !mkDisc(lat1, lon1, r).contains(toVec(lat2, lon2)) {
			t.Fatalf("(%v,%v)-(%v,%v): %v km apart, not within %v", lat1, lon1, lat2, lon2, want, r)
		}
		if r := want * 0.9999; want > 1 && mkDisc(lat1, lon1, r).contains(toVec(lat2, lon2)) {
			t.Fatalf("(%v,%v)-(%v,%v): %v km apart, but within %v", lat1, lon1, lat2, lon2, want, r)
		}
	}
}

// TestGridNear: the grid never misses a point within the radius, at the
// poles, across the antimeridian, for small and huge radii.
func TestGridNear(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	type pt struct{ lat, lon float64 }
	var pts []pt
	g := newGrid()
	add := func(lat, lon float64) {
		g.add(int32(len(pts)), lat, lon)
		pts = append(pts, pt{lat, lon})
	}
	for range 2000 {
		add(math.Asin(rng.Float64()*2-1)*180/math.Pi, rng.Float64()*360-180)
	}
	for _, p := range []pt{{90, 0}, {-90, 77}, {89.9, 179.9}, {0, 180}, {0, -180}, {10, 179.99}, {10, -179.99}} {
		add(p.lat, p.lon)
	}
	queries := []pt{{90, 0}, {-90, 0}, {89, -179}, {0, 180}, {0, -180}, {10, 179.5}, {-45, -179.9}, {60, 0}}
	for range 60 {
		queries = append(queries, pt{math.Asin(rng.Float64()*2-1) * 180 / math.Pi, rng.Float64()*360 - 180})
	}
	for _, q := range queries {
		for _, km := range []float64{0, 10, 150, 900, 3000, 9000, 15000, 25000} {
			seen := make(map[int32]bool)
			g.near(q.lat, q.lon, km, func(id int32) bool {
				if seen[id] {
					t.Fatalf("near(%v, %v km) visits %d twice", q, km, id)
				}
				seen[id] = true
				return true
			})
			qv := toVec(q.lat, q.lon)
			for id, p := range pts {
				if qv.km(toVec(p.lat, p.lon)) <= km && !seen[int32(id)] {
					t.Fatalf("near(%v, %v km) misses %v at %.3f km", q, km, p, qv.km(toVec(p.lat, p.lon)))
				}
			}
		}
	}
}

func TestGridNearStops(t *testing.T) {
	t.Parallel()
	g := newGrid()
	for i := range 10 {
		g.add(int32(i), 0, 0)
	}
	n := 0
	g.near(0, 0, 100, func(int32) bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("visited %d after asking to stop at 3", n)
	}
}

// TestDiscOverlaps: the trigonometry-free overlap test agrees with
// distances.
func TestDiscOverlaps(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		a := mkDisc(rng.Float64()*180-90, rng.Float64()*360-180, rng.Float64()*12000)
		b := mkDisc(rng.Float64()*180-90, rng.Float64()*360-180, rng.Float64()*12000)
		d := a.c.km(b.c)
		if math.Abs(d-(a.radius+b.radius)) < 1e-3 {
			continue // too close to call
		}
		if want := d <= a.radius+b.radius; a.overlaps(b) != want || b.overlaps(a) != want {
			t.Fatalf("discs %.0f km apart, radii %.0f and %.0f: overlaps = %v, want %v", d, a.radius, b.radius, a.overlaps(b), want)
		}
	}
}
