package geomap

import "hash/fnv"

// palette holds 24 colours meant to stay apart for people with the common
// colour-vision deficiencies as far as 24 can: Okabe and Ito's seven (the
// black left out) and Paul Tol's muted, vibrant, bright and light schemes,
// near-duplicates removed. None is grey: grey means "no site".
var palette = [...]string{
	"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00",
	"#cc79a7", "#332288", "#88ccee", "#44aa99", "#117733", "#999933",
	"#ddcc77", "#cc6677", "#882255", "#aa4499", "#ee3377", "#cc3311",
	"#33bbee", "#4477aa", "#228833", "#ccbb44", "#ffaabb", "#bbcc33",
}

// NoSite is the colour of vantage points that no site answered.
const NoSite = "#8c8c8c"

// Color returns the colour of a site on every map and in every report:
// one of a fixed palette of 24, chosen by a hash (FNV-1a) of the code
// exactly as given, so the same code always gets the same colour (and two
// codes may share one: a map with more than a few sites tells them apart by
// their labels and tooltips too). The empty code gets NoSite's grey.
func Color(site string) string {
	if site == "" {
		return NoSite
	}
	h := fnv.New32a()
	h.Write([]byte(site))
	return palette[h.Sum32()%uint32(len(palette))]
}
