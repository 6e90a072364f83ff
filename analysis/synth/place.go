package synth

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
)

// hubs are airports of cities where anycast operators put sites (exchange
// points and data centres), by region. The catalog has no airport size, so
// this list stands for "large airports": sites are drawn from it first, and
// from the rest of the catalog's airports only when a world wants more.
var hubs = []string{
	// Europe
	"AMS", "FRA", "LHR", "CDG", "MAD", "LIS", "MXP", "FCO", "VIE", "PRG",
	"ZRH", "DUB", "BRU", "MAN", "ARN", "HEL", "OSL", "CPH", "WAW", "BUD",
	"OTP", "SOF", "ATH", "IST", "SVO", "LED", "KBP", "RIX", "BCN", "MRS",
	// North America
	"IAD", "JFK", "EWR", "BOS", "ORD", "ATL", "MIA", "DFW", "IAH", "DEN",
	"PHX", "LAX", "SJC", "SFO", "SEA", "SLC", "MSP", "MCI", "STL", "YYZ",
	"YUL", "YVR", "YYC", "MEX", "ANC", "HNL",
	// Latin America
	"GRU", "GIG", "EZE", "SCL", "LIM", "BOG", "UIO", "PTY", "SJO", "GUA",
	"SDQ", "KIN", "MVD", "FOR",
	// Asia, Middle East
	"NRT", "HND", "KIX", "ICN", "PEK", "PVG", "CAN", "HKG", "TPE", "SIN",
	"KUL", "BKK", "CGK", "MNL", "SGN", "DEL", "BOM", "MAA", "BLR", "KHI",
	"DXB", "DOH", "RUH", "TLV", "ALA", "TAS", "ULN", "DAC", "CMB",
	// Africa
	"JNB", "CPT", "NBO", "LOS", "ACC", "DKR", "CAI", "ADD", "DAR", "CMN",
	"TUN", "ALG", "LAD", "KGL", "MRU",
	// Oceania
	"SYD", "MEL", "BNE", "PER", "AKL", "NAN", "POM", "NOU",
}

// candidate is a place a site may be put at.
type candidate struct {
	place catalog.Place
	city  string // country and city: two sites never share one
}

// candidates are the hubs and the other airports with three-letter codes,
// and how many distinct cities they are in.
type candidates struct {
	hubs, rest []candidate
	cities     int
}

// siteCandidates computes the candidates once. Whether the identity
// styles resolve a code is checked when a site is drawn (resolvable runs
// the identity rules, too slow for the whole catalog on every New).
var siteCandidates = sync.OnceValue(func() candidates {
	var c candidates
	isHub := make(map[string]bool, len(hubs))
	for _, code := range hubs {
		isHub[code] = true
		if p, ok := catalog.Lookup(code); ok && p.Kind == catalog.KindAirport && len(p.Code) == 3 {
			c.hubs = append(c.hubs, candidate{p, p.Country + "/" + p.City})
		}
	}
	for _, p := range catalog.All() {
		if p.Kind == catalog.KindAirport && len(p.Code) == 3 && !isHub[p.Code] {
			c.rest = append(c.rest, candidate{p, p.Country + "/" + p.City})
		}
	}
	seen := make(map[string]bool)
	for _, x := range slices.Concat(c.hubs, c.rest) {
		seen[x.city] = true
	}
	c.cities = len(seen)
	return c
})

// siteSampleTries is how many random candidates each new site is the
// farthest of: more spreads sites more evenly, fewer follows the hub list's
// density (operators cluster where users are).
const siteSampleTries = 3

// placeSites picks cfg.Sites distinct places: the first at random among the
// hubs, each next one the farthest from those already chosen among a few
// random candidates (hubs first, then other airports).
func (w *World) placeSites() error {
	seed := w.cfg.Seed
	cands := siteCandidates()
	if w.cfg.Sites > cands.cities {
		return fmt.Errorf("%w: Sites %d: the catalog has only %d distinct cities to put sites in", ErrInvalidConfig, w.cfg.Sites, cands.cities)
	}
	var chosen []catalog.Place
	used := make(map[string]bool) // cities
	for _, pool := range [][]candidate{cands.hubs, cands.rest} {
		free := slices.DeleteFunc(slices.Clone(pool), func(c candidate) bool { return used[c.city] })
		for len(chosen) < w.cfg.Sites && len(free) > 0 {
			k := len(chosen)
			best, bestD := -1, -1.0
			tries := siteSampleTries
			if k == 0 {
				tries = 1
			}
			for j := 0; j < tries && len(free) > 0; j++ {
				i := intn(hash(seed, drawSitePick, uint64(k), uint64(j), 0, 0), len(free))
				if !resolvable(free[i].place) {
					free = slices.Delete(free, i, i+1)
					best, bestD, j = -1, -1.0, -1 // draw again from the smaller list
					continue
				}
				d := math.Inf(1)
				for _, c := range chosen {
					d = min(d, catalog.Distance(free[i].place.Latitude, free[i].place.Longitude, c.Latitude, c.Longitude))
				}
				if d > bestD {
					best, bestD = i, d
				}
			}
			if best < 0 {
				break
			}
			pick := free[best]
			chosen = append(chosen, pick.place)
			used[pick.city] = true
			free = slices.DeleteFunc(free, func(c candidate) bool { return c.city == pick.city })
		}
	}
	if len(chosen) < w.cfg.Sites {
		return fmt.Errorf("%w: Sites %d: the catalog has only %d distinct cities whose codes the identity rules resolve", ErrInvalidConfig, w.cfg.Sites, len(chosen))
	}
	for i, p := range chosen {
		servers := 1 + intn(hash(seed, drawServers, uint64(i), 0, 0, 0), maxServers)
		w.sites = append(w.sites, site{place: p, servers: servers})
		w.siteByCode[p.Code] = i
	}
	return nil
}

// region is a part of the world, for the skew of vantage points.
type region int

const (
	regionEurope region = iota
	regionNorthAmerica
	regionElsewhere
)

// regionShare is RIPE Atlas's rough skew: about half of the probes in
// Europe, a quarter in North America, the rest elsewhere.
var regionShare = [...]float64{regionEurope: 0.5, regionNorthAmerica: 0.25, regionElsewhere: 0.25}

// europe lists the ISO 3166 alpha-2 codes of European countries.
var europe = map[string]bool{
	"AD": true, "AL": true, "AT": true, "AX": true, "BA": true, "BE": true, "BG": true, "BY": true,
	"CH": true, "CY": true, "CZ": true, "DE": true, "DK": true, "EE": true, "ES": true, "FI": true,
	"FO": true, "FR": true, "GB": true, "GG": true, "GI": true, "GR": true, "HR": true, "HU": true,
	"IE": true, "IM": true, "IS": true, "IT": true, "JE": true, "LI": true, "LT": true, "LU": true,
	"LV": true, "MC": true, "MD": true, "ME": true, "MK": true, "MT": true, "NL": true, "NO": true,
	"PL": true, "PT": true, "RO": true, "RS": true, "RU": true, "SE": true, "SI": true, "SK": true,
	"SM": true, "UA": true, "VA": true, "XK": true,
}

func regionOf(country string) region {
	switch {
	case europe[country]:
		return regionEurope
	case country == "US" || country == "CA":
		return regionNorthAmerica
	}
	return regionElsewhere
}

// placeVantagePoints puts each vantage point within DefaultVPJitterKm of a
// catalog airport of a region drawn with regionShare.
func (w *World) placeVantagePoints() {
	seed := w.cfg.Seed
	var pools [len(regionShare)][]catalog.Place
	for _, p := range catalog.All() {
		if p.Kind == catalog.KindAirport {
			r := regionOf(p.Country)
			pools[r] = append(pools[r], p)
		}
	}
	width := len(fmt.Sprint(w.cfg.VantagePoints))
	w.vps = make([]vantagePoint, w.cfg.VantagePoints)
	for i := range w.vps {
		u := uint64(i)
		x := unit(hash(seed, drawRegion, u, 0, 0, 0))
		reg := regionElsewhere
		for r, share := range regionShare {
			if x < share {
				reg = region(r)
				break
			}
			x -= share
		}
		pool := pools[reg]
		p := pool[intn(hash(seed, drawVPPlace, u, 0, 0, 0), len(pool))]
		bearing := 2 * math.Pi * unit(hash(seed, drawVPBearing, u, 0, 0, 0))
		km := DefaultVPJitterKm * math.Sqrt(unit(hash(seed, drawVPDistance, u, 0, 0, 0)))
		lat, lon := destination(p.Latitude, p.Longitude, bearing, km)
		name := fmt.Sprintf("vp%0*d", width, i+1)
		w.vps[i] = vantagePoint{
			VantagePoint: analysis.VantagePoint{
				Name: name, Latitude: lat, Longitude: lon, HasCoords: true,
				// RFC 5398 documentation AS numbers.
				ASN:     64496 + intn(hash(seed, drawASN, u, 0, 0, 0), 16),
				Country: p.Country,
			},
			access: w.cfg.AccessMinMs + (w.cfg.AccessMaxMs-w.cfg.AccessMinMs)*unit(hash(seed, drawAccess, u, 0, 0, 0)),
			offset: int64(hash(seed, drawOffset, u, 0, 0, 0) % uint64(w.interval)),
		}
		w.vpByName[name] = i
	}
	w.order = make([]int32, len(w.vps))
	for i := range w.order {
		w.order[i] = int32(i)
	}
	slices.SortStableFunc(w.order, func(a, b int32) int { return cmp.Compare(w.vps[a].offset, w.vps[b].offset) })
}

// destination is the point km away from lat/lon (degrees) on bearing
// (radians, clockwise from north).
func destination(lat, lon, bearing, km float64) (float64, float64) {
	const rad = math.Pi / 180
	δ := km / catalog.EarthRadius
	φ1, λ1 := lat*rad, lon*rad
	φ2 := math.Asin(math.Sin(φ1)*math.Cos(δ) + math.Cos(φ1)*math.Sin(δ)*math.Cos(bearing))
	λ2 := λ1 + math.Atan2(math.Sin(bearing)*math.Sin(δ)*math.Cos(φ1), math.Cos(δ)-math.Sin(φ1)*math.Sin(φ2))
	lon2 := math.Mod(λ2/rad+540, 360) - 180
	return φ2 / rad, lon2
}

// makeTargets gives each target its addresses, its sites (all for target
// 0, a random subset of at least half for the others) and its servers'
// identity strings, computed once.
func (w *World) makeTargets() {
	seed := w.cfg.Seed
	n := len(w.sites)
	width := max(2, len(fmt.Sprint(w.cfg.Targets)))
	w.targets = make([]target, w.cfg.Targets)
	for i := range w.targets {
		t := &w.targets[i]
		t.name = fmt.Sprintf("t%0*d", width, i+1)
		w.targetByName[t.name] = i
		if i < 254 {
			t.addr4 = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		} else {
			t.addr4 = netip.AddrFrom4([4]byte{198, 51, 100, byte(i - 253)})
		}
		a6 := netip.MustParseAddr("2001:db8::").As16()
		a6[14], a6[15] = byte((i+1)>>8), byte(i+1)
		t.addr6 = netip.AddrFrom16(a6)

		perm := make([]int, n)
		for k := range perm {
			perm[k] = k
		}
		size := n
		if i > 0 {
			half := (n + 1) / 2
			size = half + intn(hash(seed, drawTargetSites, uint64(i), 0, 0, 0), n-half+1)
			for k := range size { // partial Fisher–Yates
				j := k + intn(hash(seed, drawTargetSites, uint64(i), uint64(k)+1, 0, 0), n-k)
				perm[k], perm[j] = perm[j], perm[k]
			}
		}
		t.sites = slices.Sorted(slices.Values(perm[:size]))
		t.member = make([]bool, n)
		t.identities = make([][]string, n)
		style := identityStyles[i%len(identityStyles)]
		for _, s := range t.sites {
			t.member[s] = true
			ids := make([]string, w.sites[s].servers)
			for k := range ids {
				ids[k] = style(w.sites[s].place, k+1)
			}
			t.identities[s] = ids
		}
	}
}

// makeCatchments computes every vantage point's distance to every site and,
// per target, the site BGP picks and the path inflation.
func (w *World) makeCatchments() {
	seed := w.cfg.Seed
	ns, nt := len(w.sites), len(w.targets)
	w.dist = make([]float64, len(w.vps)*ns)
	w.pairs = make([]pair, len(w.vps)*nt)
	nearest := make([]int, 0, w.cfg.Alternatives+1)
	for v := range w.vps {
		vp := &w.vps[v]
		row := w.dist[v*ns : (v+1)*ns]
		for s, st := range w.sites {
			row[s] = catalog.Distance(vp.Latitude, vp.Longitude, st.place.Latitude, st.place.Longitude)
		}
		closer := func(a, b int) bool { return row[a] < row[b] || row[a] == row[b] && a < b }
		for t := range w.targets {
			// The Alternatives+1 nearest sites of t, nearest first.
			nearest = nearest[:0]
			for _, s := range w.targets[t].sites {
				if len(nearest) == cap(nearest) {
					if !closer(s, nearest[len(nearest)-1]) {
						continue
					}
					nearest = nearest[:len(nearest)-1]
				}
				k := len(nearest)
				nearest = append(nearest, s)
				for ; k > 0 && closer(s, nearest[k-1]); k-- {
					nearest[k] = nearest[k-1]
				}
				nearest[k] = s
			}
			pick := 0
			if alt := len(nearest) - 1; alt > 0 &&
				unit(hash(seed, drawCatchment, uint64(v), uint64(t), 0, 0)) >= w.cfg.NearestShare {
				pick = 1 + intn(hash(seed, drawAlternative, uint64(v), uint64(t), 0, 0), alt)
			}
			infl := w.cfg.InflationMin + (w.cfg.InflationMax-w.cfg.InflationMin)*unit(hash(seed, drawInflation, uint64(v), uint64(t), 0, 0))
			w.pairs[v*nt+t] = pair{site: int32(nearest[pick]), inflation: infl}
		}
	}
}
