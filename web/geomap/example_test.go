package geomap_test

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/anyscope/anyscope/web/geomap"
)

func Example() {
	m := geomap.Map{
		Title: "k.example: who serves whom",
		Sites: []geomap.Site{
			{Code: "AMS", Name: "Amsterdam", Latitude: 52.31, Longitude: 4.76, VantagePoints: 2, Share: 2.0 / 3},
			{Code: "SIN", Name: "Singapore", Latitude: 1.36, Longitude: 103.99, VantagePoints: 1, Share: 1.0 / 3},
		},
		VantagePoints: []geomap.VantagePoint{
			{Name: "vp-paris", Latitude: 48.86, Longitude: 2.35, Site: "AMS"},
			{Name: "vp-<b>berlin</b>", Latitude: 52.52, Longitude: 13.40, Site: "AMS"},
			{Name: "vp-sydney", Latitude: -33.87, Longitude: 151.21, Site: "SIN"},
		},
		Lines: true,
		Link:  func(vp string) string { return "/vp/" + url.PathEscape(vp) },
	}
	var b strings.Builder
	if err := geomap.Render(&b, m); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	svg := b.String()
	fmt.Println(strings.HasPrefix(svg, "<svg "), strings.Count(svg, "<circle"), strings.Contains(svg, "<b>"))
	x, y := geomap.Project(0, 0, 960)
	fmt.Printf("0°N 0°E at %.0f, %.1f; AMS in %s\n", x, y, geomap.Color("AMS"))
	// Output:
	// true 5 false
	// 0°N 0°E at 480, 233.6; AMS in #88ccee
}
