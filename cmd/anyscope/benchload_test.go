package main

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
)

// TestLoadGenerator: what a simulated agent sends is what a real agent
// sends: batches the collector's validation accepts, sequence numbers 1, 2,
// 3, … without a hole, rounds numbered by their first result, every probe
// kind, a trace's hops unique by (TTL, attempt) as their table's key needs.
func TestLoadGenerator(t *testing.T) {
	t.Parallel()
	jobs := []loadJob{{"bench-01", "192.0.2.53"}, {"bench-01", "2001:db8:53::53"}}
	g := newLoadGen(7, jobs)
	now := time.Now()
	var all []api.Result
	for _, n := range []int{1, 80, 500, 3} {
		rs := g.results(n, now)
		if len(rs) < n {
			t.Fatalf("asked for %d results, got %d", n, len(rs))
		}
		b := api.Batch{Agent: "load-000-1", BatchSeq: 1, Results: rs}
		if err := b.Validate(); err != nil {
			t.Fatalf("batch of %d results: %v", len(rs), err)
		}
		all = append(all, rs...)
	}
	kinds := map[api.Kind]int{}
	failed := 0
	rounds := map[uint64]bool{}
	for i, r := range all {
		if r.Seq != uint64(i+1) {
			t.Fatalf("results[%d] has seq %d, want %d", i, r.Seq, i+1)
		}
		if r.Round == r.Seq {
			rounds[r.Round] = true
		} else if !rounds[r.Round] {
			t.Fatalf("seq %d: round %d does not start at one of its results", r.Seq, r.Round)
		}
		kinds[r.Kind]++
		if r.Failure != api.FailureNone {
			failed++
		}
		if r.Trace != nil {
			seen := map[[2]int]bool{}
			for _, h := range r.Trace.Hops {
				k := [2]int{h.TTL, h.Attempt}
				if seen[k] {
					t.Fatalf("seq %d: hop (ttl %d, attempt %d) twice", r.Seq, h.TTL, h.Attempt)
				}
				seen[k] = true
			}
		}
	}
	for _, k := range api.Kinds {
		if kinds[k] == 0 {
			t.Errorf("no %s result among %d", k, len(all))
		}
	}
	if failed == 0 || failed == len(all) {
		t.Errorf("%d of %d results failed: want some, not all", failed, len(all))
	}
}

// TestWithPoolSize: the collector's pool size goes into either form of
// connection string.
func TestWithPoolSize(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		dsn  string
		n    int
		want string
	}{
		{"host=/tmp port=5432 dbname=anyscope", 0, "host=/tmp port=5432 dbname=anyscope"},
		{"host=/tmp port=5432 dbname=anyscope", 8, "host=/tmp port=5432 dbname=anyscope pool_max_conns=8"},
		{"postgres://u@db.example.org/anyscope?sslmode=require", 8, "postgres://u@db.example.org/anyscope?pool_max_conns=8&sslmode=require"},
	} {
		if got, err := withPoolSize(tt.dsn, tt.n); err != nil || got != tt.want {
			t.Errorf("withPoolSize(%q, %d) = %q, %v; want %q", tt.dsn, tt.n, got, err, tt.want)
		}
	}
}

// TestPercentile: nearest rank.
func TestPercentile(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(ds[:1], 99); got != time.Millisecond {
		t.Errorf("percentile of one sample = %v", got)
	}
	if got := latencyStats(nil); got.n != 0 || got.max != 0 {
		t.Errorf("latencyStats(nil) = %+v", got)
	}
}

// TestBenchLoadShort runs the load benchmark briefly: 200 agents at once
// against the real collector process, with small batches, and with the
// collector's limits set so tight that it must push back: each agent may
// make 2 requests at once and one every 2 s on average while it tries one
// a second (429s), and one batch is stored at a time (503s when the wait
// for it is over). It fails on any error other than that backpressure (the
// benchmark exits non-zero), and checks in PostgreSQL itself that every
// acknowledged result is stored once: per agent, stored = distinct
// sequence numbers = highest, and in all as many as were acknowledged.
// Nothing is timed.
func TestBenchLoadShort(t *testing.T) {
	dsn := pgtest.DB(t)
	cmd := exec.Command(binary, "bench", "load", "--db", dsn, "--agents", "200", "--duration", "15s",
		"--rate", "10", "--interval", "1s", "--reference-batches", "1",
		"--collector-arg=--agent-request-rate=0.5", "--collector-arg=--agent-request-burst=2",
		"--collector-arg=--max-ingest=1", "--collector-arg=--ingest-wait=50ms")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	if err != nil || strings.Contains(out+stderr.String(), "WARNING: DATA RACE") {
		t.Fatalf("bench load: %v\n%s\n%s", err, out, stderr.String())
	}
	t.Logf("bench load:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^BENCH load_p99_ms=[0-9.]+ results_per_s=[0-9]+ collector_rss_mb=[0-9.]+ errors=0$`).MatchString(last) {
		t.Fatalf("last line %q is not the BENCH line with errors=0", last)
	}
	m := regexp.MustCompile(`(?m)^acknowledged: \d+ batches .*?, (\d+) results \(`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no acknowledged count in the output")
	}
	acked, _ := strconv.ParseInt(m[1], 10, 64)
	if acked == 0 {
		t.Fatalf("nothing was acknowledged")
	}
	// 200 agents × about 15 attempts in 15 s against a budget of 2 + 7.5
	// requests each: the rate limit must have answered 429, and the
	// agents must have waited and re-sent.
	if m := regexp.MustCompile(`(?m)^requests: .*\b429: (\d+)`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("no 429 answered: the simulated agents' handling of Retry-After was not exercised")
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT a.name, count(r.seq), count(DISTINCT r.seq), coalesce(max(r.seq), 0)
		FROM agents a LEFT JOIN results r ON r.agent_id = a.id
		WHERE a.name LIKE 'load-%' AND a.name NOT LIKE 'load-ref-%' GROUP BY a.name`)
	if err != nil {
		t.Fatal(err)
	}
	agents, stored := 0, int64(0)
	for rows.Next() {
		var name string
		var n, distinct, highest int64
		if err := rows.Scan(&name, &n, &distinct, &highest); err != nil {
			t.Fatal(err)
		}
		agents++
		stored += n
		if n != distinct || n != highest {
			t.Errorf("%s: %d results stored, %d distinct sequence numbers, highest %d", name, n, distinct, highest)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if agents != 200 || stored != acked {
		t.Errorf("%d agents with %d results stored; want 200 agents and the %d results acknowledged", agents, stored, acked)
	}
}
