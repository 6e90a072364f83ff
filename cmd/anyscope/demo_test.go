package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The demo runs every real process against the anycast lab: BGP in
// namespaces, a private PostgreSQL, the collector on the management network,
// the incremental analyzer and an agent inside each of the 8 vantage points,
// through a withdrawal, a black hole, a broken uplink and a collector outage
// (the collector killed for a while as the agents keep probing: `make soak`
// runs it for two minutes, this test for 20 seconds). It exits non-zero
// unless every check of analysis against the lab's ground truth passes
// (catchments, switch causes, incidents) and the collector holds every
// result of every agent exactly once; its report shows the same.
func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo builds network namespaces and needs root (CI runs as root)")
	}
	outage := scaled(t, "collector outage", 20*time.Second, 2*time.Minute)
	cmd := exec.Command(binary, "demo", "--format", "json", "--baseline", "15s", "--collector-outage", outage.String(),
		"--prefix", "dt-", "--state-dir", t.TempDir()+"/lab", "--listen", "198.19.0.1:18740")
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
	// Every agent: each result once, and what it measured while the
	// collector was down arrived.
	if _, delivery, ok := strings.Cut(stderr.String(), "Checks of delivery"); ok {
		delivery, _, _ = strings.Cut(delivery, "\n\n")
		t.Logf("Checks of delivery%s", delivery)
	}
	for vp := 1; vp <= 8; vp++ {
		once := regexp.MustCompile(fmt.Sprintf(`(?m)^  ok   vp%d: the collector holds seqs 1\.\.[1-9][0-9]*, each once`, vp))
		outage := regexp.MustCompile(fmt.Sprintf(`(?m)^  ok   vp%d: [1-9][0-9]* results measured during the %s collector outage arrived`, vp, outage))
		if !once.MatchString(stderr.String()) || !outage.MatchString(stderr.String()) {
			t.Errorf("no delivery verdicts for vp%d in:\n%s", vp, stderr.String())
		}
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
				Cause        string `json:"cause"`
			} `json:"switches"`
			Incidents []struct {
				Kind          string   `json:"kind"`
				Site          string   `json:"site"`
				VantagePoints []string `json:"vantage_points"`
				End           *string  `json:"end"`
			} `json:"incidents"`
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
		if s.VantagePoint == "vp1" && s.From == "AMS" && s.To == "FRA" && s.Cause == "withdrawal" {
			moved = true
		}
	}
	if !moved {
		t.Errorf("no AMS→FRA switch with cause withdrawal for vp1 after ams was withdrawn: %+v", tg.Switches)
	}
	// lhr's black hole and vp3's broken uplink, each once, both ended.
	var incidents []string
	for _, in := range tg.Incidents {
		if in.End == nil {
			t.Errorf("incident still open at the end: %+v", in)
		}
		incidents = append(incidents, in.Kind+" "+in.Site+" "+strings.Join(in.VantagePoints, ","))
	}
	if want := []string{"blackhole LHR vp7", "vantage_point  vp3"}; strings.Join(incidents, "|") != strings.Join(want, "|") {
		t.Errorf("incidents %q, want %q", incidents, want)
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
