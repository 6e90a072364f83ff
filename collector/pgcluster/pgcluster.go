// Package pgcluster runs a private PostgreSQL cluster from this machine's
// server binaries, reachable only on a unix socket in its data directory.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotInstalled is returned when no PostgreSQL server binaries are found.
var ErrNotInstalled = errors.New("PostgreSQL server binaries not found (install postgresql, e.g. apt-get install -y postgresql)")

// Fixed facts of every private cluster.
const (
	// Port names the socket file (.s.PGSQL.5432); nothing listens on TCP.
	Port = 5432
	// User is the cluster's superuser, authenticated by trust: the socket
	// lives in the data directory, which only the cluster's owner can enter.
	User = "anyscope"
	// Database is created by Start if it does not exist.
	Database = "anyscope"
	// LogFile is the server log, inside the data directory.
	LogFile = "server.log"

	confFile = "anyscope.conf" // rewritten at every start, included by postgresql.conf
	// maxSocketPath is the longest unix socket path the kernel accepts
	// (sizeof(sun_path) - 1), which PostgreSQL enforces too.
	maxSocketPath = 107
	startTimeout  = 60 * time.Second
)

// Options say where the cluster lives and how it runs.
type Options struct {
	// Dir is the data directory (PGDATA). It is created if missing; it also
	// holds the unix socket, so its path must be short (about 90 bytes).
	Dir string
	// BinDir holds initdb, pg_ctl and postgres. Empty: the newest
	// /usr/lib/postgresql/*/bin (the cluster's own major version if it
	// exists), then PATH.
	BinDir string
	// Fsync keeps PostgreSQL's durability settings. False turns off fsync,
	// synchronous_commit and full_page_writes: fast, and a crash of the
	// machine may lose or corrupt the data. For tests only.
	Fsync bool
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
}

// Cluster is a private PostgreSQL cluster that Start found running or
// started.
type Cluster struct {
	opts    Options
	bin     string
	as      *account // nil: run as the current user
	started bool
}

// Start makes sure the cluster in opts.Dir runs and has the database
// Database: it initialises the directory if it holds no cluster, starts the
// server if it is stopped (a stale postmaster.pid is fine), or reuses it if it
// is already running. When running as root, the server runs as the
// "postgres" user, which must be able to traverse every parent of Dir.
// Concurrent Starts on one directory are serialised by a lock on it.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	if err := c.resolveBinaries(ctx); err != nil {
		return nil, err
	}
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	unlock, err := lockDir(ctx, c.opts.Dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !exists(filepath.Join(c.opts.Dir, "PG_VERSION")) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.ensureRunning(ctx); err != nil {
		return nil, err
	}
	if err := c.ensureDatabase(ctx, Database); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop stops the cluster in opts.Dir if it is running, without starting or
// initialising anything. A cluster that is not running is not an error.
func Stop(ctx context.Context, opts Options) error {
	c, err := newCluster(opts)
	if err != nil {
		return err
	}
	if !exists(filepath.Join(c.opts.Dir, "PG_VERSION")) {
		return fmt.Errorf("pgcluster: %s holds no PostgreSQL cluster", c.opts.Dir)
	}
	if err := c.resolveBinaries(ctx); err != nil {
		return err
	}
	return c.Stop(ctx)
}

// DefaultDir is the data directory used when none is given:
// $ANYSCOPE_DATA_DIR/postgres if set, /var/lib/anyscope/postgres for root,
// else $XDG_DATA_HOME/anyscope/postgres (~/.local/share/anyscope/postgres).
func DefaultDir() string {
	if d := os.Getenv("ANYSCOPE_DATA_DIR"); d != "" {
		return filepath.Join(d, "postgres")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/anyscope/postgres"
	}
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "anyscope", "postgres")
}

// Dir is the data directory.
func (c *Cluster) Dir() string { return c.opts.Dir }

// SocketDir is the directory holding the server's unix socket.
func (c *Cluster) SocketDir() string { return c.opts.Dir }

// Options are the options the cluster runs with (Dir made absolute, BinDir
// resolved); Start(ctx, c.Options()) starts it again after Stop.
func (c *Cluster) Options() Options {
	o := c.opts
	o.BinDir = c.bin
	return o
}

// Started reports whether Start started the server, as opposed to finding
// it running.
func (c *Cluster) Started() bool { return c.started }

// ConnString is a keyword/value connection string for database db.
func (c *Cluster) ConnString(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteValue(c.SocketDir()), Port, User, quoteValue(db))
}

// Stop shuts the server down (fast mode: clients are disconnected, open
// transactions roll back) and waits until it is gone. Stopping a cluster that
// is not running is not an error.
func (c *Cluster) Stop(ctx context.Context) error {
	running, err := c.running(ctx)
	if err != nil {
		return err
	}
	if !running {
		return nil
	}
	out, err := c.command(ctx, "pg_ctl", "stop", "-D", c.opts.Dir, "-m", "fast", "-w",
		"-t", strconv.Itoa(int(startTimeout.Seconds())), "-s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop %s: %w: %s", c.opts.Dir, err, strings.TrimSpace(string(out)))
	}
	c.log().Debug("stopped PostgreSQL", "dir", c.opts.Dir)
	return nil
}

func newCluster(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: no data directory given")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: data directory %q: %w", opts.Dir, err)
	}
	opts.Dir = dir
	if n := len(socketPath(dir)); n > maxSocketPath {
		return nil, fmt.Errorf("pgcluster: the unix socket path %s would be %d bytes, more than the %d the kernel allows: choose a shorter data directory",
			socketPath(dir), n, maxSocketPath)
	}
	c := &Cluster{opts: opts}
	if os.Geteuid() == 0 {
		a, err := lookupAccount("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgcluster: running as root, PostgreSQL must run as another user and %w (create it, or run as an unprivileged user)", err)
		}
		c.as = a
	}
	return c, nil
}

func socketPath(dir string) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(Port))
}

func (c *Cluster) log() *slog.Logger {
	if c.opts.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.opts.Logger
}

// prepareDir creates the data directory if needed, hands it to the account
// the server runs as, and checks that account can reach it.
func (c *Cluster) prepareDir() error {
	dir := c.opts.Dir
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("pgcluster: create %s: %w", parent, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("pgcluster: create data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("pgcluster: data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("pgcluster: %s is not a directory", dir)
	}
	if c.as == nil {
		return nil
	}
	if err := c.as.checkTraversable(parent); err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid == c.as.uid {
		return nil
	}
	if exists(filepath.Join(dir, "PG_VERSION")) {
		return fmt.Errorf("pgcluster: the cluster in %s belongs to uid %d, not to %s (uid %d) that PostgreSQL runs as when anyscope runs as root",
			dir, st.Uid, c.as.name, c.as.uid)
	}
	if err := os.Chown(dir, int(c.as.uid), int(c.as.gid)); err != nil {
		return fmt.Errorf("pgcluster: hand %s to %s: %w", dir, c.as.name, err)
	}
	return nil
}

// lockDir takes an exclusive flock on dir, waiting until ctx is done.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: lock %s: %w", dir, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("pgcluster: lock %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("pgcluster: waiting for another process starting the cluster in %s: %w", dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var tools = []string{"initdb", "pg_ctl", "postgres"}

func hasTools(dir string) bool {
	for _, t := range tools {
		fi, err := os.Stat(filepath.Join(dir, t))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// resolveBinaries finds the server binaries, and checks they can run the
// cluster that exists in Dir.
func (c *Cluster) resolveBinaries(ctx context.Context) error {
	want := ""
	if b, err := os.ReadFile(filepath.Join(c.opts.Dir, "PG_VERSION")); err == nil {
		want = strings.TrimSpace(string(b))
	}
	switch {
	case c.opts.BinDir != "":
		if !hasTools(c.opts.BinDir) {
			return fmt.Errorf("pgcluster: %w: %s lacks one of %s", ErrNotInstalled, c.opts.BinDir, strings.Join(tools, ", "))
		}
		c.bin = c.opts.BinDir
	default:
		c.bin = findBinDir(want)
		if c.bin == "" {
			return fmt.Errorf("pgcluster: %w", ErrNotInstalled)
		}
	}
	if want == "" {
		return nil
	}
	out, err := c.command(ctx, "pg_ctl", "--version").Output()
	if err != nil {
		return fmt.Errorf("pgcluster: %s/pg_ctl --version: %w", c.bin, err)
	}
	if got := majorVersion(string(out)); got != want {
		return fmt.Errorf("pgcluster: the cluster in %s is PostgreSQL %s but the binaries in %s are version %s: install PostgreSQL %s or set the binary directory",
			c.opts.Dir, want, c.bin, got, want)
	}
	return nil
}

// findBinDir returns the directory of the server binaries: Debian's
// /usr/lib/postgresql/<major>/bin (major want if given and present, else the
// newest), then the directory of pg_ctl on PATH; "" if none.
func findBinDir(want string) string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver float64
	}
	var cs []cand
	for _, m := range matches {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(m)), 64)
		if err != nil || !hasTools(m) {
			continue
		}
		if want != "" && filepath.Base(filepath.Dir(m)) == want {
			return m
		}
		cs = append(cs, cand{m, v})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].ver > cs[j].ver })
	if len(cs) > 0 {
		return cs[0].dir
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil && hasTools(filepath.Dir(p)) {
			return filepath.Dir(p)
		}
	}
	return ""
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// majorVersion extracts the major version as PG_VERSION spells it ("15",
// or "9.6" before PostgreSQL 10) from `pg_ctl --version` output.
func majorVersion(s string) string {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return "unknown"
	}
	if n, _ := strconv.Atoi(m[1]); n < 10 && m[2] != "" {
		return m[1] + "." + m[2]
	}
	return m[1]
}

func (c *Cluster) initdb(ctx context.Context) error {
	dir := c.opts.Dir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("pgcluster: read %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("pgcluster: %s is not empty but holds no PostgreSQL cluster (no PG_VERSION): choose another directory", dir)
	}
	c.log().Info("initialising PostgreSQL cluster", "dir", dir, "bin", c.bin)
	args := []string{"-D", dir, "-U", User, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-instructions"}
	if !c.opts.Fsync {
		args = append(args, "--no-sync")
	}
	if out, err := c.command(ctx, "initdb", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w: %s", dir, err, lastLines(out, 10))
	}
	conf := filepath.Join(dir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by anyscope: listen on a unix socket in the data directory only, and more.\ninclude_if_exists = '%s'\n", confFile)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgcluster: append to %s: %w", conf, err)
	}
	return nil
}

// writeConf writes the settings that depend on Options, read by the server
// at start.
func (c *Cluster) writeConf() error {
	var b strings.Builder
	b.WriteString("# Written by anyscope at every start of this cluster; put your own settings in postgresql.conf.\n")
	b.WriteString("listen_addresses = ''\n")
	fmt.Fprintf(&b, "port = %d\n", Port)
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", confString(c.SocketDir()))
	b.WriteString("unix_socket_permissions = 0700\n")
	if !c.opts.Fsync {
		b.WriteString("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
	}
	path := filepath.Join(c.opts.Dir, confFile)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if c.as != nil {
		if err := os.Chown(path, int(c.as.uid), int(c.as.gid)); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	return nil
}

// ensureRunning reuses a running server or starts it. A server that is
// still starting up or shutting down is waited for.
func (c *Cluster) ensureRunning(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	for {
		running, err := c.running(ctx)
		if err != nil {
			return err
		}
		if !running {
			return c.start(ctx)
		}
		perr := c.ping(ctx)
		if perr == nil {
			c.log().Debug("reusing running PostgreSQL", "dir", c.opts.Dir)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgcluster: the server of %s runs but does not answer: %w (see %s)",
				c.opts.Dir, perr, filepath.Join(c.opts.Dir, LogFile))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: waiting for the server of %s: %w", c.opts.Dir, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.writeConf(); err != nil {
		return err
	}
	logPath := filepath.Join(c.opts.Dir, LogFile)
	t0 := time.Now()
	out, err := c.command(ctx, "pg_ctl", "start", "-D", c.opts.Dir, "-l", logPath, "-w",
		"-t", strconv.Itoa(int(startTimeout.Seconds())), "-s").CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if tail, rerr := os.ReadFile(logPath); rerr == nil {
			msg += "\n" + lastLines(tail, 10)
		}
		return fmt.Errorf("pgcluster: pg_ctl start %s: %w: %s", c.opts.Dir, err, msg)
	}
	c.started = true
	c.log().Debug("started PostgreSQL", "dir", c.opts.Dir, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// running asks pg_ctl whether the postmaster in postmaster.pid is alive.
func (c *Cluster) running(ctx context.Context) (bool, error) {
	out, err := c.command(ctx, "pg_ctl", "status", "-D", c.opts.Dir).CombinedOutput()
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		return false, nil
	}
	return false, fmt.Errorf("pgcluster: pg_ctl status %s: %w: %s", c.opts.Dir, err, strings.TrimSpace(string(out)))
}

func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func (c *Cluster) ensureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var found bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&found); err != nil {
		return fmt.Errorf("pgcluster: look for database %s: %w", name, err)
	}
	if found {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P04" { // duplicate_database: someone else made it
		err = nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: create database %s: %w", name, err)
	}
	c.log().Debug("created database", "name", name)
	return nil
}

// command prepares a server binary to run as the cluster's account, with a
// clean PG* environment.
func (c *Cluster) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, tool), args...)
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		if c.as != nil && (strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "USER=") || strings.HasPrefix(kv, "LOGNAME=")) {
			continue
		}
		env = append(env, kv)
	}
	if c.as != nil {
		env = append(env, "HOME="+c.as.home, "USER="+c.as.name, "LOGNAME="+c.as.name)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: c.as.uid, Gid: c.as.gid, Groups: c.as.groups},
		}
	}
	cmd.Env = env
	return cmd
}

// account is the user the server runs as when anyscope runs as root.
type account struct {
	name     string
	home     string
	uid, gid uint32
	groups   []uint32
}

func lookupAccount(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("there is no %q user: %w", name, err)
	}
	a := &account{name: name, home: u.HomeDir}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	a.uid, a.gid = uint32(uid), uint32(gid)
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			a.groups = append(a.groups, uint32(n))
		}
	}
	if a.home == "" {
		a.home = "/"
	}
	return a, nil
}

// checkTraversable checks that the account may search dir and each of its
// parents (the x bit that applies to it).
func (a *account) checkTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		var bit os.FileMode = 0o001
		switch {
		case st.Uid == a.uid:
			bit = 0o100
		case a.inGroup(st.Gid):
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("pgcluster: PostgreSQL runs as user %s (anyscope runs as root) and cannot enter %s (mode %04o, owner uid %d): allow it (chmod o+x %s) or choose a data directory elsewhere",
				a.name, d, fi.Mode().Perm(), st.Uid, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (a *account) inGroup(gid uint32) bool {
	if gid == a.gid {
		return true
	}
	for _, g := range a.groups {
		if g == gid {
			return true
		}
	}
	return false
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// quoteValue quotes a keyword/value connection string value when needed.
func quoteValue(s string) string {
	if s != "" && !strings.ContainsAny(s, ` '\`) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

// confString quotes a postgresql.conf string value.
func confString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
