package store_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

var (
	v4 = netip.MustParseAddr("192.0.2.53")
	v6 = netip.MustParseAddr("2001:db8::53")
)

// dashboardAgents registers vp2…vp4 beside seed's vp1; vp2 has a location.
func dashboardAgents(t *testing.T, st *store.Store) {
	t.Helper()
	for _, spec := range []store.AgentSpec{
		{Name: "vp2", Latitude: ptr(52.37), Longitude: ptr(4.9), Provider: "example-hosting", Region: "eu-west"},
		{Name: "vp3"},
		{Name: "vp4"},
	} {
		if _, _, err := st.AddAgent(t.Context(), spec); err != nil {
			t.Fatalf("AddAgent %s: %v", spec.Name, err)
		}
	}
}

// row is a catchment row of k-root in the hourly window starting at ws.
func row(vp string, addr netip.Addr, query, site string, obs int, ws time.Time) store.CatchmentRow {
	return store.CatchmentRow{
		VantagePoint: vp, Target: "k-root", Address: addr, Kind: api.KindDNS, Transport: api.TransportUDP, Query: query,
		Site: site, Observations: obs, Confidence: 0.9, WindowStart: ws, WindowEnd: ws.Add(time.Hour),
	}
}

func TestCatchmentAt(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	seed(t, st)
	dashboardAgents(t, st)
	h8 := time.Date(2026, 5, 2, 8, 0, 0, 0, time.UTC)
	h10, h11 := h8.Add(2*time.Hour), h8.Add(3*time.Hour)
	rows := []store.CatchmentRow{
		// A window two hours before the others: never reached from 11:00.
		row("vp4", v4, api.QueryHostnameBind, "OLD", 10, h8),
		// vp1: two streams of three name FI-HEL, though NL-AMS has more
		// observations: the majority of streams wins.
		row("vp1", v4, api.QueryHostnameBind, "FI-HEL", 10, h10),
		row("vp1", v4, api.QueryIDServer, "FI-HEL", 10, h10),
		row("vp1", v4, api.QueryNSID, "NL-AMS", 50, h10),
		// vp1 on IPv6: a tie of one stream each goes to more observations.
		row("vp1", v6, api.QueryHostnameBind, "FI-HEL", 3, h10),
		row("vp1", v6, api.QueryNSID, "NL-AMS", 7, h10),
		// vp2 moves from NL-AMS (10:00) to FI-HEL (11:00).
		row("vp2", v4, api.QueryHostnameBind, "NL-AMS", 20, h10),
		row("vp2", v4, api.QueryHostnameBind, "FI-HEL", 4, h11),
		// vp3 has no row yet in the 11:00 window: it keeps its 10:00 one.
		row("vp3", v4, api.QueryHostnameBind, "NL-AMS", 20, h10),
	}
	if _, err := st.SaveFindings(ctx, store.Findings{Catchments: rows}); err != nil {
		t.Fatal(err)
	}
	type want struct {
		vp   string
		addr netip.Addr
		site string
		// streams, total streams, observations, total observations
		counts [4]int
		window time.Time
	}
	for _, tc := range []struct {
		name   string
		at     time.Time
		window time.Time
		want   []want
	}{
		{"before every window", h8.Add(-time.Minute), time.Time{}, nil},
		{"in the oldest window", h8.Add(30 * time.Minute), h8, []want{{"vp4", v4, "OLD", [4]int{1, 1, 10, 10}, h8}}},
		{"in the 10:00 window", h10.Add(30 * time.Minute), h10, []want{
			{"vp1", v4, "FI-HEL", [4]int{2, 3, 20, 70}, h10},
			{"vp1", v6, "NL-AMS", [4]int{1, 2, 7, 10}, h10},
			{"vp2", v4, "NL-AMS", [4]int{1, 1, 20, 20}, h10},
			{"vp3", v4, "NL-AMS", [4]int{1, 1, 20, 20}, h10},
		}},
		{"window start is included", h11, h11, []want{
			{"vp1", v4, "FI-HEL", [4]int{2, 3, 20, 70}, h10},
			{"vp1", v6, "NL-AMS", [4]int{1, 2, 7, 10}, h10},
			{"vp2", v4, "FI-HEL", [4]int{1, 1, 4, 4}, h11},
			{"vp3", v4, "NL-AMS", [4]int{1, 1, 20, 20}, h10},
		}},
		{"long after the last window", h11.Add(48 * time.Hour), h11, []want{
			{"vp1", v4, "FI-HEL", [4]int{2, 3, 20, 70}, h10},
			{"vp1", v6, "NL-AMS", [4]int{1, 2, 7, 10}, h10},
			{"vp2", v4, "FI-HEL", [4]int{1, 1, 4, 4}, h11},
			{"vp3", v4, "NL-AMS", [4]int{1, 1, 20, 20}, h10},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := st.CatchmentAt(ctx, "k-root", tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if !snap.WindowStart.Equal(tc.window) || snap.Truncated {
				t.Errorf("window %s (truncated %v), want %s", snap.WindowStart, snap.Truncated, tc.window)
			}
			var got []want
			for _, e := range snap.Entries {
				got = append(got, want{e.VantagePoint, e.Address, e.Site, [4]int{e.Streams, e.TotalStreams, e.Observations, e.TotalObservations}, e.WindowStart})
				if e.VantagePoint == "vp2" && (e.Latitude == nil || *e.Latitude != 52.37 || e.Longitude == nil || *e.Longitude != 4.9) {
					t.Errorf("vp2 location %v,%v, want 52.37,4.9", e.Latitude, e.Longitude)
				}
				if e.VantagePoint == "vp1" && e.Latitude != nil {
					t.Errorf("vp1 has a location %v, want none", *e.Latitude)
				}
			}
			if !slices.EqualFunc(got, tc.want, func(x, y want) bool {
				return x.vp == y.vp && x.addr == y.addr && x.site == y.site && x.counts == y.counts && x.window.Equal(y.window)
			}) {
				t.Errorf("entries\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	t.Run("unknown target", func(t *testing.T) {
		if _, err := st.CatchmentAt(ctx, "no-such-target", h10); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
	})
}

func TestSwitches(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	seed(t, st)
	dashboardAgents(t, st)
	t0 := time.Date(2026, 5, 2, 10, 0, 0, 0, time.UTC)
	sw := func(vp string, at time.Duration, from, to string, cause analysis.Cause, broke bool) store.SwitchRow {
		return store.SwitchRow{VantagePoint: vp, Target: "k-root", Address: v4, Kind: api.KindDNS, Transport: api.TransportTCP,
			Query: api.QueryHostnameBind, At: t0.Add(at), LastFrom: t0.Add(at - time.Second), From: from, To: to, Cause: cause,
			CauseDetail: "detail of " + vp, TCPBroke: broke, Failures: 2}
	}
	in := []store.SwitchRow{
		sw("vp1", 0, "NL-AMS", "FI-HEL", analysis.CauseWithdrawal, true),
		sw("vp2", time.Minute, "NL-AMS", "FI-HEL", analysis.CauseWithdrawal, false),
		sw("vp1", time.Hour, "FI-HEL", "NL-AMS", analysis.CauseRouting, false),
		sw("vp3", 2*time.Hour, "FI-HEL", "<img src=x onerror=alert(1)>", analysis.CauseLoadBalancing, false),
	}
	if _, err := st.SaveFindings(ctx, store.Findings{Switches: in}); err != nil {
		t.Fatal(err)
	}
	at := func(rs []store.SwitchRow) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.VantagePoint+"@"+r.At.Sub(t0).String())
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		q         store.SwitchQuery
		want      []string
		truncated bool
	}{
		{"all of the target", store.SwitchQuery{Target: "k-root", Since: t0, Until: t0.Add(3 * time.Hour)}, []string{"vp1@0s", "vp2@1m0s", "vp1@1h0m0s", "vp3@2h0m0s"}, false},
		{"until is exclusive", store.SwitchQuery{Target: "k-root", Since: t0, Until: t0.Add(time.Hour)}, []string{"vp1@0s", "vp2@1m0s"}, false},
		{"since is inclusive", store.SwitchQuery{Since: t0.Add(time.Hour), Until: t0.Add(3 * time.Hour)}, []string{"vp1@1h0m0s", "vp3@2h0m0s"}, false},
		{"one vantage point", store.SwitchQuery{VantagePoint: "vp1", Since: t0, Until: t0.Add(3 * time.Hour)}, []string{"vp1@0s", "vp1@1h0m0s"}, false},
		{"limit", store.SwitchQuery{Target: "k-root", Since: t0, Until: t0.Add(3 * time.Hour), Limit: 3}, []string{"vp1@0s", "vp2@1m0s", "vp1@1h0m0s"}, true},
		{"newest first", store.SwitchQuery{Target: "k-root", Since: t0, Until: t0.Add(3 * time.Hour), Limit: 2, Newest: true}, []string{"vp3@2h0m0s", "vp1@1h0m0s"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, truncated, err := st.Switches(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(at(got), tc.want) || truncated != tc.truncated {
				t.Errorf("switches %v (truncated %v), want %v (%v)", at(got), truncated, tc.want, tc.truncated)
			}
		})
	}
	t.Run("fields", func(t *testing.T) {
		got, _, err := st.Switches(ctx, store.SwitchQuery{Target: "k-root", Since: t0, Until: t0.Add(time.Second)})
		if err != nil || len(got) != 1 {
			t.Fatalf("got %v, %v", got, err)
		}
		w := in[0]
		w.CauseDetail = "detail of vp1"
		if got[0] != w {
			t.Errorf("got\n %+v\nwant %+v", got[0], w)
		}
	})
	for _, q := range []store.SwitchQuery{{Target: "nope"}, {VantagePoint: "nope"}} {
		if _, _, err := st.Switches(ctx, q); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Switches(%+v) err = %v, want ErrNotFound", q, err)
		}
	}
}

func TestIncidents(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	seed(t, st)
	dashboardAgents(t, st)
	t0 := time.Date(2026, 5, 2, 10, 0, 0, 0, time.UTC)
	blackhole := analysis.Incident{Kind: analysis.IncidentBlackhole, Target: "k-root", Address: v4, Site: "NL-AMS",
		Start: t0, End: t0.Add(time.Hour), VantagePoints: []string{"vp2", "vp1"},
		Evidence: analysis.Evidence{Failed: map[string]int{"generic_timeout_error": 12}, Healthy: 3, CatchmentSize: 2, Note: "NL-AMS swallowed its catchment"}}
	outage := analysis.Incident{Kind: analysis.IncidentOutage, Target: "k-root", Start: t0.Add(2 * time.Hour), VantagePoints: []string{"vp1", "vp2", "vp3"}}
	broken := analysis.Incident{Kind: analysis.IncidentVantagePoint, Start: t0.Add(30 * time.Minute), End: t0.Add(40 * time.Minute), VantagePoints: []string{"vp4"}}
	if _, err := st.SaveFindings(ctx, store.Findings{Incidents: []analysis.Incident{blackhole, outage, broken}}); err != nil {
		t.Fatal(err)
	}
	keys := func(in []store.StoredIncident) []string {
		var out []string
		for _, i := range in {
			out = append(out, string(i.Kind))
		}
		return out
	}
	far := t0.Add(24 * time.Hour)
	for _, tc := range []struct {
		name      string
		q         store.IncidentQuery
		want      []string
		truncated bool
	}{
		{"all, newest first", store.IncidentQuery{Since: t0, Until: far}, []string{"outage", "vantage_point", "blackhole"}, false},
		{"open only", store.IncidentQuery{Since: t0, Until: far, Open: true}, []string{"outage"}, false},
		{"of the target", store.IncidentQuery{Target: "k-root", Since: t0, Until: far}, []string{"outage", "blackhole"}, false},
		{"overlapping the window", store.IncidentQuery{Since: t0.Add(50 * time.Minute), Until: t0.Add(90 * time.Minute)}, []string{"blackhole"}, false},
		{"open incidents overlap every later window", store.IncidentQuery{Since: far, Until: far.Add(time.Hour)}, []string{"outage"}, false},
		{"limit", store.IncidentQuery{Since: t0, Until: far, Limit: 1}, []string{"outage"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, truncated, err := st.Incidents(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(keys(got), tc.want) || truncated != tc.truncated {
				t.Errorf("incidents %v (truncated %v), want %v (%v)", keys(got), truncated, tc.want, tc.truncated)
			}
		})
	}
	t.Run("fields", func(t *testing.T) {
		got, _, err := st.Incidents(ctx, store.IncidentQuery{Target: "k-root", Since: t0, Until: t0.Add(time.Minute)})
		if err != nil || len(got) != 1 {
			t.Fatalf("got %v, %v", got, err)
		}
		g := got[0]
		if g.Key != store.IncidentKey(blackhole) || g.Site != "NL-AMS" || g.Address != v4 || !g.End.Equal(blackhole.End) ||
			!slices.Equal(g.VantagePoints, []string{"vp1", "vp2"}) || g.Evidence.Failed["generic_timeout_error"] != 12 ||
			g.Evidence.Note != blackhole.Evidence.Note || g.UpdatedAt.IsZero() {
			t.Errorf("got %+v", g)
		}
	})
}

func TestAgentsHealth(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	a, _ := seed(t, st)
	dashboardAgents(t, st)
	// vp1 uploads now what it measured 10 and 30 minutes ago: a backlog.
	now := time.Now().UTC()
	rs := makeResults(1, 4, now.Add(-30*time.Minute))
	rs = append(rs, makeResults(5, 5, now.Add(-10*time.Minute))...)
	ingest(t, st, a, rs, len(rs), 0)
	got, total, err := st.AgentsHealth(ctx, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if total != 4 || len(got) != 4 {
		t.Fatalf("%d agents of %d, want 4", len(got), total)
	}
	vp1, vp2 := got[0], got[1]
	if vp1.Name != "vp1" || vp1.Received != 9 || vp1.LastSeq != 9 || vp1.LastSeen == nil {
		t.Errorf("vp1 = %+v, want 9 results received, last seq 9, seen", vp1)
	}
	if vp1.NewestMeasured == nil || !vp1.NewestMeasured.Equal(rs[len(rs)-1].MeasuredAt.Truncate(time.Microsecond)) {
		t.Errorf("vp1 newest measured %v, want %v", vp1.NewestMeasured, rs[len(rs)-1].MeasuredAt)
	}
	// Received between the start of the test and the read: the lag is at
	// least what was measured before the upload.
	if vp1.LagMedian < 10*time.Minute-time.Second || vp1.LagMedian > vp1.LagMax ||
		vp1.LagMax < 30*time.Minute-time.Second || vp1.LagMax > 30*time.Minute+time.Since(now)+time.Second {
		t.Errorf("vp1 lag median %s max %s, want about 10m and 30m", vp1.LagMedian, vp1.LagMax)
	}
	if vp2.Name != "vp2" || vp2.Received != 0 || vp2.NewestMeasured != nil || vp2.LastSeen != nil || vp2.LagMax != 0 ||
		vp2.Provider != "example-hosting" || vp2.Region != "eu-west" || vp2.Latitude == nil || *vp2.Latitude != 52.37 {
		t.Errorf("vp2 = %+v, want a located agent that never uploaded", vp2)
	}
	if got, total, err := st.AgentsHealth(ctx, time.Now(), 2); err != nil || total != 4 || len(got) != 2 || got[1].Name != "vp2" {
		t.Errorf("limit 2: %d agents of %d, %v", len(got), total, err)
	}
}

func TestRecentResultsAndLastTrace(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	a, _ := seed(t, st)
	dashboardAgents(t, st)
	now := time.Now().UTC().Truncate(time.Millisecond)
	trace := func(seq uint64, at time.Time, last string) api.Result {
		return api.Result{
			Seq: seq, MeasuredAt: at, Target: "k-root", Address: "192.0.2.53", Kind: api.KindTrace, Transport: api.TransportUDP, Query: api.QueryParis,
			RTTMicros: 900,
			Trace: &api.TraceValues{Flow: "udp sport=33000 dport=33435", Reached: true, Stop: "reached", Hops: []api.TraceHop{
				{TTL: 1, Addr: "198.51.100.1", RTTUS: 100, ICMPType: 11, ReplyTTL: 254},
				{TTL: 2}, // a star
				{TTL: 3, Addr: last, RTTUS: 300, ICMPType: 3, ICMPCode: 3, ReplyTTL: 62},
			}},
		}
	}
	rs := makeResults(1, 10, now.Add(-time.Hour))
	rs = append(rs, trace(11, now.Add(-50*time.Minute), "192.0.2.53"), trace(12, now.Add(-40*time.Minute), "198.51.100.3"))
	rs = append(rs, makeResults(13, 3, now.Add(-30*time.Minute))...)
	// Older than the horizon: not recent.
	rs = append(rs, makeResults(100, 1, now.Add(-store.HealthHorizon-time.Hour))...)
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	ingest(t, st, a, rs, len(rs), 0)

	t.Run("recent results", func(t *testing.T) {
		got, err := st.RecentResults(ctx, "vp1", now, 4)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, r := range got {
			seqs = append(seqs, r.Seq)
		}
		if !slices.Equal(seqs, []int64{15, 14, 13, 12}) {
			t.Fatalf("seqs %v, want 15 14 13 12", seqs)
		}
		want := rs[14-1]
		g := got[1]
		if g.Target != "k-root" || g.Address != v4 || g.Kind != want.Kind || g.Transport != want.Transport || g.Query != want.Query ||
			!g.MeasuredAt.Equal(want.MeasuredAt) || g.Identity != want.DNS.Identity || g.Rcode != "NOERROR" ||
			g.RTT != time.Duration(want.RTTMicros)*time.Microsecond || g.ReceivedAt.Before(g.MeasuredAt) {
			t.Errorf("got %+v, want %+v", g, want)
		}
		all, err := st.RecentResults(ctx, "vp1", now, 0)
		if err != nil || len(all) != 15 {
			t.Errorf("all recent: %d, %v; want the 15 within the horizon", len(all), err)
		}
		if none, err := st.RecentResults(ctx, "vp2", now, 0); err != nil || len(none) != 0 {
			t.Errorf("vp2: %v, %v; want none", none, err)
		}
	})
	t.Run("last trace", func(t *testing.T) {
		tr, ok, err := st.LastTrace(ctx, "vp1", now)
		if err != nil || !ok {
			t.Fatalf("LastTrace: %v, %v", ok, err)
		}
		if tr.Seq != 12 || tr.Target != "k-root" || tr.Address != v4 || tr.Transport != api.TransportUDP ||
			tr.Flow != "udp sport=33000 dport=33435" || tr.Stop != "reached" || !tr.Reached || len(tr.Hops) != 3 {
			t.Fatalf("trace %+v", tr)
		}
		want := []store.TraceHop{
			{TTL: 1, Addr: netip.MustParseAddr("198.51.100.1"), RTT: 100 * time.Microsecond, ICMPType: 11, ReplyTTL: 254},
			{TTL: 2},
			{TTL: 3, Addr: netip.MustParseAddr("198.51.100.3"), RTT: 300 * time.Microsecond, ICMPType: 3, ICMPCode: 3, ReplyTTL: 62},
		}
		if !slices.Equal(tr.Hops, want) {
			t.Errorf("hops\n got %+v\nwant %+v", tr.Hops, want)
		}
		if _, ok, err := st.LastTrace(ctx, "vp2", now); ok || err != nil {
			t.Errorf("vp2: %v, %v; want no trace", ok, err)
		}
	})
	t.Run("unknown vantage point", func(t *testing.T) {
		if _, err := st.RecentResults(ctx, "nope", now, 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RecentResults err = %v", err)
		}
		if _, _, err := st.LastTrace(ctx, "nope", now); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LastTrace err = %v", err)
		}
		if _, err := st.VantagePointCatchments(ctx, "nope", now); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("VantagePointCatchments err = %v", err)
		}
	})
}

func TestVantagePointCatchments(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	seed(t, st)
	dashboardAgents(t, st)
	h10 := time.Date(2026, 5, 2, 10, 0, 0, 0, time.UTC)
	h11 := h10.Add(time.Hour)
	if _, err := st.SaveFindings(ctx, store.Findings{Catchments: []store.CatchmentRow{
		row("vp1", v4, api.QueryHostnameBind, "NL-AMS", 10, h10),
		row("vp1", v4, api.QueryHostnameBind, "FI-HEL", 5, h11),
		row("vp1", v4, api.QueryNSID, "NL-AMS", 9, h10),
		row("vp2", v4, api.QueryNSID, "NL-AMS", 9, h11),
	}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want []string
	}{
		{"latest window per stream", h11.Add(time.Minute), []string{"hostname.bind=FI-HEL", "nsid=NL-AMS"}},
		{"as of an earlier time", h10.Add(time.Minute), []string{"hostname.bind=NL-AMS", "nsid=NL-AMS"}},
		{"beyond the horizon", h11.Add(store.HealthHorizon + time.Hour), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.VantagePointCatchments(ctx, "vp1", tc.at)
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, c := range got {
				s = append(s, c.Query+"="+c.Site)
				if c.Target != "k-root" || c.Address != v4 || c.Kind != api.KindDNS || c.Confidence != 0.9 {
					t.Errorf("stream %+v", c)
				}
			}
			if !slices.Equal(s, tc.want) {
				t.Errorf("streams %v, want %v", s, tc.want)
			}
		})
	}
}
