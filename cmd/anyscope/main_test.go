package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
)

// binary is the anyscope command built once for the end-to-end tests, which
// run it as real processes (collector, agent, report) and kill them.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anyscope-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "anyscope")
	cmd := exec.Command("go", "build", "-race", "-o", binary, ".")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building anyscope for the end-to-end tests:", err)
		os.Exit(1)
	}
	// The demo's PostgreSQL runs as the postgres user when we are root.
	os.Chmod(dir, 0o755)
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}
