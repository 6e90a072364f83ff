package catalog_test

import (
	"fmt"

	"github.com/anyscope/anyscope/analysis/catalog"
)

func ExampleLookup() {
	for _, code := range []string{"ams", "LON", "lnx", "zzz"} {
		p, ok := catalog.Lookup(code)
		if !ok {
			fmt.Printf("%s: not in the catalog\n", code)
			continue
		}
		fmt.Printf("%s: %s, %s (%s) %.2f %.2f\n", code, p.City, p.Country, p.Kind, p.Latitude, p.Longitude)
	}
	// Output:
	// ams: Amsterdam, NL (airport) 52.31 4.76
	// LON: London, GB (metro) 51.51 -0.13
	// lnx: London, GB (operator) 51.51 -0.13
	// zzz: not in the catalog
}

func ExampleDistance() {
	ams, _ := catalog.Lookup("AMS")
	lhr, _ := catalog.Lookup("LHR")
	km := catalog.Distance(ams.Latitude, ams.Longitude, lhr.Latitude, lhr.Longitude)
	// Light in fibre covers about 100 km per ms of round-trip time, so an
	// RTT below this many ms from AMS rules out a site at LHR.
	fmt.Printf("AMS-LHR: %.0f km, %.1f ms\n", km, km/100)
	// Output:
	// AMS-LHR: 370 km, 3.7 ms
}

func ExampleNearest() {
	p, km := catalog.Nearest(52.37, 4.90) // a vantage point in Amsterdam
	fmt.Printf("%s (%s) %.0f km\n", p.Code, p.City, km)
	// Output:
	// AMS (Amsterdam) 11 km
}
