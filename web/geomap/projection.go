package geomap

import "math"

// Equal Earth (Šavrič, Patterson and Jenny, "The Equal Earth map
// projection", International Journal of Geographical Information Science
// 33(3), 2019): an equal-area pseudocylindrical projection, so a country's
// (or a catchment's) size on the map is its size on the globe. Meridians
// are curves, parallels straight lines, the poles short flat lines.
//
//	θ = asin(√3/2 · sin φ)
//	x = 2√3 · λ · cos θ / (3 · (9A₄θ⁸ + 7A₃θ⁶ + 3A₂θ² + A₁))
//	y = A₄θ⁹ + A₃θ⁷ + A₂θ³ + A₁θ
const (
	eeA1 = 1.340264
	eeA2 = -0.081106
	eeA3 = 0.000893
	eeA4 = 0.003796
)

var (
	eeM    = math.Sqrt(3) / 2
	eeXMax = 2 * math.Sqrt(3) * math.Pi / (3 * eeA1)                                                                  // x at λ = 180°, φ = 0
	eeYMax = eeA4*math.Pow(math.Pi/3, 9) + eeA3*math.Pow(math.Pi/3, 7) + eeA2*math.Pow(math.Pi/3, 3) + eeA1*math.Pi/3 // y at φ = 90° (θ = π/3)
)

// equalEarth projects to the projection's own plane (x in ±eeXMax, y in
// ±eeYMax, north up), longitude and latitude in degrees.
func equalEarth(lat, lon float64) (x, y float64) {
	lam := lon * math.Pi / 180
	th := math.Asin(eeM * math.Sin(lat*math.Pi/180))
	t2 := th * th
	t4 := t2 * t2
	x = lam * math.Cos(th) / (eeM * (eeA1 + t2*(3*eeA2+t4*(7*eeA3+9*eeA4*t2))))
	y = th * (eeA1 + t2*(eeA2+t4*(eeA3+eeA4*t2)))
	return x, y
}

// aspect is the map's height over its width.
var aspect = eeYMax / eeXMax

// mapHeight is the height of a map of the given width.
func mapHeight(width int) float64 { return float64(width) * aspect }

// normalize clamps the latitude to ±90° and brings the longitude into
// [-180°, 180°] (190° is -170°; ±180° stay as they are).
func normalize(lat, lon float64) (float64, float64) {
	lat = min(max(lat, -90), 90)
	if lon < -180 || lon > 180 {
		lon = math.Mod(lon+180, 360)
		if lon < 0 {
			lon += 360
		}
		lon -= 180
	}
	return lat, lon
}

// unit projects to fractions of the map's width: x in [0, 1] from the
// antimeridian in the west, y in [0, aspect] from the north pole down.
func unit(lat, lon float64) (x, y float64) {
	px, py := equalEarth(normalize(lat, lon))
	s := 1 / (2 * eeXMax)
	return 0.5 + px*s, aspect/2 - py*s
}

// Project returns where a point (degrees; north and east positive) lies on
// a map of the given width in pixels: the Equal Earth projection, centred
// on the Greenwich meridian, scaled so that the world is exactly width
// wide and width·0.4866 high, with y growing southwards as in SVG.
// Latitudes beyond ±90° are clamped and longitudes wrapped; NaN gives NaN.
func Project(lat, lon float64, width int) (x, y float64) {
	ux, uy := unit(lat, lon)
	return ux * float64(width), uy * float64(width)
}
