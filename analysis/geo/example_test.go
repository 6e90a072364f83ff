package geo_test

import (
	"fmt"
	"time"

	"github.com/anyscope/anyscope/analysis/geo"
)

func ExamplePlausible() {
	// An answer in 1 ms from a vantage point in Amsterdam cannot have come
	// from Singapore, whatever the identity string says.
	v := geo.Plausible(52.37, 4.90, 1.35, 103.82, time.Millisecond)
	fmt.Printf("possible=%v distance=%.0f km min RTT=%v\n", v.Possible, v.Distance, v.MinRTT.Round(time.Millisecond))
	// Output:
	// possible=false distance=10492 km min RTT=105ms
}

func ExampleEnumerate() {
	// Two vantage points whose discs cannot overlap: two sites at least.
	e, err := geo.Enumerate([]geo.Measurement{
		{VantagePoint: "ams-vp", Latitude: 52.37, Longitude: 4.90, RTT: 2 * time.Millisecond},
		{VantagePoint: "sin-vp", Latitude: 1.35, Longitude: 103.82, RTT: 3 * time.Millisecond},
		{VantagePoint: "nyc-vp", Latitude: 40.71, Longitude: -74.01, RTT: 75 * time.Millisecond},
	}, geo.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("anycast:", e.Anycast)
	for _, s := range e.Sites {
		fmt.Printf("%s within %.0f km of %s\n", s.Place.Code, s.Radius, s.VantagePoint)
	}
	// The New York disc (7,500 km) overlaps both: it proves nothing more.
	// Each site is placed on the catalog place nearest its vantage point
	// (Seletar is Singapore's other airport).
	// Output:
	// anycast: true
	// AMS within 200 km of ams-vp
	// XSP within 300 km of sin-vp
}
