package geo_test

import (
	"errors"
	"math"
	"testing"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/geo"
)

func vp(name string, at [2]float64) analysis.VantagePoint {
	return analysis.VantagePoint{Name: name, Latitude: at[0], Longitude: at[1], HasCoords: true}
}

func TestPathInflation(t *testing.T) {
	t.Parallel()
	target := analysis.Target{Name: "example", Sites: []analysis.Site{
		{Code: "AMS", Latitude: amsterdam[0], Longitude: amsterdam[1], HasCoords: true},
		{Code: "SIN", Latitude: singapore[0], Longitude: singapore[1], HasCoords: true},
		{Code: "FRA", Latitude: frankfurt[0], Longitude: frankfurt[1], HasCoords: true},
		{Code: "NYC", Latitude: newYork[0], Longitude: newYork[1], HasCoords: true},
		{Code: "XXX"}, // no coordinates: never nearest, never checked
	}}
	serving := []geo.Serving{
		{VantagePoint: vp("ams-local", amsterdam), Site: "AMS"},                     // nearest: fine
		{VantagePoint: vp("ams-to-fra", amsterdam), Site: "FRA"},                    // 360 km: not far enough
		{VantagePoint: vp("ams-to-sin", amsterdam), Site: "sin"},                    // 10,500 km: flagged; case ignored
		{VantagePoint: vp("ams-to-nyc", amsterdam), Site: "NYC"},                    // 5,900 km: flagged
		{VantagePoint: vp("sydney-to-sin", sydney), Site: "SIN"},                    // the nearest, though 6,300 km
		{VantagePoint: vp("boston-to-ams", [2]float64{42.36, -71.06}), Site: "AMS"}, // 5,500 km, NYC 300 km: flagged
		{VantagePoint: vp("unknown-site", amsterdam), Site: "LHR"},                  // skipped
		{VantagePoint: vp("no-coords-site", amsterdam), Site: "XXX"},                // skipped
		{VantagePoint: analysis.VantagePoint{Name: "nowhere"}, Site: "AMS"},         // skipped
		{VantagePoint: vp("evil\x1b[31m", amsterdam), Site: "SIN"},                  // names are data
	}
	rep, err := geo.PathInflation(target, serving, geo.InflationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 7 || rep.Skipped != 3 {
		t.Errorf("checked %d, skipped %d; want 7 and 3", rep.Checked, rep.Skipped)
	}
	want := []struct{ vp, site, nearest string }{
		{"ams-to-sin", "SIN", "AMS"},
		{"evil\x1b[31m", "SIN", "AMS"},
		{"ams-to-nyc", "NYC", "AMS"},
		{"boston-to-ams", "AMS", "NYC"},
	}
	if len(rep.Findings) != len(want) {
		t.Fatalf("findings %+v, want %d", rep.Findings, len(want))
	}
	for i, w := range want {
		f := rep.Findings[i]
		if f.VantagePoint != w.vp || f.Site != w.site || f.Nearest != w.nearest {
			t.Errorf("finding %d = %+v, want %+v", i, f, w)
		}
		if math.Abs(f.Excess-(f.Distance-f.NearestDistance)) > 1e-9 || f.Factor < 2 || f.Excess < 1000 {
			t.Errorf("finding %d = %+v: inconsistent numbers", i, f)
		}
		if i > 0 && f.Excess > rep.Findings[i-1].Excess {
			t.Errorf("findings not sorted by excess: %+v", rep.Findings)
		}
	}
}

func TestPathInflationOptions(t *testing.T) {
	t.Parallel()
	target := analysis.Target{Sites: []analysis.Site{
		{Code: "AMS", Latitude: amsterdam[0], Longitude: amsterdam[1], HasCoords: true},
		{Code: "FRA", Latitude: frankfurt[0], Longitude: frankfurt[1], HasCoords: true},
	}}
	// 360 km instead of 0: flagged only with a low excess threshold, and
	// the factor uses a 1 km floor for the nearest distance.
	serving := []geo.Serving{{VantagePoint: vp("a", amsterdam), Site: "FRA"}}
	tests := []struct {
		name  string
		opts  geo.InflationOptions
		found int
	}{
		{"defaults", geo.InflationOptions{}, 0},
		{"low excess", geo.InflationOptions{ExcessKm: 100}, 1},
		{"low excess, huge factor", geo.InflationOptions{ExcessKm: 100, Factor: 1000}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := geo.PathInflation(target, serving, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Findings) != tt.found {
				t.Errorf("findings %+v, want %d", rep.Findings, tt.found)
			}
			for _, f := range rep.Findings {
				if f.NearestDistance != 0 || f.Factor != f.Distance {
					t.Errorf("finding %+v: want nearest 0 km and factor = distance / 1 km", f)
				}
			}
		})
	}
	for _, opts := range []geo.InflationOptions{{ExcessKm: -1}, {Factor: 0.5}, {ExcessKm: math.NaN()}, {Factor: math.NaN()}} {
		if _, err := geo.PathInflation(target, serving, opts); !errors.Is(err, geo.ErrInvalid) {
			t.Errorf("options %+v: err = %v, want ErrInvalid", opts, err)
		}
	}
}
