// Package catalog places anycast sites on the map. Operators name their
// sites after the nearest airport (IATA code: AMS, LHR, SIN), after the
// metropolitan area (IATA city codes such as LON or NYC, which no airport
// carries), or with codes of their own (Netnod's lnx is London). The catalog
// maps each such code to a city, its country (ISO 3166 alpha-2) and
// coordinates.
//
// Airports come from OurAirports (public domain): every large or medium
// airport with an IATA code, generated into data/airports.csv. Metro and
// operator codes are kept by hand in data/metros.csv. A metro code never
// shadows an airport; an operator code does, because it says what the code
// means in anycast identities.
//
// The catalog is a guide, not the truth: a site an operator declares, with
// its own coordinates, wins over it.
package catalog

//go:generate go run ./internal/gen -src https://davidmegginson.github.io/ourairports-data/airports.csv -out data/airports.csv

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Kind says where a code comes from.
type Kind string

const (
	KindAirport  Kind = "airport"  // an IATA airport code
	KindMetro    Kind = "metro"    // an IATA metropolitan-area code (LON, NYC)
	KindOperator Kind = "operator" // an operator's own site code (Netnod's lnx)
)

// Place is a code and where it is.
type Place struct {
	Code      string // upper case
	City      string
	Country   string // ISO 3166 alpha-2
	Latitude  float64
	Longitude float64
	Kind      Kind
}

// EarthRadius is the mean radius of the Earth in km (IUGG), used by Distance.
const EarthRadius = 6371.0088

// ErrData is wrapped by every error about a catalog data file.
var ErrData = errors.New("invalid catalog data")

var (
	//go:embed data/airports.csv
	airportsCSV []byte
	//go:embed data/metros.csv
	metrosCSV []byte
)

type index struct {
	places []Place          // sorted by code
	byCode map[string]int32 // upper-case code → index in places
	geo    []geo            // places' coordinates, prepared for Nearest
}

// geo is a place's latitude and longitude in radians and the cosine of its
// latitude, so that Nearest computes two sines a place.
type geo struct{ φ, λ, cosφ float64 }

func newGeo(lat, lon float64) geo {
	φ := lat * math.Pi / 180
	return geo{φ: φ, λ: lon * math.Pi / 180, cosφ: math.Cos(φ)}
}

// haversine returns the haversine of the central angle between a and b:
// monotonic in the distance, which is 2R·asin(√h).
func haversine(a, b geo) float64 {
	s1, s2 := math.Sin((b.φ-a.φ)/2), math.Sin((b.λ-a.λ)/2)
	return min(1, s1*s1+a.cosφ*b.cosφ*s2*s2)
}

func arc(h float64) float64 { return 2 * EarthRadius * math.Asin(math.Sqrt(h)) }

var (
	loadOnce sync.Once
	loaded   *index
)

// get parses the embedded data on first use. The data ships with the
// binary and the tests check it, so a failure is a build defect: it panics
// as regexp.MustCompile does.
func get() *index {
	loadOnce.Do(func() {
		ix, err := build(airportsCSV, metrosCSV)
		if err != nil {
			panic(fmt.Sprintf("catalog: embedded data: %v", err))
		}
		loaded = ix
	})
	return loaded
}

// build merges the airports and the hand-written metro/operator file.
func build(airports, metros []byte) (*index, error) {
	ap, err := parse(bytes.NewReader(airports), "airports.csv")
	if err != nil {
		return nil, err
	}
	mp, err := parse(bytes.NewReader(metros), "metros.csv")
	if err != nil {
		return nil, err
	}
	ix := &index{byCode: make(map[string]int32, len(ap)+len(mp))}
	ix.places = append(make([]Place, 0, len(ap)+len(mp)), ap...)
	for i, p := range ix.places {
		ix.byCode[p.Code] = int32(i)
	}
	for _, p := range mp {
		i, ok := ix.byCode[p.Code]
		switch {
		case !ok:
			ix.byCode[p.Code] = int32(len(ix.places))
			ix.places = append(ix.places, p)
		case p.Kind == KindOperator:
			ix.places[i] = p
		}
	}
	slices.SortFunc(ix.places, func(a, b Place) int { return strings.Compare(a.Code, b.Code) })
	ix.geo = make([]geo, len(ix.places))
	for i, p := range ix.places {
		ix.byCode[p.Code] = int32(i)
		ix.geo[i] = newGeo(p.Latitude, p.Longitude)
	}
	return ix, nil
}

var header = []string{"code", "city", "country", "lat", "lon", "kind"}

// parse reads one data file: '#' comment lines, a header, then one place a
// row. A code may appear once per file.
func parse(r io.Reader, name string) ([]Place, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = len(header)
	cr.ReuseRecord = true
	h, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: header: %w", ErrData, name, err)
	}
	if !slices.Equal(h, header) {
		return nil, fmt.Errorf("%w: %s: header %q, want %q", ErrData, name, h, header)
	}
	var out []Place
	seen := make(map[string]bool)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrData, name, err)
		}
		line, _ := cr.FieldPos(0)
		p, err := place(rec)
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %w", ErrData, name, line, err)
		}
		if seen[p.Code] {
			return nil, fmt.Errorf("%w: %s:%d: code %s appears twice", ErrData, name, line, p.Code)
		}
		seen[p.Code] = true
		out = append(out, p)
	}
}

func place(rec []string) (Place, error) {
	p := Place{Code: rec[0], City: rec[1], Country: rec[2], Kind: Kind(rec[5])}
	if !validCode(p.Code) {
		return Place{}, fmt.Errorf("code %q is not 2-8 upper-case letters or digits", p.Code)
	}
	if p.City == "" || strings.ContainsFunc(p.City, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return Place{}, fmt.Errorf("%s: city %q is empty or has control characters", p.Code, p.City)
	}
	if len(p.Country) != 2 || !isUpper(p.Country[0]) || !isUpper(p.Country[1]) {
		return Place{}, fmt.Errorf("%s: country %q is not ISO 3166 alpha-2", p.Code, p.Country)
	}
	switch p.Kind {
	case KindAirport, KindMetro, KindOperator:
	default:
		return Place{}, fmt.Errorf("%s: kind %q is none of airport, metro, operator", p.Code, p.Kind)
	}
	var err error
	if p.Latitude, err = coord(rec[3], 90); err != nil {
		return Place{}, fmt.Errorf("%s: latitude: %w", p.Code, err)
	}
	if p.Longitude, err = coord(rec[4], 180); err != nil {
		return Place{}, fmt.Errorf("%s: longitude: %w", p.Code, err)
	}
	return p, nil
}

func coord(s string, limit float64) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	if !(v >= -limit && v <= limit) { // also rejects NaN
		return 0, fmt.Errorf("%v is outside ±%v", v, limit)
	}
	return v, nil
}

func validCode(s string) bool {
	if len(s) < 2 || len(s) > maxCode {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isUpper(s[i]) && !(s[i] >= '0' && s[i] <= '9') {
			return false
		}
	}
	return true
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }

// maxCode is the longest code the catalog holds.
const maxCode = 8

// Lookup returns the place of code (an airport, metro or operator code),
// ignoring ASCII case. "" and unknown codes report false.
func Lookup(code string) (Place, bool) {
	if len(code) == 0 || len(code) > maxCode {
		return Place{}, false
	}
	var buf [maxCode]byte
	for i := 0; i < len(code); i++ {
		c := code[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
	}
	ix := get()
	i, ok := ix.byCode[string(buf[:len(code)])]
	if !ok {
		return Place{}, false
	}
	return ix.places[i], true
}

// All returns every place, sorted by code. The slice is shared: callers
// must not modify it.
func All() []Place { return get().places }

// Nearest returns the place closest to (lat, lon) and its distance in km.
// Of places equally close, an airport is preferred to a metro code and a
// metro code to an operator code (LON, not LNX, for the centre of London).
// Coordinates that are not numbers give the zero Place and +Inf.
func Nearest(lat, lon float64) (Place, float64) {
	ix := get()
	from := newGeo(lat, lon)
	best, bestH := -1, math.Inf(1)
	for i, g := range ix.geo {
		h := haversine(from, g)
		if h < bestH || h == bestH && kindRank(ix.places[i].Kind) < kindRank(ix.places[best].Kind) {
			best, bestH = i, h
		}
	}
	if best < 0 {
		return Place{}, math.Inf(1)
	}
	return ix.places[best], arc(bestH)
}

func kindRank(k Kind) int {
	switch k {
	case KindAirport:
		return 0
	case KindMetro:
		return 1
	default:
		return 2
	}
}

// Distance is the great-circle distance in km between two points given in
// degrees (haversine formula, Earth radius EarthRadius).
func Distance(lat1, lon1, lat2, lon2 float64) float64 {
	return arc(haversine(newGeo(lat1, lon1), newGeo(lat2, lon2)))
}
