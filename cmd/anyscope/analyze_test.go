package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/analyzer"
	"github.com/anyscope/anyscope/analysis/catchment"
	"github.com/anyscope/anyscope/analysis/synth"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// The incremental analyzer, fed a world in two deliveries and restarted in
// between, stores the same switches and incidents as one analysis of the
// whole window.
func TestIncrementalMatchesOneShot(t *testing.T) {
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
	cfg := synth.Config{Seed: 11, Sites: 6, VantagePoints: 60, Targets: 2, Start: start, Duration: 2 * time.Hour, Interval: interval}
	base, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := base.Targets()
	cfg.Events = []synth.Event{
		synth.Withdraw{Target: ts[0].Name, Site: ts[0].Sites[0].Code, From: start.Add(40 * time.Minute), Until: start.Add(80 * time.Minute)},
		synth.Blackhole{Target: ts[1].Name, Site: ts[1].Sites[1].Code, From: start.Add(55 * time.Minute), Until: start.Add(90 * time.Minute)},
	}
	w, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := declareWorld(ctx, st, dsn, w, interval); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnsurePartitions(ctx, start, start.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	deliver := func(from, to time.Time) {
		t.Helper()
		if _, err := loadObservations(ctx, dsn, func(emit func(analysis.Observation) error) error {
			return w.Observations(func(o analysis.Observation) error {
				if o.At.Before(from) || !o.At.Before(to) {
					return nil
				}
				return emit(o)
			})
		}); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	step := func(inc *incremental) {
		t.Helper()
		time.Sleep(10 * time.Millisecond) // received_at of what was just delivered is now in the past
		if _, err := inc.step(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// First delivery ends inside the black hole.
	deliver(start, start.Add(70*time.Minute))
	inc, err := newIncremental(ctx, st, "test", time.Hour, 0, 48*time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	step(inc)
	open, err := st.StoredIncidents(ctx, "", start, start.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].Kind != analysis.IncidentBlackhole || !open[0].Open() {
		t.Errorf("after the first delivery: stored incidents %+v, want one open black hole", open)
	}

	// A restart, then the rest.
	deliver(start.Add(70*time.Minute), start.Add(2*time.Hour))
	inc, err = newIncremental(ctx, st, "test", time.Hour, 0, 48*time.Hour, log)
	if err != nil {
		t.Fatal(err)
	}
	step(inc)
	step(inc) // nothing new: nothing changes

	want, err := analyzer.Run(ctx, st, "", analyzer.Config{Window: catchment.Window{Since: start, Until: start.Add(3 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.StoredIncidents(ctx, "", start, start.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	describe := func(ins []analysis.Incident) []string {
		var out []string
		for _, in := range ins {
			out = append(out, fmt.Sprintf("%s %s %s %v %s–%s", in.Kind, in.Target, in.Site, in.VantagePoints, in.Start.Format(time.TimeOnly), in.End.Format(time.TimeOnly)))
		}
		slices.Sort(out)
		return out
	}
	if g, w := describe(got), describe(want.Incidents); !slices.Equal(g, w) {
		t.Errorf("stored incidents\n%v\nwant (one-shot)\n%v", g, w)
	}
	if len(want.Incidents) != 1 {
		t.Errorf("one-shot analysis found %d incidents, want the black hole only", len(want.Incidents))
	}

	var wantSwitches []string
	for _, s := range want.Switches {
		wantSwitches = append(wantSwitches, fmt.Sprintf("%s %s %s→%s %s %s", s.VantagePoint, s.Target, s.From, s.To, s.At.UTC().Format(time.RFC3339Nano), s.Cause))
	}
	slices.Sort(wantSwitches)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT a.name || ' ' || t.name || ' ' || s.from_site || '→' || s.to_site || ' ' ||
		to_char(s.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || ' ' || s.cause
		FROM switches s JOIN agents a ON a.id = s.agent_id JOIN targets t ON t.id = s.target_id`)
	if err != nil {
		t.Fatal(err)
	}
	gotSwitches, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	// Microseconds are what PostgreSQL keeps.
	for i, s := range wantSwitches {
		var vp, tg, move, at, cause string
		fmt.Sscan(s, &vp, &tg, &move, &at, &cause)
		ts, _ := time.Parse(time.RFC3339Nano, at)
		wantSwitches[i] = fmt.Sprintf("%s %s %s %s %s", vp, tg, move, ts.Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000"), cause)
	}
	slices.Sort(gotSwitches)
	if !slices.Equal(gotSwitches, wantSwitches) {
		t.Errorf("stored %d switches, one-shot %d; first differences:\n%v", len(gotSwitches), len(wantSwitches), firstDiff(gotSwitches, wantSwitches))
	}
	if len(wantSwitches) == 0 {
		t.Error("the withdrawal caused no switch: the world tests nothing")
	}
}

func firstDiff(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) && len(out) < 5 {
			out = append(out, "stored only: "+s)
		}
	}
	for _, s := range b {
		if !slices.Contains(a, s) && len(out) < 10 {
			out = append(out, "one-shot only: "+s)
		}
	}
	return out
}
