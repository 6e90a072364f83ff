package incident_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/incident"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Two vantage points served by HEL stop getting answers while the one
// served by AMS keeps getting them: HEL is a black hole.
func Example() {
	d, err := incident.New(incident.Config{Interval: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("192.0.2.53")
	observe := func(vp string, round int, site string) {
		o := analysis.Observation{
			VantagePoint: vp, Target: "k-root", Address: addr,
			Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			At: t0.Add(time.Duration(round) * 10 * time.Second),
		}
		if site == "" {
			o.Failure = api.FailureTimeout
		} else {
			o.Identity, o.RTT = "ns1."+site+".example", 12*time.Millisecond
		}
		d.Add(o, site) // the caller resolved the site from o.Identity
	}
	for round := range 8 {
		hel := "HEL"
		if round >= 3 && round < 6 {
			hel = "" // HEL's service is dead, its route still announced
		}
		observe("vp-1", round, hel)
		observe("vp-2", round, hel)
		observe("vp-3", round, "AMS")
	}
	for _, in := range d.Incidents() {
		fmt.Println(in.Kind, in.Target, in.Address, in.Site, in.VantagePoints, in.Start.Sub(t0), in.End.Sub(t0))
		fmt.Println(in.Evidence.Note)
	}
	// Output:
	// blackhole k-root 192.0.2.53 HEL [vp-1 vp-2] 30s 1m0s
	// 2 of the 2 vantage points last served by site HEL stopped getting answers (mostly generic_timeout_error) while 1 of other sites kept answering.
}
