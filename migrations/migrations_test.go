package migrations_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func version(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	v, err := migrations.Version(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// schema summarises the database's tables, columns, indexes and functions.
func schema(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var s string
	err := conn.QueryRow(t.Context(), `
		SELECT string_agg(x, E'\n' ORDER BY x) FROM (
			SELECT c.relname || ':' || c.relkind::text || ':' || coalesce(a.attname, '') AS x
			FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
			LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
			UNION ALL
			SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'
		) q`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLatest(t *testing.T) {
	if migrations.Latest() < 1 {
		t.Errorf("Latest() = %d, want at least the foundation", migrations.Latest())
	}
	if len(migrations.Fingerprint()) != 64 {
		t.Errorf("Fingerprint() = %q, want a SHA-256 hex digest", migrations.Fingerprint())
	}
}

func TestMigrateEmptyDatabase(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.EmptyDB(t))
	if v := version(t, conn); v != 0 {
		t.Fatalf("version of an empty database = %d, want 0", v)
	}
	if err := migrations.Migrate(t.Context(), conn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if v := version(t, conn); v != migrations.Latest() {
		t.Errorf("version = %d, want %d", v, migrations.Latest())
	}
	for _, table := range []string{"agents", "agent_tokens", "targets", "sites", "results", "catchments", "switches", "incidents"} {
		var ok bool
		if err := conn.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok); err != nil || !ok {
			t.Errorf("table %s missing after Migrate (%v)", table, err)
		}
	}

	t.Run("again is a no-op", func(t *testing.T) {
		before := schema(t, conn)
		if err := migrations.Migrate(t.Context(), conn); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
		if v := version(t, conn); v != migrations.Latest() {
			t.Errorf("version = %d, want %d", v, migrations.Latest())
		}
		if after := schema(t, conn); after != before {
			t.Errorf("second Migrate changed the schema:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

func TestConcurrentMigrate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.EmptyDB(t)
	conns := []*pgx.Conn{connect(t, dsn), connect(t, dsn), connect(t, dsn)}
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { errs[i] = migrations.Migrate(t.Context(), c) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
	if v := version(t, conns[0]); v != migrations.Latest() {
		t.Errorf("version = %d, want %d", v, migrations.Latest())
	}
}

func TestMigrateCanceled(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.EmptyDB(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := migrations.Migrate(ctx, conn); err == nil {
		t.Fatal("Migrate with a canceled context succeeded")
	}
}

func day(t time.Time) string { return "results_" + t.UTC().Format("20060102") }

func TestEnsurePartitions(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.DB(t))
	ctx := t.Context()
	// Partitions follow UTC days whatever the session's time zone.
	if _, err := conn.Exec(ctx, `SET TimeZone = 'Pacific/Auckland'`); err != nil {
		t.Fatal(err)
	}
	ensure := func(t *testing.T, c *pgx.Conn, from, to time.Time) int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, `SELECT anyscope_ensure_partitions($1, $2)`, from, to).Scan(&n); err != nil {
			t.Fatalf("anyscope_ensure_partitions: %v", err)
		}
		return n
	}
	exists := func(t *testing.T, name string) bool {
		t.Helper()
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}

	t.Run("far in the past", func(t *testing.T) {
		old := time.Now().UTC().AddDate(0, 0, -20)
		insert := `INSERT INTO results (agent_id, seq, measured_at, target_id, address, kind, transport) VALUES (1, 1, $1, 1, '192.0.2.1', 'dns', 'udp')`
		if _, err := conn.Exec(ctx, insert, old); err == nil || !strings.Contains(err.Error(), "no partition") {
			t.Fatalf("insert before the partition exists: %v, want no partition", err)
		}
		if n := ensure(t, conn, old, old); n != 1 {
			t.Errorf("created %d partitions, want 1", n)
		}
		if !exists(t, day(old)) {
			t.Fatalf("partition %s missing", day(old))
		}
		if n := ensure(t, conn, old, old); n != 0 {
			t.Errorf("second call created %d partitions, want 0", n)
		}
		if _, err := conn.Exec(ctx, insert, old); err != nil {
			t.Fatalf("insert into the new partition: %v", err)
		}
	})

	t.Run("UTC day bounds", func(t *testing.T) {
		d := time.Date(2024, 2, 28, 0, 0, 0, 0, time.UTC)
		if n := ensure(t, conn, d, d.Add(36*time.Hour)); n != 2 {
			t.Fatalf("created %d partitions for 28 and 29 February, want 2", n)
		}
		for _, at := range []time.Time{d, d.Add(24*time.Hour - time.Microsecond), d.Add(24 * time.Hour)} {
			var part string
			err := conn.QueryRow(ctx, `
				WITH r AS (INSERT INTO results (agent_id, seq, measured_at, target_id, address, kind, transport)
				           VALUES (2, $2, $1, 1, '2001:db8::1', 'dns', 'tcp') RETURNING tableoid)
				SELECT tableoid::regclass::text FROM r`, at, at.UnixMicro()).Scan(&part)
			if err != nil {
				t.Fatalf("insert at %s: %v", at, err)
			}
			if part != day(at) {
				t.Errorf("row at %s went to %s, want %s", at.Format(time.RFC3339Nano), part, day(at))
			}
		}
	})

	t.Run("range too long", func(t *testing.T) {
		from := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		var n int
		err := conn.QueryRow(ctx, `SELECT anyscope_ensure_partitions($1, $2)`, from, from.AddDate(2, 0, 0)).Scan(&n)
		if err == nil || !strings.Contains(err.Error(), "too long") {
			t.Fatalf("two-year range: %v, want a refusal", err)
		}
	})

	t.Run("concurrent callers", func(t *testing.T) {
		dsn := conn.Config().ConnString()
		from := time.Date(2023, 6, 1, 12, 0, 0, 0, time.UTC)
		to := from.AddDate(0, 0, 9)
		const callers = 4
		created := make([]int, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			c := connect(t, dsn)
			wg.Go(func() {
				errs[i] = c.QueryRow(ctx, `SELECT anyscope_ensure_partitions($1, $2)`, from, to).Scan(&created[i])
			})
		}
		wg.Wait()
		total := 0
		for i := range callers {
			if errs[i] != nil {
				t.Errorf("caller %d: %v", i, errs[i])
			}
			total += created[i]
		}
		if total != 10 {
			t.Errorf("callers created %d partitions in all, want 10 (one per day)", total)
		}
		for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
			if !exists(t, day(d)) {
				t.Errorf("partition %s missing", day(d))
			}
		}
	})
}
