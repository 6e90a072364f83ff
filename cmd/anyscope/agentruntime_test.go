package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentRuntimeTuning runs the real binary: `anyscope agent` re-executes
// itself with sysmon's deep sleep off (GODEBUG schedtrace) and one P,
// keeping the operator's other GODEBUG keys, and leaves settings the
// operator chose alone. A configuration error (here on purpose) is reported
// by the re-executed process, with the arguments intact.
func TestAgentRuntimeTuning(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("name: vp-runtime\n"), 0o600); err != nil { // no collector
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, godebug, gomaxprocs string
		want                      []string
	}{
		{"defaults", "", "", []string{"gomaxprocs=1", `godebug="` + agentSchedtrace + `"`}},
		{"operator's other keys kept", "http2client=0", "", []string{"gomaxprocs=1", `godebug="http2client=0,` + agentSchedtrace + `"`}},
		{"operator's choice kept", "schedtrace=0", "2", []string{"gomaxprocs=2", `godebug="schedtrace=0"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(binary, "agent", "--config", cfg)
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if tc.godebug != "" {
				cmd.Env = append(cmd.Env, "GODEBUG="+tc.godebug)
			}
			if tc.gomaxprocs != "" {
				cmd.Env = append(cmd.Env, "GOMAXPROCS="+tc.gomaxprocs)
			}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("an invalid configuration was accepted:\n%s", out)
			}
			var line string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, `msg="agent: runtime"`) {
					line = l
				}
			}
			if strings.Count(string(out), `msg="agent: runtime"`) != 1 {
				t.Fatalf("want exactly one runtime line:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(line+" ", " "+w+" ") {
					t.Errorf("runtime line %q lacks %q", line, w)
				}
			}
			if !strings.Contains(string(out), cfg+":") {
				t.Errorf("the configuration error was not reported:\n%s", out)
			}
			if strings.Contains(string(out), "cannot re-execute") {
				t.Errorf("re-execution failed:\n%s", out)
			}
		})
	}
}
