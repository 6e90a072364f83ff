package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/collector/targets"
)

// The acceptance point the agent benchmark measures: one agent probing
// benchTargets targets, each on both lab anycast addresses with every probe
// kind, at benchInterval, stays within these (MB are 10^6 bytes, the
// stricter reading).
const (
	benchTargets   = 20
	benchInterval  = 10 * time.Second
	benchRSSMB     = 40.0
	benchCPUPct    = 3.0
	benchAgentVP   = "vp1"
	benchIdleVP    = "vp2"
	benchAgentName = "bench-vp1"
	benchIdleName  = "idle-vp2"
	// benchSessionLife is short so that every session ends, and is stored,
	// within the shortest run (first sessions start within one interval).
	benchSessionLife = 20 * time.Second
)

// benchResultsPerRound is what one round of each periodic kind stores for
// one address: three DNS identity queries over UDP and TCP, one ping
// series, one trace, one HTTP request. Sessions add theirs when they end.
var benchResultsPerRound = map[api.Kind]int{api.KindDNS: 3 * 2, api.KindPing: 1, api.KindTrace: 1, api.KindHTTP: 1}

// benchAgentConfig is the measured agent's configuration beyond the common
// keys. Rates are set so that the schedule, not the limiter, sets the pace.
// Per (target, address) and interval the schedule asks for 6 DNS
// transactions, 3 echo requests, one packet per trace hop (about 5 in the
// lab; 30 at worst, or the reached hops plus the gap limit of 5 when routers
// rate-limit their ICMP), 1 HTTP request and 2 queries on each of the two
// sessions (one every 5s): about 19 packets, 44 at worst. With two addresses
// a target needs 3.8 packets/s on average, 8.8 at worst, and the 20 targets
// 76/s, 176 at worst. The default max_target_rate of 5/s (one packet per
// tenth of a second) would keep a target 76% busy and delay its rounds
// behind one another, so it is set to 50/s (five per tenth of a second, at
// most 18% of the budget), and max_rate to 20×50 = 1000/s so the global cap
// never binds before the per-target ones. Concurrency bounds
// rounds, not sessions: 160 periodic jobs start 16 rounds/s, and by Little's
// law they occupy about 16 × 0.15s ≈ 2.4 slots while traces reach the
// destination at once, up to 4 traces/s × 6s ≈ 24 slots when they end on the
// gap limit; 64 leaves room for Poisson bursts where the default 8 would
// queue rounds.
const benchAgentConfig = `allow: [192.0.2.0/24, "2001:db8:53::/48"]
max_rate: 1000
max_target_rate: 50
concurrency: 64
`

// benchIdleConfig is the reference agent's: the same, but its allow-list
// (TEST-NET-2) excludes every target address, so it schedules nothing.
const benchIdleConfig = `allow: [198.51.100.0/24]
max_rate: 1000
max_target_rate: 50
concurrency: 64
`

// BenchAgentCmd measures what an agent costs its vantage point at the
// acceptance point, in the anycast lab, against the same binary idling.
type BenchAgentCmd struct {
	Duration        time.Duration `help:"How long to sample the agents, after the warm-up (at least 20s)." default:"60s"`
	Warmup          time.Duration `help:"How long the agents run before sampling starts (at least 10s: one interval)." default:"15s"`
	Listen          string        `help:"Collector address on the management network." default:"198.19.0.1:8741"`
	Prefix          string        `help:"Namespace prefix of the benchmark's lab." default:"ba-"`
	StateDir        string        `name:"state-dir" help:"State directory of the benchmark's lab." default:"/run/anyscope-bench-agent"`
	Keep            bool          `help:"Keep the benchmark directory (database, spools, logs) and print its path; the lab is always taken down."`
	AgentCPUProfile string        `name:"agent-cpu-profile" help:"Write a CPU profile of the measured agent's whole run to this file (go tool pprof)." placeholder:"FILE"`
	Probes          []api.Kind    `help:"Probe kinds to schedule; fewer than all show what each costs, but only all of them make the acceptance point." default:"dns,ping,trace,http,session" sep:","`
}

// benchTargetsYAML declares n targets on both lab anycast addresses with
// the given probe kinds.
func benchTargetsYAML(n int, kinds []api.Kind) string {
	var names []string
	for _, k := range kinds {
		names = append(names, string(k))
	}
	var b strings.Builder
	b.WriteString("targets:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `  - name: bench-%02d
    addresses: [192.0.2.53, "2001:db8:53::53"]
    probes: [%s]
    interval: %s
    nsid_qname: lab.example.
    session_life: %s
    http: {scheme: http, headers: [X-Served-By]}
`, i, strings.Join(names, ", "), benchInterval, benchSessionLife)
	}
	return b.String()
}

// benchRates returns the results per second the schedule asks for with the
// given probe kinds: of the periodic rounds, and of sessions ending (every
// target has an HTTP spec, so an HTTP session runs whenever sessions do; a
// DNS session needs the dns probe too).
func benchRates(kinds []api.Kind) (rounds, sessions float64) {
	perRound, perAddr := 0, 0
	for _, k := range kinds {
		perRound += benchResultsPerRound[k]
	}
	if slices.Contains(kinds, api.KindSession) {
		perAddr = 1
		if slices.Contains(kinds, api.KindDNS) {
			perAddr = 2
		}
	}
	return float64(benchTargets*2*perRound) / benchInterval.Seconds(),
		float64(benchTargets*2*perAddr) / benchSessionLife.Seconds()
}

// Run builds the lab, runs both agents, samples them and prints the BENCH
// line last.
func (c *BenchAgentCmd) Run(ctx context.Context, log *slog.Logger) error {
	line, err := c.run(ctx, log)
	if err != nil {
		return err
	}
	// Printed after everything is torn down, so that it is the last line.
	fmt.Println(line)
	return nil
}

func (c *BenchAgentCmd) run(ctx context.Context, log *slog.Logger) (line string, err error) {
	if os.Geteuid() != 0 {
		return "", errors.New("bench agent runs the agent inside the anycast lab (network namespaces, BGP with bird2, NSD): run it as root")
	}
	if c.Duration < 20*time.Second || c.Warmup < benchInterval {
		return "", fmt.Errorf("--duration must be at least 20s and --warmup at least %s", benchInterval)
	}
	var kinds []api.Kind
	for _, k := range c.Probes {
		switch {
		case !slices.Contains(api.Kinds, k):
			return "", fmt.Errorf("--probes: unknown probe kind %q (known: %v)", k, api.Kinds)
		case !slices.Contains(kinds, k):
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		return "", errors.New("--probes: no probe kind")
	}
	kindList := fmt.Sprint(kinds)
	kindList = strings.ReplaceAll(kindList[1:len(kindList)-1], " ", ", ")
	profile := c.AgentCPUProfile
	if profile != "" {
		if profile, err = filepath.Abs(profile); err != nil {
			return "", err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	tck, tckSource := clockTicks()
	dir, cleanup, err := workDir("anyscope-bench-agent-", "benchmark", c.Keep)
	if err != nil {
		return "", err
	}
	defer cleanup()

	events, err := os.Create(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		return "", err
	}
	defer events.Close()
	// Whatever a crashed earlier run left under our prefix goes first.
	if old, err := lab.New(lab.Options{StateDir: c.StateDir, Prefix: c.Prefix, Logger: log}); err == nil {
		old.Down(ctx)
	}
	step("building the anycast lab (prefix %s)", c.Prefix)
	l, err := upLab(ctx, log, c.Prefix, c.StateDir, events)
	if err != nil {
		return "", err
	}
	defer func() {
		step("taking the lab down")
		if _, derr := l.Down(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
	}()

	// The lab's routers and servers forward and answer the agent's packets
	// in the agent's own context unless its links hand them to NAPI
	// threads; on a real vantage point other machines do that work.
	for _, vp := range []string{benchAgentVP, benchIdleVP} {
		if err := l.OffloadForwarding(ctx, vp); err != nil {
			return "", err
		}
	}

	step("starting a private PostgreSQL cluster in %s", filepath.Join(dir, "pg"))
	st, dsn, stopDB, err := startStore(ctx, log, dir)
	if err != nil {
		return "", err
	}
	defer stopDB()
	ts, err := targets.Parse("bench-targets.yaml", []byte(benchTargetsYAML(benchTargets, kinds)))
	if err != nil {
		return "", err
	}
	if _, err := st.ApplyTargets(ctx, ts); err != nil {
		return "", err
	}

	step("starting the collector on the management network (%s)", c.Listen)
	stopColl, err := startCollector(ctx, self, dir, dsn, c.Listen)
	if err != nil {
		return "", err
	}
	defer stopColl()

	step("starting the measured agent in %s (%d targets × 2 addresses, %s, every %s) and the idle reference in %s",
		benchAgentVP, benchTargets, kindList, benchInterval, benchIdleVP)
	agents := &labAgents{}
	defer agents.stop()
	var args []string
	if profile != "" {
		args = []string{"--cpu-profile", profile}
	}
	runStart := time.Now()
	busy, err := agents.start(ctx, l, st, self, dir, c.Listen, benchAgentVP, benchAgentName, benchAgentConfig, args...)
	if err != nil {
		return "", err
	}
	idle, err := agents.start(ctx, l, st, self, dir, c.Listen, benchIdleVP, benchIdleName, benchIdleConfig)
	if err != nil {
		return "", err
	}
	step("warming up for %s", c.Warmup)
	if err := sleepCtx(ctx, c.Warmup); err != nil {
		return "", err
	}
	for _, p := range []struct {
		pid  int
		name string
	}{{busy.Process.Pid, benchAgentName}, {idle.Process.Pid, benchIdleName}} {
		if err := checkAgentProcess(p.pid, self); err != nil {
			return "", fmt.Errorf("%s (log %s): %w", p.name, filepath.Join(dir, p.name, "agent.log"), err)
		}
	}

	step("sampling /proc of both agents every second for %s", c.Duration)
	n0, _, err := st.AgentSeqStats(ctx, benchAgentName)
	if err != nil {
		return "", err
	}
	busyS, idleS := &procSeries{pid: busy.Process.Pid}, &procSeries{pid: idle.Process.Pid}
	napi0, err := napiTicks(benchAgentVP)
	if err != nil {
		return "", err
	}
	end := time.Now().Add(c.Duration)
	for {
		for _, s := range []*procSeries{busyS, idleS} {
			if err := s.sample(); err != nil {
				return "", fmt.Errorf("agent %d is gone (logs in %s): %w", s.pid, dir, err)
			}
		}
		left := time.Until(end)
		if left <= 0 {
			break
		}
		if err := sleepCtx(ctx, min(time.Second, left)); err != nil {
			return "", err
		}
	}
	n1, _, err := st.AgentSeqStats(ctx, benchAgentName)
	if err != nil {
		return "", err
	}
	window := busyS.last.at.Sub(busyS.first.at)
	napi1, err := napiTicks(benchAgentVP)
	if err != nil {
		return "", err
	}

	step("stopping the agents (each ships what it still holds)")
	if err := agents.stop(); err != nil {
		return "", err
	}
	byKind, failed, rtts, err := benchKindCounts(ctx, st, benchAgentName, runStart)
	if err != nil {
		return "", err
	}
	idleN, _, err := st.AgentSeqStats(ctx, benchIdleName)
	if err != nil {
		return "", err
	}

	b, i := busyS.stats(tck), idleS.stats(tck)
	stored := n1 - n0
	asked, sessions := benchRates(kinds)
	fmt.Printf("agent bench: %d targets × 2 addresses, probes %s every %s; %s sampled after %s of warm-up; CPU from /proc/<pid>/stat (CLK_TCK %.0f, %s), RSS from /proc/<pid>/status (MB = 10^6 bytes)\n",
		benchTargets, kindList, benchInterval, window.Round(time.Millisecond), c.Warmup, tck, tckSource)
	fmt.Printf("measured agent (%s): CPU %.2f%% of one core (user %.2f%%, kernel %.2f%%), RSS mean %.1f MB, max %.1f MB, peak (VmHWM) %.1f MB; at the end %.1f MB anonymous + %.1f MB file-backed (the binary)\n",
		benchAgentVP, b.cpuPct, b.userPct, b.sysPct, b.rssMean, b.rssMax, b.hwm, b.anon, b.file)
	fmt.Printf("idle agent, same binary and config, empty schedule (%s): CPU %.2f%% (user %.2f%%, kernel %.2f%%), RSS mean %.1f MB, max %.1f MB, peak (VmHWM) %.1f MB; at the end %.1f MB anonymous + %.1f MB file-backed\n",
		benchIdleVP, i.cpuPct, i.userPct, i.sysPct, i.rssMean, i.rssMax, i.hwm, i.anon, i.file)
	fmt.Printf("measured/idle: CPU %s, peak RSS %s\n", ratio(b.cpuPct, i.cpuPct), ratio(b.hwm, i.hwm))
	fmt.Printf("the lab's routing and delivery of the measured agent's packets (NAPI threads of its routers' links, not the agent; a real vantage point's upstream does this): %.2f%% of one core\n",
		float64(napi1-napi0)/tck/window.Seconds()*100)
	fmt.Printf("results stored in the window: %d (%.1f/s; the schedule asks %.1f/s: %.1f of periodic rounds, %.1f of sessions ending every %s)\n",
		stored, float64(stored)/window.Seconds(), asked+sessions, asked, sessions, benchSessionLife)
	var counts []string
	for _, k := range api.Kinds {
		counts = append(counts, fmt.Sprintf("%s %d (%d failed)", k, byKind[k], failed[k]))
	}
	fmt.Printf("results over the whole run by kind: %s\n", strings.Join(counts, ", "))
	fmt.Printf("RTTs the agent measured (the lab adds no delay: what exceeds a fraction of a millisecond is the agent's own scheduling): %s\n", rttSummary(rtts))
	if len(kinds) < len(api.Kinds) {
		fmt.Printf("target: not judged: the acceptance point needs every probe kind, this run scheduled %s\n", kindList)
	} else {
		fmt.Printf("target: RSS ≤ %.0f MB (peak): %s; CPU ≤ %.0f%% of one core: %s\n", benchRSSMB, met(b.hwm <= benchRSSMB), benchCPUPct, met(b.cpuPct <= benchCPUPct))
	}
	if profile != "" {
		fmt.Printf("CPU profile of the measured agent: go tool pprof -top %s %s\n", self, profile)
	}

	var missing []string
	for _, k := range kinds {
		if byKind[k] == 0 {
			missing = append(missing, string(k))
		}
	}
	switch {
	case stored <= 0:
		return "", fmt.Errorf("the measured agent stored no results in the window (logs in %s; --keep keeps them)", dir)
	case len(missing) > 0:
		return "", fmt.Errorf("the measured agent stored no %s results (logs in %s; --keep keeps them)", strings.Join(missing, ", "), dir)
	case idleN != 0:
		return "", fmt.Errorf("the idle agent stored %d results: it is no reference", idleN)
	}
	line = fmt.Sprintf("BENCH agent_rss_mb=%.1f agent_cpu_pct=%.1f idle_rss_mb=%.1f idle_cpu_pct=%.1f results=%d", b.hwm, b.cpuPct, i.hwm, i.cpuPct, stored)
	return line, nil
}

// benchKindCounts counts the agent's stored results, and the failed ones,
// by kind, measured since the run started, and collects the RTTs of the
// answered ones by kind and transport.
func benchKindCounts(ctx context.Context, st *store.Store, agentName string, since time.Time) (all, failed map[api.Kind]int, rtts map[string][]time.Duration, err error) {
	all, failed, rtts = map[api.Kind]int{}, map[api.Kind]int{}, map[string][]time.Duration{}
	err = st.Observations(ctx, since.Add(-time.Minute), time.Time{}, "", func(o analysis.Observation) error {
		if o.VantagePoint != agentName {
			return nil
		}
		all[o.Kind]++
		if o.Failure != api.FailureNone {
			failed[o.Kind]++
		} else if o.RTT > 0 {
			k := string(o.Kind) + "/" + string(o.Transport)
			rtts[k] = append(rtts[k], o.RTT)
		}
		return nil
	})
	return all, failed, rtts, err
}

// rttSummary gives the median, 99th percentile and maximum of each kind's
// RTTs, in milliseconds.
func rttSummary(rtts map[string][]time.Duration) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(rtts)) {
		d := rtts[k]
		slices.Sort(d)
		q := func(f float64) float64 { return float64(d[int(f*float64(len(d)-1))].Microseconds()) / 1000 }
		out = append(out, fmt.Sprintf("%s p50 %.2f p99 %.2f max %.2f ms (%d)", k, q(0.5), q(0.99), q(1), len(d)))
	}
	return strings.Join(out, "; ")
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "n/a (reference is 0)"
	}
	return fmt.Sprintf("×%.1f", a/b)
}

// clockTicks returns the kernel's clock ticks per second (USER_HZ), in
// which /proc/<pid>/stat counts CPU time, and where the value came from.
// Go cannot call sysconf without cgo; getconf can. Linux has fixed USER_HZ
// at 100 on every architecture it exports to user space, hence the fallback.
func clockTicks() (float64, string) {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n), "getconf CLK_TCK"
		}
	}
	return 100, "assumed: Linux USER_HZ"
}

// checkAgentProcess makes sure pid runs self: ip netns exec must have exec'd
// into the agent rather than forked it, or /proc would describe ip.
func checkAgentProcess(pid int, self string) error {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return fmt.Errorf("agent process %d: %w", pid, err)
	}
	if want, err := filepath.EvalSymlinks(self); err == nil && strings.TrimSuffix(exe, " (deleted)") != want {
		return fmt.Errorf("process %d runs %s, not the agent %s", pid, exe, want)
	}
	return nil
}

// procSample is what /proc says of a process at one moment.
type procSample struct {
	at     time.Time
	utime  uint64 // clock ticks in user mode
	stime  uint64 // clock ticks in the kernel
	rssKB  uint64 // VmRSS
	anonKB uint64 // RssAnon: heap, stacks
	fileKB uint64 // RssFile: mapped files, mostly the binary's text
	hwmKB  uint64 // VmHWM: peak RSS since the process started
}

// procSeries accumulates samples of one process.
type procSeries struct {
	pid         int
	first, last procSample
	n           int
	sumRSSKB    uint64
	maxRSSKB    uint64
}

func (s *procSeries) sample() error {
	p, err := readProc(s.pid)
	if err != nil {
		return err
	}
	if s.n == 0 {
		s.first = p
	}
	s.last = p
	s.n++
	s.sumRSSKB += p.rssKB
	s.maxRSSKB = max(s.maxRSSKB, p.rssKB)
	return nil
}

// procStats summarises a series: CPU as a share of one core over the
// window (user and kernel time, and both), RSS in MB.
type procStats struct {
	cpuPct, userPct, sysPct float64
	rssMean, rssMax, hwm    float64
	anon, file              float64 // at the last sample
}

func (s *procSeries) stats(tck float64) procStats {
	mb := func(kb float64) float64 { return kb * 1024 / 1e6 }
	var st procStats
	if wall := s.last.at.Sub(s.first.at).Seconds(); wall > 0 {
		st.userPct = float64(s.last.utime-s.first.utime) / tck / wall * 100
		st.sysPct = float64(s.last.stime-s.first.stime) / tck / wall * 100
		st.cpuPct = st.userPct + st.sysPct
	}
	if s.n > 0 {
		st.rssMean = mb(float64(s.sumRSSKB) / float64(s.n))
	}
	st.rssMax = mb(float64(s.maxRSSKB))
	// The kernel's RSS counters are batched per CPU: a sample can exceed
	// the VmHWM read later by a few pages.
	st.hwm = max(mb(float64(s.last.hwmKB)), st.rssMax)
	st.anon, st.file = mb(float64(s.last.anonKB)), mb(float64(s.last.fileKB))
	return st
}

// napiTicks sums the CPU time (user and kernel, clock ticks) of the NAPI
// threads that receive what node sends: the kernel names them after the
// router-side interface, to-<node>, and its NAPI id (napi/to-vp1-8193,
// truncated to 15 characters). See lab.OffloadForwarding.
func napiTicks(node string) (uint64, error) {
	prefix := "napi/to-" + node + "-"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var sum uint64
	found := false
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(comm)), prefix[:min(len(prefix), 15)]) {
			continue
		}
		utime, stime, err := readCPUTicks(pid)
		if err != nil {
			continue // gone meanwhile
		}
		sum += utime + stime
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no NAPI thread %s* found: is the lab's forwarding offloaded?", prefix)
	}
	return sum, nil
}

// readCPUTicks reads utime and stime from /proc/<pid>/stat.
func readCPUTicks(pid int) (utime, stime uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. After it come state (field 3) … utime (14), stime (15).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return utime, stime, nil
}

// readProc reads utime+stime from /proc/<pid>/stat and VmRSS and VmHWM from
// /proc/<pid>/status.
func readProc(pid int) (procSample, error) {
	p := procSample{at: time.Now()}
	var err error
	if p.utime, p.stime, err = readCPUTicks(pid); err != nil {
		return p, err
	}
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		var dst *uint64
		switch key {
		case "VmRSS":
			dst = &p.rssKB
		case "VmHWM":
			dst = &p.hwmKB
		case "RssAnon":
			dst = &p.anonKB
		case "RssFile":
			dst = &p.fileKB
		}
		if !ok || dst == nil {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return p, fmt.Errorf("/proc/%d/status: %s: %w", pid, key, err)
		}
		*dst = kb
	}
	if err := sc.Err(); err != nil {
		return p, err
	}
	if p.rssKB == 0 {
		return p, fmt.Errorf("/proc/%d/status: no VmRSS (a zombie?)", pid)
	}
	return p, nil
}
