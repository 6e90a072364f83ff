package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/agent/lab"
	"github.com/anyscope/anyscope/agent/probe"
	"github.com/anyscope/anyscope/agent/spool"
	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/analyzer"
	"github.com/anyscope/anyscope/analysis/catchment"
	"github.com/anyscope/anyscope/analysis/report"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/collector/targets"
)

// DemoCmd runs anyscope end to end against the anycast lab: a BGP network
// of namespaces with four sites, a private PostgreSQL cluster, the collector
// on the lab's management network, one agent inside every vantage point,
// and a scenario that withdraws one site and black-holes another. It then
// checks the catchment measured before the scenario against the lab's ground
// truth (read from the routers, not from DNS), checks that the collector
// holds every result each agent measured exactly once (also across a
// collector outage, with --collector-outage) and prints the report.
type DemoCmd struct {
	Baseline  time.Duration `help:"How long the agents measure before the scenario." default:"25s"`
	After     time.Duration `help:"How long they measure after each change of the scenario." default:"30s"`
	Withdraw  string        `help:"Site the scenario withdraws (BGP: its vantage points move elsewhere)." default:"ams"`
	Blackhole string        `help:"Site the scenario black-holes (BGP stays up, its service drops everything)." default:"lhr"`
	BreakVP   string        `name:"break-vp" help:"Vantage point whose uplink the scenario breaks." default:"vp3"`
	Format    string        `help:"Report format: md or json." default:"md" enum:"md,json"`
	Keep      bool          `help:"Keep the demo directory (database, spools, logs) and print its path; the lab is always taken down."`
	Listen    string        `help:"Collector address on the management network." default:"198.19.0.1:8740"`
	// CollectorOutage adds a last phase: the collector is killed for this
	// long while the agents keep probing, then restarted.
	CollectorOutage time.Duration `name:"collector-outage" help:"After the scenario, kill the collector for this long while the agents keep probing and spooling, restart it, and check that everything arrives exactly once (0: no outage)." default:"0s"`
	// Lab flags: a prefix and state directory of the demo's own, so a lab
	// the user built by hand is not touched.
	Prefix   string `help:"Namespace prefix of the demo's lab." default:"dm-"`
	StateDir string `name:"state-dir" help:"State directory of the demo's lab." default:"/run/anyscope-demo"`
	// HostileIdentity makes one site answer CHAOS queries with markup
	// (hostileIdentity) while its NSID stays: the browser test checks that
	// the dashboard shows it as text and runs nothing.
	HostileIdentity string `name:"hostile-identity" help:"Site whose NSD answers CHAOS hostname.bind/id.server with an HTML payload (its NSID stays)." hidden:"" placeholder:"SITE"`
}

// hostileIdentity is the CHAOS identity --hostile-identity gives a site:
// markup that runs a script wherever it is not escaped (an img whose source
// fails fires onerror).
const hostileIdentity = "<img src=x onerror=alert(1)>"

// demoTargets is what the demo measures: the lab's anycast service. Site
// codes come from the built-in <cc>-<iata> identity convention
// (ns1.nl-ams.lab.example → AMS); the site list places them.
const demoTargets = `targets:
  - name: lab-dns
    addresses: [192.0.2.53, "2001:db8:53::53"]
    probes: [dns, ping, http, session]
    interval: 5s
    nsid_qname: lab.example.   # the zone the lab's NSD serves
    session_life: 2m
    http: {scheme: http, host: www.lab.example, headers: [X-Served-By]}
    sites:
      - {code: AMS, name: Amsterdam, lat: 52.31, lon: 4.76}
      - {code: FRA, name: Frankfurt, lat: 50.03, lon: 8.57}
      - {code: LHR, name: London, lat: 51.47, lon: -0.45}
      - {code: SIN, name: Singapore, lat: 1.36, lon: 103.99}
`

// Run executes the demo.
func (c *DemoCmd) Run(ctx context.Context, log *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo builds an anycast network in network namespaces (BGP with bird2, NSD): run it as root")
	}
	if c.Baseline < 10*time.Second || c.After < 10*time.Second {
		return errors.New("--baseline and --after must be at least 10s (two probe intervals)")
	}
	if c.CollectorOutage != 0 && c.CollectorOutage < 2*demoInterval {
		return fmt.Errorf("--collector-outage must be 0 (none) or at least %s (two probe intervals)", 2*demoInterval)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, cleanup, err := workDir("anyscope-demo-", "demo", c.Keep)
	if err != nil {
		return err
	}
	defer cleanup()

	events, err := os.Create(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		return err
	}
	defer events.Close()
	step("building the anycast lab: 6 routers (eBGP, bird2), 4 sites (NSD), 8 vantage points")
	topo := lab.DefaultTopologyYAML()
	if c.HostileIdentity != "" {
		if topo, err = withIdentity(topo, c.HostileIdentity, hostileIdentity); err != nil {
			return err
		}
	}
	l, err := upLabTopology(ctx, log, c.Prefix, c.StateDir, events, topo)
	if err != nil {
		return err
	}
	defer func() {
		step("taking the lab down")
		if _, derr := l.Down(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()

	step("starting a private PostgreSQL cluster in %s", filepath.Join(dir, "pg"))
	st, dsn, stopDB, err := startStore(ctx, log, dir)
	if err != nil {
		return err
	}
	defer stopDB()
	ts, err := targets.Parse("demo-targets.yaml", []byte(demoTargets))
	if err != nil {
		return err
	}
	if _, err := st.ApplyTargets(ctx, ts); err != nil {
		return err
	}
	truthBefore, err := l.Truth(ctx)
	if err != nil {
		return err
	}
	var vps []string
	for _, e := range truthBefore.VantagePoints {
		if !slices.Contains(vps, e.VantagePoint) {
			vps = append(vps, e.VantagePoint)
		}
	}

	step("starting the collector on the management network (%s)", c.Listen)
	coll, err := runCollector(ctx, self, dir, dsn, c.Listen, "collector.log")
	if err != nil {
		return err
	}
	defer func() { coll.stop() }() // the one running at the end

	step("registering %d vantage points and starting one agent inside each (probing every 5s on average)", len(vps))
	agents, err := c.startAgents(ctx, l, st, self, dir, vps)
	defer agents.stop()
	if err != nil {
		return err
	}
	step("starting the incremental analyzer (anyscope analyze --every 5s)")
	stopAnalyzer, err := startAnalyzer(ctx, self, dir, dsn)
	if err != nil {
		return err
	}
	defer stopAnalyzer()

	// The scenario, phase by phase; each phase's ground truth is read from
	// the routers once BGP has settled.
	var ph phases
	ph.start = time.Now()
	if err := sleepCtx(ctx, c.Baseline); err != nil {
		return err
	}
	ph.base = truthBefore
	run := func(what string, s lab.Step, wait time.Duration) (time.Time, *lab.Truth, error) {
		at := time.Now()
		step("scenario: %s", what)
		if err := l.Run(ctx, s); err != nil {
			return at, nil, err
		}
		if err := sleepCtx(ctx, 3*time.Second); err != nil {
			return at, nil, err
		}
		tr, err := l.Truth(ctx)
		if err != nil {
			return at, nil, err
		}
		return at, tr, sleepCtx(ctx, wait)
	}
	if ph.withdraw, ph.withdrawn, err = run(fmt.Sprintf("withdraw %s (BGP: its vantage points move elsewhere)", c.Withdraw), lab.Step{Do: "withdraw", Target: c.Withdraw}, c.After); err != nil {
		return err
	}
	if ph.restore, _, err = run(fmt.Sprintf("restore %s", c.Withdraw), lab.Step{Do: "restore", Target: c.Withdraw}, c.After); err != nil {
		return err
	}
	if ph.blackhole, ph.holed, err = run(fmt.Sprintf("black-hole %s (still announced, its service drops everything)", c.Blackhole), lab.Step{Do: "blackhole", Target: c.Blackhole}, c.After); err != nil {
		return err
	}
	if ph.unhole, _, err = run(fmt.Sprintf("restore %s", c.Blackhole), lab.Step{Do: "restore", Target: c.Blackhole}, c.After); err != nil {
		return err
	}
	if ph.breakVP, _, err = run(fmt.Sprintf("break %s's uplink (its own network fails)", c.BreakVP), lab.Step{Do: "break-vp", Target: c.BreakVP}, c.After); err != nil {
		return err
	}
	if ph.fixVP, _, err = run(fmt.Sprintf("fix %s's uplink", c.BreakVP), lab.Step{Do: "fix-vp", Target: c.BreakVP}, 10*time.Second); err != nil {
		return err
	}
	if c.CollectorOutage > 0 {
		step("collector outage: killing the collector (SIGKILL) for %s while the agents keep probing and spooling", c.CollectorOutage)
		coll.kill()
		ph.outage, ph.outageFor = time.Now(), c.CollectorOutage
		if err := sleepCtx(ctx, c.CollectorOutage); err != nil {
			return err
		}
		step("restarting the collector; the agents deliver what they spooled, oldest first")
		back, err := runCollector(ctx, self, dir, dsn, c.Listen, "collector-after-outage.log")
		if err != nil {
			return err
		}
		coll = back
		ph.outageEnd = time.Now()
		if err := waitCaughtUp(ctx, st, vps, ph.outageEnd, c.CollectorOutage+time.Minute); err != nil {
			return err
		}
	}
	step("stopping the agents (each ships what it still holds)")
	if err := agents.stop(); err != nil {
		return err
	}
	ph.end = time.Now()
	// The incremental analyzer's last step picks up what the agents
	// shipped on their way out.
	if err := sleepCtx(ctx, 7*time.Second); err != nil {
		return err
	}
	stopAnalyzer()

	fmt.Fprintln(os.Stderr)
	printTruth(os.Stderr, "Ground truth before the scenario (from the routers' forwarding tables)", ph.base)
	printTruth(os.Stderr, fmt.Sprintf("Ground truth with %s withdrawn", c.Withdraw), ph.withdrawn)
	printTruth(os.Stderr, fmt.Sprintf("Ground truth with %s black-holed", c.Blackhole), ph.holed)
	problems, err := c.check(ctx, st, &ph)
	if err != nil {
		return err
	}
	delivery, err := checkDelivery(ctx, st, dsn, dir, vps, &ph)
	if err != nil {
		return err
	}
	problems = append(problems, delivery...)
	fmt.Fprintln(os.Stderr)

	step("report for the whole run (anyscope report --since %s --until %s)", ph.start.Add(-time.Minute).UTC().Format(time.RFC3339), ph.end.UTC().Format(time.RFC3339))
	r, err := report.Build(ctx, st, report.Options{Since: ph.start.Add(-time.Minute), Until: ph.end})
	if err != nil {
		return err
	}
	if c.Format == "json" {
		err = report.WriteJSON(os.Stdout, r)
	} else {
		err = report.WriteMarkdown(os.Stdout, r)
	}
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d checks against the lab's ground truth failed:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	return nil
}

// phases are the times and ground truths of the demo's scenario.
type phases struct {
	start, withdraw, restore, blackhole, unhole, breakVP, fixVP, end time.Time
	// outage and outageEnd bound the collector's outage (it was down for
	// outageFor, then restarted); zero: none.
	outage, outageEnd      time.Time
	outageFor              time.Duration
	base, withdrawn, holed *lab.Truth
}

// settle is how long after a change the demo leaves routing and the agents
// before judging a catchment.
const settle = 5 * time.Second

// check compares what analysis found with what the lab did, prints each
// verdict, and returns the failed ones.
func (c *DemoCmd) check(ctx context.Context, st *store.Store, ph *phases) ([]string, error) {
	var v verdicts
	verdict := v.add
	analyse := func(since, until time.Time) (analyzer.Findings, error) {
		return analyzer.Run(ctx, st, "", analyzer.Config{Window: catchment.Window{Since: since, Until: until}})
	}
	fmt.Fprintln(os.Stderr, "Checks against the lab's ground truth:")

	// Catchments, before and after each scenario.
	for _, w := range []struct {
		name         string
		since, until time.Time
		truth        *lab.Truth
	}{
		{"before the scenario", ph.start, ph.withdraw, ph.base},
		{fmt.Sprintf("with %s withdrawn", c.Withdraw), ph.withdraw.Add(settle), ph.restore, ph.withdrawn},
		{fmt.Sprintf("after %s is restored", c.Withdraw), ph.restore.Add(settle), ph.blackhole, ph.base},
		{fmt.Sprintf("after %s is restored", c.Blackhole), ph.unhole.Add(settle), ph.breakVP, ph.base},
	} {
		f, err := analyse(w.since, w.until)
		if err != nil {
			return nil, err
		}
		matched, total, mismatches := compareCatchment(f.Catchments, w.truth)
		verdict(matched == total && total > 0, "catchment %s equals lab truth for %d of %d (vantage point, address) pairs %s", w.name, matched, total, strings.Join(mismatches, "; "))
	}

	all, err := analyse(ph.start, ph.end)
	if err != nil {
		return nil, err
	}
	site := func(s string) string { return strings.ToUpper(s) }
	during := func(in analysis.Incident, from, to time.Time) bool {
		return in.Start.Before(to) && (in.Open() || !in.End.Before(from))
	}

	// Withdrawal: the switches of the vantage points it served alone are
	// caused by it; those that r2 balances per flow between two sites
	// (ECMP) alternate: load balancing, or the withdrawal when the site
	// they alternate with goes.
	single, balanced := map[string]bool{}, map[string]bool{}
	for _, e := range ph.base.VantagePoints {
		switch {
		case len(e.Sites) > 1:
			balanced[e.VantagePoint] = true
		case len(e.Sites) == 1 && strings.EqualFold(e.Sites[0], c.Withdraw):
			single[e.VantagePoint] = true
		}
	}
	var away, wrong, lb, lbWrong []string
	for _, s := range all.Switches {
		if balanced[s.VantagePoint] {
			if s.Cause == analysis.CauseLoadBalancing {
				lb = append(lb, s.VantagePoint)
			} else if s.Cause != analysis.CauseWithdrawal {
				lbWrong = append(lbWrong, fmt.Sprintf("%s %s→%s %s", s.VantagePoint, s.From, s.To, s.Cause))
			}
			continue
		}
		if !single[s.VantagePoint] || s.At.Before(ph.withdraw) || !s.At.Before(ph.blackhole) {
			continue
		}
		if s.From == site(c.Withdraw) {
			away = append(away, s.VantagePoint)
		}
		if s.Cause != analysis.CauseWithdrawal {
			wrong = append(wrong, fmt.Sprintf("%s %s→%s %s (%s)", s.VantagePoint, s.From, s.To, s.Cause, s.Evidence))
		}
	}
	verdict(len(away) > 0 && len(wrong) == 0, "withdrawing %s: %d switches of the vantage points it served alone, all with cause withdrawal (away and back) %s", c.Withdraw, len(away), strings.Join(wrong, ", "))
	verdict(len(balanced) == 0 || (len(lb) > 0 && len(lbWrong) == 0), "vantage points balanced per flow (ECMP): %d switches with cause load_balancing, none routing or unknown %s", len(lb), strings.Join(lbWrong, ", "))
	var stray []string
	for _, in := range all.Incidents {
		if during(in, ph.withdraw, ph.blackhole) {
			stray = append(stray, fmt.Sprintf("%s %s %v", in.Kind, in.Site, in.VantagePoints))
		}
	}
	verdict(len(stray) == 0, "withdrawing and restoring %s opened no incident %s", c.Withdraw, strings.Join(stray, ", "))

	// Black hole: one incident, the right site, exactly its vantage
	// points, found within three probe intervals, ended by the restore.
	var wantVPs []string
	for _, e := range ph.holed.VantagePoints {
		if e.Blackholed && !slices.Contains(wantVPs, e.VantagePoint) {
			wantVPs = append(wantVPs, e.VantagePoint)
		}
	}
	slices.Sort(wantVPs)
	var holes []analysis.Incident
	for _, in := range all.Incidents {
		if during(in, ph.blackhole, ph.breakVP) {
			holes = append(holes, in)
		}
	}
	ok := len(holes) == 1 && holes[0].Kind == analysis.IncidentBlackhole && holes[0].Site == site(c.Blackhole) && slices.Equal(holes[0].VantagePoints, wantVPs)
	desc := make([]string, len(holes))
	for i, in := range holes {
		desc[i] = fmt.Sprintf("%s %s %v %s–%s", in.Kind, in.Site, in.VantagePoints, in.Start.Format("15:04:05"), in.End.Format("15:04:05"))
	}
	verdict(ok, "black-holing %s: one blackhole incident of %s with exactly %v; found %s", c.Blackhole, site(c.Blackhole), wantVPs, strings.Join(desc, ", "))
	if ok {
		in := holes[0]
		// A result is dated when its probe started: an answer that came
		// after the restore can be dated before it by up to the longest
		// probe, HTTP's timeout (its SYN was dropped and retransmitted
		// across the restore); a ping series takes up to 2 s, DNS 1 s.
		verdict(!in.Open() && !in.End.Before(ph.unhole.Add(-probe.DefaultHTTPTimeout)) && in.End.Before(ph.unhole.Add(3*demoInterval+settle)),
			"the black hole ends when %s is restored (restored %s, incident ends %s)", c.Blackhole, ph.unhole.Format("15:04:05"), in.End.Format("15:04:05"))
	}
	early, err := analyse(ph.start, ph.blackhole.Add(3*demoInterval))
	if err != nil {
		return nil, err
	}
	found := false
	for _, in := range early.Incidents {
		found = found || (in.Kind == analysis.IncidentBlackhole && in.Site == site(c.Blackhole) && !in.Start.Before(ph.blackhole))
	}
	verdict(found, "the black hole is found in the results of its first three probe intervals (%s)", 3*demoInterval)

	// A broken uplink: a vantage_point incident, no site incident.
	var vpInc, siteInc []string
	for _, in := range all.Incidents {
		if !during(in, ph.breakVP, ph.end) {
			continue
		}
		if in.Kind == analysis.IncidentVantagePoint && slices.Equal(in.VantagePoints, []string{c.BreakVP}) {
			vpInc = append(vpInc, in.Start.Format("15:04:05"))
		} else {
			siteInc = append(siteInc, fmt.Sprintf("%s %s %v", in.Kind, in.Site, in.VantagePoints))
		}
	}
	verdict(len(vpInc) == 1 && len(siteInc) == 0, "breaking %s's uplink: one vantage_point incident (%s), no site incident %s", c.BreakVP, strings.Join(vpInc, ", "), strings.Join(siteInc, ", "))

	// The incremental analyzer kept the same incidents in the database.
	stored, err := st.StoredIncidents(ctx, "", ph.start, ph.end.Add(time.Minute))
	if err != nil {
		return nil, err
	}
	kinds := map[analysis.IncidentKind][]string{}
	for _, in := range stored {
		kinds[in.Kind] = append(kinds[in.Kind], in.Site+fmt.Sprint(in.VantagePoints))
	}
	verdict(len(kinds[analysis.IncidentBlackhole]) == 1 && len(kinds[analysis.IncidentVantagePoint]) == 1 && len(kinds[analysis.IncidentOutage]) == 0,
		"anyscope analyze --every stored the black hole and the vantage-point incident: %v", kinds)
	return v.problems, nil
}

// verdicts prints checks as they are made and collects the failed ones.
type verdicts struct{ problems []string }

func (v *verdicts) add(ok bool, format string, args ...any) {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		v.problems = append(v.problems, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(os.Stderr, "  %s "+format+"\n", append([]any{mark}, args...)...)
}

// waitCaughtUp waits until the collector holds, for every agent, a result
// measured after since: agents upload their spools oldest first, so by then
// each has delivered what it spooled before.
func waitCaughtUp(ctx context.Context, st *store.Store, agents []string, since time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		hs, _, err := st.AgentsHealth(ctx, time.Now(), 0)
		if err != nil {
			return err
		}
		var behind []string
		for _, name := range agents {
			i := slices.IndexFunc(hs, func(h store.AgentHealth) bool { return h.Name == name })
			if i < 0 || hs[i].NewestMeasured == nil || !hs[i].NewestMeasured.After(since) {
				behind = append(behind, name)
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d agents delivered nothing measured after the collector came back within %s: %s",
				len(behind), timeout, strings.Join(behind, ", "))
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
}

// checkDelivery checks, agent by agent, that what it measured arrived
// exactly once: the collector holds every sequence number from 1 to its
// highest once, and no gap; everything the agent saw acknowledged is
// stored, and the rest is still in its spool, to be sent at its next start.
// After a collector outage, it also checks that every agent's results
// measured during the outage arrived.
func checkDelivery(ctx context.Context, st *store.Store, dsn, dir string, agents []string, ph *phases) ([]string, error) {
	var v verdicts
	fmt.Fprintln(os.Stderr, "Checks of delivery (every result of every agent, exactly once):")
	var inOutage map[string]int64
	if !ph.outage.IsZero() {
		var err error
		if inOutage, err = measuredBetween(ctx, dsn, ph.outage, ph.outageEnd); err != nil {
			return nil, err
		}
	}
	for _, name := range agents {
		acc, err := st.SeqAccounting(ctx, name)
		if err != nil {
			return nil, err
		}
		sp, err := spool.Open(filepath.Join(dir, name, "spool"), spool.Options{})
		if err != nil {
			return nil, err
		}
		pending, _, _ := sp.Stats()
		last := sp.NextSeq() - 1 // the highest seq the agent handed out
		sp.Close()
		acked := int64(last) - int64(pending)
		v.add(acc.Stored > 0 && acc.Rows == acc.Stored && acc.Holes == 0 && acc.Gaps == 0 && acc.Highest <= int64(last) && acked <= acc.Highest,
			"%s: the collector holds seqs 1..%d, each once (%d rows, %d holes, %d gaps); the agent numbered up to %d and holds %d undelivered",
			name, acc.Highest, acc.Rows, acc.Holes, acc.Gaps, last, pending)
		if inOutage != nil {
			v.add(inOutage[name] > 0, "%s: %d results measured during the %s collector outage arrived after it",
				name, inOutage[name], ph.outageFor)
		}
	}
	return v.problems, nil
}

// measuredBetween counts each agent's stored results measured in [from, to).
func measuredBetween(ctx context.Context, dsn string, from, to time.Time) (map[string]int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("count the results measured during the outage: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT a.name, count(*) FROM results r JOIN agents a ON a.id = r.agent_id
		WHERE r.measured_at >= $1 AND r.measured_at < $2 GROUP BY a.name`, from, to)
	if err != nil {
		return nil, fmt.Errorf("count the results measured during the outage: %w", err)
	}
	n := map[string]int64{}
	var name string
	var count int64
	_, err = pgx.ForEachRow(rows, []any{&name, &count}, func() error { n[name] = count; return nil })
	if err != nil {
		return nil, fmt.Errorf("count the results measured during the outage: %w", err)
	}
	return n, nil
}

// demoInterval is the probe interval of demoTargets.
const demoInterval = 5 * time.Second

// startAnalyzer runs `anyscope analyze --every 5s` against dsn, logging to
// dir/analyze.log. stop interrupts it and waits (it may be called twice).
func startAnalyzer(ctx context.Context, self, dir, dsn string) (stop func(), err error) {
	logf, err := os.Create(filepath.Join(dir, "analyze.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "analyze", "--db", dsn, "--every", "5s", "--settle", "2s", "--name", "demo")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
			logf.Close()
		})
	}, nil
}

// demoLocations place the lab's vantage points on the map, each in a city
// near the site routing leads it to (vp2 and vp8, balanced between AMS and
// FRA, in between). The lab has no propagation delay, so answers from a site
// far from a vantage point's city are listed as impossible RTTs: a true
// finding about the lab.
var demoLocations = map[string][2]float64{
	"vp1": {52.37, 4.90},  // Amsterdam
	"vp2": {50.94, 6.96},  // Cologne
	"vp3": {49.49, 8.47},  // Mannheim
	"vp4": {1.49, 103.74}, // Johor Bahru
	"vp5": {50.08, 8.24},  // Wiesbaden
	"vp6": {49.87, 8.65},  // Darmstadt
	"vp7": {51.45, -0.97}, // Reading
	"vp8": {51.23, 6.77},  // Düsseldorf
}

// labAgents are agent processes running inside the lab's vantage points.
type labAgents struct {
	mu   sync.Mutex
	cmds []*exec.Cmd
	logs []*os.File
	done bool
	errs []error
}

// startAgents registers every vantage point and starts its agent inside its
// namespace, talking to the collector over the management network.
func (c *DemoCmd) startAgents(ctx context.Context, l *lab.Lab, st *store.Store, self, dir string, vps []string) (*labAgents, error) {
	a := &labAgents{}
	for _, vp := range vps {
		if _, err := a.start(ctx, l, st, self, dir, c.Listen, vp, vp, `allow: [192.0.2.0/24, "2001:db8:53::/48"]
timeout: 1s
max_target_rate: 20
`); err != nil {
			return a, err
		}
	}
	return a, nil
}

// start registers the agent name, writes its token and configuration (the
// common keys followed by extra, YAML lines) under dir/name and starts it
// inside the namespace of the vantage point vp, logging to dir/name/agent.log.
// The returned command's process is the agent itself: ip netns exec execs
// into it.
func (a *labAgents) start(ctx context.Context, l *lab.Lab, st *store.Store, self, dir, collector, vp, name, extra string, args ...string) (*exec.Cmd, error) {
	vdir := filepath.Join(dir, name)
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return nil, err
	}
	spec := store.AgentSpec{Name: name, Region: "lab"}
	if loc, ok := demoLocations[vp]; ok {
		spec.Latitude, spec.Longitude = &loc[0], &loc[1]
	}
	_, token, err := st.AddAgent(ctx, spec)
	if err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(vdir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`name: %s
collector: http://%s
token_file: %s
spool_dir: %s
`, name, collector, tokenFile, filepath.Join(vdir, "spool")) + extra
	cfgPath := filepath.Join(vdir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(vdir, "agent.log"))
	if err != nil {
		return nil, err
	}
	argv := append([]string{self, "agent", "--config", cfgPath}, args...)
	cmd, err := l.Command(context.WithoutCancel(ctx), vp, argv...)
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("agent in %s: %w", vp, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cmds = append(a.cmds, cmd)
	a.logs = append(a.logs, logf)
	return cmd, nil
}

// stop asks every agent to stop (SIGINT: each finishes its upload and
// flushes its spool), waits for them, and returns the first failure.
func (a *labAgents) stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return errors.Join(a.errs...)
	}
	a.done = true
	for _, cmd := range a.cmds {
		cmd.Process.Signal(syscall.SIGINT)
	}
	for i, cmd := range a.cmds {
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		if err := cmd.Wait(); err != nil {
			a.errs = append(a.errs, fmt.Errorf("agent %d (log %s): %w", i+1, a.logs[i].Name(), err))
		}
		timer.Stop()
		a.logs[i].Close()
	}
	return errors.Join(a.errs...)
}

// compareCatchment checks, for every (vantage point, address) of the truth
// that reaches a site, that the measured catchment names one of the sites
// routing leads to.
func compareCatchment(cs []catchment.Catchment, truth *lab.Truth) (matched, total int, mismatches []string) {
	got := map[string]string{}
	for _, c := range cs {
		got[c.VantagePoint+" "+c.Address.String()] = c.Site
	}
	for _, e := range truth.VantagePoints {
		if len(e.Sites) == 0 || e.Blackholed {
			continue
		}
		total++
		site, ok := got[e.VantagePoint+" "+e.Address]
		if ok && slices.ContainsFunc(e.Sites, func(s string) bool { return strings.EqualFold(s, site) }) {
			matched++
			continue
		}
		if !ok {
			site = "(no catchment)"
		}
		mismatches = append(mismatches, fmt.Sprintf("%s %s: measured %s, routing leads to %s", e.VantagePoint, e.Address, site, strings.Join(e.Sites, "+")))
	}
	return matched, total, mismatches
}

// printTruth writes a truth table: one line per vantage point.
func printTruth(w io.Writer, title string, t *lab.Truth) {
	fmt.Fprintln(w, title+":")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VANTAGE POINT\tADDRESS\tSITES\tNOTE")
	for _, e := range t.VantagePoints {
		note := e.Problem
		if e.Blackholed {
			note = "black-holed: announced, service dead"
		}
		sites := strings.Join(e.Sites, "+")
		if sites == "" {
			sites = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.VantagePoint, e.Address, sites, note)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// upLab builds the default lab topology under its own prefix and state
// directory (installing the tools it needs) and waits for BGP to converge.
// The caller takes it down.
func upLab(ctx context.Context, log *slog.Logger, prefix, stateDir string, events io.Writer) (*lab.Lab, error) {
	return upLabTopology(ctx, log, prefix, stateDir, events, lab.DefaultTopologyYAML())
}

// upLabTopology is upLab with the topology's YAML.
func upLabTopology(ctx context.Context, log *slog.Logger, prefix, stateDir string, events io.Writer, topology []byte) (*lab.Lab, error) {
	l, err := lab.New(lab.Options{StateDir: stateDir, Prefix: prefix, Logger: log, Events: events})
	if err != nil {
		return nil, err
	}
	if err := lab.EnsureTools(ctx, log); err != nil {
		return nil, err
	}
	if err := l.Up(ctx, "default", topology); err != nil {
		return nil, err
	}
	return l, nil
}

// withIdentity returns the topology YAML src with the CHAOS identity of
// site replaced by identity (quoted).
func withIdentity(src []byte, site, identity string) ([]byte, error) {
	t, err := lab.ParseTopology("default", src)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(t.Sites, func(s lab.Site) bool { return s.Name == site })
	if i < 0 {
		return nil, fmt.Errorf("--hostile-identity %q: the lab has no such site", site)
	}
	old := "identity: " + t.Sites[i].Identity + ","
	if strings.Count(string(src), old) != 1 {
		return nil, fmt.Errorf("--hostile-identity %q: cannot find %q in the topology", site, old)
	}
	return []byte(strings.Replace(string(src), old, "identity: "+strconv.Quote(identity)+",", 1)), nil
}

// startStore starts a private PostgreSQL cluster in dir/pg and opens and
// migrates the anyscope database on it. stop closes the store and stops the
// cluster.
func startStore(ctx context.Context, log *slog.Logger, dir string) (st *store.Store, dsn string, stop func(), err error) {
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Logger: log})
	if err != nil {
		return nil, "", nil, err
	}
	stopCluster := func() { cl.Stop(context.WithoutCancel(ctx)) }
	dsn = cl.ConnString("anyscope")
	if st, err = store.Open(ctx, dsn); err != nil {
		stopCluster()
		return nil, "", nil, err
	}
	stop = func() {
		st.Close()
		stopCluster()
	}
	if err := st.Migrate(ctx); err != nil {
		stop()
		return nil, "", nil, err
	}
	return st, dsn, stop, nil
}

// startCollector runs the collector (the binary self) as a subprocess on
// listen, storing into dsn and logging to dir/collector.log, and waits until
// it serves. stop interrupts it and waits for it to exit.
func startCollector(ctx context.Context, self, dir, dsn, listen string) (stop func(), err error) {
	p, err := runCollector(ctx, self, dir, dsn, listen, "collector.log")
	if err != nil {
		return nil, err
	}
	return p.stop, nil
}

// collectorProc is a collector subprocess.
type collectorProc struct {
	cmd  *exec.Cmd
	log  *os.File
	once sync.Once
}

// runCollector runs the collector (the binary self) as a subprocess on
// listen, storing into dsn and logging to dir/logName, and waits until it
// serves.
func runCollector(ctx context.Context, self, dir, dsn, listen, logName string) (*collectorProc, error) {
	readyFile := filepath.Join(dir, "collector.addr")
	if err := os.Remove(readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	collLog, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		return nil, err
	}
	coll := exec.CommandContext(ctx, self, "collector", "--db", dsn, "--listen", listen, "--ready-file", readyFile)
	coll.Stdout, coll.Stderr = collLog, collLog
	coll.Cancel = func() error { return coll.Process.Signal(os.Interrupt) }
	coll.WaitDelay = 10 * time.Second
	if err := coll.Start(); err != nil {
		collLog.Close()
		return nil, err
	}
	p := &collectorProc{cmd: coll, log: collLog}
	if _, err := waitForFile(ctx, readyFile, 30*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("collector did not start (log in %s): %w", collLog.Name(), err)
	}
	return p, nil
}

// stop interrupts the collector and waits for it to exit (once: later calls
// do nothing).
func (p *collectorProc) stop() { p.end(os.Interrupt) }

// kill kills the collector with SIGKILL, as a crash would, and waits for it.
func (p *collectorProc) kill() { p.end(os.Kill) }

func (p *collectorProc) end(sig os.Signal) {
	p.once.Do(func() {
		p.cmd.Process.Signal(sig)
		p.cmd.Wait()
		p.log.Close()
	})
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitForFile waits until path exists and returns its first line.
func waitForFile(ctx context.Context, path string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if s, _, _ := strings.Cut(string(b), "\n"); strings.TrimSpace(s) != "" {
				return strings.TrimSpace(s), nil
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("%s did not appear within %s", path, timeout)
}

// workDir makes a temporary directory for a run's database, spools and
// logs, reachable by PostgreSQL (which runs as the postgres user when we are
// root), and returns the function that removes it — or, with keep, says
// where it is.
func workDir(pattern, what string, keep bool) (string, func(), error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, func() {
		if keep {
			fmt.Fprintf(os.Stderr, "%s files kept in %s\n", what, dir)
			return
		}
		os.RemoveAll(dir)
	}, nil
}

// step announces a stage of a long run.
func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}
