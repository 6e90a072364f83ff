// Command gen turns OurAirports' airports.csv into the catalog's compact
// data/airports.csv: one row per IATA code of a large or medium airport,
// with the city it serves, its country and its coordinates.
//
// OurAirports (https://ourairports.com/data/) publishes its data in the
// public domain. Run it through go generate in analysis/catalog; -src takes a
// local copy or an https URL (the default is OurAirports' daily download).
package main

import (
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultSource is OurAirports' daily airports.csv.
const DefaultSource = "https://davidmegginson.github.io/ourairports-data/airports.csv"

// ErrInput is wrapped by every error about the source file's content.
var ErrInput = errors.New("bad OurAirports airports.csv")

func main() {
	src := flag.String("src", DefaultSource, "OurAirports airports.csv: a file or an https URL")
	out := flag.String("out", "data/airports.csv", "compact CSV to write")
	date := flag.String("date", time.Now().UTC().Format(time.DateOnly), "date of the source data, recorded in the output")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), *src, *out, *date); err != nil {
		log.Error("gen failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, src, out, date string) error {
	if _, err := time.Parse(time.DateOnly, date); err != nil {
		return fmt.Errorf("-date %q: %w", date, err)
	}
	in, err := open(ctx, src)
	if err != nil {
		return err
	}
	defer in.Close()
	airports, err := Select(in)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := Write(f, airports, date); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

func open(ctx context.Context, src string) (io.ReadCloser, error) {
	if !strings.HasPrefix(src, "https://") {
		return os.Open(src)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("download %s: %w", src, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("download %s: %s", src, resp.Status)
	}
	return &cancelBody{resp.Body, cancel}, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// Airport is one row of the output.
type Airport struct {
	Code, City, Country string
	Latitude, Longitude float64

	rank int // lower is kept when two airports share a code
	id   int // OurAirports' row id, the last tie-breaker
}

var (
	iataRE    = regexp.MustCompile(`^[A-Z]{3}$`)
	countryRE = regexp.MustCompile(`^[A-Z]{2}$`)
)

// ranks are the airport types kept, best first.
var ranks = map[string]int{"large_airport": 0, "medium_airport": 2}

// Select reads OurAirports' airports.csv and keeps large and medium airports
// with an IATA code; when two share a code the larger (then the one with
// scheduled service, then the older OurAirports id) is kept. The result is
// sorted by code.
func Select(r io.Reader) ([]Airport, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrInput, err)
	}
	col := make(map[string]int, len(header))
	for i, h := range header {
		col[strings.TrimPrefix(h, "\ufeff")] = i
	}
	for _, name := range []string{"id", "type", "name", "latitude_deg", "longitude_deg", "iso_country", "municipality", "scheduled_service", "iata_code"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("%w: no column %q", ErrInput, name)
		}
	}
	cr.FieldsPerRecord = len(header)
	best := make(map[string]Airport)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		rank, ok := ranks[rec[col["type"]]]
		code := strings.TrimSpace(rec[col["iata_code"]])
		if !ok || code == "" {
			continue
		}
		line, _ := cr.FieldPos(0)
		a, err := airport(rec, col, code, rank)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrInput, line, err)
		}
		if old, ok := best[code]; !ok || better(a, old) {
			best[code] = a
		}
	}
	out := make([]Airport, 0, len(best))
	for _, a := range best {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y Airport) int { return strings.Compare(x.Code, y.Code) })
	return out, nil
}

func airport(rec []string, col map[string]int, code string, rank int) (Airport, error) {
	if !iataRE.MatchString(code) {
		return Airport{}, fmt.Errorf("IATA code %q is not three letters", code)
	}
	country := rec[col["iso_country"]]
	if !countryRE.MatchString(country) {
		return Airport{}, fmt.Errorf("%s: country %q is not ISO 3166 alpha-2", code, country)
	}
	lat, err := coord(rec[col["latitude_deg"]], 90)
	if err != nil {
		return Airport{}, fmt.Errorf("%s: latitude: %w", code, err)
	}
	lon, err := coord(rec[col["longitude_deg"]], 180)
	if err != nil {
		return Airport{}, fmt.Errorf("%s: longitude: %w", code, err)
	}
	city := clean(rec[col["municipality"]])
	if city == "" {
		city = clean(rec[col["name"]])
	}
	if city == "" {
		return Airport{}, fmt.Errorf("%s: neither municipality nor name", code)
	}
	id, err := strconv.Atoi(rec[col["id"]])
	if err != nil {
		return Airport{}, fmt.Errorf("%s: id: %w", code, err)
	}
	if rec[col["scheduled_service"]] != "yes" {
		rank++
	}
	return Airport{Code: code, City: city, Country: country, Latitude: lat, Longitude: lon, rank: rank, id: id}, nil
}

func better(a, b Airport) bool {
	return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.id, b.id)) < 0
}

func coord(s string, limit float64) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(v) || v < -limit || v > limit {
		return 0, fmt.Errorf("%v out of range", v)
	}
	return math.Round(v*1e4) / 1e4, nil // about 11 m: more than a site needs
}

// clean collapses white space (and drops control characters) in a name.
func clean(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r < 0x20 || r == 0x7f || r == ' ' || r == '\u00a0'
	}), " ")
}

// Write writes the compact CSV the catalog embeds.
func Write(w io.Writer, airports []Airport, date string) error {
	if _, err := fmt.Fprintf(w, "# Generated by analysis/catalog/internal/gen from OurAirports airports.csv (public domain), data of %s.\n# Large and medium airports with an IATA code. DO NOT EDIT: run go generate ./analysis/catalog.\n", date); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	cw.Write([]string{"code", "city", "country", "lat", "lon", "kind"})
	for _, a := range airports {
		cw.Write([]string{a.Code, a.City, a.Country, ftoa(a.Latitude), ftoa(a.Longitude), "airport"})
	}
	cw.Flush()
	return cw.Error()
}

func ftoa(v float64) string {
	if v == 0 {
		return "0" // never "-0"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
