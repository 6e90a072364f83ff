package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestSelect: large and medium airports with an IATA code are kept; of two
// sharing a code, the larger, then the scheduled, then the older id wins.
func TestSelect(t *testing.T) {
	t.Parallel()
	got, err := Select(openTestdata(t, "ourairports-sample.csv"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Airport{
		{Code: "AMS", City: "Amsterdam", Country: "NL", Latitude: 52.3086, Longitude: 4.7639},
		{Code: "BER", City: "Berlin", Country: "DE", Latitude: 52.3617, Longitude: 13.5023},
		{Code: "BZK", City: "Bryansk", Country: "RU", Latitude: 53.2144, Longitude: 34.176},
		{Code: "LHR", City: "London", Country: "GB", Latitude: 51.4707, Longitude: -0.4599},
		{Code: "SHA", City: "Shanghai (Minhang)", Country: "CN", Latitude: 31.1981, Longitude: 121.3343},
		{Code: "SIN", City: "Singapore", Country: "SG", Latitude: 1.3502, Longitude: 103.994},
		{Code: "XAA", City: "Kano", Country: "NG", Latitude: 10.5, Longitude: 10.5},
		{Code: "XAB", City: "Vitória", Country: "BR", Latitude: -20.5, Longitude: -40.5},
		{Code: "XAE", City: "Field Without Town", Country: "GA", Latitude: 0, Longitude: 0},
	}
	strip := func(as []Airport) []Airport {
		out := slices.Clone(as)
		for i := range out {
			out[i].rank, out[i].id = 0, 0
		}
		return out
	}
	if got := strip(got); !slices.Equal(got, want) {
		t.Errorf("Select =\n%+v\nwant\n%+v", got, want)
	}
}

func TestSelectInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, want string
	}{
		{"invalid-iata-code.csv", `bad OurAirports airports.csv: line 2: IATA code "AM" is not three letters`},
		{"invalid-latitude.csv", `bad OurAirports airports.csv: line 2: XAA: latitude: 95 out of range`},
		{"invalid-country.csv", `bad OurAirports airports.csv: line 2: XAA: country "Ghana" is not ISO 3166 alpha-2`},
		{"invalid-no-iata-column.csv", `bad OurAirports airports.csv: no column "iata_code"`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			_, err := Select(openTestdata(t, tt.file))
			if !errors.Is(err, ErrInput) {
				t.Fatalf("Select: %v, want an error wrapping ErrInput", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

// TestRun turns the sample into the compact CSV the catalog embeds.
func TestRun(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "airports.csv")
	if err := run(t.Context(), filepath.Join("testdata", "ourairports-sample.csv"), out, "2026-05-11"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "ourairports-sample.golden.csv")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, got)
	}
	if err := run(t.Context(), filepath.Join("testdata", "ourairports-sample.csv"), out, "11 May"); err == nil {
		t.Error("run with a bad -date: no error")
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
