package catchment

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

func TestInstability(t *testing.T) {
	t.Parallel()
	// every10 is vp's answers every ten minutes for two hours (13
	// observations), in round m/10+1, at HEL but at AMS during [30, 60)
	// and [90, 120]: three flips, one every 40 minutes; 7 answers from AMS,
	// 6 from HEL.
	every10 := func(vp string, change func(o *analysis.Observation)) []analysis.Observation {
		var out []analysis.Observation
		for m := 0; m <= 120; m += 10 {
			id := hel1
			if m >= 30 && m < 60 || m >= 90 {
				id = ams1
			}
			o := ob(m, id)
			o.VantagePoint, o.Round = vp, uint64(m/10+1)
			if change != nil {
				change(&o)
			}
			out = append(out, o)
		}
		return out
	}
	nsid := func(o *analysis.Observation) { o.Query, o.At = api.QueryNSID, o.At.Add(2*time.Second) }
	noRound := func(o *analysis.Observation) { o.Round = 0 }
	tests := []struct {
		name string
		obs  []analysis.Observation
		want VantagePointInstability
	}{
		{"one-stream", every10("vp-1", nil),
			VantagePointInstability{"vp-1", "k-root", 3, 2 * time.Hour, 36, []string{"AMS", "HEL"}}},
		// CHAOS and NSID switch in the same round: one flip each time.
		{"two-streams-one-round", joined(every10("vp-1", nil), every10("vp-1", nsid)),
			VantagePointInstability{"vp-1", "k-root", 3, 2*time.Hour + 2*time.Second, 3 * 24 / (2 + 2.0/3600), []string{"AMS", "HEL"}}},
		{"two-addresses-one-round", joined(every10("vp-1", nil), every10("vp-1", func(o *analysis.Observation) { o.Address = addr2 })),
			VantagePointInstability{"vp-1", "k-root", 3, 2 * time.Hour, 36, []string{"AMS", "HEL"}}},
		// Without round numbers, switches within Config.Round (10 s) are one.
		{"no-rounds-within-round-time", joined(every10("vp-1", noRound), every10("vp-1", func(o *analysis.Observation) { nsid(o); noRound(o) })),
			VantagePointInstability{"vp-1", "k-root", 3, 2*time.Hour + 2*time.Second, 3 * 24 / (2 + 2.0/3600), []string{"AMS", "HEL"}}},
		// Round numbers win over time: different rounds are different flips.
		{"different-rounds-close-in-time", joined(every10("vp-1", nil), every10("vp-1", func(o *analysis.Observation) { nsid(o); o.Round += 100 })),
			VantagePointInstability{"vp-1", "k-root", 6, 2*time.Hour + 2*time.Second, 6 * 24 / (2 + 2.0/3600), []string{"AMS", "HEL"}}},
		{"stable", at("vp-2", 0, 60, hel1),
			VantagePointInstability{"vp-2", "k-root", 0, 59 * time.Minute, 0, []string{"HEL"}}},
		// Failures count toward the observed span, not toward sites.
		{"failures-extend-span", joined(at("vp-3", 0, 10, hel1), fails("vp-3", 10, 20)),
			VantagePointInstability{"vp-3", "k-root", 0, 19 * time.Minute, 0, []string{"HEL"}}},
		{"single-observation", at("vp-4", 0, 1, hel1),
			VantagePointInstability{"vp-4", "k-root", 0, 0, 0, []string{"HEL"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := feed(tt.obs, nil, Window{}).Instability()
			if len(got) != 1 {
				t.Fatalf("Instability() = %+v, want one entry", got)
			}
			g := got[0]
			if d := g.FlipsPerDay - tt.want.FlipsPerDay; d > 1e-9 || d < -1e-9 {
				t.Errorf("FlipsPerDay = %v, want %v", g.FlipsPerDay, tt.want.FlipsPerDay)
			}
			g.FlipsPerDay = tt.want.FlipsPerDay
			if !reflect.DeepEqual(g, tt.want) {
				t.Errorf("Instability() = %+v, want %+v", g, tt.want)
			}
		})
	}
}

func TestInstabilityPerTarget(t *testing.T) {
	t.Parallel()
	froot := func(o *analysis.Observation) { o.Target = "f-root" }
	got := feed(joined(
		at("vp-2", 0, 5, hel1), at("vp-1", 0, 5, hel1), at("vp-1", 5, 10, ams1),
		[]analysis.Observation{with(ob(0, "AMS"), froot), with(ob(1, "AMS"), froot)},
	), nil, Window{}).Instability()
	var rows []string
	for _, g := range got {
		rows = append(rows, fmt.Sprintf("%s %s %d %v", g.Target, g.VantagePoint, g.Switches, g.Sites))
	}
	want := []string{"f-root vp-1 0 [AMS]", "k-root vp-1 1 [AMS HEL]", "k-root vp-2 0 [HEL]"}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("Instability():\n got %q\nwant %q", rows, want)
	}
}

// BenchmarkAccumulator feeds one million observations shaped like a day of
// probing (1,000 vantage points, two addresses, CHAOS and NSID, 250 rounds
// four minutes apart, with a site withdrawn and restored, 1% of vantage
// points flapping, sessions) in time order, then asks for switches (causes
// included) and instability.
func BenchmarkAccumulator(b *testing.B) {
	const (
		vps, sites, rounds = 1000, 20, 250
		perRound           = vps * 2 * 2
	)
	r, err := identity.NewResolver(analysis.Target{Name: "bench", Rules: []analysis.Rule{{Pattern: `^site-(?P<site>[a-z0-9]+)$`, Site: "${site}"}}})
	if err != nil {
		b.Fatal(err)
	}
	resolvers := map[string]*identity.Resolver{"bench": r}
	names := make([]string, vps)
	for i := range names {
		names[i] = fmt.Sprintf("atlas-%d", i)
	}
	ids := make([]string, sites)
	for i := range ids {
		ids[i] = fmt.Sprintf("site-s%02d", i)
	}
	addrs := [2]netip.Addr{addr1, addr2}
	queries := [2]string{api.QueryHostnameBind, api.QueryNSID}
	n := 0
	for b.Loop() {
		a := New(resolvers, Config{})
		for round := range rounds {
			at := t0.Add(time.Duration(round) * 4 * time.Minute)
			for i := range perRound {
				vp := i / 4
				site := vp % sites
				switch {
				case site == 3 && round >= 100 && round < 150: // withdrawn
					site = 4
				case vp%100 == 7 && round%2 == 1: // flapping
					site = (site + 1) % sites
				}
				o := analysis.Observation{
					VantagePoint: names[vp], Target: "bench", Address: addrs[i%2],
					Kind: api.KindDNS, Transport: api.TransportUDP, Query: queries[(i/2)%2],
					At: at.Add(time.Duration(vp) * time.Millisecond), Round: uint64(round + 1), Identity: ids[site],
				}
				if vp%50 == 0 && i%4 == 0 && round%5 == 0 {
					o.Kind, o.Transport, o.Query = api.KindSession, api.TransportTCP, api.QuerySessionDNS
					o.Session = &analysis.Session{ClosedAt: o.At.Add(3 * time.Minute), End: api.EndServerClose}
				}
				a.Add(o)
				n++
			}
		}
		if len(a.Switches()) == 0 || len(a.Instability()) != vps {
			b.Fatal("no switches found")
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "obs/s")
}
