package dashboard_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// hostile is a site identity that would run script if a page did not
// escape it.
const hostile = `<img src=x onerror=alert(1)>`

var (
	addr4 = netip.MustParseAddr("192.0.2.53")
	addr6 = netip.MustParseAddr("2001:db8::53")
)

func ptr[T any](v T) *T { return &v }

// world is what seed stored, for the checks.
type world struct {
	st  *store.Store
	now time.Time
	// h0 and h1 start the two hourly catchment windows: vp2 moves from
	// NL-AMS (h0) to the hostile site (h1); h1 is the latest window.
	h0, h1 time.Time
	// switchAt is vp2's switch (a withdrawal that broke a TCP session).
	switchAt time.Time
}

// seed stores a small world: target k-root with three declared sites (one
// named by the hostile string), four vantage points, two catchment
// windows, a switch, an open black hole and a closed vantage-point
// incident, and recent results of vp1 with a traceroute.
func seed(t testing.TB) world {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	w := world{st: st, now: time.Now().UTC().Truncate(time.Second)}
	w.h1 = w.now.Truncate(time.Hour).Add(-time.Hour)
	w.h0 = w.h1.Add(-time.Hour)
	w.switchAt = w.h1.Add(10 * time.Minute)

	agents := []store.AgentSpec{
		{Name: "vp1", Latitude: ptr(52.37), Longitude: ptr(4.9), Provider: "example-hosting", Region: "eu-west"},
		{Name: "vp2", Latitude: ptr(60.17), Longitude: ptr(24.94), Provider: hostile, Region: "eu-north"},
		{Name: "vp3", Latitude: ptr(1.35), Longitude: ptr(103.8)},
		{Name: "vp4"}, // no location: listed, not on the map
	}
	var vp1 store.Agent
	for i, spec := range agents {
		a, _, err := st.AddAgent(ctx, spec)
		if err != nil {
			t.Fatalf("AddAgent %s: %v", spec.Name, err)
		}
		if i == 0 {
			vp1 = a
		}
	}
	if _, err := st.ApplyTargets(ctx, []store.Target{{
		Name: "k-root", Addresses: []netip.Addr{addr4, addr6}, Probes: []string{"dns", "trace"}, Interval: 30 * time.Second,
		Sites: []analysis.Site{
			{Code: "NL-AMS", Name: "Amsterdam", Latitude: 52.31, Longitude: 4.76, HasCoords: true},
			{Code: "SIN", Name: "Singapore", Latitude: 1.36, Longitude: 103.99, HasCoords: true},
			{Code: hostile, Name: hostile, Latitude: 60.32, Longitude: 24.96, HasCoords: true},
		},
	}}); err != nil {
		t.Fatal(err)
	}

	row := func(vp string, addr netip.Addr, query, site string, obs int, ws time.Time) store.CatchmentRow {
		return store.CatchmentRow{VantagePoint: vp, Target: "k-root", Address: addr, Kind: api.KindDNS, Transport: api.TransportUDP,
			Query: query, Site: site, Observations: obs, Confidence: 0.95, WindowStart: ws, WindowEnd: ws.Add(time.Hour)}
	}
	f := store.Findings{
		Catchments: []store.CatchmentRow{
			row("vp1", addr4, api.QueryHostnameBind, "NL-AMS", 120, w.h0),
			row("vp1", addr6, api.QueryHostnameBind, "NL-AMS", 120, w.h0),
			row("vp2", addr4, api.QueryHostnameBind, "NL-AMS", 120, w.h0),
			row("vp3", addr4, api.QueryHostnameBind, "SIN", 120, w.h0),
			row("vp4", addr4, api.QueryHostnameBind, "SIN", 120, w.h0),
			row("vp1", addr4, api.QueryHostnameBind, "NL-AMS", 60, w.h1),
			row("vp2", addr4, api.QueryHostnameBind, hostile, 50, w.h1),
			row("vp3", addr4, api.QueryHostnameBind, "SIN", 60, w.h1),
			row("vp4", addr4, api.QueryHostnameBind, "SIN", 60, w.h1),
		},
		Switches: []store.SwitchRow{{
			VantagePoint: "vp2", Target: "k-root", Address: addr4, Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			At: w.switchAt, LastFrom: w.switchAt.Add(-30 * time.Second), From: "NL-AMS", To: hostile,
			Cause: analysis.CauseWithdrawal, CauseDetail: "the whole catchment of NL-AMS moved", TCPBroke: true, Failures: 1,
		}},
		Incidents: []analysis.Incident{
			{Kind: analysis.IncidentBlackhole, Target: "k-root", Address: addr4, Site: hostile, Start: w.h1.Add(30 * time.Minute),
				VantagePoints: []string{"vp2"}, Evidence: analysis.Evidence{
					Failed: map[string]int{"generic_timeout_error": 7}, Healthy: 2, CatchmentSize: 1,
					PathEnds: []netip.Addr{netip.MustParseAddr("198.51.100.7")}, Note: "site " + hostile + " swallowed its catchment"}},
			{Kind: analysis.IncidentVantagePoint, Start: w.h0.Add(5 * time.Minute), End: w.h0.Add(9 * time.Minute), VantagePoints: []string{"vp4"}},
		},
	}
	if _, err := st.SaveFindings(ctx, f); err != nil {
		t.Fatal(err)
	}

	// vp1 measured a minute ago what it uploads now: DNS answers naming
	// the hostile identity, a timeout, and a Paris traceroute.
	m := w.now.Add(-time.Minute)
	rs := []api.Result{
		{Seq: 1, MeasuredAt: m, Target: "k-root", Address: "192.0.2.53", Kind: api.KindDNS, Transport: api.TransportUDP,
			Query: api.QueryHostnameBind, RTTMicros: 12_340, DNS: &api.DNSValues{Rcode: "NOERROR", TXT: []string{hostile}, Identity: hostile}},
		{Seq: 2, MeasuredAt: m.Add(time.Second), Target: "k-root", Address: "192.0.2.53", Kind: api.KindDNS, Transport: api.TransportTCP,
			Query: api.QueryHostnameBind, RTTMicros: 23_450, DNS: &api.DNSValues{Rcode: "NOERROR", TXT: []string{"ns1.nl-ams.k.example.net"}, Identity: "ns1.nl-ams.k.example.net"}},
		{Seq: 3, MeasuredAt: m.Add(2 * time.Second), Target: "k-root", Address: "192.0.2.53", Kind: api.KindDNS, Transport: api.TransportUDP,
			Query: api.QueryNSID, Failure: api.FailureTimeout},
		{Seq: 4, MeasuredAt: m.Add(3 * time.Second), Target: "k-root", Address: "192.0.2.53", Kind: api.KindTrace, Transport: api.TransportUDP,
			Query: api.QueryParis, RTTMicros: 900, Trace: &api.TraceValues{Flow: "udp sport=33000 dport=33435", Reached: true, Stop: "reached",
				Hops: []api.TraceHop{{TTL: 1, Addr: "198.51.100.1", RTTUS: 100, ICMPType: 11}, {TTL: 2}, {TTL: 3, Addr: "192.0.2.53", RTTUS: 900, ICMPType: 3, ICMPCode: 3}}}},
	}
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := st.Ingest(ctx, vp1, rs); err != nil {
		t.Fatal(err)
	}
	return w
}
