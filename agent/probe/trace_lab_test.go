package probe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// traceHelperEnv carries a traceJob to TestHelperTrace, which runs it in
// the namespace the test binary was started in.
const traceHelperEnv = "ANYSCOPE_TRACE_TEST_JOB"

// traceJob is a batch of traces run by one helper process, Concurrency at
// a time.
type traceJob struct {
	Concurrency int             `json:"concurrency"`
	Traces      []traceJobTrace `json:"traces"`
}

type traceJobTrace struct {
	Addr      string        `json:"addr"`
	Transport api.Transport `json:"transport"`
	SPort     uint16        `json:"sport"`
	Engine    string        `json:"engine"`
}

const traceHelperMarker = "TRACE-RESULTS "

// TestHelperTrace is not a test: the lab test re-executes the test binary
// inside a vantage point's namespace to run traces there.
func TestHelperTrace(t *testing.T) {
	spec := os.Getenv(traceHelperEnv)
	if spec == "" {
		t.Skip("helper process for TestTraceLab")
	}
	var job traceJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		t.Fatal(err)
	}
	results := make([]api.Result, len(job.Traces))
	sem := make(chan struct{}, max(1, job.Concurrency))
	var wg sync.WaitGroup
	for i, tr := range job.Traces {
		p, err := NewTrace(TraceOptions{SourcePort: tr.SPort, Engine: tr.Engine, ProbeTimeout: 500 * time.Millisecond, MaxTTL: 12, Attempts: 2})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = p.Probe(context.Background(), traceTarget, netip.MustParseAddr(tr.Addr), tr.Transport)[0]
		}()
	}
	wg.Wait()
	b, err := json.Marshal(results)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s%s\n", traceHelperMarker, b)
}

// runTraces runs job inside node's namespace and returns one result per trace.
func runTraces(ctx context.Context, t *testing.T, l *lab.Lab, node string, job traceJob) []api.Result {
	t.Helper()
	spec, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := l.Command(ctx, node, os.Args[0], "-test.run=^TestHelperTrace$", "-test.count=1")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), traceHelperEnv+"="+string(spec))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper in %s: %v\n%s\n%s", node, err, out, stderr.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), traceHelperMarker); ok {
			var rs []api.Result
			if err := json.Unmarshal([]byte(s), &rs); err != nil {
				t.Fatal(err)
			}
			if len(rs) != len(job.Traces) {
				t.Fatalf("helper in %s: %d results for %d traces", node, len(rs), len(job.Traces))
			}
			return rs
		}
	}
	t.Fatalf("helper in %s printed no results:\n%s", node, out)
	return nil
}

// labGraph knows which node holds each address and which nodes are linked.
type labGraph struct {
	owner   map[netip.Addr]string
	links   map[[2]string]bool
	anycast map[netip.Addr]bool
	siteOf  map[string]bool // routers with a site attached
}

func newLabGraph(ctx context.Context, t *testing.T, prefix string) *labGraph {
	t.Helper()
	topo := lab.DefaultTopology()
	g := &labGraph{owner: map[netip.Addr]string{}, links: map[[2]string]bool{}, anycast: map[netip.Addr]bool{}, siteOf: map[string]bool{}}
	link := func(a, b string) { g.links[[2]string{a, b}], g.links[[2]string{b, a}] = true, true }
	var nodes []string
	for _, r := range topo.Routers {
		nodes = append(nodes, r.Name)
	}
	for _, l := range topo.Links {
		link(l.A, l.B)
	}
	for _, s := range topo.Sites {
		link(s.Router, s.Name)
		g.siteOf[s.Router] = true
		nodes = append(nodes, s.Name)
	}
	for _, v := range topo.VantagePoints {
		link(v.Router, v.Name)
		nodes = append(nodes, v.Name)
	}
	for _, a := range topo.Anycast {
		g.anycast[a.Address] = true
	}
	for _, n := range nodes {
		out, err := exec.CommandContext(ctx, "ip", "-n", prefix+n, "-j", "addr").Output()
		if err != nil {
			t.Fatalf("ip -n %s%s addr: %v", prefix, n, err)
		}
		var ifs []struct {
			IfName   string `json:"ifname"`
			AddrInfo []struct {
				Local string `json:"local"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal(out, &ifs); err != nil {
			t.Fatal(err)
		}
		for _, i := range ifs {
			if i.IfName == "mgmt0" {
				continue
			}
			for _, ai := range i.AddrInfo {
				a, err := netip.ParseAddr(ai.Local)
				if err != nil || a.IsLoopback() || a.IsLinkLocalUnicast() || g.anycast[a] {
					continue
				}
				if o, dup := g.owner[a]; dup && o != n {
					t.Fatalf("%s on %s and %s", a, o, n)
				}
				g.owner[a] = n
			}
		}
	}
	return g
}

// path maps a trace's answered hops to nodes ("*" for a star, "anycast"
// for the destination) and returns the false links: consecutive TTLs whose
// nodes are not linked, starting from the vantage point itself.
func (g *labGraph) path(vp string, v *api.TraceValues) (nodes, bad []string) {
	prev := vp
	for i, h := range v.Hops {
		if h.Addr == "" {
			if i+1 == len(v.Hops) || v.Hops[i+1].TTL != h.TTL {
				// No attempt of this TTL was answered.
				answered := false
				for _, o := range v.Hops {
					answered = answered || o.TTL == h.TTL && o.Addr != ""
				}
				if !answered {
					nodes, prev = append(nodes, "*"), ""
				}
			}
			continue
		}
		a := netip.MustParseAddr(h.Addr)
		n, ok := g.owner[a]
		switch {
		case g.anycast[a]:
			n = "anycast"
			if prev != "" && !g.siteOf[prev] {
				bad = append(bad, fmt.Sprintf("ttl %d: %s → %s (no site behind %s)", h.TTL, prev, h.Addr, prev))
			}
		case !ok:
			bad = append(bad, fmt.Sprintf("ttl %d: %s is no lab address", h.TTL, h.Addr))
		case prev != "" && !g.links[[2]string{prev, n}]:
			bad = append(bad, fmt.Sprintf("ttl %d: %s → %s (%s)", h.TTL, prev, n, h.Addr))
		}
		nodes, prev = append(nodes, n), n
	}
	return nodes, bad
}

// hopAddrs is the trace as "addr addr * addr": per TTL, the address that
// answered one of its attempts, or a star.
func hopAddrs(v *api.TraceValues) string {
	var s []string
	last := 0
	for _, h := range v.Hops {
		if h.TTL != last {
			s, last = append(s, "*"), h.TTL
		}
		if h.Addr != "" {
			s[len(s)-1] = h.Addr
		}
	}
	return strings.Join(s, " ")
}

// sameHops compares two traces hop by hop; a star (no answer: an ICMP
// error lost or rate-limited) matches any address.
func sameHops(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] && x[i] != "*" && y[i] != "*" {
			return false
		}
	}
	return true
}

// TestTraceLab traces the anycast addresses of the default lab from the
// two vantage points behind r2's equal-cost paths (vp2, vp8) and from one
// without (vp1), 30 flows each per address family: every trace must reach
// the destination without a single false link, every flow must follow the
// hops scamper's udp-paris shows for the same flow, and ten concurrent
// traces in one process must each keep to their own flow's path.
func TestTraceLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the trace lab test needs root (network namespaces, raw sockets): run `go test` as root")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const prefix = "tp-"
	l, err := lab.New(lab.Options{StateDir: t.TempDir(), Prefix: prefix, HTTPD: []string{"sh", "-c", "exec sleep 100000", "httpd"}})
	if err != nil {
		t.Fatal(err)
	}
	// No management veth on the host: another lab may hold its address.
	src := strings.Replace(string(lab.DefaultTopologyYAML()), ", host: 198.19.0.1", "", 1)
	if err := l.Up(ctx, "trace-test", []byte(src)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	t.Logf("lab up in %s", time.Since(start).Round(time.Millisecond))
	topo := lab.DefaultTopology()
	g := newLabGraph(ctx, t, prefix)
	v4, v6 := topo.Anycast[0].Address.String(), topo.Anycast[1].Address.String()
	vps := []string{"vp2", "vp8", "vp1"}
	const flows = 30
	jobFor := func(engine string) traceJob {
		var j traceJob
		for i := range flows {
			for _, a := range []string{v4, v6} {
				j.Traces = append(j.Traces, traceJobTrace{Addr: a, Transport: api.TransportUDP, SPort: uint16(41000 + i), Engine: engine})
			}
		}
		return j
	}
	check := func(t *testing.T, vp string, rs []api.Result, want []traceJobTrace) map[string]int {
		t.Helper()
		lastHops := map[string]int{}
		for i, r := range rs {
			checkTrace(t, r)
			w := want[i]
			if r.Address != w.Addr || r.Trace == nil {
				t.Errorf("%s: result %d: %+v", vp, i, r)
				continue
			}
			if r.Failure != api.FailureNone || !r.Trace.Reached {
				t.Errorf("%s → %s %s: not reached: %s (%s)", vp, w.Addr, r.Trace.Flow, r.Failure, hopAddrs(r.Trace))
			}
			if w.Transport == api.TransportUDP && r.Trace.Flow != fmt.Sprintf("udp sport=%d dport=33435", w.SPort) {
				t.Errorf("%s: flow %q, want sport %d", vp, r.Trace.Flow, w.SPort)
			}
			nodes, bad := g.path(vp, r.Trace)
			for _, b := range bad {
				t.Errorf("%s → %s %s: false link %s (path %s)", vp, w.Addr, r.Trace.Flow, b, hopAddrs(r.Trace))
			}
			if len(nodes) >= 2 {
				lastHops[nodes[len(nodes)-2]]++
			}
		}
		return lastHops
	}

	// Sequential traces per VP, the three VPs at once.
	ours := map[string][]api.Result{}
	var mu sync.Mutex
	t.Run("no false links", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, vp := range vps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs := runTraces(ctx, t, l, vp, traceJob{Concurrency: 1, Traces: jobFor("").Traces})
				mu.Lock()
				ours[vp] = rs
				mu.Unlock()
			}()
		}
		wg.Wait()
		for _, vp := range vps {
			last := check(t, vp, ours[vp], jobFor("").Traces)
			t.Logf("%s: %d traces, upstream routers of the destination: %v", vp, len(ours[vp]), last)
			if (vp == "vp2" || vp == "vp8") && len(last) < 2 {
				t.Errorf("%s: every flow took the same path %v: ECMP not exercised", vp, last)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("same hops as scamper", func(t *testing.T) {
		if _, err := exec.LookPath("scamper"); err != nil {
			t.Fatalf("scamper, the reference traceroute, is not installed (make deps installs it): %v", err)
		}
		// Every IPv4 flow; IPv6 only for two flows, as this scamper gets no
		// answers over IPv6 here and each such trace lasts the gap limit.
		var sj traceJob
		var oursIdx []int
		for i, tr := range jobFor(EngineScamper).Traces {
			if tr.Addr == v4 || i < 4 {
				sj.Traces, oursIdx = append(sj.Traces, tr), append(oursIdx, i)
			}
		}
		var wg sync.WaitGroup
		theirs := map[string][]api.Result{}
		for _, vp := range vps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs := runTraces(ctx, t, l, vp, traceJob{Concurrency: 4, Traces: sj.Traces})
				mu.Lock()
				theirs[vp] = rs
				mu.Unlock()
			}()
		}
		wg.Wait()
		for _, vp := range vps {
			var v4Results []api.Result
			var v4Want []traceJobTrace
			for i, r := range theirs[vp] {
				if r.Address == v4 {
					v4Results, v4Want = append(v4Results, r), append(v4Want, sj.Traces[i])
				}
			}
			check(t, vp, v4Results, v4Want)
			same, v6Silent := 0, 0
			for k, r := range theirs[vp] {
				i := oursIdx[k]
				if r.Trace == nil || ours[vp][i].Trace == nil {
					continue
				}
				if r.Address == v6 && !r.Trace.Reached && lastRTT(r.Trace) == 0 {
					// This scamper (Debian 20211212) gets no answer at
					// all over IPv6 udp-paris here, even from ::1.
					v6Silent++
					continue
				}
				if r.Trace.Engine != EngineScamper || r.Trace.Flow != ours[vp][i].Trace.Flow {
					t.Errorf("%s: scamper flow %q engine %q, ours %q", vp, r.Trace.Flow, r.Trace.Engine, ours[vp][i].Trace.Flow)
				}
				if a, b := hopAddrs(ours[vp][i].Trace), hopAddrs(r.Trace); !sameHops(a, b) {
					t.Errorf("%s → %s %s: ours %q, scamper %q", vp, r.Address, r.Trace.Flow, a, b)
				} else {
					same++
				}
			}
			t.Logf("%s: %d of %d traces have scamper's hops; %d IPv6 traces not compared: scamper got no answer at all", vp, same, len(theirs[vp]), v6Silent)
		}
	})

	t.Run("ten concurrent traces keep their paths", func(t *testing.T) {
		var j traceJob
		j.Concurrency = 10
		byFlow := map[int]api.Result{}
		for i := range 10 {
			k := 2*(3*i) + i%2 // flows 0, 3, 6, …; v4 and v6 alternately
			byFlow[i] = ours["vp2"][k]
			j.Traces = append(j.Traces, jobFor("").Traces[k])
		}
		rs := runTraces(ctx, t, l, "vp2", j)
		check(t, "vp2", rs, j.Traces)
		for i, r := range rs {
			if r.Trace == nil {
				continue
			}
			if a, b := hopAddrs(r.Trace), hopAddrs(byFlow[i].Trace); !sameHops(a, b) {
				t.Errorf("concurrent %s %s: %q, alone %q", r.Address, r.Trace.Flow, a, b)
			}
		}
	})

	t.Run("icmp paris", func(t *testing.T) {
		var j traceJob
		j.Concurrency = 10
		for i := range 20 {
			j.Traces = append(j.Traces, traceJobTrace{Addr: []string{v4, v6}[i%2], Transport: api.TransportICMP})
		}
		for _, vp := range []string{"vp2", "vp8"} {
			last := check(t, vp, runTraces(ctx, t, l, vp, j), j.Traces)
			t.Logf("%s icmp: upstream routers of the destination: %v", vp, last)
		}
	})
	t.Logf("trace lab test took %s", time.Since(start).Round(time.Millisecond))
}
