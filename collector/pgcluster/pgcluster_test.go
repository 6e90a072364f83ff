package pgcluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/collector/pgcluster"
)

// dataDir returns a data directory path in a fresh temporary directory that
// the server's account can traverse (t.TempDir's parent is private to us),
// and stops any cluster left in it when the test ends.
func dataDir(t *testing.T) string {
	t.Helper()
	tmp, err := os.MkdirTemp("", "anyscope-pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o711); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "pg")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgcluster.Stop(ctx, pgcluster.Options{Dir: dir}); err != nil && !strings.Contains(err.Error(), "holds no PostgreSQL cluster") {
			t.Errorf("stop: %v", err)
		}
		os.RemoveAll(tmp)
	})
	return dir
}

func start(t *testing.T, dir string) *pgcluster.Cluster {
	t.Helper()
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c
}

func connect(t *testing.T, c *pgcluster.Cluster) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.ConnString(pgcluster.Database))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestStartReuseStopRestart(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)

	c := start(t, dir)
	if !c.Started() {
		t.Error("first Start: Started() = false, want true")
	}
	want := fmt.Sprintf("host=%s port=5432 user=anyscope dbname=anyscope sslmode=disable", dir)
	if got := c.ConnString("anyscope"); got != want {
		t.Errorf("ConnString = %q, want %q", got, want)
	}
	conn := connect(t, c)
	if _, err := conn.Exec(t.Context(), `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')`); err != nil {
		t.Fatal(err)
	}
	var listen, fsync string
	if err := conn.QueryRow(t.Context(), `SELECT current_setting('listen_addresses'), current_setting('fsync')`).Scan(&listen, &fsync); err != nil {
		t.Fatal(err)
	}
	if listen != "" || fsync != "off" {
		t.Errorf("listen_addresses = %q, fsync = %q; want '' and off", listen, fsync)
	}
	conn.Close(t.Context())

	t.Run("reuse", func(t *testing.T) {
		c2 := start(t, dir)
		if c2.Started() {
			t.Error("Start on a running cluster: Started() = true, want false")
		}
	})

	t.Run("stop and restart keeps data", func(t *testing.T) {
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !os.IsNotExist(err) {
			t.Fatalf("postmaster.pid after Stop: %v, want it gone", err)
		}
		if err := c.Stop(t.Context()); err != nil {
			t.Errorf("second Stop of a stopped cluster: %v, want nil", err)
		}
		c3 := start(t, dir)
		if !c3.Started() {
			t.Error("Start after Stop: Started() = false, want true")
		}
		var v string
		if err := connect(t, c3).QueryRow(t.Context(), `SELECT v FROM kept`).Scan(&v); err != nil || v != "still here" {
			t.Errorf("after restart: %q, %v; want the row written before", v, err)
		}
	})

	t.Run("stale pid file", func(t *testing.T) {
		pidFile := filepath.Join(dir, "postmaster.pid")
		live, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		// Leave the pid file of a postmaster that died: a process that exited.
		dead := exec.Command("true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(string(live), "\n")
		if err := os.WriteFile(pidFile, []byte(fmt.Sprintf("%d\n%s", dead.Process.Pid, rest)), 0o600); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t) // the server's account owns its files
		if err := os.Chown(pidFile, int(st.Uid), int(st.Gid)); err != nil {
			t.Fatal(err)
		}
		c4 := start(t, dir)
		if !c4.Started() {
			t.Error("Start with a stale pid file: Started() = false, want true")
		}
		var v string
		if err := connect(t, c4).QueryRow(t.Context(), `SELECT v FROM kept`).Scan(&v); err != nil || v != "still here" {
			t.Errorf("after restart: %q, %v; want the row written before", v, err)
		}
	})
}

func TestConcurrentStartsShareOneServer(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	var wg sync.WaitGroup
	cs := make([]*pgcluster.Cluster, 3)
	errs := make([]error, 3)
	for i := range cs {
		wg.Go(func() { cs[i], errs[i] = pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir}) })
	}
	wg.Wait()
	started := 0
	for i := range cs {
		if errs[i] != nil {
			t.Fatalf("Start %d: %v", i, errs[i])
		}
		if cs[i].Started() {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d of 3 concurrent Starts started the server, want exactly 1", started)
	}
	connect(t, cs[0])
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	t.Run("missing binaries", func(t *testing.T) {
		t.Parallel()
		_, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dataDir(t), BinDir: t.TempDir()})
		if !errors.Is(err, pgcluster.ErrNotInstalled) {
			t.Fatalf("err = %v, want ErrNotInstalled", err)
		}
		if !strings.Contains(err.Error(), "apt-get install -y postgresql") {
			t.Errorf("err = %q, want it to say how to install PostgreSQL", err)
		}
	})
	t.Run("socket path too long", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(os.TempDir(), strings.Repeat("d", 100))
		_, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "choose a shorter data directory") {
			t.Fatalf("err = %v, want the socket path to be refused", err)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("%s was created: %v", dir, serr)
		}
	})
	t.Run("directory with other files", func(t *testing.T) {
		t.Parallel()
		dir := dataDir(t)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "is not empty but holds no PostgreSQL cluster") {
			t.Fatalf("err = %v, want a refusal to initialise a non-empty directory", err)
		}
	})
	t.Run("parent not traversable by postgres", func(t *testing.T) {
		t.Parallel()
		if os.Geteuid() != 0 {
			t.Skip("only root hands the server to another user")
		}
		dir := filepath.Join(t.TempDir(), "pg") // t.TempDir's parent is 0700 root
		_, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "cannot enter") {
			t.Fatalf("err = %v, want a clear refusal naming the directory", err)
		}
	})
}

func TestStopWithoutCluster(t *testing.T) {
	t.Parallel()
	err := pgcluster.Stop(t.Context(), pgcluster.Options{Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "holds no PostgreSQL cluster") {
		t.Fatalf("err = %v, want a refusal", err)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("ANYSCOPE_DATA_DIR", "/srv/anyscope")
	if got := pgcluster.DefaultDir(); got != "/srv/anyscope/postgres" {
		t.Errorf("with ANYSCOPE_DATA_DIR: %q", got)
	}
	t.Setenv("ANYSCOPE_DATA_DIR", "")
	t.Setenv("XDG_DATA_HOME", "/home/u/.data")
	want := "/home/u/.data/anyscope/postgres"
	if os.Geteuid() == 0 {
		want = "/var/lib/anyscope/postgres"
	}
	if got := pgcluster.DefaultDir(); got != want {
		t.Errorf("DefaultDir = %q, want %q", got, want)
	}
}
