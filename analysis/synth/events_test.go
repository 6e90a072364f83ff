package synth_test

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/identity"
	"github.com/anyscope/anyscope/analysis/synth"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// obsKey names one observation of an events world (one query per round).
type obsKey struct {
	vp, target string
	round      int
}

func byKey(t *testing.T, w *synth.World) map[obsKey]analysis.Observation {
	t.Helper()
	out := map[obsKey]analysis.Observation{}
	for _, o := range collect(t, w) {
		k := obsKey{o.VantagePoint, o.Target, int(o.At.Sub(t0) / interval)}
		if _, dup := out[k]; dup {
			t.Fatalf("two observations for %+v", k)
		}
		out[k] = o
	}
	return out
}

// outcome is what an event should make of one observation.
type outcome struct {
	kind string // "same" as without the event, "site" (answered by site), "fail", "absent"
	site string
}

func TestEvents(t *testing.T) {
	t.Parallel()
	cfg := synth.Config{Seed: 21, Sites: 10, VantagePoints: 300, Targets: 2, Start: t0, Duration: 12 * interval, Interval: interval}
	base := mustWorld(t, cfg)
	baseObs := byKey(t, base)
	from, until := t0.Add(3*interval), t0.Add(6*interval)
	inWindow := func(r int) bool { return r >= 3 && r < 6 }

	// The busiest site of each target, and its second busiest.
	busiest := func(target string) (string, string) {
		count := map[string]int{}
		for _, v := range base.VantagePoints() {
			s, _ := base.Truth(target, v.Name, t0)
			count[s]++
		}
		var codes []string
		for c := range count {
			codes = append(codes, c)
		}
		slices.SortFunc(codes, func(a, b string) int { return cmp.Or(cmp.Compare(count[b], count[a]), cmp.Compare(a, b)) })
		return codes[0], codes[1]
	}
	s1, s1b := busiest("t01")
	s2, _ := busiest("t02")
	vps := base.VantagePoints()
	var t01 analysis.Target
	for _, tg := range base.Targets() {
		if tg.Name == "t01" {
			t01 = tg
		}
	}
	// nearestExcept is v's nearest t01 site other than except.
	nearestExcept := func(v analysis.VantagePoint, except string) string {
		best, bestD := "", 0.0
		for _, s := range t01.Sites {
			d := catalog.Distance(v.Latitude, v.Longitude, s.Latitude, s.Longitude)
			if s.Code != except && (best == "" || d < bestD) {
				best, bestD = s.Code, d
			}
		}
		return best
	}
	vpByName := map[string]analysis.VantagePoint{}
	for _, v := range vps {
		vpByName[v.Name] = v
	}
	flapper, down, gapped := vps[7].Name, vps[8].Name, vps[9].Name

	tests := []struct {
		name   string
		event  synth.Event
		expect func(k obsKey, baseSite string) outcome
	}{
		{
			name:  "withdraw",
			event: synth.Withdraw{Target: "t01", Site: s1, From: from, Until: until},
			expect: func(k obsKey, baseSite string) outcome {
				if k.target == "t01" && inWindow(k.round) && baseSite == s1 {
					return outcome{"site", nearestExcept(vpByName[k.vp], s1)}
				}
				return outcome{kind: "same"}
			},
		},
		{
			name:  "blackhole",
			event: synth.Blackhole{Target: "t02", Site: s2, From: from, Until: until},
			expect: func(k obsKey, baseSite string) outcome {
				if k.target == "t02" && inWindow(k.round) && baseSite == s2 {
					return outcome{kind: "fail"}
				}
				return outcome{kind: "same"}
			},
		},
		{
			name:  "flapper",
			event: synth.Flapper{VantagePoint: flapper, Target: "t01", Sites: []string{s1, s1b}, From: from, Until: until},
			expect: func(k obsKey, baseSite string) outcome {
				if k.vp == flapper && k.target == "t01" && inWindow(k.round) {
					return outcome{"site", []string{s1, s1b}[k.round%2]}
				}
				return outcome{kind: "same"}
			},
		},
		{
			name:  "vantage point down",
			event: synth.VantagePointDown{VantagePoint: down, From: from, Until: until},
			expect: func(k obsKey, baseSite string) outcome {
				if k.vp == down && inWindow(k.round) {
					return outcome{kind: "fail"}
				}
				return outcome{kind: "same"}
			},
		},
		{
			name:  "gap",
			event: synth.Gap{VantagePoint: gapped, From: from, Until: until},
			expect: func(k obsKey, baseSite string) outcome {
				if k.vp == gapped && inWindow(k.round) {
					return outcome{kind: "absent"}
				}
				return outcome{kind: "same"}
			},
		},
		{
			name:  "outage",
			event: synth.Outage{Target: "t02", From: from, Until: until},
			expect: func(k obsKey, baseSite string) outcome {
				if k.target == "t02" && inWindow(k.round) {
					return outcome{kind: "fail"}
				}
				return outcome{kind: "same"}
			},
		},
		{
			name:  "open-ended outage",
			event: synth.Outage{Target: "t01", From: from},
			expect: func(k obsKey, baseSite string) outcome {
				if k.target == "t01" && k.round >= 3 {
					return outcome{kind: "fail"}
				}
				return outcome{kind: "same"}
			},
		},
	}
	resolver := identity.Default("")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := cfg
			c.Events = []synth.Event{tt.event}
			w := mustWorld(t, c)
			got := byKey(t, w)
			affected := 0
			for k, b := range baseObs {
				baseSite := resolver.Resolve(b.Identity).Site
				want := tt.expect(k, baseSite)
				o, ok := got[k]
				truth, served := w.Truth(k.target, k.vp, b.At)
				switch want.kind {
				case "same":
					if !ok || fmt.Sprint(o) != fmt.Sprint(b) {
						t.Fatalf("%+v: got %+v, want as without the event: %+v", k, o, b)
					}
					if !served || truth != baseSite {
						t.Fatalf("%+v: Truth %q %v, want %q", k, truth, served, baseSite)
					}
					continue
				case "absent":
					if ok {
						t.Fatalf("%+v: got %+v, want no observation", k, o)
					}
					if !served || truth != baseSite {
						t.Fatalf("%+v: Truth %q %v during a gap, want still %q", k, truth, served, baseSite)
					}
				case "fail":
					if !ok || o.Failure != api.FailureTimeout || o.Identity != "" || o.RTT != 0 {
						t.Fatalf("%+v: got %+v, want a timeout", k, o)
					}
					if served {
						t.Fatalf("%+v: Truth %q, want no answer", k, truth)
					}
				case "site":
					if !ok || o.Failure != api.FailureNone || resolver.Resolve(o.Identity).Site != want.site {
						t.Fatalf("%+v: got %+v, want an answer from %s", k, o, want.site)
					}
					if !served || truth != want.site {
						t.Fatalf("%+v: Truth %q %v, want %s", k, truth, served, want.site)
					}
				}
				affected++
			}
			if affected == 0 {
				t.Errorf("the event changed nothing")
			}
			if len(got) > len(baseObs) {
				t.Errorf("%d observations with the event, %d without", len(got), len(baseObs))
			}
		})
	}
}

// TestEventsCombine: a withdrawal of the flapper's site sends that round
// to the nearest remaining site; a black hole there then swallows it.
func TestEventsCombine(t *testing.T) {
	t.Parallel()
	cfg := synth.Config{Seed: 4, Sites: 6, VantagePoints: 5, Targets: 1, Start: t0, Duration: 4 * interval, Interval: interval}
	w := mustWorld(t, cfg)
	sites := w.Sites()
	vp := w.VantagePoints()[0]
	slices.SortFunc(sites, func(a, b analysis.Site) int {
		return cmp.Compare(catalog.Distance(vp.Latitude, vp.Longitude, a.Latitude, a.Longitude), catalog.Distance(vp.Latitude, vp.Longitude, b.Latitude, b.Longitude))
	})
	far, farther := sites[4].Code, sites[5].Code
	cfg.Events = []synth.Event{
		synth.Flapper{VantagePoint: vp.Name, Target: "t01", Sites: []string{far, farther}, From: t0},
		synth.Withdraw{Target: "t01", Site: farther, From: t0},
		synth.Blackhole{Target: "t01", Site: sites[0].Code, From: t0.Add(2 * interval)},
	}
	w = mustWorld(t, cfg)
	want := []struct {
		site string
		ok   bool
	}{{far, true}, {sites[0].Code, true}, {far, true}, {"", false}}
	for r, wt := range want {
		at := t0.Add(time.Duration(r)*interval + interval - 1)
		if site, ok := w.Truth("t01", vp.Name, at); site != wt.site || ok != wt.ok {
			t.Errorf("round %d: Truth = %q %v, want %q %v", r, site, ok, wt.site, wt.ok)
		}
	}
}
