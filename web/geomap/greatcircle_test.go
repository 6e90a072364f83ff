package geomap

import (
	"math"
	"testing"
)

// angle is the angle between two points on the globe, in degrees.
func angle(a, b latLon) float64 {
	va, vb := toVector(a), toVector(b)
	d := va[0]*vb[0] + va[1]*vb[1] + va[2]*vb[2]
	return math.Acos(min(max(d, -1), 1)) * 180 / math.Pi
}

func TestGreatCircle(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   latLon
		pieces int
	}{
		{"Paris to Amsterdam", latLon{48.86, 2.35}, latLon{52.31, 4.76}, 1},
		{"New York to Amsterdam", latLon{40.71, -74.01}, latLon{52.31, 4.76}, 1},
		{"Auckland to Los Angeles, eastwards over the antimeridian", latLon{-36.85, 174.76}, latLon{33.94, -118.41}, 2},
		{"Anchorage to Tokyo, westwards over the antimeridian", latLon{61.22, -149.90}, latLon{35.76, 140.39}, 2},
		{"along the equator", latLon{0, -10}, latLon{0, 10}, 1},
		{"from the antimeridian itself", latLon{10, 180}, latLon{20, 170}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pieces [][]latLon
			greatCircle(tc.a, tc.b, nil, func(p []latLon) { pieces = append(pieces, append([]latLon(nil), p...)) })
			if len(pieces) != tc.pieces {
				t.Fatalf("%d pieces, want %d: %v", len(pieces), tc.pieces, pieces)
			}
			first, last := pieces[0][0], pieces[len(pieces)-1][len(pieces[len(pieces)-1])-1]
			if angle(first, tc.a) > 1e-9 || angle(last, tc.b) > 1e-9 {
				t.Errorf("runs from %v to %v, want %v to %v", first, last, tc.a, tc.b)
			}
			// Every point lies on the great circle through a and b: the
			// angles a–p and p–b add up to a–b. Points on the antimeridian
			// are interpolated between two samples (off by metres).
			total := angle(tc.a, tc.b)
			for k, piece := range pieces {
				for i, p := range piece {
					tol := 1e-6
					if (i == 0 && k > 0) || (i == len(piece)-1 && k < len(pieces)-1) {
						tol = 1e-3
					}
					if d := angle(tc.a, p) + angle(p, tc.b) - total; math.Abs(d) > tol {
						t.Errorf("point %v is %g° off the great circle", p, d)
					}
					if i > 0 {
						if step := angle(piece[i-1], p); step > sampleStep+1e-9 {
							t.Errorf("step of %g° between samples", step)
						}
						if math.Abs(p.lon-piece[i-1].lon) > 180 {
							t.Errorf("a segment spans the map: %v to %v", piece[i-1], p)
						}
					}
				}
			}
			// Pieces meet at the antimeridian on the same latitude.
			for i := 1; i < len(pieces); i++ {
				end, start := pieces[i-1][len(pieces[i-1])-1], pieces[i][0]
				if math.Abs(end.lon) != 180 || end.lon != -start.lon || end.lat != start.lat {
					t.Errorf("piece ends at %v, next starts at %v", end, start)
				}
			}
		})
	}
	t.Run("no line between a point and itself or its antipode", func(t *testing.T) {
		for _, b := range []latLon{{10, 20}, {-10, -160}} {
			called := false
			greatCircle(latLon{10, 20}, b, nil, func([]latLon) { called = true })
			if called {
				t.Errorf("a line from 10,20 to %v", b)
			}
		}
	})
}
