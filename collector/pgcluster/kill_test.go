package pgcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/collector/pgcluster"
)

// Kill crashes the server: every process is gone at once, without a
// shutdown checkpoint, and the next Start recovers what was committed from
// the write-ahead log.
func TestKillAndRecover(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	c, err := pgcluster.Start(t.Context(), pgcluster.Options{Dir: dir, Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, c)
	if _, err := conn.Exec(t.Context(), `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('committed before the crash')`); err != nil {
		t.Fatal(err)
	}
	// An open transaction and a second session: killed with the rest.
	if _, err := conn.Exec(t.Context(), `BEGIN; INSERT INTO kept VALUES ('never committed')`); err != nil {
		t.Fatal(err)
	}
	connect(t, c)
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatal(err)
	}
	procs := append(children(t, pid), pid)
	if len(procs) < 4 {
		t.Fatalf("the server runs %d processes, want the postmaster, its auxiliaries and our two backends", len(procs))
	}

	if err := c.Kill(t.Context()); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	for _, p := range procs {
		if alive(p) {
			t.Errorf("server process %d still runs after Kill", p)
		}
	}
	if err := c.Kill(t.Context()); err != nil {
		t.Errorf("Kill of a killed cluster: %v, want nil", err)
	}

	c2, err := pgcluster.Start(t.Context(), c.Options())
	if err != nil {
		t.Fatalf("Start after Kill: %v", err)
	}
	if !c2.Started() {
		t.Error("Start after Kill: Started() = false, want true")
	}
	var got []string
	rows, err := connect(t, c2).Query(t.Context(), `SELECT v FROM kept ORDER BY v`)
	if err == nil {
		got, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || strings.Join(got, "|") != "committed before the crash" {
		t.Errorf("after the crash: %q, %v; want only the committed row", got, err)
	}
	log, err := os.ReadFile(filepath.Join(dir, pgcluster.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "automatic recovery in progress") {
		t.Errorf("the server log does not show crash recovery:\n%s", log)
	}
	if err := c2.Stop(context.Background()); err != nil {
		t.Errorf("Stop after recovery: %v", err)
	}
}

// children returns the processes whose parent is pid.
func children(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ps []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			if f := statFields(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	f := statFields(pid)
	return len(f) > 0 && f[0] != "Z"
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: state, ppid, …
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	return strings.Fields(string(b[i+1:]))
}
