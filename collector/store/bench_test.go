package store_test

import (
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

// BenchmarkIngest compares the ingest path (COPY into staging, INSERT … ON
// CONFLICT DO NOTHING, agent bookkeeping, one transaction) with a plain COPY
// of the same rows into results (CopyRaw), in full batches of new results.
// Compare rows/s of the two within one run.
func BenchmarkIngest(b *testing.B) {
	for _, bc := range []struct {
		name  string
		write func(*testing.B, *store.Store, store.Agent, []api.Result)
	}{
		{"Ingest", func(b *testing.B, st *store.Store, a store.Agent, rs []api.Result) {
			if acc, _, err := st.Ingest(b.Context(), a, rs); err != nil || acc != len(rs) {
				b.Fatalf("Ingest = %d, %v", acc, err)
			}
		}},
		{"CopyRaw", func(b *testing.B, st *store.Store, a store.Agent, rs []api.Result) {
			if n, err := st.CopyRaw(b.Context(), a.ID, rs); err != nil || n != int64(len(rs)) {
				b.Fatalf("CopyRaw = %d, %v", n, err)
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st, _ := open(b)
			a, _ := seed(b, st)
			const size = api.MaxBatchResults
			start := time.Now().UTC().Add(-time.Hour)
			next := uint64(1)
			rows := 0
			for b.Loop() {
				b.StopTimer() // the benchmark times the database path only
				rs := makeResults(next, size, start.Add(time.Duration(next)*time.Millisecond))
				next += size
				b.StartTimer()
				bc.write(b, st, a, rs)
				rows += len(rs)
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
