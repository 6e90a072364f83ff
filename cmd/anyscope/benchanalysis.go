package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/synth"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
)

// BenchAnalysisCmd measures analysis at RIPE Atlas scale: a synthetic day
// of root-server CHAOS results (every vantage point asks every target every
// 4 minutes) stored in PostgreSQL, analysed in full by `anyscope analyze`
// in a child process (its peak RSS is its own), and incrementally over the
// newest 4 minutes. The reference is the same rows read out of PostgreSQL
// by the same scan with nothing done to them.
type BenchAnalysisCmd struct {
	DB            string        `name:"db" help:"PostgreSQL to use (default: a throwaway private cluster)." placeholder:"DSN"`
	VantagePoints int           `help:"Vantage points." default:"12000"`
	Targets       int           `help:"Targets (13: the root letters)." default:"13"`
	Sites         int           `help:"Sites in the world (each target uses a subset)." default:"50"`
	Span          time.Duration `help:"Measured time before the incremental slice." default:"4h30m"`
	Interval      time.Duration `help:"Probe interval of every vantage point." default:"4m"`
	Seed          int64         `help:"Seed of the synthetic world." default:"2017"`
}

// Run loads the world, then measures.
func (c *BenchAnalysisCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.VantagePoints < 1 || c.Targets < 1 || c.Sites < 2 || c.Span < c.Interval || c.Interval <= 0 {
		return errors.New("need --vantage-points ≥ 1, --targets ≥ 1, --sites ≥ 2 and --span ≥ --interval > 0")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dsn := c.DB
	if dsn == "" {
		dir, err := os.MkdirTemp("", "anyscope-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		cl, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Fsync: false, Logger: log})
		if err != nil {
			return err
		}
		defer cl.Stop(context.Background())
		dsn = cl.ConnString("anyscope")
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}

	// The world ends now, as a live deployment's data does.
	start := time.Now().UTC().Truncate(time.Minute).Add(-c.Span - c.Interval)
	split := start.Add(c.Span)
	cfg := synth.Config{
		Seed: c.Seed, Sites: c.Sites, VantagePoints: c.VantagePoints, Targets: c.Targets,
		Start: start, Duration: c.Span + c.Interval, Interval: c.Interval,
	}
	w, err := synth.New(cfg)
	if err != nil {
		return err
	}
	// What analysis is for: every target loses a site for an hour, one
	// site of the first target is black-holed for half an hour, and 1% of
	// the vantage points flap between two sites (Wei & Heidemann's figure).
	for i, t := range w.Targets() {
		at := start.Add(time.Duration(i+1) * c.Span / time.Duration(c.Targets+2))
		cfg.Events = append(cfg.Events, synth.Withdraw{Target: t.Name, Site: t.Sites[0].Code, From: at, Until: at.Add(time.Hour)})
		if i == 0 && len(t.Sites) > 2 {
			cfg.Events = append(cfg.Events, synth.Blackhole{Target: t.Name, Site: t.Sites[1].Code, From: at, Until: at.Add(30 * time.Minute)})
		}
	}
	ts := w.Targets()
	for i, vp := range w.VantagePoints() {
		if i%100 == 0 {
			t := ts[i/100%len(ts)]
			cfg.Events = append(cfg.Events, synth.Flapper{VantagePoint: vp.Name, Target: t.Name, Sites: []string{t.Sites[len(t.Sites)-1].Code, t.Sites[len(t.Sites)-2].Code}, From: start})
		}
	}
	if w, err = synth.New(cfg); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench analysis: loading %d vantage points × %d targets every %s over %s (+%s for the incremental run)\n",
		c.VantagePoints, c.Targets, c.Interval, c.Span, c.Interval)
	loadStart := time.Now()
	if err := declareWorld(ctx, st, dsn, w, c.Interval); err != nil {
		return err
	}
	if _, err := st.EnsurePartitions(ctx, start, split.Add(c.Interval)); err != nil {
		return err
	}
	var (
		tail  []analysis.Observation
		total int
	)
	loaded, err := loadObservations(ctx, dsn, func(emit func(analysis.Observation) error) error {
		return w.Observations(func(o analysis.Observation) error {
			if !o.At.Before(split) {
				tail = append(tail, o)
				return nil
			}
			return emit(o)
		})
	})
	if err != nil {
		return err
	}
	total += loaded
	fmt.Fprintf(os.Stderr, "bench analysis: %d results stored in %s\n", loaded, time.Since(loadStart).Round(time.Second))

	// The incremental analyzer has read everything so far; the newest slice
	// arrives after.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `VACUUM ANALYZE results`); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `INSERT INTO analysis_state (name, received_through) VALUES ('bench', now())`); err != nil {
		return err
	}
	time.Sleep(10 * time.Millisecond)
	n, err := loadObservations(ctx, dsn, func(emit func(analysis.Observation) error) error {
		for _, o := range tail {
			if err := emit(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	total += n

	// Reference: the same rows read by the same scan, doing nothing; run
	// before and after the analysis, the faster counts (a warm cache).
	scanSeconds := 0.0
	var scanned store.ScanStats
	reference := func() error {
		t := time.Now()
		var err error
		if scanned, err = st.Scan(ctx, store.ScanOptions{Since: start, Until: split.Add(c.Interval)}, func(analysis.Observation) error { return nil }); err != nil {
			return err
		}
		if d := time.Since(t).Seconds(); scanSeconds == 0 || d < scanSeconds {
			scanSeconds = d
		}
		return nil
	}
	if err := reference(); err != nil {
		return err
	}

	// Incremental: warm up from the last hour, then one step over the slice.
	inc, err := newIncremental(ctx, st, "bench", time.Hour, 0, 48*time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	ss, err := inc.step(ctx)
	if err != nil {
		return err
	}

	// Full analysis in a child process.
	cmd := exec.CommandContext(ctx, self, "analyze", "--db", dsn,
		"--since", start.Format(time.RFC3339), "--until", split.Add(c.Interval).Format(time.RFC3339))
	cmd.Stderr = os.Stderr
	fullStart := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("anyscope analyze: %w", err)
	}
	// The child's peak RSS is its VmHWM, polled until it exits: the
	// rusage of a child started with vfork+exec also counts the parent's
	// memory at the fork.
	var hwmKB uint64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(20 * time.Millisecond)
poll:
	for {
		if p, err := readProc(cmd.Process.Pid); err == nil {
			hwmKB = max(hwmKB, p.hwmKB, p.rssKB)
		}
		select {
		case err := <-done:
			tick.Stop()
			if err != nil {
				return fmt.Errorf("anyscope analyze: %w", err)
			}
			break poll
		case <-tick.C:
		}
	}
	fullSeconds := time.Since(fullStart).Seconds()
	rssMB := float64(hwmKB) * 1024 / 1e6
	if err := reference(); err != nil {
		return err
	}

	fmt.Printf("scan (reference): %d results in %.1f s (%.0f results/s)\n", scanned.Rows, scanSeconds, float64(scanned.Rows)/scanSeconds)
	fmt.Printf("incremental: %d new results analysed and saved in %.2f s (%d catchment rows, %d switches, %d incidents)\n",
		ss.rows, ss.took.Seconds(), ss.saved.Catchments, ss.saved.Switches, ss.saved.Incidents)
	fmt.Printf("full analysis: %d results in %.1f s, %.2f× the reference scan's time\n", total, fullSeconds, fullSeconds/scanSeconds)
	fmt.Printf("BENCH analysis_results_per_s=%.0f seconds=%.1f peak_rss_mb=%.0f\n", float64(total)/fullSeconds, fullSeconds, rssMB)
	return nil
}

// declareWorld registers a synthetic world's vantage points (with their
// locations) and targets (with their sites).
func declareWorld(ctx context.Context, st *store.Store, dsn string, w *synth.World, interval time.Duration) error {
	var ts []store.Target
	for _, t := range w.Targets() {
		ts = append(ts, store.Target{Name: t.Name, Addresses: t.Addresses, Probes: []string{"dns"}, Interval: interval, Sites: t.Sites})
	}
	if _, err := st.ApplyTargets(ctx, ts); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var rows [][]any
	for _, vp := range w.VantagePoints() {
		rows = append(rows, []any{vp.Name, vp.Latitude, vp.Longitude, "synth"})
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{"agents"}, []string{"name", "latitude", "longitude", "region"}, pgx.CopyFromRows(rows))
	return err
}

// loadObservations COPYs the observations produce emits into results over
// two connections (split by vantage point), numbering each vantage point's
// results, and returns how many it stored.
func loadObservations(ctx context.Context, dsn string, produce func(emit func(analysis.Observation) error) error) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	ids := map[string]int64{}
	seqs := map[int64]int64{}
	targets := map[string]int64{}
	for _, q := range []struct {
		sql string
		m   map[string]int64
	}{{`SELECT name, id FROM agents`, ids}, {`SELECT name, id FROM targets`, targets}} {
		rows, _ := conn.Query(ctx, q.sql)
		var (
			name string
			id   int64
		)
		if _, err := pgx.ForEachRow(rows, []any{&name, &id}, func() error { q.m[name] = id; return nil }); err != nil {
			conn.Close(ctx)
			return 0, err
		}
	}
	// Continue numbering after what is stored.
	rows, _ := conn.Query(ctx, `SELECT agent_id, max(seq) FROM results GROUP BY agent_id`)
	var (
		aid, mx int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&aid, &mx}, func() error { seqs[aid] = mx; return nil }); err != nil {
		conn.Close(ctx)
		return 0, err
	}
	conn.Close(ctx)

	const streams = 2
	chans := make([]chan []any, streams)
	errs := make([]error, streams)
	counts := make([]int64, streams)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range chans {
		chans[i] = make(chan []any, 4096)
		wg.Go(func() {
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs[i] = err
				cancel()
				for range chans[i] {
				}
				return
			}
			defer c.Close(context.Background())
			counts[i], errs[i] = c.CopyFrom(ctx, pgx.Identifier{"results"},
				[]string{"agent_id", "seq", "round", "measured_at", "target_id", "address", "kind", "transport", "query", "failure", "rtt_us", "identity"},
				&chanSource{ch: chans[i]})
			if errs[i] != nil {
				cancel()
				for range chans[i] {
				}
			}
		})
	}
	perr := produce(func(o analysis.Observation) error {
		id := ids[o.VantagePoint]
		seqs[id]++
		var rtt, identity any
		if o.RTT > 0 {
			rtt = o.RTT.Microseconds()
		}
		if o.Identity != "" {
			identity = o.Identity
		}
		row := []any{id, seqs[id], nil, o.At, targets[o.Target], o.Address, string(o.Kind), string(o.Transport), o.Query, string(o.Failure), rtt, identity}
		select {
		case chans[id%streams] <- row:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	for _, ch := range chans {
		close(ch)
	}
	wg.Wait()
	if err := errors.Join(append(errs, perr)...); err != nil {
		return 0, err
	}
	return int(counts[0] + counts[1]), nil
}

// chanSource feeds CopyFrom from a channel.
type chanSource struct {
	ch  chan []any
	row []any
}

func (s *chanSource) Next() bool {
	row, ok := <-s.ch
	s.row = row
	return ok
}
func (s *chanSource) Values() ([]any, error) { return s.row, nil }
func (s *chanSource) Err() error             { return nil }
