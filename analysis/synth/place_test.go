package synth

import (
	"math"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis/catalog"
)

// TestVantagePointSkew: vantage points are spread like RIPE Atlas probes,
// about half in Europe and a quarter in North America.
func TestVantagePointSkew(t *testing.T) {
	t.Parallel()
	w, err := New(Config{Seed: 8, Sites: 5, VantagePoints: 12000, Targets: 1, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var count [len(regionShare)]int
	for _, v := range w.VantagePoints() {
		count[regionOf(v.Country)]++
	}
	for r, share := range regionShare {
		got := float64(count[r]) / 12000
		if math.Abs(got-share) > 0.02 {
			t.Errorf("region %d: %.3f of the vantage points, want about %.2f", r, got, share)
		}
	}
}

func TestDestination(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                  string
		lat, lon, bearing, km float64
	}{
		{"north from amsterdam", 52.37, 4.90, 0, 50},
		{"east across the antimeridian", 10, 179.9, math.Pi / 2, 50},
		{"west across the antimeridian", -10, -179.9, 3 * math.Pi / 2, 50},
		{"over the pole", 89.9, 0, 0, 50},
		{"nowhere", 1, 2, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lat, lon := destination(tt.lat, tt.lon, tt.bearing, tt.km)
			if lat < -90 || lat > 90 || lon < -180 || lon > 180 {
				t.Fatalf("destination (%v, %v) out of range", lat, lon)
			}
			if d := catalog.Distance(tt.lat, tt.lon, lat, lon); math.Abs(d-tt.km) > 1e-6 {
				t.Errorf("destination (%v, %v) is %v km away, want %v", lat, lon, d, tt.km)
			}
		})
	}
}

// TestSitesSpread: sites are drawn from the hubs first, and spread: none
// of a 30-site world is outside the hubs, and they reach far north, south,
// east and west.
func TestSitesSpread(t *testing.T) {
	t.Parallel()
	w, err := New(Config{Seed: 12, Sites: 30, VantagePoints: 1, Targets: 1, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	isHub := map[string]bool{}
	for _, h := range hubs {
		isHub[h] = true
	}
	north, south, east, west := false, false, false, false
	for _, s := range w.sites {
		p := s.place
		if !isHub[p.Code] {
			t.Errorf("site %s is not a hub, though 30 hubs fit", p.Code)
		}
		north = north || p.Latitude > 30
		south = south || p.Latitude < -10
		east = east || p.Longitude > 90
		west = west || p.Longitude < -60
	}
	if !north || !south || !east || !west {
		t.Errorf("sites not spread: north %v south %v east %v west %v", north, south, east, west)
	}
}
