package main

import "math"

// A map in longitude and latitude has an edge at ±180° that the sphere has
// not: TopoJSON made by merging spherical shapes (world-atlas's land) has
// rings that step over it (Fiji, Chukotka), and Antarctica's ring goes
// round the south pole. Drawn as they are, such rings fill a band across
// the whole map. CutRing and CutLine cut them at the antimeridian, as
// d3-geo's clipAntimeridian does for spherical rendering.

// unwrap returns the points with multiples of 360° added to longitudes so
// that consecutive points differ by at most 180° (the short way round).
func unwrap(pts []Point) []Point {
	out := make([]Point, len(pts))
	for i, p := range pts {
		if i == 0 {
			out[0] = p
			continue
		}
		out[i] = Point{out[i-1].Lon + shortDelta(pts[i-1].Lon, p.Lon), p.Lat}
	}
	return out
}

// shortDelta is the longitude difference b-a taken the short way round, in
// (-180, 180].
func shortDelta(a, b float64) float64 {
	d := math.Mod(b-a, 360)
	switch {
	case d > 180:
		d -= 360
	case d <= -180:
		d += 360
	}
	return d
}

// area is the signed area of a ring in the lon/lat plane (shoelace):
// positive when anticlockwise with latitude upwards.
func area(r []Point) float64 {
	s := 0.0
	for i, p := range r {
		q := r[(i+1)%len(r)]
		s += p.Lon*q.Lat - q.Lon*p.Lat
	}
	return s / 2
}

// CutRing cuts a closed ring (the last point may repeat the first) at the
// antimeridian into rings within [-180, 180]. A ring that goes round a
// pole is closed along the map's edge through that pole. Exterior rings
// come out clockwise (negative area, the TopoJSON convention) and holes
// anticlockwise, so that a nonzero fill of all rings in one path draws the
// holes.
func CutRing(r []Point, hole bool) [][]Point {
	if len(r) > 1 && r[0] == r[len(r)-1] {
		r = r[:len(r)-1]
	}
	if len(r) < 3 {
		return nil
	}
	u := unwrap(r)
	last := u[len(u)-1]
	end := last.Lon + shortDelta(r[len(r)-1].Lon, r[0].Lon) // where the closing edge arrives
	if net := end - u[0].Lon; math.Abs(net) > 180 {
		// Round a pole: the one on the side where most of the ring lies.
		mean := 0.0
		for _, p := range r {
			mean += p.Lat
		}
		pole := 90.0
		if mean < 0 {
			pole = -90
		}
		if (Point{end, r[0].Lat}) != last {
			u = append(u, Point{end, r[0].Lat})
		}
		u = append(u, Point{end, pole}, Point{u[0].Lon, pole})
	}
	if a := area(u); (a > 0) != hole {
		for i, j := 0, len(u)-1; i < j; i, j = i+1, j-1 {
			u[i], u[j] = u[j], u[i]
		}
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range u {
		lo, hi = min(lo, p.Lon), max(hi, p.Lon)
	}
	var out [][]Point
	for k := math.Floor((lo + 180) / 360); -180+360*k < hi; k++ {
		off := 360 * k
		c := clipX(u, -180+off, func(p, q float64) bool { return p >= q })
		c = clipX(c, 180+off, func(p, q float64) bool { return p <= q })
		if len(c) < 3 || math.Abs(area(c)) < 1e-9 {
			continue
		}
		for i := range c {
			c[i].Lon -= off
		}
		out = append(out, c)
	}
	return out
}

// clipX clips a ring to the half-plane where inside(lon, x) holds
// (Sutherland–Hodgman; a concave ring may keep zero-width bridges along
// the cut, which fill nothing).
func clipX(r []Point, x float64, inside func(lon, x float64) bool) []Point {
	var out []Point
	for i, cur := range r {
		prev := r[(i+len(r)-1)%len(r)]
		cin, pin := inside(cur.Lon, x), inside(prev.Lon, x)
		if cin != pin {
			out = append(out, crossing(prev, cur, x))
		}
		if cin {
			out = append(out, cur)
		}
	}
	return out
}

// crossing is where the segment a–b meets longitude x.
func crossing(a, b Point, x float64) Point {
	t := (x - a.Lon) / (b.Lon - a.Lon)
	return Point{x, a.Lat + t*(b.Lat-a.Lat)}
}

// CutLine cuts a polyline where it steps over the antimeridian, ending one
// piece at ±180° and starting the next at ∓180° on the same latitude.
func CutLine(l []Point) [][]Point {
	var out [][]Point
	var cur []Point
	for i, p := range l {
		if i > 0 {
			prev := l[i-1]
			if d := shortDelta(prev.Lon, p.Lon); math.Abs(p.Lon-prev.Lon) > 180 {
				edge := 180.0
				if prev.Lon < 0 {
					edge = -180
				}
				c := crossing(prev, Point{prev.Lon + d, p.Lat}, edge)
				cur = append(cur, c)
				out = append(out, cur)
				cur = []Point{{-edge, c.Lat}}
			}
		}
		cur = append(cur, p)
	}
	out = append(out, cur)
	return out
}
