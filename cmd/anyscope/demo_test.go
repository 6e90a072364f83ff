package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// The demo runs every real process (private PostgreSQL, collector, agent
// restarted each round, report) and its report shows the three sites with
// the agent's observations, and the switch of 127.0.0.13 from LHR to AMS.
func TestDemo(t *testing.T) {
	port := freePortOn(t, []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"})
	cmd := exec.Command(binary, "demo", "--dns-port", strconv.Itoa(port), "--format", "json", "--rounds", "4")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("demo took %s", time.Since(start).Round(time.Millisecond))
	var rep struct {
		Targets []struct {
			Name  string `json:"name"`
			Sites []struct {
				Site          string `json:"site"`
				VantagePoints int    `json:"vantage_points"`
			} `json:"sites"`
			Catchment []struct {
				VantagePoint string  `json:"vantage_point"`
				Address      string  `json:"address"`
				Site         string  `json:"site"`
				Observations int     `json:"observations"`
				Confidence   float64 `json:"confidence"`
			} `json:"catchment"`
			Switches []struct {
				VantagePoint string `json:"vantage_point"`
				Address      string `json:"address"`
				From         string `json:"from"`
				To           string `json:"to"`
				At           string `json:"at"`
			} `json:"switches"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	if len(rep.Targets) != 1 || rep.Targets[0].Name != "demo-dns" {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	tg := rep.Targets[0]
	// Per address: .11 always AMS, .12 always FRA, .13 LHR for three rounds
	// and AMS in the last.
	want := map[string]string{"127.0.0.11": "AMS", "127.0.0.12": "FRA", "127.0.0.13": "LHR"}
	wantConf := map[string]float64{"127.0.0.11": 1, "127.0.0.12": 1, "127.0.0.13": 0.75}
	seen := map[string]bool{}
	for _, c := range tg.Catchment {
		if c.VantagePoint != "demo-vp1" {
			t.Errorf("unexpected vantage point %q", c.VantagePoint)
		}
		if c.Site != want[c.Address] || c.Confidence != wantConf[c.Address] {
			t.Errorf("%s: site %s confidence %.2f, want %s with confidence %.2f", c.Address, c.Site, c.Confidence, want[c.Address], wantConf[c.Address])
		}
		// 4 rounds x 2 transports x 3 queries.
		if c.Observations != 24 {
			t.Errorf("%s: %d observations, want 24", c.Address, c.Observations)
		}
		seen[c.Address] = true
	}
	if len(seen) != 3 {
		t.Errorf("catchment covers %v, want the three addresses", seen)
	}
	// Exactly the .13 streams switch.
	if len(tg.Switches) == 0 {
		t.Fatal("no switch reported for 127.0.0.13")
	}
	for _, s := range tg.Switches {
		if s.Address != "127.0.0.13" || s.From != "LHR" || s.To != "AMS" {
			t.Errorf("unexpected switch %+v", s)
		}
		if _, err := time.Parse(time.RFC3339, s.At); err != nil {
			t.Errorf("switch time %q is not RFC 3339", s.At)
		}
	}
	// 2 transports x 3 queries switch once each.
	if len(tg.Switches) != 6 {
		t.Errorf("%d switches, want 6 (one per transport and query)", len(tg.Switches))
	}
}
