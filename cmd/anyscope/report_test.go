package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/synth"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

func TestReportFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cmd  ReportCmd
		ok   bool
	}{
		{"once", ReportCmd{}, true},
		{"once-into-dir", ReportCmd{OutDir: "d"}, true},
		{"every", ReportCmd{Every: time.Hour, OutDir: "d"}, true},
		{"every-needs-out-dir", ReportCmd{Every: time.Hour}, false},
		{"every-negative", ReportCmd{Every: -time.Hour, OutDir: "d"}, false},
		{"every-too-fast", ReportCmd{Every: time.Millisecond, OutDir: "d"}, false},
		{"every-with-since", ReportCmd{Every: time.Hour, OutDir: "d", Since: "2h"}, false},
		{"every-with-until", ReportCmd{Every: time.Hour, OutDir: "d", Until: "1h"}, false},
		{"output-and-out-dir", ReportCmd{Output: "f", OutDir: "d"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cmd.validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, errReportFlags)) {
				t.Errorf("validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestEarlierWindow(t *testing.T) {
	t.Parallel()
	since := time.Date(2025, 3, 2, 6, 0, 0, 0, time.UTC)
	until := since.Add(24 * time.Hour)
	tests := []struct {
		spec                 string
		wantSince, wantUntil time.Time
		wantErr              string
	}{
		{"24h", since.Add(-24 * time.Hour), since, ""},
		{"1h", since.Add(-time.Hour), until.Add(-time.Hour), ""},
		{" 168h ", since.Add(-168 * time.Hour), until.Add(-168 * time.Hour), ""},
		{"2025-02-01T00:00:00Z", time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 2, 2, 0, 0, 0, 0, time.UTC), ""},
		{"2025-03-02T06:00:00Z", time.Time{}, time.Time{}, "does not start before"},
		{"0s", time.Time{}, time.Time{}, "must be positive"},
		{"-24h", time.Time{}, time.Time{}, "must be positive"},
		{"yesterday", time.Time{}, time.Time{}, "neither a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			t.Parallel()
			s, u, err := earlierWindow(tt.spec, since, until)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !s.Equal(tt.wantSince) || !u.Equal(tt.wantUntil) {
				t.Errorf("= %s, %s, %v; want %s, %s", s, u, err, tt.wantSince, tt.wantUntil)
			}
		})
	}
}

// flakySource fails its first Targets call, like a database that is down
// when the first report is due.
type flakySource struct {
	analysis.Source
	calls atomic.Int32
}

func (f *flakySource) Targets(ctx context.Context) ([]analysis.Target, error) {
	if f.calls.Add(1) == 1 {
		return nil, errors.New("database is down")
	}
	return f.Source.Targets(ctx)
}

// --every: each tick writes report-<end of window> and latest, compared
// with the window before; a failed run is logged and the next tick tries
// again; the end of the context stops it without an error. The clock and
// the ticks are the test's: the third reading of the clock cancels.
func TestReportRepeat(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	w, err := synth.New(synth.Config{Seed: 3, Sites: 3, VantagePoints: 12, Targets: 1, Start: t0, Duration: 4 * time.Hour, Interval: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	src := &flakySource{Source: w.Source()}
	dir := filepath.Join(t.TempDir(), "reports")
	c := &ReportCmd{Format: "json", Every: time.Hour, OutDir: dir}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	clock := []time.Time{t0.Add(2 * time.Hour), t0.Add(3*time.Hour + 500*time.Millisecond), t0.Add(4 * time.Hour), t0.Add(5 * time.Hour)}
	var reads int
	now := func() time.Time {
		if reads++; reads == len(clock) {
			cancel()
		}
		return clock[reads-1]
	}
	tick := make(chan time.Time)
	close(tick) // always due
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := c.repeat(ctx, log, src, now, tick); err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if !strings.Contains(logs.String(), "database is down") {
		t.Errorf("the failed first run was not logged:\n%s", logs.String())
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// The first run failed, the fourth was cancelled: 03:00 and 04:00.
	want := []string{"latest.json", "report-20250101T030000Z.json", "report-20250101T040000Z.json"}
	if !slices.Equal(names, want) {
		t.Fatalf("files %q, want %q (no temporary file left)", names, want)
	}
	last, err := os.ReadFile(filepath.Join(dir, want[2]))
	if err != nil {
		t.Fatal(err)
	}
	latest, _ := os.ReadFile(filepath.Join(dir, "latest.json"))
	if !bytes.Equal(last, latest) {
		t.Errorf("latest.json is not the last report")
	}
	var rep struct {
		Since   time.Time `json:"since"`
		Until   time.Time `json:"until"`
		Targets []struct {
			Catchment []json.RawMessage `json:"catchment"`
			Changes   *struct {
				Since time.Time `json:"since"`
				Until time.Time `json:"until"`
			} `json:"changes"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(last, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Since.Equal(t0.Add(3*time.Hour)) || !rep.Until.Equal(t0.Add(4*time.Hour)) {
		t.Errorf("window %s..%s, want the hour that just ended", rep.Since, rep.Until)
	}
	if len(rep.Targets) != 1 || len(rep.Targets[0].Catchment) != len(w.VantagePoints()) || rep.Targets[0].Changes == nil ||
		!rep.Targets[0].Changes.Since.Equal(t0.Add(2*time.Hour)) || !rep.Targets[0].Changes.Until.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("report %s, want a catchment row per vantage point (synth probes one address), compared with the hour before", last)
	}
	if fi, err := os.Stat(filepath.Join(dir, want[1])); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("report file mode %v, %v; want 0644", fi.Mode(), err)
	}
}

// The command against a real database: the one-shot formats, then
// --every 1s until SIGTERM.
func TestReportCommand(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.DB(t)
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	interval := time.Minute
	start := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Hour)
	w, err := synth.New(synth.Config{Seed: 5, Sites: 3, VantagePoints: 8, Targets: 1, Start: start, Duration: 2 * time.Hour, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	if err := declareWorld(ctx, st, dsn, w, interval); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnsurePartitions(ctx, start, start.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := loadObservations(ctx, dsn, w.Observations); err != nil {
		t.Fatal(err)
	}
	target := w.Targets()[0].Name
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, binary, append([]string{"report", "--db", dsn}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("report %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.Bytes()
	}

	t.Run("csv", func(t *testing.T) {
		recs, err := csv.NewReader(bytes.NewReader(run("--format", "csv", "--since", "1h"))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1+len(w.VantagePoints()) || strings.Join(recs[0], ",") != "target,vantage_point,address,site,observations,confidence,method" || recs[1][0] != target {
			t.Errorf("CSV %q", recs)
		}
	})
	t.Run("html-to-file", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "r.html")
		run("--format", "html", "--since", "1h", "--compare-to", "1h", "-o", out)
		page, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`content="default-src &#39;none&#39;; style-src &#39;unsafe-inline&#39;; img-src data:"`, "<svg", "What changed since", target} {
			if !bytes.Contains(page, []byte(want)) {
				t.Errorf("page lacks %q", want)
			}
		}
	})
	t.Run("md-compared", func(t *testing.T) {
		md := run("--format", "md", "--since", "1h", "--compare-to", start.Format(time.RFC3339))
		if !bytes.Contains(md, []byte("Compared with "+start.Format(time.RFC3339))) {
			t.Errorf("Markdown does not compare with the first hour:\n%s", md)
		}
	})

	t.Run("every", func(t *testing.T) {
		dir := t.TempDir()
		cmd := exec.CommandContext(ctx, binary, "report", "--db", dsn, "--every", "1s", "--out-dir", dir, "--format", "html")
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		reports := func() []string {
			m, _ := filepath.Glob(filepath.Join(dir, "report-*.html"))
			return m
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		for len(reports()) < 2 {
			select {
			case err := <-done:
				t.Fatalf("report --every stopped on its own: %v\n%s", err, stderr.String())
			case <-time.After(50 * time.Millisecond): // poll
			}
			if strings.Contains(stderr.String(), "report failed") {
				cmd.Process.Kill()
				<-done
				t.Fatalf("a run failed:\n%s", stderr.String())
			}
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("report --every after SIGTERM: %v\n%s", err, stderr.String())
		}
		if n := len(reports()); n < 2 {
			t.Fatalf("%d reports written:\n%s", n, stderr.String())
		}
		latest, err := os.ReadFile(filepath.Join(dir, "latest.html"))
		if err != nil || !bytes.Contains(latest, []byte(target)) || !bytes.Contains(latest, []byte("What changed since")) {
			t.Errorf("latest.html (%v) is not a compared report of %s", err, target)
		}
		if leftovers, _ := filepath.Glob(filepath.Join(dir, ".report-*")); len(leftovers) > 0 {
			t.Errorf("temporary files left: %q", leftovers)
		}
	})
}

// lockedBuffer is a bytes.Buffer a child process writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
