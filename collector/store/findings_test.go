package store_test

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

func TestScanCarriesTraceEndsAndSessions(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	a, _ := seed(t, st)
	t0 := time.Date(2026, 5, 2, 10, 0, 0, 0, time.UTC)
	trace := api.Result{
		Seq: 1, MeasuredAt: t0, Target: "k-root", Address: "192.0.2.53", Kind: api.KindTrace, Transport: api.TransportUDP, Query: api.QueryParis,
		RTTMicros: 900,
		Trace: &api.TraceValues{Flow: "udp sport=33000 dport=33435", Reached: true, Stop: "reached", Hops: []api.TraceHop{
			{TTL: 1, Addr: "198.51.100.1", RTTUS: 100},
			{TTL: 2, Addr: "198.51.100.2", RTTUS: 200},
			{TTL: 3}, // a star
			{TTL: 4, Addr: "198.51.100.4", RTTUS: 400},
			{TTL: 4, Attempt: 1, Addr: "198.51.100.4", RTTUS: 401},
			{TTL: 5, Addr: "192.0.2.53", RTTUS: 500},
		}},
	}
	session := api.Result{
		Seq: 2, MeasuredAt: t0.Add(time.Second), Target: "k-root", Address: "192.0.2.53", Kind: api.KindSession, Transport: api.TransportTCP, Query: api.QuerySessionDNS,
		Session: &api.SessionValues{OpenedAt: t0.Add(time.Second), ClosedAt: t0.Add(time.Minute), Queries: 3, End: api.EndReset, Answers: []api.SessionAnswer{
			{At: t0.Add(time.Second), Identity: "ns1.fi-hel.k.example.net"},
			{At: t0.Add(2 * time.Second), Identity: "ns2.nl-ams.k.example.net"},
		}},
	}
	for _, r := range []api.Result{trace, session} {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	ingest(t, st, a, []api.Result{trace, session}, 2, 0)

	var got []analysis.Observation
	stats, err := st.Scan(ctx, store.ScanOptions{}, func(o analysis.Observation) error { got = append(got, o); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || stats.Rows != 2 {
		t.Fatalf("scan: %d observations, stats %+v; want 2", len(got), stats)
	}
	wantEnd := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.4")}
	if !reflect.DeepEqual(got[0].PathEnd, wantEnd) {
		t.Errorf("trace PathEnd = %v, want %v", got[0].PathEnd, wantEnd)
	}
	wantSession := &analysis.Session{ClosedAt: t0.Add(time.Minute), End: api.EndReset, LastIdentity: "ns2.nl-ams.k.example.net"}
	if !reflect.DeepEqual(got[1].Session, wantSession) || !got[1].Session.Broke() {
		t.Errorf("session = %+v, want %+v (broken)", got[1].Session, wantSession)
	}
	if stats.LastReceived.Before(before.Add(-time.Minute)) {
		t.Errorf("LastReceived = %v, want about now", stats.LastReceived)
	}

	t.Run("received window", func(t *testing.T) {
		n := 0
		_, err := st.Scan(ctx, store.ScanOptions{ReceivedAfter: stats.LastReceived}, func(analysis.Observation) error { n++; return nil })
		if err != nil || n != 0 {
			t.Errorf("scan of what arrived after the last row: %d rows, %v; want 0", n, err)
		}
		_, err = st.Scan(ctx, store.ScanOptions{ReceivedAfter: before.Add(-time.Minute), ReceivedThrough: stats.LastReceived}, func(analysis.Observation) error { n++; return nil })
		if err != nil || n != 2 {
			t.Errorf("scan of what arrived since before the ingest: %d rows, %v; want 2", n, err)
		}
	})
}

func TestSaveFindings(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	ctx := t.Context()
	seed(t, st)
	addr := netip.MustParseAddr("192.0.2.53")
	t0 := time.Date(2026, 5, 2, 10, 0, 0, 0, time.UTC)
	f := store.Findings{
		Since: t0, Until: t0.Add(time.Hour),
		Catchments: []store.CatchmentRow{
			{VantagePoint: "vp1", Target: "k-root", Address: addr, Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind, Site: "FI-HEL", Observations: 10, Confidence: 0.9},
			{VantagePoint: "nobody", Target: "k-root", Address: addr, Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind, Site: "FI-HEL", Observations: 1, Confidence: 1},
		},
		Switches: []store.SwitchRow{
			{VantagePoint: "vp1", Target: "k-root", Address: addr, Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
				At: t0.Add(time.Minute), LastFrom: t0.Add(50 * time.Second), From: "FI-HEL", To: "NL-AMS", Cause: analysis.CauseWithdrawal, TCPBroke: true},
		},
		Incidents: []analysis.Incident{{
			Kind: analysis.IncidentBlackhole, Target: "k-root", Address: addr, Site: "NL-AMS", Start: t0.Add(2 * time.Minute),
			VantagePoints: []string{"vp1"}, Evidence: analysis.Evidence{Healthy: 3, CatchmentSize: 1, Failed: map[string]int{"timeout": 4}},
		}},
		Analyzer: "test", ReceivedThrough: t0.Add(time.Hour),
	}
	s, err := st.SaveFindings(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if s != (store.SaveStats{Catchments: 1, Switches: 1, Incidents: 1, Unknown: 1}) {
		t.Errorf("stats = %+v", s)
	}
	// Saving again updates in place: the incident ends, the cause changes.
	f.Incidents[0].End = t0.Add(5 * time.Minute)
	f.Switches[0].Cause = analysis.CauseRouting
	if _, err := st.SaveFindings(ctx, f); err != nil {
		t.Fatal(err)
	}
	count := func(q string) int {
		var n int
		rows := sql(t, dsn, q)
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	if n := count(`SELECT count(*) FROM catchments`); n != 1 {
		t.Errorf("%d catchments, want 1", n)
	}
	if n := count(`SELECT count(*) FROM switches WHERE cause = 'routing' AND tcp_broke`); n != 1 {
		t.Errorf("%d updated switches, want 1", n)
	}
	got, err := st.StoredIncidents(ctx, "", t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := f.Incidents
	if !reflect.DeepEqual(got, want) {
		t.Errorf("incidents\n got %+v\nwant %+v", got, want)
	}
	if w, m, err := st.AnalyzerState(ctx, "test"); err != nil || !w.Equal(t0.Add(time.Hour)) || !m.IsZero() {
		t.Errorf("AnalyzerState = %v, %v, %v", w, m, err)
	}

	t.Run("replace", func(t *testing.T) {
		if _, err := st.SaveFindings(ctx, store.Findings{Since: t0, Until: t0.Add(time.Hour), Replace: true}); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"catchments", "switches", "incidents"} {
			if n := count(`SELECT count(*) FROM ` + table); n != 0 {
				t.Errorf("%d %s left after a replace with nothing", n, table)
			}
		}
	})
}
