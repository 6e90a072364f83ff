package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// TestAllowListHoldsOnTheWire: the collector's schedule names both lab
// anycast addresses with every probe kind, but the agent's local allow-list
// covers only the IPv4 one. A capture inside the vantage point's namespace
// sees zero packets to the IPv6 address — and, so that zero means something,
// packets to the IPv4 one.
func TestAllowListHoldsOnTheWire(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab builds network namespaces and needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("tcpdump is needed for the capture (make deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	// The sites run the real binary's HTTP responder (by default the lab would
	// start this test binary).
	l, err := lab.New(lab.Options{StateDir: filepath.Join(dir, "lab"), Prefix: "al-", HTTPD: []string{binary, "lab", "httpd"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Up(ctx, "default", lab.DefaultTopologyYAML()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Down(context.Background()) })

	dsn := pgtest.DB(t)
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, token, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp3"})
	if err != nil {
		t.Fatal(err)
	}
	allowed, refused := netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8:53::53")
	if _, err := st.ApplyTargets(ctx, []store.Target{{
		Name: "lab-dns", Addresses: []netip.Addr{allowed, refused}, Interval: 5 * time.Second, NSIDQName: "lab.example.",
		Probes: []string{"dns", "ping", "trace", "http"},
		HTTP:   &api.HTTPSpec{Scheme: "http", Path: "/", Method: "GET", Headers: []string{"X-Served-By"}},
	}}); err != nil {
		t.Fatal(err)
	}
	listen := "198.19.0.1:18741"
	readyFile := filepath.Join(dir, "collector.addr")
	collLog := &syncBuffer{}
	coll := exec.Command(binary, "collector", "--db", dsn, "--listen", listen, "--ready-file", readyFile)
	coll.Stdout, coll.Stderr = collLog, collLog
	if err := coll.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Process.Kill(); coll.Wait() })
	if _, err := waitForFile(ctx, readyFile, 30*time.Second); err != nil {
		t.Fatalf("collector: %v\n%s", err, collLog.String())
	}

	// One capture per address, inside the vantage point's namespace.
	capture := func(host string) (*exec.Cmd, string) {
		file := filepath.Join(dir, "capture-"+strings.ReplaceAll(host, ":", "_")+".pcap")
		cmd, err := l.Command(ctx, "vp3", "tcpdump", "-i", "any", "-n", "-U", "-w", file, "host", host)
		if err != nil {
			t.Fatal(err)
		}
		errBuf := &syncBuffer{}
		cmd.Stderr = errBuf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(errBuf.String(), "listening on") {
			if time.Now().After(deadline) {
				t.Fatalf("tcpdump did not start: %s", errBuf.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return cmd, file
	}
	capAllowed, fileAllowed := capture(allowed.String())
	capRefused, fileRefused := capture(refused.String())

	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("name: vp3\ncollector: http://%s\ntoken_file: %s\nspool_dir: %s\nallow: [192.0.2.0/24]\ntimeout: 1s\n",
		listen, tokenFile, filepath.Join(dir, "spool"))), 0o600)
	agent, err := l.Command(ctx, "vp3", binary, "agent", "--config", cfg, "--once")
	if err != nil {
		t.Fatal(err)
	}
	out, err := agent.CombinedOutput()
	if err != nil {
		t.Fatalf("agent --once: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "REFUSING to probe an address outside the allow-list") {
		t.Errorf("the refusal was not logged:\n%s", out)
	}
	time.Sleep(500 * time.Millisecond) // late replies
	for _, c := range []*exec.Cmd{capAllowed, capRefused} {
		c.Process.Signal(syscall.SIGINT)
		c.Wait()
	}
	count := func(file string) int {
		out, err := exec.Command("tcpdump", "-n", "-r", file).Output()
		if err != nil {
			t.Fatalf("reading %s: %v", file, err)
		}
		return strings.Count(string(out), "\n")
	}
	if n := count(fileRefused); n != 0 {
		t.Errorf("%d packets to or from %s, which the allow-list does not cover", n, refused)
	}
	if n := count(fileAllowed); n == 0 {
		t.Errorf("no packets to %s either: the capture saw nothing, so zero proves nothing\nagent:\n%s", allowed, out)
	}

	// And the collector holds results for the allowed address only, of
	// every kind.
	rows := map[string]int{}
	err = st.Observations(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Minute), "lab-dns", func(o analysis.Observation) error {
		if o.Address != allowed {
			return fmt.Errorf("a result for %s", o.Address)
		}
		rows[string(o.Kind)]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"dns", "ping", "trace", "http"} {
		if rows[k] == 0 {
			t.Errorf("no %s results for %s (got %v)", k, allowed, rows)
		}
	}
}
