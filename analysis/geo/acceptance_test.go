package geo_test

import (
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/geo"
	"github.com/anyscope/anyscope/analysis/synth"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// TestEnumerateSyntheticWorld is the acceptance test of latency geography:
// a synthetic world of 50 sites at real airports and 12,000 vantage points
// placed like RIPE Atlas probes, whose RTTs follow distance (with path
// inflation, access delay and noise) and whose catchments do not always
// follow geography. iGreedy on each vantage point's minimum ping RTT to the
// target that uses all 50 sites must put an enumerated site within 500 km
// of at least 75% of the true sites.
func TestEnumerateSyntheticWorld(t *testing.T) {
	t.Parallel()
	const (
		sites     = 50
		vps       = 12000
		withinKm  = 500
		minRecall = 0.75
	)
	w, err := synth.New(synth.Config{
		Seed: 2015, Sites: sites, VantagePoints: vps, Targets: 2,
		Duration: 3 * synth.DefaultInterval, Ping: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	target := w.Targets()[0]
	if len(target.Sites) != sites {
		t.Fatalf("target %s has %d sites, want all %d", target.Name, len(target.Sites), sites)
	}
	minRTT := make(map[string]time.Duration, vps)
	err = w.Source().Observations(t.Context(), time.Time{}, time.Time{}, target.Name, func(o analysis.Observation) error {
		if o.Kind != api.KindPing || o.Failure != api.FailureNone {
			return nil
		}
		if m, ok := minRTT[o.VantagePoint]; !ok || o.RTT < m {
			minRTT[o.VantagePoint] = o.RTT
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ms []geo.Measurement
	for _, v := range w.VantagePoints() {
		if rtt, ok := minRTT[v.Name]; ok {
			ms = append(ms, geo.Measurement{VantagePoint: v.Name, Latitude: v.Latitude, Longitude: v.Longitude, RTT: rtt})
		}
	}
	if len(ms) != vps {
		t.Fatalf("%d vantage points have a ping RTT, want %d", len(ms), vps)
	}

	e, err := geo.Enumerate(ms, geo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !e.Anycast {
		t.Error("Anycast = false for a 50-site service")
	}
	var errs []float64
	found := 0
	for _, s := range target.Sites {
		best := nearestSite(e, [2]float64{s.Latitude, s.Longitude})
		errs = append(errs, best)
		if best <= withinKm {
			found++
		} else {
			t.Logf("missed %s (%s): nearest enumerated site %.0f km away", s.Code, s.Name, best)
		}
	}
	slices.Sort(errs)
	// Precision, for the record: enumerated sites near no true site.
	spurious := 0
	for _, s := range e.Sites {
		near := false
		for _, ts := range target.Sites {
			if catalog.Distance(s.Latitude, s.Longitude, ts.Latitude, ts.Longitude) <= withinKm {
				near = true
				break
			}
		}
		if !near {
			spurious++
		}
	}
	recall := float64(found) / sites
	t.Logf("recall %.0f%% (%d/%d true sites with an enumerated site within %d km); median error %.0f km; %d sites enumerated in %d iterations, %d of them more than %d km from any true site",
		100*recall, found, sites, withinKm, errs[len(errs)/2], len(e.Sites), e.Iterations, spurious, withinKm)
	if recall < minRecall {
		t.Errorf("recall %.0f%%, want at least %.0f%%", 100*recall, 100*minRecall)
	}
}
