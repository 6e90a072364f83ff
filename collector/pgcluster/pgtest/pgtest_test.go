package pgtest_test

import (
	"context"
	"fmt"
	"testing"

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

func TestDBIsMigratedAndPrivate(t *testing.T) {
	t.Parallel()
	a, b := connect(t, pgtest.DB(t)), connect(t, pgtest.DB(t))
	for _, c := range []*pgx.Conn{a, b} {
		v, err := migrations.Version(t.Context(), c)
		if err != nil || v != migrations.Latest() {
			t.Fatalf("schema version %d, %v; want %d", v, err, migrations.Latest())
		}
	}
	if _, err := a.Exec(t.Context(), `INSERT INTO agents (name) VALUES ('only-in-a')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(t.Context(), `SELECT count(*) FROM agents`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the other database has %d agents (%v), want 0", n, err)
	}
}

func TestEmptyDB(t *testing.T) {
	t.Parallel()
	v, err := migrations.Version(t.Context(), connect(t, pgtest.EmptyDB(t)))
	if err != nil || v != 0 {
		t.Errorf("schema version %d, %v; want 0", v, err)
	}
}

func TestDBDroppedWhenTestEnds(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("user", func(t *testing.T) {
		conn := connect(t, pgtest.DB(t)) // left open: the drop must not wait for it
		if err := conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	var exists bool
	err := connect(t, pgtest.DB(t)).QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists)
	if err != nil || exists {
		t.Errorf("database %s of a finished test exists: %v, %v", name, exists, err)
	}
}

func TestDBInParallel(t *testing.T) {
	t.Parallel()
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			var one int
			if err := connect(t, pgtest.DB(t)).QueryRow(t.Context(), `SELECT 1`).Scan(&one); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCluster(t *testing.T) {
	c := pgtest.Cluster(t)
	if c.Dir() == "" || !c.Started() {
		t.Errorf("Cluster = dir %q, started %v; want the private cluster this process started", c.Dir(), c.Started())
	}
}
