package geomap_test

import (
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis/synth"
	"github.com/anyscope/anyscope/web/geomap"
)

// synthMap is a synthetic catchment: vantage points spread like RIPE
// Atlas probes, each coloured by the site that serves it.
func synthMap(tb testing.TB, vantagePoints, sites int) geomap.Map {
	tb.Helper()
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := synth.New(synth.Config{Seed: 2017, Sites: sites, VantagePoints: vantagePoints, Targets: 1, Start: start, Duration: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	target := w.Targets()[0].Name
	m := geomap.Map{Title: "synthetic catchment"}
	count := map[string]int{}
	for _, vp := range w.VantagePoints() {
		site, _ := w.Truth(target, vp.Name, start)
		count[site]++
		m.VantagePoints = append(m.VantagePoints, geomap.VantagePoint{Name: vp.Name, Latitude: vp.Latitude, Longitude: vp.Longitude, Site: site})
	}
	for _, s := range w.Sites() {
		m.Sites = append(m.Sites, geomap.Site{Code: s.Code, Name: s.Name, Latitude: s.Latitude, Longitude: s.Longitude,
			VantagePoints: count[s.Code], Share: float64(count[s.Code]) / float64(vantagePoints)})
	}
	return m
}

func BenchmarkRender12000(b *testing.B) {
	m := synthMap(b, 12000, 50)
	for _, lines := range []bool{false, true} {
		name := "dots"
		if lines {
			name = "lines"
		}
		b.Run(name, func(b *testing.B) {
			m.Lines = lines
			t, err := geomap.Time(m, 1) // fills the background cache
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(t.Bytes))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := geomap.Time(m, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestTime(t *testing.T) {
	m := synthMap(t, 200, 5)
	tm, err := geomap.Time(m, 3)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Renders != 3 || tm.Bytes < 200*50 || tm.Fastest > tm.Median || tm.Median > tm.Slowest {
		t.Errorf("timing %+v", tm)
	}
	if _, err := geomap.Time(m, 0); err == nil {
		t.Error("Time with no render gave no error")
	}
	m.Width = 1
	if _, err := geomap.Time(m, 1); err == nil {
		t.Error("Time of an invalid map gave no error")
	}
}
