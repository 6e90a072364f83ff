// Package geo is latency geography: what round-trip times say about where an
// anycast site can be.
//
// Light in optical fibre travels at about two thirds of its speed in vacuum,
// some 200 km per millisecond; a round trip covers the distance twice, so an
// RTT of r ms puts the answering server within about r × 100 km of the
// vantage point (KmPerMsRTT). Real paths are longer than great circles and
// routers queue packets, so the bound is loose but never wrong: a site
// farther than the disc cannot have answered (Plausible).
//
// Discs turn into an anycast census (Enumerate, after iGreedy: Cicalese et
// al., "A Fistful of Pings", 2015): two vantage points whose discs do not
// overlap reached two different servers, so a set of pairwise disjoint discs
// is a lower bound on the number of sites, and each disc, placed on the most
// likely city inside it, is a site's location. The same geometry tells when a
// vantage point is served from much farther away than the target's nearest
// site (PathInflation): a sign of BGP ignoring geography.
//
// Distances are great-circle kilometres on a sphere of the mean Earth
// radius. Everything here is pure computation over plain values.
package geo

import (
	"errors"
	"math"
	"time"

	"github.com/anyscope/anyscope/analysis/catalog"
)

// KmPerMsRTT is how far, at most, a server can be from a vantage point per
// millisecond of round-trip time: light in fibre covers about 200 km per
// millisecond one way, and the round trip halves it.
const KmPerMsRTT = 100.0

// earthRadiusKm is the mean Earth radius, as catalog.Distance uses.
const earthRadiusKm = catalog.EarthRadius

// halfCircumferenceKm is the farthest two points on Earth can be: a disc of
// this radius covers the whole planet.
const halfCircumferenceKm = math.Pi * earthRadiusKm

// ErrInvalid is wrapped by every error about invalid input (coordinates out
// of range, negative round-trip times, options out of range).
var ErrInvalid = errors.New("invalid input")

// MaxDistance returns the radius in km of the disc an RTT confines the
// answering server to: rtt in ms × KmPerMsRTT. A negative rtt gives 0.
func MaxDistance(rtt time.Duration) float64 {
	if rtt <= 0 {
		return 0
	}
	return rtt.Seconds() * 1000 * KmPerMsRTT
}

// MinRTT returns the smallest round-trip time physically possible to a
// server km away.
func MinRTT(km float64) time.Duration {
	if km <= 0 || math.IsNaN(km) {
		return 0
	}
	return time.Duration(km / KmPerMsRTT * float64(time.Millisecond))
}

// Verdict is whether an RTT measured from a vantage point is physically
// possible for a claimed site location.
type Verdict struct {
	// Possible is false when the site lies outside the RTT's disc: the
	// answer cannot have come from there (a wrong identity rule, a wrong
	// site location, or a wrong vantage point location).
	Possible bool
	// Distance is the great-circle distance in km between the vantage point
	// and the site.
	Distance float64
	// MinRTT is the smallest RTT physically possible over Distance.
	MinRTT time.Duration
	// Excess is the measured RTT minus MinRTT: path inflation and queueing
	// when positive, the size of the impossibility when negative.
	Excess time.Duration
}

// Plausible checks an RTT measured from a vantage point against the site the
// answer claims to come from. Coordinates are in degrees. An RTT that is
// not positive is judged as zero (only a co-located site is possible).
func Plausible(vpLat, vpLon, siteLat, siteLon float64, rtt time.Duration) Verdict {
	d := catalog.Distance(vpLat, vpLon, siteLat, siteLon)
	if rtt < 0 {
		rtt = 0
	}
	minRTT := MinRTT(d)
	return Verdict{
		// Compare distances, not rounded durations, so a site exactly on
		// the disc's edge is possible.
		Possible: d <= MaxDistance(rtt),
		Distance: d,
		MinRTT:   minRTT,
		Excess:   rtt - minRTT,
	}
}

// validCoords reports whether lat/lon are finite degrees in range.
func validCoords(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}
