package atlas

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProbes(t *testing.T) {
	t.Parallel()
	open := func(name string) string {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		name    string
		in      string
		want    map[int64]Probe
		skipped int
		err     string
	}{{
		name: "archive with objects",
		in:   open("probes.json"),
		want: map[int64]Probe{
			90:  {ID: 90, Latitude: 37.4675, Longitude: 22.4015, HasCoords: true, Country: "GR"},
			268: {ID: 268, Latitude: 40.6415, Longitude: 22.9405, HasCoords: true, ASN: 3329, Country: "GR"},
		},
	}, {
		name: "array with GeoJSON coordinates",
		in:   open("probes-geometry.json"),
		want: map[int64]Probe{1: {ID: 1, Latitude: 52.3875, Longitude: 4.8875, HasCoords: true, ASN: 68, Country: "ND"}},
	}, {
		name: "API listing with results, IPv6 AS only",
		in:   `{"count":1,"next":null,"results":[{"id":7,"asn_v4":null,"asn_v6":3333,"latitude":null,"longitude":null,"country_code":"NL"}]}`,
		want: map[int64]Probe{7: {ID: 7, ASN: 3333, Country: "NL"}},
	}, {
		name: "entries that are no probes are counted",
		in: `[{"id":"x"},{"latitude":1},17,{"id":5,"latitude":95,"longitude":1,"country_code":"nl"},` +
			`{"id":6,"latitude":1,"longitude":2,"asn_v4":-4,"country_code":"NLD"},{"id":8,"geometry":{"coordinates":[1]}}]`,
		want: map[int64]Probe{
			5: {ID: 5},
			6: {ID: 6, Latitude: 1, Longitude: 2, HasCoords: true},
			8: {ID: 8},
		},
		skipped: 3,
	}, {
		name: "not JSON",
		in:   "probes!",
		err:  "atlas: probes",
	}, {
		name: "object without a list",
		in:   `{"meta":{}}`,
		err:  `no "objects" or "results" list`,
	}, {
		name: "objects not a list",
		in:   `{"objects":{}}`,
		err:  `"objects" is not a list`,
	}, {
		name: "truncated",
		in:   `[{"id":1},{"id":`,
		err:  "atlas: probes",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set, err := ParseProbes(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Probes) != len(tc.want) || set.Skipped != tc.skipped {
				t.Errorf("%d probes, %d skipped; want %d, %d: %+v", len(set.Probes), set.Skipped, len(tc.want), tc.skipped, set.Probes)
			}
			for id, w := range tc.want {
				if got := set.Probes[id]; got != w {
					t.Errorf("probe %d = %+v, want %+v", id, got, w)
				}
			}
		})
	}
}
