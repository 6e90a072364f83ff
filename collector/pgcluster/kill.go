package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killTimeout bounds the wait for the killed server's processes to die.
const killTimeout = 30 * time.Second

// Kill ends the server as a crash would: SIGKILL to the postmaster and to
// every process it started, with no shutdown checkpoint, and waits until
// they are gone. What was committed
// is in the write-ahead log and survives (with Options.Fsync false, commits
// are not flushed at once, so the last ones may be lost); the next Start
// recovers the cluster from the log. It is meant for crash tests. Killing a
// cluster that is not running is not an error.
func (c *Cluster) Kill(ctx context.Context) error {
	pidFile := filepath.Join(c.opts.Dir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: kill: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 1 {
		return fmt.Errorf("pgcluster: kill: %s does not start with a process id: %q", pidFile, line)
	}
	st, ok := procStat(pid)
	if !ok || st.state == 'Z' || st.comm != "postgres" {
		return nil // a stale pid file; Start copes with it
	}
	// The server's processes are the postmaster and its children (each in
	// a process group of its own). Stopped, it starts no more of them.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("pgcluster: stop the postmaster %d: %w", pid, err)
	}
	procs, err := processes(func(s stat) bool { return s.ppid == pid })
	if err != nil {
		return err
	}
	procs = append([]proc{{pid, st.start}}, procs...)
	for _, p := range procs {
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pgcluster: kill server process %d: %w", p.pid, err)
		}
	}
	deadline := time.Now().Add(killTimeout)
	for _, p := range procs {
		for p.running() {
			if time.Now().After(deadline) {
				return fmt.Errorf("pgcluster: server process %d of %s still runs %s after SIGKILL", p.pid, c.opts.Dir, killTimeout)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("pgcluster: waiting for the killed server of %s: %w", c.opts.Dir, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	// A postmaster that nobody reaps stays a zombie under its old pid, and
	// a server refuses to start next to lock files naming a live process;
	// they are stale now that every server process is dead.
	if syscall.Kill(pid, 0) == nil {
		for _, f := range []string{pidFile, socketPath(c.SocketDir()) + ".lock"} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("pgcluster: kill: remove the stale lock file: %w", err)
			}
		}
	}
	c.log().Debug("killed PostgreSQL", "dir", c.opts.Dir, "processes", len(procs))
	return nil
}

// proc is a process, told apart from a later one with the same pid by its
// start time.
type proc struct {
	pid   int
	start uint64
}

// running reports whether the process runs: it exists, is not a zombie
// (dead, until whoever inherited it reaps it) and its pid was not reused.
func (p proc) running() bool {
	st, ok := procStat(p.pid)
	return ok && st.state != 'Z' && st.start == p.start
}

// processes returns the processes whose stat matches, zombies aside.
func processes(match func(stat) bool) ([]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: kill: list processes: %w", err)
	}
	var ps []proc
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(p); ok && st.state != 'Z' && match(st) {
			ps = append(ps, proc{p, st.start})
		}
	}
	return ps, nil
}

type stat struct {
	comm  string
	state byte
	ppid  int
	start uint64 // clock ticks after boot
}

// procStat reads a process's name, state, parent and start time from
// /proc/<pid>/stat; false when the process does not exist.
func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime …; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	j := strings.IndexByte(string(b), '(')
	if i < 0 || j < 0 || j > i {
		return stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	start, err2 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return stat{}, false
	}
	return stat{comm: string(b[j+1 : i]), state: f[0][0], ppid: ppid, start: start}, true
}
