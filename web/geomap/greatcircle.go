package geomap

import "math"

// A great circle is the shortest way between two points on the globe; on
// the map it curves. greatCircle samples it by spherical linear
// interpolation (slerp) between the two points' unit vectors, and cuts it
// where it crosses the antimeridian so that no segment spans the map.

// sampleStep is the largest angle between two samples, in degrees.
const sampleStep = 3.0

// latLon is a point in degrees.
type latLon struct{ lat, lon float64 }

func toVector(p latLon) [3]float64 {
	la, lo := p.lat*math.Pi/180, p.lon*math.Pi/180
	return [3]float64{math.Cos(la) * math.Cos(lo), math.Cos(la) * math.Sin(lo), math.Sin(la)}
}

func fromVector(v [3]float64) latLon {
	return latLon{
		lat: math.Atan2(v[2], math.Hypot(v[0], v[1])) * 180 / math.Pi,
		lon: math.Atan2(v[1], v[0]) * 180 / math.Pi,
	}
}

// greatCircle returns the great circle from a to b as one or more pieces
// (more when it crosses the antimeridian), each a list of points, calling
// emit for each piece. The buffer is reused between calls. Nothing is
// emitted when a and b coincide or are antipodes (no single great circle
// joins them).
func greatCircle(a, b latLon, buf []latLon, emit func([]latLon)) []latLon {
	va, vb := toVector(a), toVector(b)
	dot := va[0]*vb[0] + va[1]*vb[1] + va[2]*vb[2]
	cross := math.Sqrt((va[1]*vb[2]-va[2]*vb[1])*(va[1]*vb[2]-va[2]*vb[1]) +
		(va[2]*vb[0]-va[0]*vb[2])*(va[2]*vb[0]-va[0]*vb[2]) +
		(va[0]*vb[1]-va[1]*vb[0])*(va[0]*vb[1]-va[1]*vb[0]))
	omega := math.Atan2(cross, dot)
	if cross < 1e-9 { // the same point, or antipodes
		return buf
	}
	n := int(math.Ceil(omega * 180 / math.Pi / sampleStep))
	buf = buf[:0]
	for i := 0; i <= n; i++ {
		var p latLon
		switch i {
		case 0:
			p = a
		case n:
			p = b
		default:
			t := float64(i) / float64(n)
			ka, kb := math.Sin((1-t)*omega)/cross, math.Sin(t*omega)/cross // sin Ω = |a×b|
			p = fromVector([3]float64{ka*va[0] + kb*vb[0], ka*va[1] + kb*vb[1], ka*va[2] + kb*vb[2]})
		}
		if len(buf) > 0 {
			prev := buf[len(buf)-1]
			if math.Abs(p.lon-prev.lon) > 180 { // crossing the antimeridian
				edge := 180.0
				if prev.lon < 0 {
					edge = -180
				}
				lon := p.lon + 360 // p's longitude on prev's side
				if edge < 0 {
					lon = p.lon - 360
				}
				lat := prev.lat + (edge-prev.lon)/(lon-prev.lon)*(p.lat-prev.lat)
				buf = append(buf, latLon{lat, edge})
				emit(buf)
				buf = append(buf[:0], latLon{lat, -edge})
			}
		}
		buf = append(buf, p)
	}
	emit(buf)
	return buf
}
