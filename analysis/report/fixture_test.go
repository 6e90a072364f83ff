package report_test

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// sliceSource is an analysis.Source over slices held in memory. Like the
// store, it yields observations of the window in time order.
type sliceSource struct {
	targets []analysis.Target
	obs     []analysis.Observation
	vps     []analysis.VantagePoint
}

func (s *sliceSource) VantagePoints(ctx context.Context) ([]analysis.VantagePoint, error) {
	return slices.Clone(s.vps), ctx.Err()
}

func (s *sliceSource) Targets(ctx context.Context) ([]analysis.Target, error) {
	return slices.Clone(s.targets), ctx.Err()
}

func (s *sliceSource) Observations(ctx context.Context, since, until time.Time, target string, fn func(analysis.Observation) error) error {
	sorted := slices.Clone(s.obs)
	slices.SortStableFunc(sorted, func(x, y analysis.Observation) int { return x.At.Compare(y.At) })
	for _, o := range sorted {
		if err := ctx.Err(); err != nil {
			return err
		}
		if o.At.Before(since) || !o.At.Before(until) || (target != "" && o.Target != target) {
			continue
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

var (
	start = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	kV4   = netip.MustParseAddr("192.0.2.53")
	kV6   = netip.MustParseAddr("2001:db8::53")
	iV4   = netip.MustParseAddr("198.51.100.53")
)

// probe is one stream of the fixture.
type probe struct {
	transport api.Transport
	query     string
	offset    time.Duration // within a round
}

var probes = []probe{
	{api.TransportUDP, api.QueryHostnameBind, 0},
	{api.TransportUDP, api.QueryNSID, 2 * time.Second},
	{api.TransportTCP, api.QueryHostnameBind, 4 * time.Second},
}

// rtts are the base RTTs of the fixture's vantage points to each target,
// plausible from where located() puts them.
var rtts = map[string]time.Duration{
	"vp-hel-1 k-root": 5 * time.Millisecond,
	"vp-ams-1 k-root": 25 * time.Millisecond,
	"vp-fra-1 k-root": 18 * time.Millisecond,
	"vp-nyc-1 k-root": 30 * time.Millisecond,
	"vp-ams-1 i-root": 8 * time.Millisecond,
	"vp-nyc-1 i-root": 21 * time.Millisecond,
}

// fixture is a small hour of measurements: rounds every five minutes from
// four vantage points to two targets.
//
//   - vp-hel-1 stays at HEL (two servers answer in turn: no switch);
//   - vp-ams-1 is at AMS until AMS is withdrawn at 12:30, then at HEL; one
//     round times out on the way;
//   - vp-fra-1 is at AMS, but its NSID queries reach HEL twice;
//   - vp-nyc-1 gets identities no rule explains, some hostile, and failures;
//   - on i-root, the operator's rule maps Netnod's lnx to LON, and a CHI
//     guess is kept though CHI is not declared.
func fixture() *sliceSource {
	src := &sliceSource{targets: []analysis.Target{
		{
			Name:      "k-root",
			Addresses: []netip.Addr{kV4, kV6},
			Sites: []analysis.Site{
				{Code: "HEL", Name: "Helsinki", Latitude: 60.17, Longitude: 24.94, HasCoords: true},
				{Code: "AMS", Name: "Amsterdam", Latitude: 52.37, Longitude: 4.90, HasCoords: true},
				{Code: "STO", Name: "Stockholm"},
			},
		},
		{
			Name:      "i-root",
			Addresses: []netip.Addr{iV4},
			Rules:     []analysis.Rule{{Pattern: `^s[0-9]+\.lnx$`, Site: "LON"}},
			Sites:     []analysis.Site{{Code: "LON", Name: "London"}},
		},
	}}
	add := func(vp, target string, addr netip.Addr, round int, p probe, id string, f api.Failure) {
		o := analysis.Observation{
			VantagePoint: vp, Target: target, Address: addr, Kind: api.KindDNS,
			Transport: p.transport, Query: p.query,
			At:      start.Add(time.Duration(round)*5*time.Minute + p.offset),
			Failure: f, Identity: id,
		}
		if f == api.FailureNone {
			o.RTT = rtts[vp+" "+target] + time.Duration(round%3)*time.Millisecond
		}
		src.obs = append(src.obs, o)
	}
	for round := 0; round < 12; round++ {
		for _, p := range probes {
			// vp-hel-1: HEL on both addresses, ns1 and ns2 in turn.
			hel := "ns1.fi-hel.k.ripe.net"
			if round%2 == 1 {
				hel = "ns2.fi-hel.k.ripe.net"
			}
			add("vp-hel-1", "k-root", kV4, round, p, hel, "")
			add("vp-hel-1", "k-root", kV6, round, p, hel, "")

			// vp-ams-1: AMS, a timeout in round 5, HEL from round 6.
			switch {
			case round < 5:
				add("vp-ams-1", "k-root", kV4, round, p, "ns1.nl-ams.k.ripe.net", "")
			case round == 5:
				add("vp-ams-1", "k-root", kV4, round, p, "", api.FailureTimeout)
			default:
				add("vp-ams-1", "k-root", kV4, round, p, "ns2.fi-hel.k.ripe.net", "")
			}

			// vp-fra-1: AMS, except NSID in rounds 3 and 4.
			if p.query == api.QueryNSID && (round == 3 || round == 4) {
				add("vp-fra-1", "k-root", kV4, round, p, "ns1.fi-hel.k.ripe.net", "")
			} else {
				add("vp-fra-1", "k-root", kV4, round, p, "ns2.nl-ams.k.ripe.net", "")
			}

			// vp-nyc-1: nothing a rule explains.
			switch round % 4 {
			case 0:
				add("vp-nyc-1", "k-root", kV4, round, p, "ns1.example.com", "")
			case 1:
				add("vp-nyc-1", "k-root", kV4, round, p, "", api.FailureConnectionRefused)
			case 2:
				add("vp-nyc-1", "k-root", kV4, round, p, "<img src=x onerror=alert(1)>", "")
			case 3:
				add("vp-nyc-1", "k-root", kV4, round, p, "a|b\n# heading", "")
			}

			// i-root.
			add("vp-ams-1", "i-root", iV4, round, p, "s2.lnx", "")
			add("vp-nyc-1", "i-root", iV4, round, p, "s1.chi", "")
		}
	}
	return src
}

// located is the fixture with its vantage points placed on the map (in
// Helsinki, Amsterdam, Frankfurt and New York), and vp-hel-1's own network
// failing from 12:40 on: every query it sends times out while vp-ams-1,
// also at HEL, keeps its answers (an incident, still open at the end).
func located() *sliceSource {
	src := fixture()
	for i := range src.obs {
		o := &src.obs[i]
		if o.VantagePoint == "vp-hel-1" && !o.At.Before(start.Add(40*time.Minute)) {
			o.Identity, o.RTT, o.Failure = "", 0, api.FailureTimeout
		}
	}
	src.vps = []analysis.VantagePoint{
		{Name: "vp-hel-1", Latitude: 60.17, Longitude: 24.94, HasCoords: true, Country: "FI"},
		{Name: "vp-ams-1", Latitude: 52.37, Longitude: 4.90, HasCoords: true, Country: "NL"},
		{Name: "vp-fra-1", Latitude: 50.11, Longitude: 8.68, HasCoords: true, Country: "DE"},
		{Name: "vp-nyc-1", Latitude: 40.71, Longitude: -74.01, HasCoords: true, Country: "US"},
	}
	return src
}
