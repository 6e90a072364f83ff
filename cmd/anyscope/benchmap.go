package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/anyscope/anyscope/analysis/synth"
	"github.com/anyscope/anyscope/web/geomap"
)

// BenchMapCmd measures the map renderer that the dashboard and the reports
// share: one synthetic catchment (vantage points spread like RIPE Atlas
// probes, each served by one of the sites) rendered as SVG with dots only
// and with a great-circle line from every vantage point to its site, each
// --renders times; the median render is reported. The BENCH line gives the
// slower of the two, with lines: the worst case a page or report can ask for.
type BenchMapCmd struct {
	VantagePoints int    `help:"Vantage points on the map." default:"12000"`
	Sites         int    `help:"Sites on the map." default:"50"`
	Renders       int    `help:"Renders of each variant; the median is reported." default:"5"`
	Width         int    `help:"Map width in pixels." default:"960"`
	Seed          int64  `help:"Seed of the synthetic world." default:"2017"`
	SVG           string `name:"svg" help:"Also write the map with lines to this file, to look at." placeholder:"FILE"`
}

// Run renders and prints the BENCH line last.
func (c *BenchMapCmd) Run(ctx context.Context) error {
	if c.VantagePoints < 1 || c.Sites < 1 || c.Renders < 1 {
		return errors.New("need --vantage-points, --sites and --renders of at least 1")
	}
	m, err := benchMap(c.Seed, c.VantagePoints, c.Sites)
	if err != nil {
		return err
	}
	m.Width = c.Width
	fmt.Printf("bench map: %d vantage points, %d sites, %d px wide, %d renders of each variant\n", c.VantagePoints, c.Sites, c.Width, c.Renders)
	var lines geomap.Timing
	for _, withLines := range []bool{false, true} {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.Lines = withLines
		t, err := geomap.Time(m, c.Renders)
		if err != nil {
			return err
		}
		what := "dots only"
		if withLines {
			what = "with great-circle lines"
			lines = t
		}
		fmt.Printf("%s: median %.4f s (fastest %.4f s, slowest %.4f s, first %.4f s), %d bytes\n",
			what, t.Median.Seconds(), t.Fastest.Seconds(), t.Slowest.Seconds(), t.First.Seconds(), t.Bytes)
	}
	if c.SVG != "" {
		f, err := os.Create(c.SVG)
		if err != nil {
			return err
		}
		if err := geomap.Render(f, m); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	fmt.Printf("BENCH map_svg_seconds=%.4f bytes=%d\n", lines.Median.Seconds(), lines.Bytes)
	return nil
}

// benchMap is a synthetic world's catchment of one target that uses every
// site, as a map.
func benchMap(seed int64, vantagePoints, sites int) (geomap.Map, error) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := synth.New(synth.Config{Seed: seed, Sites: sites, VantagePoints: vantagePoints, Targets: 1, Start: start, Duration: time.Minute})
	if err != nil {
		return geomap.Map{}, err
	}
	target := w.Targets()[0].Name
	m := geomap.Map{Title: fmt.Sprintf("Synthetic catchment: %d vantage points, %d sites", vantagePoints, sites)}
	count := map[string]int{}
	for _, vp := range w.VantagePoints() {
		site, _ := w.Truth(target, vp.Name, start)
		count[site]++
		m.VantagePoints = append(m.VantagePoints, geomap.VantagePoint{Name: vp.Name, Latitude: vp.Latitude, Longitude: vp.Longitude, Site: site})
	}
	for _, s := range w.Sites() {
		n := count[s.Code]
		m.Sites = append(m.Sites, geomap.Site{Code: s.Code, Name: s.Name, Latitude: s.Latitude, Longitude: s.Longitude,
			VantagePoints: n, Share: float64(n) / float64(vantagePoints)})
	}
	return m, nil
}
