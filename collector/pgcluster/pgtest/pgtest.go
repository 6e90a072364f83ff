// Package pgtest gives every test its own fresh, migrated PostgreSQL database.
//
// Databases are cloned from a template migrated once per process, on a
// private cluster started once per test process (or on the server named by
// ANYSCOPE_TEST_DB).
//
// Use it from a package's TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		t.Parallel()
//		dsn := pgtest.DB(t) // dropped when the test ends
//		…
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/migrations"
)

// EnvDB names the environment variable holding the DSN of an existing
// server to test on instead of a private cluster. Its role must be allowed
// to CREATE DATABASE; tests create and drop databases named anyscope_test_*
// and keep one template per migration set, anyscope_tpl_<fingerprint>.
const EnvDB = "ANYSCOPE_TEST_DB"

const tmpPrefix = "anyscope-pgtest-"

type server struct {
	admin   *pgxpool.Pool
	dsn     func(db string) string
	cluster *pgcluster.Cluster // nil on the ANYSCOPE_TEST_DB server
	tmp     string             // the private cluster's directory, removed by Main

	tplOnce sync.Once
	tpl     string
	tplErr  error
}

var (
	srvOnce sync.Once
	srv     *server
	srvErr  error
	seq     atomic.Int64
	runID   = randomHex(3)
)

// Main runs the tests of a package, then stops the private cluster if one
// was started, and exits with the tests' exit code.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main for a TestMain that has its own cleanup to do after the
// tests: it runs them, stops the private cluster and returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// DB creates a database holding the current schema, unique to this test,
// and returns its DSN (keyword/value or URL, as the server's). The database
// is dropped when the test ends, even if connections to it remain. Safe
// under t.Parallel.
func DB(t testing.TB) string {
	t.Helper()
	s := get(t)
	tpl, err := s.template()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return s.create(t, tpl)
}

// EmptyDB is like DB but the database has no schema at all (not even the
// migrations' version table).
func EmptyDB(t testing.TB) string {
	t.Helper()
	return get(t).create(t, "")
}

// Cluster returns the private cluster the test databases live on, so a test
// can stop and start PostgreSQL (pgcluster.Start(ctx, c.Options()) starts it
// again). Such a test must not run in parallel with others. It fails the test
// when tests run on the server in ANYSCOPE_TEST_DB, which they must not stop.
func Cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	s := get(t)
	if s.cluster == nil {
		t.Fatalf("pgtest: this test stops and starts PostgreSQL, which it cannot do to the server in %s: unset it to run on a private cluster", EnvDB)
	}
	return s.cluster
}

func get(t testing.TB) *server {
	t.Helper()
	srvOnce.Do(func() { srv, srvErr = setup() })
	if srvErr != nil {
		t.Fatalf("pgtest: no PostgreSQL to test with: %v\n(tests need the PostgreSQL server binaries, e.g. apt-get install -y postgresql, or %s set to a DSN allowed to CREATE DATABASE)", srvErr, EnvDB)
	}
	return srv
}

func setup() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if dsn := os.Getenv(EnvDB); dsn != "" {
		admin, err := newAdmin(ctx, dsn)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvDB, err)
		}
		return &server{admin: admin, dsn: func(db string) string { return withDatabase(dsn, db) }}, nil
	}
	sweep(ctx)
	tmp, err := tempDir()
	if err != nil {
		return nil, err
	}
	// The server may run as another user (postgres, when tests run as root):
	// let it traverse into the directory it owns below.
	if err := os.Chmod(tmp, 0o711); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(tmp, "pg")})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	s := &server{cluster: c, tmp: tmp, dsn: c.ConnString}
	s.admin, err = newAdmin(ctx, c.ConnString("postgres"))
	if err != nil {
		c.Stop(ctx)
		os.RemoveAll(tmp)
		return nil, err
	}
	return s, nil
}

// newAdmin connects to the database tests create their databases from. Its
// connections are checked before each use: a test may have restarted the
// server.
func newAdmin(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, err
	}
	return admin, nil
}

func shutdown() error {
	if srv == nil {
		return nil
	}
	srv.admin.Close()
	if srv.cluster == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := srv.cluster.Stop(ctx)
	if err == nil {
		err = os.RemoveAll(srv.tmp)
	}
	return err
}

// tempBases are where private clusters go, best first: memory (on this
// kind of machine a database is created in 10 ms there and 200 ms on disk,
// fsync off or not), then the temporary directory.
func tempBases() []string {
	bases := []string{"/dev/shm", os.TempDir()}
	if len(bases[1]) > 60 { // keep the socket path well under the kernel's 107 bytes
		bases[1] = "/tmp"
	}
	return bases
}

func tempDir() (string, error) {
	var err error
	for _, base := range tempBases() {
		var dir string
		if dir, err = os.MkdirTemp(base, tmpPrefix); err == nil {
			return dir, nil
		}
	}
	return "", err
}

// sweep stops and removes the private clusters of earlier test processes
// that died without running Main's clean-up (a panic, a test timeout).
func sweep(ctx context.Context) {
	var dirs []string
	for _, base := range append(tempBases(), "/tmp") {
		ds, _ := filepath.Glob(filepath.Join(base, tmpPrefix+"*"))
		dirs = append(dirs, ds...)
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err != nil {
			if fi, serr := os.Stat(d); serr != nil || time.Since(fi.ModTime()) < 10*time.Minute {
				continue // being set up right now
			}
		} else if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && alive(pid) {
			continue
		}
		pgcluster.Stop(ctx, pgcluster.Options{Dir: filepath.Join(d, "pg")})
		os.RemoveAll(d)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// template returns the name of the template database holding the current
// schema, creating it once per migration set. An advisory lock on the admin
// database serialises test processes sharing a server.
func (s *server) template() (string, error) {
	s.tplOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s.tpl = "anyscope_tpl_" + migrations.Fingerprint()[:16]
		s.tplErr = s.makeTemplate(ctx, s.tpl)
	})
	return s.tpl, s.tplErr
}

func (s *server) makeTemplate(ctx context.Context, name string) error {
	conn, err := s.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	const lockKey = 0x616e7973636f7065 // "anyscope"
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(lockKey)); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(lockKey))

	var done *bool
	err = conn.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, name).Scan(&done)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("look for template %s: %w", name, err)
	}
	if done != nil && *done {
		return nil
	}
	ident := pgx.Identifier{name}.Sanitize()
	if done != nil { // a half-made template left by a process that died
		if _, err := conn.Exec(ctx, `DROP DATABASE `+ident+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("drop half-made template %s: %w", name, err)
		}
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+ident); err != nil {
		return fmt.Errorf("create template %s: %w", name, err)
	}
	tc, err := pgx.Connect(ctx, s.dsn(name))
	if err != nil {
		return fmt.Errorf("connect to template %s: %w", name, err)
	}
	err = migrations.Migrate(ctx, tc)
	tc.Close(ctx)
	if err != nil {
		return fmt.Errorf("template %s: %w", name, err)
	}
	// No connections: CREATE DATABASE … TEMPLATE refuses a template in use.
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+ident+` WITH ALLOW_CONNECTIONS false IS_TEMPLATE true`); err != nil {
		return fmt.Errorf("mark template %s: %w", name, err)
	}
	return nil
}

// create makes a database for t from tpl ("" for an empty one) and drops it
// when t ends.
func (s *server) create(t testing.TB, tpl string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("anyscope_test_%s_%d_%d", runID, os.Getpid(), seq.Add(1))
	ident := pgx.Identifier{name}.Sanitize()
	sql := `CREATE DATABASE ` + ident
	if tpl != "" {
		sql += ` TEMPLATE ` + pgx.Identifier{tpl}.Sanitize()
	}
	if _, err := s.admin.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: create database for %s: %v", t.Name(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := s.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.dsn(name)
}

// withDatabase returns dsn (a URL or keyword/value string) naming database
// db instead of its own.
func withDatabase(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path, u.RawPath = "/"+db, ""
			return u.String()
		}
	}
	// In keyword/value strings the last setting of a keyword wins.
	return dsn + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
