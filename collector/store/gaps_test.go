package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

func ingestGaps(t *testing.T, st *store.Store, a store.Agent, gs []api.Gap, wantAccepted, wantDup int) {
	t.Helper()
	acc, dup, err := st.IngestGaps(t.Context(), a, gs)
	if err != nil {
		t.Fatalf("IngestGaps: %v", err)
	}
	if acc != wantAccepted || dup != wantDup {
		t.Fatalf("IngestGaps = %d accepted, %d duplicates; want %d, %d", acc, dup, wantAccepted, wantDup)
	}
}

func accounting(t *testing.T, st *store.Store, agent string) store.SeqAccount {
	t.Helper()
	acc, err := st.SeqAccounting(t.Context(), agent)
	if err != nil {
		t.Fatalf("SeqAccounting: %v", err)
	}
	return acc
}

func TestIngestGapsIsIdempotent(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	a, _ := seed(t, st)
	at := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	full := api.Gap{FirstSeq: 11, LastSeq: 20, Count: 10, LostFrom: at, LostTo: at.Add(9 * time.Second), Reason: api.GapSpoolFull}
	lost := api.Gap{FirstSeq: 31, LastSeq: 35, Count: 5, LostTo: at.Add(time.Minute), Reason: api.GapSegmentLost}

	ingestGaps(t, st, a, []api.Gap{full, lost}, 2, 0)
	ingestGaps(t, st, a, []api.Gap{lost, full}, 0, 2)

	// Numbers in a gap were used: a reseeded agent must continue after them.
	got, err := st.AgentByName(t.Context(), "vp1")
	if err != nil {
		t.Fatal(err)
	}
	if got.LastSeq != 35 || got.LastSeen == nil {
		t.Errorf("agent after gaps: last_seq %d, last_seen %v; want 35 and set", got.LastSeq, got.LastSeen)
	}

	t.Run("a wider gap replaces a narrower one", func(t *testing.T) {
		wider := full
		wider.LastSeq, wider.Count, wider.LostTo = 25, 15, at.Add(14*time.Second)
		ingestGaps(t, st, a, []api.Gap{wider}, 1, 0)
		ingestGaps(t, st, a, []api.Gap{full}, 0, 1) // the narrower one, late: no change
		var last, count int64
		var to time.Time
		sqlScan(t, dsn, `SELECT last_seq, count, lost_to FROM agent_gaps WHERE first_seq = 11`, &last, &count, &to)
		if last != 25 || count != 15 || !to.Equal(wider.LostTo) {
			t.Errorf("stored %d..%d count %d to %s", 11, last, count, to)
		}
	})

	t.Run("stored as sent", func(t *testing.T) {
		var (
			from   *time.Time
			reason string
		)
		sqlScan(t, dsn, `SELECT lost_from, reason FROM agent_gaps WHERE first_seq = 31`, &from, &reason)
		if from != nil || reason != "segment_lost" {
			t.Errorf("lost_from %v reason %q; want NULL (unknown) and segment_lost", from, reason)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		_, _, err := st.IngestGaps(t.Context(), a, []api.Gap{{FirstSeq: 5, LastSeq: 4, Count: 1, Reason: api.GapSpoolFull}})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("IngestGaps of a reversed run: %v, want ErrInvalid", err)
		}
		_, _, err = st.IngestGaps(t.Context(), a, []api.Gap{{FirstSeq: 5, LastSeq: 5, Count: 1, Reason: "flood"}})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("IngestGaps of an unknown reason: %v, want ErrInvalid", err)
		}
	})

	t.Run("unknown agent", func(t *testing.T) {
		_, _, err := st.IngestGaps(t.Context(), store.Agent{ID: 999999, Name: "ghost"}, []api.Gap{full})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("IngestGaps for an unknown agent: %v, want ErrNotFound", err)
		}
	})
}

func TestSeqAccounting(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	start := time.Now().UTC().Add(-time.Hour)
	check := func(t *testing.T, want store.SeqAccount) {
		t.Helper()
		if got := accounting(t, st, "vp1"); got != want {
			t.Errorf("SeqAccounting = %+v\n                        want %+v", got, want)
		}
	}

	check(t, store.SeqAccount{})
	// 1..10 stored, 11..20 lost, 21..30 stored: nothing missing.
	ingest(t, st, a, makeResults(1, 10, start), 10, 0)
	ingest(t, st, a, makeResults(21, 10, start.Add(time.Minute)), 10, 0)
	check(t, store.SeqAccount{Highest: 30, Stored: 20, Rows: 20, Holes: 10})
	ingestGaps(t, st, a, []api.Gap{{FirstSeq: 11, LastSeq: 20, Count: 10, Reason: api.GapSpoolFull}}, 1, 0)
	check(t, store.SeqAccount{Highest: 30, Stored: 20, Rows: 20, InGaps: 10, Gaps: 1, Lost: 10})

	// A gap at the top counts towards the highest number.
	ingestGaps(t, st, a, []api.Gap{{FirstSeq: 31, LastSeq: 40, Count: 10, Reason: api.GapSegmentLost}}, 1, 0)
	check(t, store.SeqAccount{Highest: 40, Stored: 20, Rows: 20, InGaps: 20, Gaps: 2, Lost: 20})

	// Results that arrived although their gap says they were lost count
	// once (dropped while in flight).
	ingest(t, st, a, makeResults(36, 2, start.Add(2*time.Minute)), 2, 0)
	check(t, store.SeqAccount{Highest: 40, Stored: 22, Rows: 22, InGaps: 18, Gaps: 2, Lost: 20})

	// A hole nothing explains.
	ingest(t, st, a, makeResults(45, 1, start.Add(3*time.Minute)), 1, 0)
	check(t, store.SeqAccount{Highest: 45, Stored: 23, Rows: 23, InGaps: 18, Holes: 4, Gaps: 2, Lost: 20})

	// A number stored twice (different measurement times).
	ingest(t, st, a, makeResults(45, 1, start.Add(4*time.Minute)), 1, 0)
	check(t, store.SeqAccount{Highest: 45, Stored: 23, Rows: 24, InGaps: 18, Holes: 4, Gaps: 2, Lost: 20})

	if _, err := st.SeqAccounting(t.Context(), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SeqAccounting of an unknown agent: %v", err)
	}
}

func TestGapsWindow(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	b, _, err := st.AddAgent(t.Context(), store.AgentSpec{Name: "vp2"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	ingestGaps(t, st, a, []api.Gap{
		{FirstSeq: 1, LastSeq: 100, Count: 100, LostFrom: at, LostTo: at.Add(time.Hour), Reason: api.GapSpoolFull},
		{FirstSeq: 200, LastSeq: 200, Count: 1, LostFrom: at.Add(5 * time.Hour), LostTo: at.Add(5 * time.Hour), Reason: api.GapRecordCorrupt},
	}, 2, 0)
	ingestGaps(t, st, b, []api.Gap{{FirstSeq: 7, LastSeq: 9, Count: 3, LostTo: at.Add(2 * time.Hour), Reason: api.GapSegmentLost}}, 1, 0)

	names := func(gs []analysis.Gap) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.VantagePoint+":"+string(g.Reason))
		}
		return out
	}
	for _, tt := range []struct {
		name         string
		since, until time.Time
		want         []string
	}{
		{"all", time.Time{}, time.Time{}, []string{"vp1:spool_full", "vp2:segment_lost", "vp1:record_corrupt"}},
		{"overlapping the first", at.Add(30 * time.Minute), at.Add(90 * time.Minute), []string{"vp1:spool_full"}},
		{"an unknown start counts as the end", at.Add(90 * time.Minute), at.Add(3 * time.Hour), []string{"vp2:segment_lost"}},
		{"until is exclusive", time.Time{}, at, nil},
		{"since is inclusive", at.Add(5 * time.Hour), time.Time{}, []string{"vp1:record_corrupt"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gs, err := st.Gaps(context.Background(), tt.since, tt.until)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(gs); !slices.Equal(got, tt.want) {
				t.Errorf("Gaps = %v, want %v", got, tt.want)
			}
		})
	}
	gs, err := st.Gaps(t.Context(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	want := analysis.Gap{VantagePoint: "vp1", FirstSeq: 1, LastSeq: 100, Count: 100, LostFrom: at, LostTo: at.Add(time.Hour), Reason: api.GapSpoolFull}
	got := gs[0]
	got.ReceivedAt = time.Time{}
	if got != want || gs[0].ReceivedAt.IsZero() || gs[1].LostFrom != (time.Time{}) {
		t.Errorf("Gaps[0] = %+v, want %+v with a receive time; Gaps[1] = %+v", gs[0], want, gs[1])
	}
}
