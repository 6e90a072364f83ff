package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// TestDatabaseRestart stops PostgreSQL under an open store: every call
// fails with ErrUnavailable (what the collector answers 503 for), none
// panics or blames the caller, and the same store works again once the
// server is back. It stops the shared test server, so it must not run in
// parallel with other tests.
func TestDatabaseRestart(t *testing.T) {
	c := pgtest.Cluster(t)
	st, dsn := open(t)
	a, token := seed(t, st)
	ctx := t.Context()
	start := time.Now().UTC().Add(-time.Minute)
	ingest(t, st, a, makeResults(1, 10, start), 10, 0)
	fresh, err := st.AddToken(ctx, "vp1", nil) // never seen by Authenticate: not cached
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := false
	restart := func() {
		if restarted {
			return
		}
		restarted = true
		if _, err := pgcluster.Start(context.Background(), c.Options()); err != nil {
			t.Fatalf("restart PostgreSQL: %v", err)
		}
	}
	t.Cleanup(restart) // later tests need the server even if this one fails

	calls := []struct {
		name string
		call func() error
	}{
		{"Ping", func() error { return st.Ping(ctx) }},
		{"Ingest", func() error {
			_, _, err := st.Ingest(ctx, a, makeResults(11, 10, start.Add(10*time.Millisecond)))
			return err
		}},
		{"Authenticate", func() error { _, err := st.Authenticate(ctx, fresh); return err }},
		{"ActiveTargets", func() error { _, err := st.ActiveTargets(ctx); return err }},
		{"AddAgent", func() error {
			_, _, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp9"})
			return err
		}},
		{"AgentSeqStats", func() error { _, _, err := st.AgentSeqStats(ctx, "vp1"); return err }},
		{"IngestGaps", func() error {
			_, _, err := st.IngestGaps(ctx, a, []api.Gap{{FirstSeq: 21, LastSeq: 30, Count: 10, Reason: api.GapSpoolFull}})
			return err
		}},
		{"SeqAccounting", func() error { _, err := st.SeqAccounting(ctx, "vp1"); return err }},
		{"Open", func() error {
			s, err := store.Open(ctx, dsn)
			if err == nil {
				s.Close()
			}
			return err
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name+" while down", func(t *testing.T) {
			for range 2 { // the first call meets a pooled connection that died
				if err := tc.call(); !errors.Is(err, store.ErrUnavailable) {
					t.Fatalf("err = %v, want ErrUnavailable", err)
				}
			}
		})
	}
	if _, err := st.Authenticate(ctx, token); err != nil {
		t.Errorf("a token checked before the outage is served from the cache: %v", err)
	}

	restart()
	t.Run("back", func(t *testing.T) {
		if err := st.Ping(ctx); err != nil {
			t.Fatalf("Ping after restart: %v", err)
		}
		ingest(t, st, a, makeResults(11, 10, start.Add(10*time.Millisecond)), 10, 0)
		ingest(t, st, a, makeResults(1, 20, start), 0, 20)
		seqStats(t, st, "vp1", 20, 20)
		if _, err := st.Authenticate(ctx, fresh); err != nil {
			t.Errorf("Authenticate after restart: %v", err)
		}
	})
}
