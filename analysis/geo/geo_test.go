package geo_test

import (
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis/geo"
)

// Coordinates of the places the tests use.
var (
	amsterdam = [2]float64{52.3676, 4.9041}
	singapore = [2]float64{1.3521, 103.8198}
	frankfurt = [2]float64{50.1109, 8.6821}
	newYork   = [2]float64{40.7128, -74.0060}
	sydney    = [2]float64{-33.8688, 151.2093}
)

func TestMaxDistance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rtt  time.Duration
		km   float64
	}{
		{"zero", 0, 0},
		{"negative", -time.Millisecond, 0},
		{"one ms", time.Millisecond, 100},
		{"half ms", 500 * time.Microsecond, 50},
		{"transatlantic", 80 * time.Millisecond, 8000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := geo.MaxDistance(tt.rtt); got != tt.km {
				t.Errorf("MaxDistance(%v) = %v km, want %v", tt.rtt, got, tt.km)
			}
		})
	}
}

func TestMinRTT(t *testing.T) {
	t.Parallel()
	if got := geo.MinRTT(1000); got != 10*time.Millisecond {
		t.Errorf("MinRTT(1000 km) = %v, want 10ms", got)
	}
	if got := geo.MinRTT(-5); got != 0 {
		t.Errorf("MinRTT(-5 km) = %v, want 0", got)
	}
}

func TestPlausible(t *testing.T) {
	t.Parallel()
	// Amsterdam–Singapore is about 10,500 km: at least 105 ms.
	tests := []struct {
		name      string
		vp, site  [2]float64
		rtt       time.Duration
		possible  bool
		minRTTLow time.Duration // MinRTT's expected range
		minRTTHi  time.Duration
	}{
		{"amsterdam 1ms cannot reach singapore", amsterdam, singapore, time.Millisecond, false, 104 * time.Millisecond, 106 * time.Millisecond},
		{"amsterdam 100ms cannot reach singapore either", amsterdam, singapore, 100 * time.Millisecond, false, 104 * time.Millisecond, 106 * time.Millisecond},
		{"amsterdam 160ms can reach singapore", amsterdam, singapore, 160 * time.Millisecond, true, 104 * time.Millisecond, 106 * time.Millisecond},
		{"amsterdam 1ms can reach amsterdam", amsterdam, amsterdam, time.Millisecond, true, 0, 0},
		{"amsterdam 0ms only itself", amsterdam, amsterdam, 0, true, 0, 0},
		{"amsterdam 3ms cannot reach frankfurt", amsterdam, frankfurt, 3 * time.Millisecond, false, 3 * time.Millisecond, 4 * time.Millisecond},
		{"amsterdam 5ms can reach frankfurt", amsterdam, frankfurt, 5 * time.Millisecond, true, 3 * time.Millisecond, 4 * time.Millisecond},
		{"negative rtt is zero", amsterdam, frankfurt, -time.Second, false, 3 * time.Millisecond, 4 * time.Millisecond},
		{"antipodes need 200ms", [2]float64{0, 0}, [2]float64{0, 180}, 199 * time.Millisecond, false, 200 * time.Millisecond, 201 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := geo.Plausible(tt.vp[0], tt.vp[1], tt.site[0], tt.site[1], tt.rtt)
			if v.Possible != tt.possible {
				t.Errorf("Possible = %v, want %v (%+v)", v.Possible, tt.possible, v)
			}
			if v.MinRTT < tt.minRTTLow || v.MinRTT > tt.minRTTHi {
				t.Errorf("MinRTT = %v, want %v..%v", v.MinRTT, tt.minRTTLow, tt.minRTTHi)
			}
			rtt := max(tt.rtt, 0)
			if v.Excess != rtt-v.MinRTT {
				t.Errorf("Excess = %v, want %v", v.Excess, rtt-v.MinRTT)
			}
			if (v.Excess >= 0) != v.Possible && v.Distance > 0 {
				t.Errorf("Excess %v disagrees with Possible %v", v.Excess, v.Possible)
			}
		})
	}
}

// TestPlausibleEdge: a site exactly on the disc's edge is possible.
func TestPlausibleEdge(t *testing.T) {
	t.Parallel()
	v := geo.Plausible(amsterdam[0], amsterdam[1], singapore[0], singapore[1], time.Hour)
	edge := geo.MinRTT(v.Distance)
	// MinRTT truncates to the nanosecond; one more makes the disc reach.
	if got := geo.Plausible(amsterdam[0], amsterdam[1], singapore[0], singapore[1], edge+1); !got.Possible {
		t.Errorf("RTT %v just above the minimum is impossible: %+v", edge+1, got)
	}
	if got := geo.Plausible(amsterdam[0], amsterdam[1], singapore[0], singapore[1], edge-time.Microsecond); got.Possible {
		t.Errorf("RTT %v below the minimum is possible: %+v", edge-time.Microsecond, got)
	}
}
