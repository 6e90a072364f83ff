package incident

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// A fixture is a hand-made scenario: rows of round outcomes per vantage
// point and address, and the exact incidents they must produce.
//
// Round r of a row is measured at t0 + r·interval + offset, stream i of the
// row 100 ms after stream i-1. Tokens of a health row: "-" no observation
// (an upload gap), "x" generic_timeout_error, "xr" connection_refused, "xs"
// connection_reset, "xu" host_unreachable, "?" an answer whose identity
// named no site, "R" a dns_refused answer (alive), "!" not_allowed (an
// agent-side fault), anything else the site that answered. "a/b/c" gives
// each stream its own token. Tokens of a trace row: "-" none, "*" a trace
// whose hops all stayed silent, else the comma-separated path end.
type fixture struct {
	Description string       `json:"description"`
	Interval    duration     `json:"interval"`
	Config      fixtureConf  `json:"config"`
	Rows        []fixtureRow `json:"rows"`
	Want        []wantInc    `json:"want"`
}

type fixtureConf struct {
	// Interval is the detector's Config.Interval when it differs from the
	// fixture's probe interval (it must then learn the real one).
	Interval         duration `json:"interval"`
	MinFailures      int      `json:"min_failures"`
	MinVantagePoints int      `json:"min_vantage_points"`
	OutageShare      float64  `json:"outage_share"`
	CatchmentShare   float64  `json:"catchment_share"`
}

type fixtureRow struct {
	VP      string   `json:"vp"`
	Target  string   `json:"target"`
	Address string   `json:"address"`
	Kind    api.Kind `json:"kind"` // "" means dns
	// Streams are kind/transport/query; default dns/udp/hostname.bind.
	Streams []string `json:"streams"`
	Offset  duration `json:"offset"`
	Rounds  string   `json:"rounds"`
}

type wantInc struct {
	Kind          analysis.IncidentKind `json:"kind"`
	Target        string                `json:"target"`
	Address       string                `json:"address"`
	Site          string                `json:"site"`
	VantagePoints []string              `json:"vantage_points"`
	Start         duration              `json:"start"`
	End           *duration             `json:"end"`
	// Evidence checked when given.
	CatchmentSize *int           `json:"catchment_size"`
	Healthy       *int           `json:"healthy"`
	Failed        map[string]int `json:"failed"`
	PathEnds      []string       `json:"path_ends"`
}

type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func loadFixture(t *testing.T, path string) fixture {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if f.Interval == 0 {
		t.Fatalf("%s: no interval", path)
	}
	return f
}

// fed is an observation and the site the caller resolved for it.
type fed struct {
	o    analysis.Observation
	site string
}

// observations expands the rows, sorted by time (rows keep their order
// within one instant).
func (f fixture) observations(t *testing.T) []fed {
	t.Helper()
	var out []fed
	for _, row := range f.Rows {
		addr := netip.MustParseAddr(row.Address)
		streams := row.Streams
		if len(streams) == 0 {
			streams = []string{"dns/udp/hostname.bind"}
		}
		for r, tok := range strings.Fields(row.Rounds) {
			base := t0.Add(time.Duration(r)*time.Duration(f.Interval) + time.Duration(row.Offset))
			o := analysis.Observation{VantagePoint: row.VP, Target: row.Target, Address: addr, At: base}
			if row.Kind == api.KindTrace {
				if tok == "-" {
					continue
				}
				o.Kind, o.Transport, o.Query = api.KindTrace, api.TransportUDP, api.QueryParis
				if tok != "*" {
					for _, a := range strings.Split(tok, ",") {
						o.PathEnd = append(o.PathEnd, netip.MustParseAddr(a))
					}
				}
				out = append(out, fed{o: o})
				continue
			}
			toks := strings.Split(tok, "/")
			if len(toks) != 1 && len(toks) != len(streams) {
				t.Fatalf("row %s: token %q for %d streams", row.VP, tok, len(streams))
			}
			for i, spec := range streams {
				part := toks[0]
				if len(toks) > 1 {
					part = toks[i]
				}
				if part == "-" {
					continue
				}
				k := strings.Split(spec, "/")
				if len(k) != 3 {
					t.Fatalf("row %s: stream %q", row.VP, spec)
				}
				so := o
				so.Kind, so.Transport, so.Query = api.Kind(k[0]), api.Transport(k[1]), k[2]
				so.At = base.Add(time.Duration(i) * 100 * time.Millisecond)
				site := ""
				switch part {
				case "x":
					so.Failure = api.FailureTimeout
				case "xr":
					so.Failure = api.FailureConnectionRefused
				case "xs":
					so.Failure = api.FailureConnectionReset
				case "xu":
					so.Failure = api.FailureHostUnreachable
				case "R":
					so.Failure = api.FailureDNSRefused
				case "!":
					so.Failure = api.FailureNotAllowed
				case "?":
					so.Identity, so.RTT = "unknown.example", 20*time.Millisecond
				default:
					so.Identity, so.RTT, site = "ns1."+strings.ToLower(part)+".example", 20*time.Millisecond, part
				}
				out = append(out, fed{o: so, site: site})
			}
		}
	}
	slices.SortStableFunc(out, func(x, y fed) int { return x.o.At.Compare(y.o.At) })
	return out
}

func (f fixture) detector(t *testing.T) *Detector {
	t.Helper()
	iv := f.Interval
	if f.Config.Interval != 0 {
		iv = f.Config.Interval
	}
	d, err := New(Config{
		Interval: time.Duration(iv), MinFailures: f.Config.MinFailures,
		MinVantagePoints: f.Config.MinVantagePoints, OutageShare: f.Config.OutageShare,
		CatchmentShare: f.Config.CatchmentShare,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// run feeds the observations measured before until (all when zero).
func (f fixture) run(t *testing.T, until time.Time) []analysis.Incident {
	t.Helper()
	d := f.detector(t)
	for _, x := range f.observations(t) {
		if !until.IsZero() && !x.o.At.Before(until) {
			break
		}
		d.Add(x.o, x.site)
	}
	return d.Incidents()
}

func (w wantInc) address() netip.Addr {
	if w.Address == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(w.Address)
}

// same reports whether got is the incident w names (kind, target, address,
// site, start).
func (w wantInc) same(got analysis.Incident) bool {
	return got.Kind == w.Kind && got.Target == w.Target && got.Address == w.address() &&
		got.Site == w.Site && got.Start.Equal(t0.Add(time.Duration(w.Start)))
}

func describe(in []analysis.Incident) string {
	var b strings.Builder
	for _, i := range in {
		end := "open"
		if !i.Open() {
			end = i.End.Sub(t0).String()
		}
		vps := i.VantagePoints
		if len(vps) > 6 {
			vps = append(slices.Clip(vps[:5]), fmt.Sprintf("…%d in all", len(i.VantagePoints)))
		}
		fmt.Fprintf(&b, "\n  %s %s %v site=%q start=%v end=%s vps=%v evidence=%+v",
			i.Kind, i.Target, i.Address, i.Site, i.Start.Sub(t0), end, vps, i.Evidence)
	}
	if b.Len() == 0 {
		return " none"
	}
	return b.String()
}

func fixtures(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	return paths
}

// TestFixtures checks the exact incidents of every scenario.
func TestFixtures(t *testing.T) {
	t.Parallel()
	for _, path := range fixtures(t) {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".json"), func(t *testing.T) {
			t.Parallel()
			f := loadFixture(t, path)
			got := f.run(t, time.Time{})
			if len(got) != len(f.Want) {
				t.Fatalf("%s\ngot %d incidents:%s\nwant %d", f.Description, len(got), describe(got), len(f.Want))
			}
			for i, w := range f.Want {
				g := got[i]
				if !w.same(g) || !slices.Equal(g.VantagePoints, w.VantagePoints) {
					t.Errorf("incident %d:%s\nwant %+v", i, describe(got[i:i+1]), w)
				}
				switch {
				case w.End == nil && !g.Open():
					t.Errorf("incident %d ended at %v, want open", i, g.End.Sub(t0))
				case w.End != nil && !g.End.Equal(t0.Add(time.Duration(*w.End))):
					t.Errorf("incident %d: end %v, want %v", i, g.End.Sub(t0), time.Duration(*w.End))
				}
				if w.CatchmentSize != nil && g.Evidence.CatchmentSize != *w.CatchmentSize {
					t.Errorf("incident %d: catchment size %d, want %d", i, g.Evidence.CatchmentSize, *w.CatchmentSize)
				}
				if w.Healthy != nil && g.Evidence.Healthy != *w.Healthy {
					t.Errorf("incident %d: healthy %d, want %d", i, g.Evidence.Healthy, *w.Healthy)
				}
				if w.Failed != nil && !reflect.DeepEqual(g.Evidence.Failed, w.Failed) {
					t.Errorf("incident %d: failed %v, want %v", i, g.Evidence.Failed, w.Failed)
				}
				if w.PathEnds != nil {
					var ends []string
					for _, a := range g.Evidence.PathEnds {
						ends = append(ends, a.String())
					}
					if !slices.Equal(ends, w.PathEnds) {
						t.Errorf("incident %d: path ends %v, want %v", i, ends, w.PathEnds)
					}
				}
				if g.Evidence.Note == "" {
					t.Errorf("incident %d has no note", i)
				}
			}
		})
	}
}

// TestFixturesDetectedWithinThreeIntervals feeds every scenario only up to
// three intervals after each incident's start: the incident must be there.
func TestFixturesDetectedWithinThreeIntervals(t *testing.T) {
	t.Parallel()
	for _, path := range fixtures(t) {
		f := loadFixture(t, path)
		for i, w := range f.Want {
			t.Run(fmt.Sprintf("%s/%d", strings.TrimSuffix(filepath.Base(path), ".json"), i), func(t *testing.T) {
				t.Parallel()
				got := f.run(t, t0.Add(time.Duration(w.Start)+3*time.Duration(f.Interval)+1))
				if !slices.ContainsFunc(got, w.same) {
					t.Errorf("%s %s not detected within three intervals of %v; got:%s", w.Kind, w.Site, time.Duration(w.Start), describe(got))
				}
			})
		}
	}
}

// TestFixturesOpenUntilRestored feeds every scenario up to just before each
// incident's end: the incident must still be open.
func TestFixturesOpenUntilRestored(t *testing.T) {
	t.Parallel()
	for _, path := range fixtures(t) {
		f := loadFixture(t, path)
		for i, w := range f.Want {
			if w.End == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", strings.TrimSuffix(filepath.Base(path), ".json"), i), func(t *testing.T) {
				t.Parallel()
				got := f.run(t, t0.Add(time.Duration(*w.End)))
				k := slices.IndexFunc(got, w.same)
				if k < 0 || !got[k].Open() {
					t.Errorf("%s %s not open just before %v; got:%s", w.Kind, w.Site, time.Duration(*w.End), describe(got))
				}
			})
		}
	}
}
