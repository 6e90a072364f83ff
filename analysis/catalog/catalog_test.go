package catalog

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLookupKnown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code     string
		city     string
		country  string
		lat, lon float64 // within 0.05°
		kind     Kind
	}{
		{"AMS", "Amsterdam", "NL", 52.31, 4.76, KindAirport},
		{"LHR", "London", "GB", 51.47, -0.46, KindAirport},
		{"SIN", "Singapore", "SG", 1.35, 103.99, KindAirport},
		{"FRA", "Frankfurt am Main", "DE", 50.03, 8.56, KindAirport},
		{"HEL", "Helsinki (Vantaa)", "FI", 60.32, 24.96, KindAirport},
		{"BER", "Berlin", "DE", 52.36, 13.50, KindAirport},
		{"SHA", "Shanghai (Minhang)", "CN", 31.20, 121.33, KindAirport},
		{"LON", "London", "GB", 51.51, -0.13, KindMetro},
		{"NYC", "New York", "US", 40.71, -74.01, KindMetro},
		{"TYO", "Tokyo", "JP", 35.69, 139.69, KindMetro},
		{"CHI", "Chicago", "US", 41.88, -87.63, KindMetro},
		{"SAO", "São Paulo", "BR", -23.55, -46.63, KindMetro},
		// Netnod's London: an operator code that replaces Smolensk North.
		{"lnx", "London", "GB", 51.51, -0.13, KindOperator},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			p, ok := Lookup(tt.code)
			if !ok {
				t.Fatalf("Lookup(%q) found nothing", tt.code)
			}
			if p.Code != strings.ToUpper(tt.code) || p.City != tt.city || p.Country != tt.country || p.Kind != tt.kind {
				t.Errorf("Lookup(%q) = %+v, want %s, %s, %s, %s", tt.code, p, strings.ToUpper(tt.code), tt.city, tt.country, tt.kind)
			}
			if math.Abs(p.Latitude-tt.lat) > 0.05 || math.Abs(p.Longitude-tt.lon) > 0.05 {
				t.Errorf("Lookup(%q) at %v, %v, want about %v, %v", tt.code, p.Latitude, p.Longitude, tt.lat, tt.lon)
			}
		})
	}
}

// TestLookupMetroCodes: every metro code operators commonly use is known.
func TestLookupMetroCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []string{
		"LON", "NYC", "TYO", "PAR", "CHI", "WAS", "MOW", "SAO", "RIO", "BUE", "OSA",
		"SEL", "STO", "MIL", "ROM", "BJS", "SHA", "YTO", "YMQ", "JKT", "BER",
	} {
		if _, ok := Lookup(code); !ok {
			t.Errorf("Lookup(%q) found nothing", code)
		}
	}
}

func TestLookupCaseInsensitive(t *testing.T) {
	t.Parallel()
	want, _ := Lookup("AMS")
	for _, code := range []string{"ams", "Ams", "aMs", "amS"} {
		if got, ok := Lookup(code); !ok || got != want {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", code, got, ok, want)
		}
	}
}

func TestLookupUnknown(t *testing.T) {
	t.Parallel()
	for _, code := range []string{
		"", "A", "ZZZ", "XXX", "QQQ", "NET", "COM", "AMSTERDAM", "ams ", " ams", "am",
		"A\x00S", "\u212aIX", "\u0391MS", "ams.", "-", strings.Repeat("A", 1<<16),
	} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			if p, ok := Lookup(code); ok {
				t.Errorf("Lookup(%.20q) = %+v, want not found", code, p)
			}
		})
	}
}

func TestDistance(t *testing.T) {
	t.Parallel()
	ams, _ := Lookup("AMS")
	lhr, _ := Lookup("LHR")
	sin, _ := Lookup("SIN")
	tests := []struct {
		name       string
		lat1, lon1 float64
		lat2, lon2 float64
		want, tol  float64 // km
	}{
		{"AMS-LHR", ams.Latitude, ams.Longitude, lhr.Latitude, lhr.Longitude, 370, 370 * 0.05},
		{"LHR-AMS", lhr.Latitude, lhr.Longitude, ams.Latitude, ams.Longitude, 370, 370 * 0.05},
		{"AMS-SIN", ams.Latitude, ams.Longitude, sin.Latitude, sin.Longitude, 10500, 10500 * 0.05},
		{"same-point", 52.3, 4.7, 52.3, 4.7, 0, 1e-9},
		{"one-degree-of-equator", 0, 0, 0, 1, 2 * math.Pi * EarthRadius / 360, 1e-6},
		{"antipodes", 0, 0, 0, 180, math.Pi * EarthRadius, 1e-6},
		{"pole-to-pole", 90, 0, -90, 0, math.Pi * EarthRadius, 1e-6},
		{"across-the-date-line", 0, 179.5, 0, -179.5, 2 * math.Pi * EarthRadius / 360, 1e-6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Distance(tt.lat1, tt.lon1, tt.lat2, tt.lon2); math.Abs(got-tt.want) > tt.tol {
				t.Errorf("Distance = %.3f km, want %.3f ± %.3f", got, tt.want, tt.tol)
			}
		})
	}
}

func TestNearest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lat, lon float64
		code     string
		maxKm    float64
	}{
		{"on-AMS", 52.3086, 4.7639, "AMS", 0.001},
		{"near-SIN", 1.36, 103.98, "SIN", 5},
		// LON and LNX share London's centre: the metro code wins.
		{"london-centre", 51.5074, -0.1278, "LON", 0.001},
		{"manhattan", 40.7128, -74.006, "NYC", 0.001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, d := Nearest(tt.lat, tt.lon)
			if p.Code != tt.code || d > tt.maxKm {
				t.Errorf("Nearest(%v, %v) = %s at %.3f km, want %s within %v km", tt.lat, tt.lon, p.Code, d, tt.code, tt.maxKm)
			}
		})
	}
	t.Run("not-a-number", func(t *testing.T) {
		t.Parallel()
		if p, d := Nearest(math.NaN(), 0); p != (Place{}) || !math.IsInf(d, 1) {
			t.Errorf("Nearest(NaN, 0) = %+v, %v; want the zero Place and +Inf", p, d)
		}
	})
}

// TestData checks the embedded files: every row parses (coordinates in
// range, codes unique per file), there are enough places, the merge keeps
// airports over metro codes, and All agrees with Lookup.
func TestData(t *testing.T) {
	t.Parallel()
	airports, err := parse(strings.NewReader(string(airportsCSV)), "airports.csv")
	if err != nil {
		t.Fatal(err)
	}
	metros, err := parse(strings.NewReader(string(metrosCSV)), "metros.csv")
	if err != nil {
		t.Fatal(err)
	}
	if len(airports) < 2000 {
		t.Errorf("airports.csv has %d places, want at least 2,000", len(airports))
	}
	byCode := make(map[string]Place)
	for _, p := range airports {
		if p.Kind != KindAirport || len(p.Code) != 3 {
			t.Errorf("airports.csv: %+v is not a three-letter airport", p)
		}
		byCode[p.Code] = p
	}
	// An operator code may replace an airport only when it is meant to.
	replaces := map[string]bool{"LNX": true}
	for _, p := range metros {
		if p.Kind == KindAirport {
			t.Errorf("metros.csv: %s is an airport row", p.Code)
		}
		if _, ok := byCode[p.Code]; ok != (p.Kind == KindOperator && replaces[p.Code]) {
			t.Errorf("metros.csv: %s (%s): shadows an airport: %v, want %v", p.Code, p.Kind, ok, !ok)
		}
	}
	all := All()
	if len(all) != len(airports)+len(metros)-len(replaces) {
		t.Errorf("All() has %d places, want %d + %d - %d", len(all), len(airports), len(metros), len(replaces))
	}
	if !slices.IsSortedFunc(all, func(a, b Place) int { return strings.Compare(a.Code, b.Code) }) {
		t.Error("All() is not sorted by code")
	}
	for i, p := range all {
		if i > 0 && all[i-1].Code == p.Code {
			t.Errorf("All() holds %s twice", p.Code)
		}
		if got, ok := Lookup(p.Code); !ok || got != p {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", p.Code, got, ok, p)
		}
		if p.Latitude < -90 || p.Latitude > 90 || p.Longitude < -180 || p.Longitude > 180 {
			t.Errorf("%s at %v, %v", p.Code, p.Latitude, p.Longitude)
		}
	}
	if size := len(airportsCSV) + len(metrosCSV); size >= 1<<20 {
		t.Errorf("embedded data is %d bytes, want well under 1 MiB", size)
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, want string
	}{
		{"invalid-duplicate-code.csv", "invalid catalog data: invalid-duplicate-code.csv:3: code AMS appears twice"},
		{"invalid-latitude.csv", "invalid catalog data: invalid-latitude.csv:2: AMS: latitude: 91 is outside ±90"},
		{"invalid-latitude-nan.csv", "invalid catalog data: invalid-latitude-nan.csv:2: AMS: latitude: NaN is outside ±90"},
		{"invalid-longitude.csv", "invalid catalog data: invalid-longitude.csv:2: AMS: longitude: -180.5 is outside ±180"},
		{"invalid-lower-case-code.csv", `invalid catalog data: invalid-lower-case-code.csv:2: code "ams" is not 2-8 upper-case letters or digits`},
		{"invalid-country.csv", `invalid catalog data: invalid-country.csv:2: AMS: country "NLD" is not ISO 3166 alpha-2`},
		{"invalid-kind.csv", `invalid catalog data: invalid-kind.csv:2: AMS: kind "seaport" is none of airport, metro, operator`},
		{"invalid-empty-city.csv", `invalid catalog data: invalid-empty-city.csv:2: AMS: city "" is empty or has control characters`},
		{"invalid-short-row.csv", "invalid catalog data: invalid-short-row.csv: record on line 2: wrong number of fields"},
		{"invalid-header.csv", `invalid catalog data: invalid-header.csv: header ["code" "name" "country" "lat" "lon" "kind"], want ["code" "city" "country" "lat" "lon" "kind"]`},
		{"invalid-empty.csv", "invalid catalog data: invalid-empty.csv: header: EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			_, err := parse(openTestdata(t, tt.file), tt.file)
			if err == nil {
				t.Fatalf("parse: no error, want %q", tt.want)
			}
			if !errors.Is(err, ErrData) {
				t.Errorf("error %v does not wrap ErrData", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	got, err := parse(openTestdata(t, "valid-comments-and-quotes.csv"), "valid")
	if err != nil {
		t.Fatal(err)
	}
	want := []Place{
		{"AMS", "Amsterdam", "NL", 52.3086, 4.7639, KindAirport},
		{"LHR", "London, Heathrow", "GB", 51.4707, -0.4599, KindAirport},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parse = %+v, want %+v", got, want)
	}
}

// TestBuildMerge: a metro code never replaces an airport, an operator code
// does, and new codes are added.
func TestBuildMerge(t *testing.T) {
	t.Parallel()
	const head = "code,city,country,lat,lon,kind\n"
	ix, err := build(
		[]byte(head+"BER,Berlin,DE,52.36,13.5,airport\nLNX,Smolensk,RU,54.82,32.03,airport\n"),
		[]byte(head+"BER,Berlin,DE,52.52,13.4,metro\nLNX,London,GB,51.51,-0.13,operator\nLON,London,GB,51.51,-0.13,metro\n"),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []Place{
		{"BER", "Berlin", "DE", 52.36, 13.5, KindAirport},
		{"LNX", "London", "GB", 51.51, -0.13, KindOperator},
		{"LON", "London", "GB", 51.51, -0.13, KindMetro},
	}
	if !slices.Equal(ix.places, want) {
		t.Errorf("places = %+v, want %+v", ix.places, want)
	}
	for i, p := range ix.places {
		if ix.byCode[p.Code] != int32(i) {
			t.Errorf("byCode[%s] = %d, want %d", p.Code, ix.byCode[p.Code], i)
		}
	}
	if _, err := build([]byte(head), []byte("nonsense\n")); !errors.Is(err, ErrData) {
		t.Errorf("build with a bad metro file: %v, want ErrData", err)
	}
}

func openTestdata(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func BenchmarkLookup(b *testing.B) {
	codes := []string{"AMS", "lhr", "Sin", "LNX", "zzz", "NYC"}
	Lookup("AMS") // load the data outside the loop
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Lookup(codes[i%len(codes)])
	}
}

func BenchmarkNearest(b *testing.B) {
	Lookup("AMS")
	b.ReportAllocs()
	for b.Loop() {
		Nearest(48.8566, 2.3522)
	}
}

func BenchmarkLoad(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := build(airportsCSV, metrosCSV); err != nil {
			b.Fatal(err)
		}
	}
}
