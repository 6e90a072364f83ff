package report_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

func ExampleBuild() {
	// Any analysis.Source will do: the store in production, here slices
	// in memory (see fixture_test.go).
	addr := netip.MustParseAddr("192.0.2.53")
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	src := &sliceSource{targets: []analysis.Target{{
		Name:  "k-root",
		Sites: []analysis.Site{{Code: "HEL", Name: "Helsinki"}, {Code: "AMS", Name: "Amsterdam"}},
	}}}
	for i, id := range []string{"ns1.nl-ams.k.ripe.net", "ns2.nl-ams.k.ripe.net", "", "ns1.fi-hel.k.ripe.net", "ns2.fi-hel.k.ripe.net"} {
		o := analysis.Observation{
			VantagePoint: "vp-1", Target: "k-root", Address: addr, Kind: api.KindDNS,
			Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			At: t0.Add(time.Duration(i) * time.Minute), Identity: id,
		}
		if id == "" {
			o.Failure = api.FailureTimeout
		}
		src.obs = append(src.obs, o)
	}

	r, err := report.Build(context.Background(), src, report.Options{Since: t0, Until: t0.Add(time.Hour)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range r.Targets {
		for _, s := range t.Sites {
			fmt.Printf("%s %s: %d vantage point(s), share %.2f\n", t.Name, s.Site, s.VantagePoints, s.Share)
		}
		for _, s := range t.Switches {
			fmt.Printf("%s moved %s → %s at %s (last at %s at %s, %d failure between)\n",
				s.VantagePoint, s.From, s.To, s.At.Format(time.Kitchen), s.From, s.LastFrom.Format(time.Kitchen), s.FailuresBetween)
		}
	}
	// report.WriteMarkdown(w, r) renders it for people, report.WriteJSON(w, r)
	// for programs.
	// Output:
	// k-root HEL: 1 vantage point(s), share 1.00
	// k-root AMS: 0 vantage point(s), share 0.00
	// vp-1 moved AMS → HEL at 12:03PM (last at AMS at 12:01PM, 1 failure between)
}
