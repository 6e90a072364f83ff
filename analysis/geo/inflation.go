package geo

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/anyscope/anyscope/analysis"
)

// Defaults of InflationOptions.
const (
	// DefaultInflationExcessKm: a vantage point is flagged only when its
	// serving site is more than this much farther than the nearest site.
	DefaultInflationExcessKm = 1000.0
	// DefaultInflationFactor: … and more than this many times as far.
	DefaultInflationFactor = 2.0
)

// minNearestKm is the floor under the nearest site's distance when the
// factor is computed, so that a vantage point next to a site does not
// divide by zero.
const minNearestKm = 1.0

// Serving says which site served one vantage point of a target (from its
// catchment).
type Serving struct {
	VantagePoint analysis.VantagePoint
	Site         string // site code, matched without regard to ASCII case
}

// InflationOptions set when a vantage point counts as served from too far.
// Zero fields take the defaults.
type InflationOptions struct {
	ExcessKm float64 // DefaultInflationExcessKm when 0
	Factor   float64 // DefaultInflationFactor when 0; at least 1
}

// Inflation is a vantage point served by a site much farther away than the
// target's nearest site: BGP chose a path geography would not.
type Inflation struct {
	VantagePoint string
	Site         string // the serving site's code as declared
	Nearest      string // the nearest site's code as declared
	// Distance and NearestDistance are great-circle km from the vantage
	// point to the serving and to the nearest site; Excess is their
	// difference.
	Distance        float64
	NearestDistance float64
	Excess          float64
	// Factor is Distance / NearestDistance (a nearest distance below 1 km
	// counts as 1 km).
	Factor float64
}

// InflationReport is the outcome of PathInflation.
type InflationReport struct {
	// Findings, largest excess first (ties by vantage point name).
	Findings []Inflation
	// Checked counts the vantage points compared; Skipped those that could
	// not be: no coordinates, or a serving site that the target does not
	// declare or declares without coordinates.
	Checked, Skipped int
}

// PathInflation compares, for one target, each vantage point's distance to
// the site that served it with its distance to the target's nearest site
// (target.Sites with coordinates), and reports those served from more than
// ExcessKm and Factor times farther. Strings are carried through as data.
func PathInflation(target analysis.Target, serving []Serving, opts InflationOptions) (InflationReport, error) {
	if opts.ExcessKm < 0 || math.IsNaN(opts.ExcessKm) {
		return InflationReport{}, fmt.Errorf("%w: ExcessKm %v", ErrInvalid, opts.ExcessKm)
	}
	if opts.Factor != 0 && !(opts.Factor >= 1) {
		return InflationReport{}, fmt.Errorf("%w: Factor %v is below 1", ErrInvalid, opts.Factor)
	}
	if opts.ExcessKm == 0 {
		opts.ExcessKm = DefaultInflationExcessKm
	}
	if opts.Factor == 0 {
		opts.Factor = DefaultInflationFactor
	}

	type site struct {
		code string
		v    vec
	}
	var sites []site
	byCode := make(map[string]int)
	for _, s := range target.Sites {
		if !s.HasCoords || !validCoords(s.Latitude, s.Longitude) {
			continue
		}
		key := siteKey(s.Code)
		if _, dup := byCode[key]; dup || key == "" {
			continue
		}
		byCode[key] = len(sites)
		sites = append(sites, site{code: s.Code, v: toVec(s.Latitude, s.Longitude)})
	}

	var rep InflationReport
	for _, sv := range serving {
		vp := sv.VantagePoint
		k, ok := byCode[siteKey(sv.Site)]
		if !ok || !vp.HasCoords || !validCoords(vp.Latitude, vp.Longitude) {
			rep.Skipped++
			continue
		}
		rep.Checked++
		v := toVec(vp.Latitude, vp.Longitude)
		dist := v.km(sites[k].v)
		nearest, nearestKm := k, dist
		for j := range sites {
			if d := v.km(sites[j].v); d < nearestKm {
				nearest, nearestKm = j, d
			}
		}
		factor := dist / max(nearestKm, minNearestKm)
		if dist-nearestKm > opts.ExcessKm && factor > opts.Factor {
			rep.Findings = append(rep.Findings, Inflation{
				VantagePoint:    vp.Name,
				Site:            sites[k].code,
				Nearest:         sites[nearest].code,
				Distance:        dist,
				NearestDistance: nearestKm,
				Excess:          dist - nearestKm,
				Factor:          factor,
			})
		}
	}
	slices.SortStableFunc(rep.Findings, func(a, b Inflation) int {
		return cmp.Or(cmp.Compare(b.Excess, a.Excess), cmp.Compare(a.VantagePoint, b.VantagePoint))
	})
	return rep, nil
}

// siteKey folds a site code for matching: trimmed, ASCII letters upper-cased
// and nothing else (a look-alike such as the Kelvin sign stays itself).
func siteKey(code string) string {
	b := []byte(strings.TrimSpace(code))
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
