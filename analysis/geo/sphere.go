package geo

import "math"

// vec is a point on the unit sphere. Distance tests between vecs are dot
// products against a precomputed cosine (disc.contains, disc.overlaps),
// which is what keeps Enumerate fast.
type vec struct{ x, y, z float64 }

func toVec(lat, lon float64) vec {
	φ, λ := lat*math.Pi/180, lon*math.Pi/180
	cφ := math.Cos(φ)
	return vec{cφ * math.Cos(λ), cφ * math.Sin(λ), math.Sin(φ)}
}

func (a vec) dot(b vec) float64 { return a.x*b.x + a.y*b.y + a.z*b.z }

// km is the great-circle distance between a and b.
func (a vec) km(b vec) float64 {
	// atan2 of |a×b| and a·b is accurate at every angle, unlike acos.
	cx, cy, cz := a.y*b.z-a.z*b.y, a.z*b.x-a.x*b.z, a.x*b.y-a.y*b.x
	return earthRadiusKm * math.Atan2(math.Sqrt(cx*cx+cy*cy+cz*cz), a.dot(b))
}

// grid buckets points by latitude and longitude so that "who is within d km
// of here" looks at a few cells instead of every point.
type grid struct {
	cellDeg    float64
	rows, cols int
	cells      [][]int32
	ids        []int32 // every id filed, for queries that would visit more cells than ids
}

// gridCellDeg is the cell size: 2° is about 220 km north-south.
const gridCellDeg = 2.0

func newGrid() *grid {
	rows, cols := int(180/gridCellDeg), int(360/gridCellDeg)
	return &grid{cellDeg: gridCellDeg, rows: rows, cols: cols, cells: make([][]int32, rows*cols)}
}

func (g *grid) row(lat float64) int {
	r := int((lat + 90) / g.cellDeg)
	return min(max(r, 0), g.rows-1)
}

func (g *grid) col(lon float64) int {
	c := int(math.Floor((lon + 180) / g.cellDeg))
	c %= g.cols
	if c < 0 {
		c += g.cols
	}
	return c
}

// add files id at lat/lon.
func (g *grid) add(id int32, lat, lon float64) {
	i := g.row(lat)*g.cols + g.col(lon)
	g.cells[i] = append(g.cells[i], id)
	g.ids = append(g.ids, id)
}

// near calls fn with every id filed within km of lat/lon, and some more
// (callers test the exact distance); fn returning false stops the search.
func (g *grid) near(lat, lon, km float64, fn func(id int32) bool) {
	δ := km / earthRadiusKm // angular radius
	if δ >= math.Pi/2 {
		g.all(fn)
		return
	}
	dLat := δ * 180 / math.Pi
	r0, r1 := g.row(lat-dLat), g.row(lat+dLat)
	// Columns c0 … c0+span-1, modulo cols. The longitude extent of a
	// spherical cap of angular radius δ centred at latitude φ is
	// asin(sin δ / cos φ), unless the cap holds a pole.
	c0, span := 0, g.cols
	cosφ, sinδ := math.Cos(lat*math.Pi/180), math.Sin(δ)
	if lat-dLat > -90 && lat+dLat < 90 && sinδ < cosφ {
		dLon := math.Asin(sinδ/cosφ) * 180 / math.Pi
		first := int(math.Floor((lon - dLon + 180) / g.cellDeg))
		last := int(math.Floor((lon + dLon + 180) / g.cellDeg))
		c0, span = g.col(lon-dLon), min(g.cols, last-first+1)
	}
	if (r1-r0+1)*span > len(g.ids) {
		g.all(fn) // fewer ids than cells to look at
		return
	}
	for r := r0; r <= r1; r++ {
		for k := range span {
			if !g.visit(r*g.cols+(c0+k)%g.cols, fn) {
				return
			}
		}
	}
}

func (g *grid) visit(cell int, fn func(id int32) bool) bool {
	for _, id := range g.cells[cell] {
		if !fn(id) {
			return false
		}
	}
	return true
}

func (g *grid) all(fn func(id int32) bool) {
	for _, id := range g.ids {
		if !fn(id) {
			return
		}
	}
}
