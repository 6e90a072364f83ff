package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The demo runs every real process against the anycast lab: BGP in
// namespaces, a private PostgreSQL, the collector on the management network
// and an agent inside each of the 8 vantage points. It exits non-zero unless
// the catchment measured before the scenario equals the lab's ground truth
// for every (vantage point, address); its report then shows the withdrawn
// site's vantage points moving and the black-holed site's failing.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo builds network namespaces and needs root (CI runs as root)")
	}
	cmd := exec.Command(binary, "demo", "--format", "json", "--baseline", "15s", "--after", "15s",
		"--prefix", "dt-", "--state-dir", t.TempDir()+"/lab", "--listen", "203.0.113.1:18740")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("demo took %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(stderr.String(), "equals lab truth for 16 of 16") {
		t.Errorf("no full match with the lab truth in:\n%s", stderr.String())
	}
	var rep struct {
		Targets []struct {
			Name      string `json:"name"`
			Catchment []struct {
				VantagePoint string `json:"vantage_point"`
				Address      string `json:"address"`
				Site         string `json:"site"`
				Failures     int    `json:"failures"`
			} `json:"catchment"`
			Switches []struct {
				VantagePoint string `json:"vantage_point"`
				From         string `json:"from"`
				To           string `json:"to"`
			} `json:"switches"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	if len(rep.Targets) != 1 || rep.Targets[0].Name != "lab-dns" {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	tg := rep.Targets[0]
	// vp1 sits behind ams's router: ams is withdrawn, so it moves to FRA.
	moved := false
	for _, s := range tg.Switches {
		if s.VantagePoint == "vp1" && s.From == "AMS" && s.To == "FRA" {
			moved = true
		}
	}
	if !moved {
		t.Errorf("no AMS→FRA switch for vp1 after ams was withdrawn: %+v", tg.Switches)
	}
	// vp7's site lhr is black-holed: it keeps its site and accumulates
	// failures; vp4 stays with the local node sin.
	for _, c := range tg.Catchment {
		switch c.VantagePoint {
		case "vp7":
			if c.Site != "LHR" || c.Failures == 0 {
				t.Errorf("vp7 %s: site %s with %d failures, want LHR with failures after the black hole", c.Address, c.Site, c.Failures)
			}
		case "vp4":
			if c.Site != "SIN" {
				t.Errorf("vp4 %s: site %s, want SIN", c.Address, c.Site)
			}
		}
	}
}
