package analyzer_test

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/analyzer"
	"github.com/anyscope/anyscope/analysis/catchment"
	"github.com/anyscope/anyscope/analysis/synth"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// world is a small synthetic world in which everything the analyzer must
// tell apart happens once, on its own target or vantage point:
//   - t0 loses site A (withdrawal) from 1h to 2h;
//   - t1's site B is black-holed from 1h30 to 2h;
//   - one vantage point's own network fails from 2h15 to 2h30;
//   - another uploads nothing from 1h to 1h30 (a gap);
//   - a third flaps between two sites of t0 all along.
type world struct {
	*synth.World
	start                      time.Time
	interval                   time.Duration
	t0, t1, siteA, siteB       string
	downVP, gapVP, flapper     string
	withdrawAt, restoreAt      time.Time
	blackholeAt, blackholeEnds time.Time
	downAt, upAt               time.Time
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), interval: time.Minute}
	cfg := synth.Config{Seed: 7, Sites: 8, VantagePoints: 240, Targets: 2, Start: w.start, Duration: 3 * time.Hour, Interval: w.interval}
	base, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := base.Targets()
	vps := base.VantagePoints()
	w.t0, w.t1 = ts[0].Name, ts[1].Name
	w.siteA, w.siteB = ts[0].Sites[0].Code, ts[1].Sites[1].Code
	w.downVP, w.gapVP, w.flapper = vps[3].Name, vps[5].Name, vps[7].Name
	w.withdrawAt, w.restoreAt = w.start.Add(time.Hour), w.start.Add(2*time.Hour)
	w.blackholeAt, w.blackholeEnds = w.start.Add(90*time.Minute), w.start.Add(2*time.Hour)
	w.downAt, w.upAt = w.start.Add(135*time.Minute), w.start.Add(150*time.Minute)
	flapSites := []string{ts[0].Sites[len(ts[0].Sites)-1].Code, ts[0].Sites[len(ts[0].Sites)-2].Code}
	cfg.Events = []synth.Event{
		synth.Withdraw{Target: w.t0, Site: w.siteA, From: w.withdrawAt, Until: w.restoreAt},
		synth.Blackhole{Target: w.t1, Site: w.siteB, From: w.blackholeAt, Until: w.blackholeEnds},
		synth.VantagePointDown{VantagePoint: w.downVP, From: w.downAt, Until: w.upAt},
		synth.Gap{VantagePoint: w.gapVP, From: w.withdrawAt, Until: w.blackholeAt},
		synth.Flapper{VantagePoint: w.flapper, Target: w.t0, Sites: flapSites, From: w.start},
	}
	if w.World, err = synth.New(cfg); err != nil {
		t.Fatal(err)
	}
	return w
}

func run(t *testing.T, w *world, since, until time.Time) analyzer.Findings {
	t.Helper()
	f, err := analyzer.Run(t.Context(), w.Source(), "", analyzer.Config{Window: catchment.Window{Since: since, Until: until}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCatchmentEqualsTruth(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, phase := range []struct {
		name        string
		since, till time.Time
	}{
		{"before", w.start, w.withdrawAt},
		{"withdrawn", w.withdrawAt.Add(5 * time.Minute), w.blackholeAt},
		{"after", w.upAt.Add(5 * time.Minute), w.start.Add(3 * time.Hour)},
	} {
		t.Run(phase.name, func(t *testing.T) {
			f := run(t, w, phase.since, phase.till)
			mid := phase.since.Add(phase.till.Sub(phase.since) / 2)
			checked := 0
			for _, a := range f.Assignments {
				if a.VantagePoint == w.flapper && a.Target == w.t0 {
					continue // no single site by design
				}
				want, ok := w.Truth(a.Target, a.VantagePoint, mid)
				if !ok {
					continue
				}
				checked++
				if a.Site != want {
					t.Errorf("%s %s: catchment %s, truth %s", a.Target, a.VantagePoint, a.Site, want)
				}
			}
			if checked < 400 {
				t.Errorf("only %d (target, vantage point) pairs checked", checked)
			}
		})
	}
}

func TestSwitchCausesAndIncidents(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	f := run(t, w, w.start, w.start.Add(3*time.Hour))

	t.Run("withdrawal moves the site's catchment and opens no incident", func(t *testing.T) {
		moved := map[string]bool{}
		for _, s := range f.Switches {
			if s.Target != w.t0 || s.VantagePoint == w.flapper {
				continue
			}
			if s.From != w.siteA && s.To != w.siteA {
				t.Errorf("unexpected switch %s %s→%s at %s (%s)", s.VantagePoint, s.From, s.To, s.At, s.Cause)
				continue
			}
			if s.Cause != analysis.CauseWithdrawal {
				t.Errorf("%s %s→%s at %s: cause %s, want withdrawal (%s)", s.VantagePoint, s.From, s.To, s.At, s.Cause, s.Evidence)
			}
			if s.From == w.siteA {
				moved[s.VantagePoint] = true
			}
		}
		want := 0
		for _, vp := range w.VantagePoints() {
			if site, ok := w.Truth(w.t0, vp.Name, w.withdrawAt.Add(-time.Minute)); ok && site == w.siteA && vp.Name != w.flapper && vp.Name != w.gapVP {
				want++
				if !moved[vp.Name] {
					t.Errorf("%s was at %s and no switch away from it was found", vp.Name, w.siteA)
				}
			}
		}
		if want == 0 {
			t.Fatal("the withdrawn site served nobody: the world does not test anything")
		}
		for _, in := range f.Incidents {
			if in.Target == w.t0 && in.Kind != analysis.IncidentVantagePoint {
				t.Errorf("incident on the withdrawn target: %+v", in)
			}
		}
	})

	t.Run("flapper alternates: load balancing", func(t *testing.T) {
		n := 0
		for _, s := range f.Switches {
			if s.VantagePoint == w.flapper && s.Target == w.t0 {
				n++
				if s.Cause != analysis.CauseLoadBalancing && s.Cause != analysis.CauseWithdrawal {
					t.Errorf("flapper switch at %s: cause %s (%s)", s.At, s.Cause, s.Evidence)
				}
			}
		}
		if n < 100 {
			t.Errorf("flapper switched %d times, want one per round", n)
		}
	})

	t.Run("black hole names the site and exactly its vantage points", func(t *testing.T) {
		var holes []analysis.Incident
		for _, in := range f.Incidents {
			if in.Kind == analysis.IncidentBlackhole {
				holes = append(holes, in)
			}
		}
		var want []string
		for _, vp := range w.VantagePoints() {
			if site, ok := w.Truth(w.t1, vp.Name, w.blackholeAt.Add(-time.Minute)); ok && site == w.siteB && vp.Name != w.downVP {
				want = append(want, vp.Name)
			}
		}
		slices.Sort(want)
		// One incident per address measured (synth probes one).
		if len(holes) != 1 {
			t.Fatalf("%d black holes, want 1: %+v", len(holes), holes)
		}
		for _, in := range holes {
			if in.Target != w.t1 || in.Site != w.siteB || !slices.Equal(in.VantagePoints, want) {
				t.Errorf("black hole %s %s %v\nwant %s %s %v", in.Target, in.Site, in.VantagePoints, w.t1, w.siteB, want)
			}
			if in.Start.Before(w.blackholeAt) || in.Start.After(w.blackholeAt.Add(w.interval)) {
				t.Errorf("starts at %s, want within one interval after %s", in.Start, w.blackholeAt)
			}
			if in.End.Before(w.blackholeEnds) || in.End.After(w.blackholeEnds.Add(w.interval)) {
				t.Errorf("ends at %s, want within one interval after %s", in.End, w.blackholeEnds)
			}
		}
	})

	t.Run("black hole is found within three probe intervals", func(t *testing.T) {
		early := run(t, w, w.start, w.blackholeAt.Add(3*w.interval))
		found := false
		for _, in := range early.Incidents {
			found = found || (in.Kind == analysis.IncidentBlackhole && in.Site == w.siteB && in.Open())
		}
		if !found {
			t.Errorf("no open black hole of %s three intervals in: %+v", w.siteB, early.Incidents)
		}
	})

	t.Run("broken vantage point is its own incident; a gap is none", func(t *testing.T) {
		var vpInc []analysis.Incident
		for _, in := range f.Incidents {
			if slices.Contains(in.VantagePoints, w.gapVP) {
				t.Errorf("the vantage point that uploaded nothing is in an incident: %+v", in)
			}
			if in.Kind == analysis.IncidentVantagePoint {
				vpInc = append(vpInc, in)
			}
		}
		if len(vpInc) != 1 || !slices.Equal(vpInc[0].VantagePoints, []string{w.downVP}) {
			t.Fatalf("vantage_point incidents %+v, want one of %s", vpInc, w.downVP)
		}
		if in := vpInc[0]; in.Start.Before(w.downAt) || in.Start.After(w.downAt.Add(w.interval)) || in.End.Before(w.upAt) || in.End.After(w.upAt.Add(w.interval)) {
			t.Errorf("vantage_point incident %s–%s, want %s–%s", in.Start, in.End, w.downAt, w.upAt)
		}
	})

	t.Run("RTTs from distance are all possible", func(t *testing.T) {
		if len(f.Latency) == 0 {
			t.Fatal("no latency checks")
		}
		for _, l := range f.Latency {
			if l.Impossible > 0 {
				t.Errorf("%+v: impossible RTTs in a world whose RTTs come from distance", l)
			}
		}
	})
}

func TestMergeAddresses(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	v4, v6 := netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")
	hole := func(addr netip.Addr, start, end time.Duration, vps ...string) analysis.Incident {
		in := analysis.Incident{Kind: analysis.IncidentBlackhole, Target: "t", Address: addr, Site: "LHR", Start: t0.Add(start), VantagePoints: vps,
			Evidence: analysis.Evidence{Failed: map[string]int{"generic_timeout_error": 2}, Healthy: 3}}
		if end > 0 {
			in.End = t0.Add(end)
		}
		return in
	}
	t.Run("same site and vantage points over both families: one incident", func(t *testing.T) {
		got := analyzer.MergeAddresses([]analysis.Incident{hole(v4, 0, time.Minute, "vp7"), hole(v6, 5*time.Second, 0, "vp7")})
		if len(got) != 1 || got[0].Address.IsValid() || !got[0].Start.Equal(t0) || !got[0].Open() || got[0].Evidence.Failed["generic_timeout_error"] != 4 {
			t.Errorf("merged = %+v", got)
		}
	})
	t.Run("other vantage points, other times: apart", func(t *testing.T) {
		in := []analysis.Incident{hole(v4, 0, time.Minute, "vp7"), hole(v6, 0, time.Minute, "vp6", "vp7"), hole(v6, 2*time.Minute, 3*time.Minute, "vp7")}
		if got := analyzer.MergeAddresses(in); len(got) != 3 {
			t.Errorf("merged %d into %d: %+v", len(in), len(got), got)
		}
	})
	t.Run("the input is not modified", func(t *testing.T) {
		in := []analysis.Incident{hole(v4, 0, time.Minute, "vp7"), hole(v6, 0, time.Minute, "vp7")}
		analyzer.MergeAddresses(in)
		if in[0].Evidence.Failed["generic_timeout_error"] != 2 || !in[0].Address.IsValid() {
			t.Errorf("input changed: %+v", in[0])
		}
	})
}

// A target whose servers name no site: its catchment comes from where the
// vantage points' Paris traceroutes end.
func TestInferredFromTraces(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	dst := netip.MustParseAddr("192.0.2.80")
	a, err := analyzer.New([]analysis.Target{{Name: "quiet", Addresses: []netip.Addr{dst}}}, nil, analyzer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Last hop, and the hop before it (two sites' upstreams).
	upstream := map[string][2]string{"vp1": {"203.0.113.1", "198.51.100.1"}, "vp2": {"203.0.113.1", "198.51.100.1"}, "vp3": {"203.0.113.9", "198.51.100.9"}}
	for i := range 5 {
		for vp, hop := range upstream {
			at := t0.Add(time.Duration(i) * time.Minute)
			a.Add(analysis.Observation{VantagePoint: vp, Target: "quiet", Address: dst, Kind: api.KindDNS, Transport: api.TransportUDP,
				Query: api.QueryHostnameBind, At: at, RTT: time.Millisecond, Failure: api.FailureTimeout})
			a.Add(analysis.Observation{VantagePoint: vp, Target: "quiet", Address: dst, Kind: api.KindTrace, Transport: api.TransportUDP,
				Query: api.QueryParis, At: at, RTT: time.Millisecond, PathEnd: []netip.Addr{netip.MustParseAddr(hop[0]), netip.MustParseAddr(hop[1])}})
		}
	}
	f := a.Findings()
	got := map[string]string{}
	for _, x := range f.Inferred {
		got[x.VantagePoint] = x.Cluster + " " + string(x.Method)
	}
	want := map[string]string{"vp1": "via 198.51.100.1 traceroute", "vp2": "via 198.51.100.1 traceroute", "vp3": "via 198.51.100.9 traceroute"}
	if !maps.Equal(got, want) {
		t.Errorf("inferred %v, want %v", got, want)
	}
}
