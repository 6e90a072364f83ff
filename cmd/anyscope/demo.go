package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/collector/targets"
)

// DemoCmd runs the loopback demo end to end with real processes: a private
// PostgreSQL cluster, the collector, three DNS servers on loopback addresses
// that answer as three sites, one agent that runs several rounds (restarted
// between rounds, so its spool and sequence numbers survive restarts), and
// the report. Before the last round, one address starts answering from
// another site, the way a vantage point's traffic moves when a site is
// withdrawn.
type DemoCmd struct {
	Rounds  int    `help:"Agent rounds to run (each restarts the agent process)." default:"4"`
	DNSPort int    `help:"Port of the demo DNS servers (53 needs root)." default:"53"`
	Keep    bool   `help:"Keep the demo directory (database, spool, logs) and print its path."`
	Format  string `help:"Report format: md or json." default:"md" enum:"md,json"`
}

const demoTargets = `targets:
  - name: demo-dns
    addresses: [127.0.0.11, 127.0.0.12, 127.0.0.13]
    probes: [dns]
    interval: 10s
    sites:
      - {code: AMS, name: Amsterdam, lat: 52.31, lon: 4.76}
      - {code: FRA, name: Frankfurt, lat: 50.03, lon: 8.57}
      - {code: LHR, name: London, lat: 51.47, lon: -0.45}
    identity:
      - {pattern: '^ns\d+\.[a-z]{2}-(?P<site>[a-z]{3})\.demo\.example$', site: '${site}'}
`

// Run executes the demo.
func (c *DemoCmd) Run(ctx context.Context, log *slog.Logger) (err error) {
	if c.Rounds < 2 {
		return fmt.Errorf("--rounds must be at least 2")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "anyscope-demo-")
	if err != nil {
		return err
	}
	// The PostgreSQL server runs as the postgres user when we are root: it
	// must be able to reach its data directory below this one.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	defer func() {
		if c.Keep {
			fmt.Fprintf(os.Stderr, "demo files kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	step := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
	}

	step("starting a private PostgreSQL cluster in %s", filepath.Join(dir, "pg"))
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Logger: log})
	if err != nil {
		return err
	}
	defer cl.Stop(context.Background())
	dsn := cl.ConnString("anyscope")
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}

	step("registering vantage point demo-vp1 and applying targets (3 anycast addresses)")
	lat, lon := 52.37, 4.90
	if _, token, err := st.AddAgent(ctx, store.AgentSpec{Name: "demo-vp1", Latitude: &lat, Longitude: &lon, Region: "loopback"}); err != nil {
		return err
	} else if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	ts, err := targets.Parse("demo-targets.yaml", []byte(demoTargets))
	if err != nil {
		return err
	}
	if _, err := st.ApplyTargets(ctx, ts); err != nil {
		return err
	}

	sites := []*demoSite{
		{addr: fmt.Sprintf("127.0.0.11:%d", c.DNSPort), servers: []string{"ns1.nl-ams.demo.example", "ns2.nl-ams.demo.example"}, nsids: []string{"ams-1", "ams-2"}},
		{addr: fmt.Sprintf("127.0.0.12:%d", c.DNSPort), servers: []string{"ns1.de-fra.demo.example"}, nsids: []string{"fra-1"}},
		{addr: fmt.Sprintf("127.0.0.13:%d", c.DNSPort), servers: []string{"ns1.gb-lhr.demo.example"}, nsids: []string{"lhr-1"}},
	}
	step("starting DNS servers: 127.0.0.11 answers as AMS (two servers), .12 as FRA, .13 as LHR (port %d, UDP and TCP)", c.DNSPort)
	for _, s := range sites {
		if err := s.start(); err != nil {
			if c.DNSPort < 1024 && os.Geteuid() != 0 {
				err = fmt.Errorf("%w (port %d needs root; try --dns-port 8053)", err, c.DNSPort)
			}
			return err
		}
		defer s.stop()
	}

	step("starting the collector")
	readyFile := filepath.Join(dir, "collector.addr")
	coll := exec.CommandContext(ctx, self, "collector", "--db", dsn, "--listen", "127.0.0.1:0", "--ready-file", readyFile, "--log-level", "warn")
	coll.Stdout, coll.Stderr = os.Stderr, os.Stderr
	if err := coll.Start(); err != nil {
		return err
	}
	defer func() {
		coll.Process.Signal(os.Interrupt)
		coll.Wait()
	}()
	addr, err := waitForFile(ctx, readyFile, 30*time.Second)
	if err != nil {
		return fmt.Errorf("collector did not start: %w", err)
	}

	cfg := fmt.Sprintf(`name: demo-vp1
collector: http://%s
token_file: %s
spool_dir: %s
allow: [127.0.0.0/8]
dns_port: %d
timeout: 1s
location: {lat: %g, lon: %g, region: loopback}
`, addr, filepath.Join(dir, "token"), filepath.Join(dir, "spool"), c.DNSPort, lat, lon)
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	for i := 1; i <= c.Rounds; i++ {
		if i == c.Rounds {
			step("LHR is withdrawn: traffic to 127.0.0.13 now reaches AMS")
			sites[2].setIdentity([]string{"ns3.nl-ams.demo.example"}, []string{"ams-3"})
		}
		step("agent round %d/%d (a fresh agent process each round)", i, c.Rounds)
		ag := exec.CommandContext(ctx, self, "agent", "--config", cfgPath, "--once", "--log-level", "warn")
		ag.Stdout, ag.Stderr = os.Stderr, os.Stderr
		if err := ag.Run(); err != nil {
			return fmt.Errorf("agent round %d: %w", i, err)
		}
		if i < c.Rounds {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}

	step("report (anyscope report --since 1h --format %s)", c.Format)
	rep := exec.CommandContext(ctx, self, "report", "--db", dsn, "--since", "1h", "--format", c.Format, "--log-level", "warn")
	rep.Stdout, rep.Stderr = os.Stdout, os.Stderr
	return rep.Run()
}

// waitForFile waits until path exists and returns its first line.
func waitForFile(ctx context.Context, path string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f, err := os.Open(path); err == nil {
			line, rerr := bufio.NewReader(f).ReadString('\n')
			f.Close()
			if rerr == nil || rerr == io.EOF {
				if s := strings.TrimSpace(line); s != "" {
					return s, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("%s did not appear within %s", path, timeout)
}
