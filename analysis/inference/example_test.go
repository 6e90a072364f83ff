package inference_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/inference"
)

func ExampleInfer() {
	addr := netip.MustParseAddr("192.0.2.53")
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	hops := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}

	// Paris traceroutes: two vantage points end behind one router; the
	// third mostly behind another.
	var traces inference.Traces
	traces.AddTrace("vp-paris", "example.org", addr, at, hops("203.0.113.1", "198.51.100.1"))
	traces.AddTrace("vp-lyon", "example.org", addr, at, hops("203.0.113.2", "198.51.100.1"))
	traces.AddTrace("vp-tokyo", "example.org", addr, at, hops("203.0.113.3", "198.51.100.7"))
	traces.AddTrace("vp-tokyo", "example.org", addr, at.Add(time.Minute), hops("203.0.113.3", "198.51.100.7"))
	traces.AddTrace("vp-tokyo", "example.org", addr, at.Add(2*time.Minute), hops("203.0.113.4", "198.51.100.9"))

	// Pings from vantage points that ran no traceroute: 2 ms puts the
	// server within 200 km of Amsterdam.
	var latency inference.Latency
	latency.AddRTT(analysis.VantagePoint{Name: "vp-amsterdam", Latitude: 52.37, Longitude: 4.90, HasCoords: true}, "example.org", addr, 2*time.Millisecond)

	res, err := inference.Infer(&traces, &latency)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range res.Assignments {
		fmt.Printf("%-12s %-18s %.2f %s\n", a.VantagePoint, a.Cluster, a.Confidence, a.Method)
	}
	// Output:
	// vp-amsterdam ~AMS               1.00 latency
	// vp-lyon      via 198.51.100.1   1.00 traceroute
	// vp-paris     via 198.51.100.1   1.00 traceroute
	// vp-tokyo     via 198.51.100.7   0.67 traceroute
}
