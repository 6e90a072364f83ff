package geomap

import (
	"fmt"
	"math"
	"regexp"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestProjectFixedPoints(t *testing.T) {
	const w = 1000
	h := mapHeight(w)
	for _, tc := range []struct {
		name       string
		lat, lon   float64
		wantX, wnY float64
	}{
		{"origin at the centre", 0, 0, w / 2, h / 2},
		{"antimeridian east on the equator", 0, 180, w, h / 2},
		{"antimeridian west on the equator", 0, -180, 0, h / 2},
		{"north pole at the top", 90, 0, w / 2, 0},
		{"south pole at the bottom", -90, 0, w / 2, h},
		{"latitude clamped", 120, 0, w / 2, 0},
		{"longitude wrapped", 0, 270, w / 4, h / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, y := Project(tc.lat, tc.lon, w)
			if !near(x, tc.wantX, 1e-9*w) || !near(y, tc.wnY, 1e-9*w) {
				t.Errorf("Project(%g, %g) = %g, %g, want %g, %g", tc.lat, tc.lon, x, y, tc.wantX, tc.wnY)
			}
		})
	}
}

// PROJ's test suite (test/gie/builtins.gie) projects 180° E on the
// equator of a sphere of radius 6,378,137 m to x = 17,263,256.84 m.
func TestProjectMatchesPROJ(t *testing.T) {
	if x, y := equalEarth(0, 180); !near(x*6378137, 17263256.84, 0.01) || y != 0 {
		t.Errorf("180° E on the equator at %.2f, %g m, want 17263256.84, 0", x*6378137, y)
	}
	// Height over width: about 1:2.05, as the paper says.
	if !near(1/aspect, 2.05, 0.01) {
		t.Errorf("aspect 1:%g, want about 1:2.05", 1/aspect)
	}
}

// Equal area: a cell of the graticule covers as much of the map as of the
// globe, wherever it is.
func TestProjectIsEqualArea(t *testing.T) {
	const w = 1000
	// The map's whole area stands for 4π (unit sphere).
	mapArea := cellArea(-90, 90, -180, 180, w)
	for _, c := range []struct{ lat0, lat1, lon0, lon1 float64 }{
		{0, 10, 0, 10},
		{60, 70, 100, 110},
		{-85, -75, -180, -170},
		{30, 31, -120, -119},
	} {
		t.Run(fmt.Sprintf("%g..%g N %g..%g E", c.lat0, c.lat1, c.lon0, c.lon1), func(t *testing.T) {
			sphere := (c.lon1 - c.lon0) * math.Pi / 180 * (math.Sin(c.lat1*math.Pi/180) - math.Sin(c.lat0*math.Pi/180))
			got := cellArea(c.lat0, c.lat1, c.lon0, c.lon1, w) / mapArea * 4 * math.Pi
			if !near(got/sphere, 1, 1e-3) {
				t.Errorf("map share %g, globe share %g (ratio %g)", got, sphere, got/sphere)
			}
		})
	}
}

// cellArea is the projected area of a lat/lon cell (shoelace over its
// outline sampled finely).
func cellArea(lat0, lat1, lon0, lon1 float64, w int) float64 {
	const n = 400
	var xs, ys []float64
	add := func(lat, lon float64) {
		x, y := Project(lat, lon, w)
		xs, ys = append(xs, x), append(ys, y)
	}
	for i := 0; i < n; i++ {
		add(lat0, lon0+(lon1-lon0)*float64(i)/n)
	}
	for i := 0; i < n; i++ {
		add(lat0+(lat1-lat0)*float64(i)/n, lon1)
	}
	for i := 0; i < n; i++ {
		add(lat1, lon1-(lon1-lon0)*float64(i)/n)
	}
	for i := 0; i < n; i++ {
		add(lat1-(lat1-lat0)*float64(i)/n, lon0)
	}
	a := 0.0
	for i := range xs {
		j := (i + 1) % len(xs)
		a += xs[i]*ys[j] - xs[j]*ys[i]
	}
	return math.Abs(a) / 2
}

func TestProjectNaN(t *testing.T) {
	x, y := Project(math.NaN(), 0, 960)
	if !math.IsNaN(x) || !math.IsNaN(y) {
		t.Errorf("Project(NaN, 0) = %g, %g, want NaN", x, y)
	}
}

func TestNumberFormat(t *testing.T) {
	for _, tc := range []struct {
		v               float64
		tenths, compact string
	}{
		{0, "0", "0"},
		{-0.04, "0", "0"},
		{12, "12", "12"},
		{12.34, "12.3", "12.3"},
		{0.5, "0.5", ".5"},
		{-0.5, "-0.5", "-.5"},
		{-12.25, "-12.3", "-12.3"},
		{99.96, "100", "100"},
	} {
		if got := string(appendTenths(nil, tenths(tc.v))); got != tc.tenths {
			t.Errorf("appendTenths(%g) = %q, want %q", tc.v, got, tc.tenths)
		}
		if got := string(appendCompact(nil, tenths(tc.v))); got != tc.compact {
			t.Errorf("appendCompact(%g) = %q, want %q", tc.v, got, tc.compact)
		}
	}
}

func TestAppendPath(t *testing.T) {
	pts := []float64{0.1, 0.1, 0.2, 0.1, 0.2001, 0.1001, 0.2, 0.2, 0.1, 0.2}
	if got, want := string(appendPath(nil, pts, 100, true)), "M10 10l10 0 0 10-10 0z"; got != want {
		t.Errorf("closed path %q, want %q", got, want)
	}
	// The last point of a line is kept even when close to the one before.
	line := []float64{0, 0, 0.1, 0, 0.102, 0.001}
	if got, want := string(appendPath(nil, line, 100, false)), "M0 0l10 0 .2 .1"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	if got := appendPath(nil, []float64{0.1, 0.1, 0.1001, 0.1}, 100, false); len(got) != 0 {
		t.Errorf("a line of one point gave %q", got)
	}
	// Path data is numbers and commands only.
	bg, err := backgroundFor(DefaultWidth)
	if err != nil {
		t.Fatal(err)
	}
	valid := regexp.MustCompile(`^(M-?[0-9.]+[ -][0-9.]+l(-?[0-9.]+[ -]?)+z?)+$`)
	for name, d := range map[string]string{"sphere": bg.sphere, "graticule": bg.graticule, "land": bg.land, "borders": bg.borders} {
		if !valid.MatchString(d) {
			t.Errorf("%s path data is malformed: %.200s", name, d)
		}
	}
}
