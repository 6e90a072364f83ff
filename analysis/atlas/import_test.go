package atlas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// memStore is a Store in memory (the PostgreSQL one is tested in package
// store): it enforces what the real one does — known targets and vantage
// points, valid results, one copy per (vantage point, time, seq).
type memStore struct {
	mu      sync.Mutex
	vps     map[string]memVP
	targets map[string]*memTarget
	stored  map[string]api.Result // "vp/time/seq"
	batches []int
	fail    error // returned by Ingest when set
}

type memVP struct {
	lat, lon *float64
	asn      int
	country  string
}

type memTarget struct {
	addrs  []netip.Addr
	probes []string
}

func newMemStore() *memStore {
	return &memStore{vps: map[string]memVP{}, targets: map[string]*memTarget{}, stored: map[string]api.Result{}}
}

func (m *memStore) EnsureVantagePoint(_ context.Context, name string, lat, lon *float64, asn int, country string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vps[name] = memVP{lat, lon, asn, country}
	return name, nil
}

func (m *memStore) EnsureTarget(_ context.Context, name string, addrs []netip.Addr, probes ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.targets[name]
	if t == nil {
		if len(addrs) == 0 {
			return errors.New("new target without addresses")
		}
		t = &memTarget{}
		m.targets[name] = t
	}
	for _, a := range addrs {
		if !slices.Contains(t.addrs, a) {
			t.addrs = append(t.addrs, a)
		}
	}
	for _, p := range probes {
		if !slices.Contains(t.probes, p) {
			t.probes = append(t.probes, p)
		}
	}
	return nil
}

func (m *memStore) Ingest(_ context.Context, vp string, results []api.Result) (int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, 0, m.fail
	}
	if _, ok := m.vps[vp]; !ok {
		return 0, 0, fmt.Errorf("unknown vantage point %s", vp)
	}
	if len(results) == 0 || len(results) > api.MaxBatchResults {
		return 0, 0, fmt.Errorf("batch of %d", len(results))
	}
	m.batches = append(m.batches, len(results))
	acc, dup := 0, 0
	for _, r := range results {
		if err := r.Validate(); err != nil {
			return 0, 0, err
		}
		t := m.targets[r.Target]
		if t == nil || !slices.Contains(t.addrs, netip.MustParseAddr(r.Address)) || !slices.Contains(t.probes, string(r.Kind)) {
			return 0, 0, fmt.Errorf("result for %s %s %s: target not ensured", r.Target, r.Address, r.Kind)
		}
		key := fmt.Sprintf("%s/%s/%d", vp, r.MeasuredAt.Format(time.RFC3339Nano), r.Seq)
		if _, ok := m.stored[key]; ok {
			dup++
			continue
		}
		m.stored[key] = r
		acc++
	}
	return acc, dup, nil
}

func importFiles(t *testing.T, im *Importer[string], files ...string) {
	t.Helper()
	for _, name := range files {
		f, err := os.Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		err = im.Import(context.Background(), f, name)
		f.Close()
		if err != nil {
			t.Fatalf("Import %s: %v", name, err)
		}
	}
}

var dnsFixtures = []string{"dns-resultset.jsonl", "dns-rdata-list.json", "dns-rdata-string.json", "dns-nsid-abuf.json", "dns-servfail.json"}

func TestImportTwice(t *testing.T) {
	t.Parallel()
	st := newMemStore()
	im, err := NewImporter[string](st, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	importFiles(t, im, dnsFixtures...)
	first := im.Summary()
	if first.Records != 22 || first.Results != 32 || first.Stored != 32 || first.Duplicates != 0 || first.Malformed != 0 || first.VantagePoints != 20 {
		t.Errorf("first import: %+v", first)
	}
	// 9181948 gave no result: its only record is an error without address.
	wantTargets := []string{"atlas-9181951", "atlas-9181945", "atlas-9034841", "atlas-9034842", "atlas-9034843", "atlas-1423386", "atlas-1004048", "atlas-9034965"}
	if !slices.Equal(first.Targets, wantTargets) {
		t.Errorf("targets %q, want %q", first.Targets, wantTargets)
	}
	if first.Skipped[SkipNoAddress] != 1 || first.Skipped[SkipQueryUnknown] != 0 || len(first.Skipped) != 1 {
		t.Errorf("skipped %v", first.Skipped)
	}
	importFiles(t, im, dnsFixtures...)
	second := im.Summary()
	if second.Stored != first.Stored || second.Duplicates != first.Results || second.Results != 2*first.Results {
		t.Errorf("second import stored %d more, %d duplicates of %d results", second.Stored-first.Stored, second.Duplicates, first.Results)
	}
	if len(st.stored) != 32 {
		t.Errorf("%d results stored, want 32", len(st.stored))
	}
	if got := st.targets["atlas-9181945"]; len(got.addrs) != 19 || !slices.Equal(got.probes, []string{"dns"}) {
		t.Errorf("target atlas-9181945: %d addresses, probes %v", len(got.addrs), got.probes)
	}
}

func TestImportBatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		o    ImportOptions
		max  int // largest batch allowed
	}{
		{"batch size 2", ImportOptions{BatchSize: 2, Concurrency: 3}, 2},
		{"max pending 3", ImportOptions{BatchSize: 3, MaxPending: 3, Concurrency: 1}, 3},
		{"defaults", ImportOptions{}, api.MaxBatchResults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newMemStore()
			im, err := NewImporter[string](st, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			importFiles(t, im, dnsFixtures...)
			total := 0
			for _, b := range st.batches {
				if b > tc.max {
					t.Errorf("a batch of %d, want at most %d", b, tc.max)
				}
				total += b
			}
			if total != 32 || len(st.stored) != 32 {
				t.Errorf("%d results in batches, %d stored, want 32", total, len(st.stored))
			}
		})
	}
}

func TestImportTargets(t *testing.T) {
	t.Parallel()
	files := []string{"ping.json", "traceroute-paris.json", "traceroute-gap.json", "dns-rdata-string.json"}
	t.Run("per measurement", func(t *testing.T) {
		t.Parallel()
		st := newMemStore()
		im, _ := NewImporter[string](st, ImportOptions{})
		importFiles(t, im, files...)
		want := []string{"hsi.cablecom.ch", "atlas-1000158", "atlas-1000157", "atlas-1423386"}
		if got := im.Summary().Targets; !slices.Equal(got, want) {
			t.Errorf("targets %q, want %q (dst_name when it is a name, else the measurement)", got, want)
		}
		if got := st.targets["hsi.cablecom.ch"]; !slices.Equal(got.addrs, []netip.Addr{netip.MustParseAddr("62.2.16.24"), netip.MustParseAddr("62.2.16.12")}) || !slices.Equal(got.probes, []string{"ping"}) {
			t.Errorf("hsi.cablecom.ch: %+v", got)
		}
	})
	t.Run("one target", func(t *testing.T) {
		t.Parallel()
		st := newMemStore()
		im, _ := NewImporter[string](st, ImportOptions{Target: "k-root"})
		importFiles(t, im, files...)
		if got := im.Summary().Targets; !slices.Equal(got, []string{"k-root"}) || len(st.targets) != 1 {
			t.Errorf("targets %q", got)
		}
		if got := st.targets["k-root"]; len(got.addrs) != 5 || !slices.Equal(got.probes, []string{"ping", "trace", "dns"}) {
			t.Errorf("k-root: %+v", got)
		}
		if len(st.stored) != 7 {
			t.Errorf("%d stored, want 7", len(st.stored))
		}
	})
	t.Run("invalid target name", func(t *testing.T) {
		t.Parallel()
		if _, err := NewImporter[string](newMemStore(), ImportOptions{Target: "k root"}); err == nil {
			t.Error("no error")
		}
	})
}

func TestImportProbes(t *testing.T) {
	t.Parallel()
	st := newMemStore()
	lat, lon := 60.17, 24.94
	im, _ := NewImporter[string](st, ImportOptions{Probes: map[int64]Probe{
		6036: {ID: 6036, Latitude: lat, Longitude: lon, HasCoords: true, ASN: 64500, Country: "FI"},
	}})
	importFiles(t, im, "dns-rdata-string.json", "dns-nsid-abuf.json")
	got := st.vps["atlas-6036"]
	if got.lat == nil || *got.lat != lat || *got.lon != lon || got.asn != 64500 || got.country != "FI" {
		t.Errorf("atlas-6036: %+v", got)
	}
	if other := st.vps["atlas-14184"]; other.lat != nil || other.asn != 0 || other.country != "" {
		t.Errorf("atlas-14184 (not in the archive): %+v", other)
	}
}

func TestImportReport(t *testing.T) {
	t.Parallel()
	st := newMemStore()
	var progress []Progress
	im, _ := NewImporter[string](st, ImportOptions{Progress: func(p Progress) { progress = append(progress, p) }, ProgressEvery: 5})
	importFiles(t, im, "malformed-mixed.jsonl")
	s := im.Summary()
	if s.Records != 11 || s.Malformed != 8 || len(s.FirstMalformed) != 8 || s.Results != 2 || s.Stored != 2 {
		t.Errorf("summary %+v", s)
	}
	if m := s.FirstMalformed[0]; m.Position != (Position{1, 511, 2}) {
		t.Errorf("first malformed %v", m)
	}
	if s.Skipped[`type "http" not imported`] != 1 {
		t.Errorf("skipped %v", s.Skipped)
	}
	want := []Progress{
		{Input: "malformed-mixed.jsonl", Stats: Stats{Records: 5, Bytes: 4801}},
		{Input: "malformed-mixed.jsonl", Stats: Stats{Records: 10, Bytes: 4801}},
		{Input: "malformed-mixed.jsonl", Stats: Stats{Records: 11, Bytes: 4801}, Done: true},
	}
	if !slices.Equal(progress, want) {
		t.Errorf("progress %+v, want %+v", progress, want)
	}
}

func TestImportFailures(t *testing.T) {
	t.Parallel()
	t.Run("store fails", func(t *testing.T) {
		t.Parallel()
		st := newMemStore()
		st.fail = errors.New("database on fire")
		im, _ := NewImporter[string](st, ImportOptions{})
		f, _ := os.Open(filepath.Join("testdata", "dns-resultset.jsonl"))
		defer f.Close()
		err := im.Import(context.Background(), f, "x")
		if !errors.Is(err, ErrStore) || !errors.Is(err, st.fail) {
			t.Errorf("error %v, want ErrStore wrapping the store's", err)
		}
	})
	t.Run("input fails", func(t *testing.T) {
		t.Parallel()
		st := newMemStore()
		im, _ := NewImporter[string](st, ImportOptions{})
		in := io.MultiReader(strings.NewReader(krootRecord(3)+"\n"), iotest.ErrReader(errors.New("cable cut")))
		if err := im.Import(context.Background(), in, "cut.jsonl"); err != nil {
			t.Fatal(err)
		}
		s := im.Summary()
		if len(s.ReadErrors) != 1 || !strings.Contains(s.ReadErrors[0].Error(), "cut.jsonl") || s.Stored != 1 {
			t.Errorf("summary %+v: want the read error and the record before it stored", s)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		t.Parallel()
		im, _ := NewImporter[string](newMemStore(), ImportOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := im.Import(ctx, strings.NewReader(krootRecord(3)), "x"); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("options", func(t *testing.T) {
		t.Parallel()
		for _, o := range []ImportOptions{
			{BatchSize: api.MaxBatchResults + 1},
			{BatchSize: 10, MaxPending: 5},
			{Concurrency: 100},
			{Parse: Options{Query: "bogus"}},
		} {
			if _, err := NewImporter[string](newMemStore(), o); err == nil {
				t.Errorf("NewImporter(%+v): no error", o)
			}
		}
	})
}
