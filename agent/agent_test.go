package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/probe"
	"github.com/anyscope/anyscope/agent/shipper"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// site is a DNS server of one anycast site: it names itself in CHAOS TXT
// and NSID, and counts the queries it gets.
type site struct {
	id      string
	queries atomic.Int64
}

func (s *site) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	if q.Qclass == dns.ClassCHAOS {
		m.Answer = append(m.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS},
			Txt: []string{s.id + ".example.org"},
		})
	}
	if req.IsEdns0() != nil {
		m.SetEdns0(1232, false).IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: fmt.Sprintf("%x", s.id)}}
	}
	_ = w.WriteMsg(m)
}

// startSites runs one site on each host, all on the same port (the schedule
// gives addresses without ports), over UDP and TCP.
func startSites(t *testing.T, hosts ...string) (uint16, map[string]*site) {
	t.Helper()
	for range 20 {
		sites, port, ok := trySites(t, hosts)
		if ok {
			return port, sites
		}
	}
	t.Fatal("no port free on every site address")
	return 0, nil
}

func trySites(t *testing.T, hosts []string) (map[string]*site, uint16, bool) {
	l0, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := l0.Addr().(*net.TCPAddr).Port
	var servers []*dns.Server
	closeAll := func() {
		for _, s := range servers {
			if s.Listener != nil {
				s.Listener.Close()
			} else {
				s.PacketConn.Close()
			}
		}
	}
	sites := map[string]*site{}
	for i, h := range hosts {
		s := &site{id: fmt.Sprintf("site%d", i+1)}
		sites[h] = s
		l := l0
		if i > 0 {
			if l, err = net.Listen("tcp", net.JoinHostPort(h, fmt.Sprint(port))); err != nil {
				closeAll()
				l0.Close()
				return nil, 0, false
			}
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort(h, fmt.Sprint(port)))
		if err != nil {
			l.Close()
			closeAll()
			return nil, 0, false
		}
		servers = append(servers, &dns.Server{Listener: l, Handler: s}, &dns.Server{PacketConn: pc, Handler: s})
	}
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return sites, uint16(port), true
}

// collector is a small honest fake of the collector: it checks the token and
// the encoding, validates batches like the real one, and keeps every result
// by seq. The real collector is tested in its own package.
type collector struct {
	t            *testing.T
	mu           sync.Mutex
	schedule     api.Schedule
	scheduleDown bool
	results      map[uint64]api.Result
	batches      int
	hellos       []api.Hello
	// lastSeq is what the collector says it holds for the agent before any
	// upload (as after the agent lost its spool).
	lastSeq uint64
}

func newCollector(t *testing.T, s api.Schedule) (*collector, *httptest.Server) {
	c := &collector{t: t, schedule: s, results: map[uint64]api.Result{}}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv
}

const token = "tok-e2e"

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+token {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(api.Error{Error: "bad token"})
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r.URL.Path {
	case api.PathHello:
		var h api.Hello
		if err := json.NewDecoder(r.Body).Decode(&h); err != nil || h.Validate() != nil {
			c.t.Errorf("bad hello: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.hellos = append(c.hellos, h)
		last := c.lastSeq
		for s := range c.results {
			last = max(last, s)
		}
		_ = json.NewEncoder(w).Encode(api.Welcome{Agent: h.Agent, LastSeq: last})
	case api.PathSchedule:
		if c.scheduleDown {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(api.Error{Error: "database down"})
			return
		}
		_ = json.NewEncoder(w).Encode(c.schedule)
	case api.PathResults:
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			c.t.Errorf("upload not gzip: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var b api.Batch
		if err := json.NewDecoder(zr).Decode(&b); err != nil {
			c.t.Errorf("upload not JSON: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := b.Validate(); err != nil {
			c.t.Errorf("invalid batch: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
			return
		}
		ack := api.Ack{BatchSeq: b.BatchSeq}
		for _, res := range b.Results {
			if old, ok := c.results[res.Seq]; ok {
				if a, b := mustJSON(c.t, old), mustJSON(c.t, res); a != b {
					c.t.Errorf("seq %d reused:\n %+v\n %+v", res.Seq, old, res)
				}
				ack.Duplicates++
				continue
			}
			c.results[res.Seq] = res
			ack.Accepted++
		}
		c.batches++
		_ = json.NewEncoder(w).Encode(ack)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Error(err)
	}
	return string(b)
}

// snapshot returns the stored results in seq order.
func (c *collector) snapshot() []api.Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []api.Result
	for _, r := range c.results {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b api.Result) int { return int(a.Seq) - int(b.Seq) })
	return out
}

// checkContiguous fails unless rs holds seqs 1..len(rs).
func checkContiguous(t *testing.T, rs []api.Result) {
	t.Helper()
	for i, r := range rs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("seqs not contiguous from 1: position %d has seq %d", i, r.Seq)
		}
	}
}

// The e2e fixture: three sites inside the allow-list, one outside it.
var (
	inside  = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}
	outside = "127.0.0.14"
	allow   = []string{"127.0.0.11/32", "127.0.0.12/31"}
)

func schedule() api.Schedule {
	return api.Schedule{
		Agent:       "vp-test",
		GeneratedAt: time.Now().UTC(),
		Targets: []api.ScheduleTarget{{
			Name:            "anycast-test",
			Addresses:       append(slices.Clone(inside), outside),
			Probes:          []api.Kind{api.KindDNS},
			IntervalSeconds: 60,
		}},
	}
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newAgent(t *testing.T, url, dir string, port uint16, once bool) (*Agent, *prometheus.Registry, *logBuffer) {
	t.Helper()
	cfg := &Config{
		Collector: url,
		Token:     token,
		Name:      "vp-test",
		SpoolDir:  dir,
		Allow:     allow,
		Timeout:   time.Second,
		DNSPort:   port,
		MaxRate:   1000,
		// Tests fire rounds every few milliseconds at one target.
		MaxTargetRate: 1000,
		Once:          once,
	}
	lb := &logBuffer{}
	reg := prometheus.NewPedanticRegistry()
	a, err := New(cfg, slog.New(slog.NewTextHandler(lb, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	a.backoff = func() *shipper.Backoff { return &shipper.Backoff{Min: time.Millisecond, Cap: 10 * time.Millisecond} }
	return a, reg, lb
}

// metric reads a gauge or counter with the given labels from reg.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func TestOnceEndToEnd(t *testing.T) {
	t.Parallel()
	port, sites := startSites(t, append(slices.Clone(inside), outside)...)
	col, srv := newCollector(t, schedule())
	dir := t.TempDir()
	a, reg, logs := newAgent(t, srv.URL, dir, port, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}

	got := col.snapshot()
	checkContiguous(t, got)
	// 3 addresses × 2 transports × 3 identity queries.
	if len(got) != 18 {
		t.Fatalf("collector has %d results, want 18", len(got))
	}
	type key struct {
		addr      string
		transport api.Transport
		query     string
	}
	seen := map[key]bool{}
	for _, r := range got {
		if r.Failure != api.FailureNone {
			t.Errorf("seq %d: %s %s %s failed: %s", r.Seq, r.Address, r.Transport, r.Query, r.Failure)
			continue
		}
		s := sites[r.Address]
		if s == nil || r.Address == outside {
			t.Fatalf("result for %s", r.Address)
		}
		want := s.id + ".example.org"
		if r.Query == api.QueryNSID {
			want = s.id
		}
		if r.DNS.Identity != want || r.DNS.NSIDText != s.id {
			t.Errorf("%s %s %s: identity %q nsid %q, want %q / %q", r.Address, r.Transport, r.Query, r.DNS.Identity, r.DNS.NSIDText, want, s.id)
		}
		seen[key{r.Address, r.Transport, r.Query}] = true
	}
	if len(seen) != 18 {
		t.Errorf("%d distinct (address, transport, query), want 18", len(seen))
	}
	if n := sites[outside].queries.Load(); n != 0 {
		t.Errorf("the address outside the allow-list got %d queries", n)
	}
	for _, h := range inside {
		if n := sites[h].queries.Load(); n != 6 {
			t.Errorf("%s got %d queries, want 6", h, n)
		}
	}
	if v := metric(t, reg, "anyscope_agent_refused_addresses"); v != 1 {
		t.Errorf("refused_addresses = %v", v)
	}
	if v := metric(t, reg, "anyscope_agent_probes_total", "transport", "tcp", "failure", "none"); v != 9 {
		t.Errorf("probes_total{tcp,none} = %v", v)
	}
	if v := metric(t, reg, "anyscope_agent_spool_pending_results"); v != 0 {
		t.Errorf("spool_pending_results = %v after Once", v)
	}
	if v := metric(t, reg, "anyscope_shipper_uploads_total", "outcome", "ok"); v < 1 {
		t.Errorf("uploads_total{ok} = %v", v)
	}
	if !strings.Contains(logs.String(), "REFUSING") || !strings.Contains(logs.String(), outside) {
		t.Errorf("refusal not logged:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(dir, scheduleCache)); err != nil {
		t.Errorf("schedule not cached: %v", err)
	}

	// The collector's schedule endpoint goes down: a restarted agent measures
	// with the cached schedule and numbering continues.
	col.mu.Lock()
	col.scheduleDown = true
	col.mu.Unlock()
	a2, _, logs2 := newAgent(t, srv.URL, dir, port, true)
	if err := a2.Run(ctx); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	got = col.snapshot()
	checkContiguous(t, got)
	if len(got) != 36 {
		t.Errorf("collector has %d results after the second run, want 36", len(got))
	}
	if !strings.Contains(logs2.String(), "using the cached schedule") {
		t.Errorf("cached schedule not announced:\n%s", logs2)
	}
	if n := sites[outside].queries.Load(); n != 0 {
		t.Errorf("the address outside the allow-list got %d queries", n)
	}
}

func TestRunEndToEnd(t *testing.T) {
	t.Parallel()
	port, sites := startSites(t, append(slices.Clone(inside), outside)...)
	col, srv := newCollector(t, schedule())
	a, reg, _ := newAgent(t, srv.URL, t.TempDir(), port, false)
	var offsets sync.Map
	a.offset = func(key string, mean time.Duration) time.Duration {
		if mean != time.Minute {
			t.Errorf("mean interval %v, want 1m", mean)
		}
		offsets.Store(key, true)
		return time.Duration(len(key)%7) * time.Millisecond
	}
	a.interval = func(time.Duration) time.Duration { return 10 * time.Millisecond }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for len(col.snapshot()) < 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}

	got := col.snapshot()
	if len(got) < 200 {
		t.Fatalf("only %d results arrived", len(got))
	}
	checkContiguous(t, got)
	for _, r := range got {
		if r.Address == outside {
			t.Fatalf("result for the refused address: %+v", r)
		}
		if r.Failure != api.FailureNone {
			t.Errorf("seq %d failed: %s", r.Seq, r.Failure)
		}
	}
	if n := sites[outside].queries.Load(); n != 0 {
		t.Errorf("the address outside the allow-list got %d queries", n)
	}
	n := 0
	offsets.Range(func(any, any) bool { n++; return true })
	if n != 3 {
		t.Errorf("%d jobs started, want 3", n)
	}
	// Everything spooled before the shutdown was shipped by the final flush.
	if v := metric(t, reg, "anyscope_agent_spool_pending_results"); v != 0 {
		t.Errorf("%v results left in the spool", v)
	}
}

// panicky is a prober with a bug.
type panicky struct{}

func (panicky) Probe(context.Context, api.ScheduleTarget, netip.Addr, api.Transport) []api.Result {
	var m map[string]int
	m["boom"]++
	return nil
}

func TestProbePanicIsRecorded(t *testing.T) {
	t.Parallel()
	s := schedule()
	s.Targets[0].Addresses = []string{"127.0.0.11"}
	col, srv := newCollector(t, s)
	a, reg, logs := newAgent(t, srv.URL, t.TempDir(), 53, true)
	a.probers[api.KindDNS] = panicky{}
	if err := a.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := col.snapshot()
	checkContiguous(t, got)
	if len(got) != 6 {
		t.Fatalf("%d results, want 6", len(got))
	}
	for _, r := range got {
		if r.Failure != api.FailurePanic {
			t.Errorf("seq %d: failure %q", r.Seq, r.Failure)
		}
	}
	if v := metric(t, reg, "anyscope_agent_probes_total", "transport", "udp", "failure", "probe_panic"); v != 3 {
		t.Errorf("probes_total{udp,probe_panic} = %v", v)
	}
	if !strings.Contains(logs.String(), "probe panicked") {
		t.Errorf("panic not logged:\n%s", logs)
	}
}

func TestScheduleForAnotherAgent(t *testing.T) {
	t.Parallel()
	s := schedule()
	s.Agent = "someone-else"
	_, srv := newCollector(t, s)
	a, _, _ := newAgent(t, srv.URL, t.TempDir(), 53, true)
	err := a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `schedule is for agent "someone-else"`) {
		t.Errorf("Run: %v", err)
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	_, srv := newCollector(t, api.Schedule{})
	a, reg, logs := newAgent(t, srv.URL, t.TempDir(), 53, true)
	defer a.Close()
	s := &api.Schedule{Agent: "vp-test", Targets: []api.ScheduleTarget{
		{Name: "ok", Addresses: []string{"127.0.0.11", "127.0.0.11", "::ffff:127.0.0.12", "127.0.0.14", "10.0.0.1"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 30, NSIDQName: "example.org"},
		{Name: "fast", Addresses: []string{"127.0.0.13"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 0.001},
		{Name: "other-kind", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{"ping"}, IntervalSeconds: 30},
		{Name: "unknown-kind", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{"carrier-pigeon"}, IntervalSeconds: 30},
		{Name: "http-without-spec", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{api.KindHTTP}, IntervalSeconds: 30},
		{Name: "bad name!", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 30},
		{Name: "nan", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: math.NaN()},
		{Name: "negative", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: -5},
		{Name: "bad-qname", Addresses: []string{"127.0.0.11"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 30, NSIDQName: "a..b"},
		{Name: "bad-addr", Addresses: []string{"127.0.0.300", "fe80::1%eth0"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 30},
	}}
	want := []job{
		{name: "ok", kind: api.KindDNS, qname: "example.org.", addr: netip.MustParseAddr("127.0.0.11"), mean: 30 * time.Second},
		{name: "ok", kind: api.KindDNS, qname: "example.org.", addr: netip.MustParseAddr("127.0.0.12"), mean: 30 * time.Second},
		{name: "fast", kind: api.KindDNS, qname: ".", addr: netip.MustParseAddr("127.0.0.13"), mean: minInterval},
		{name: "other-kind", kind: api.KindPing, qname: ".", addr: netip.MustParseAddr("127.0.0.11"), mean: 30 * time.Second},
	}
	for range 2 {
		if got := a.plan(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("plan:\n got  %v\n want %v", got, want)
		}
	}
	if v := metric(t, reg, "anyscope_agent_refused_addresses"); v != 2 {
		t.Errorf("refused_addresses = %v, want 2", v)
	}
	// bad name, NaN, negative, bad qname, two bad addresses.
	if v := metric(t, reg, "anyscope_agent_skipped_schedule_entries"); v != 6 {
		t.Errorf("skipped_schedule_entries = %v, want 6", v)
	}
	// Refusals are logged once per address, however often the schedule
	// repeats them.
	if n := strings.Count(logs.String(), "REFUSING"); n != 2 {
		t.Errorf("%d refusals logged, want 2:\n%s", n, logs)
	}
}

func TestPlanLimit(t *testing.T) {
	t.Parallel()
	_, srv := newCollector(t, api.Schedule{})
	a, reg, _ := newAgent(t, srv.URL, t.TempDir(), 53, true)
	defer a.Close()
	a.cfg.allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	t0 := api.ScheduleTarget{Name: "big", Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 60}
	for i := range maxJobs + 5 {
		t0.Addresses = append(t0.Addresses, fmt.Sprintf("10.%d.%d.1", i/256, i%256))
	}
	if n := len(a.plan(&api.Schedule{Targets: []api.ScheduleTarget{t0}})); n != maxJobs {
		t.Errorf("%d jobs, want the limit %d", n, maxJobs)
	}
	if v := metric(t, reg, "anyscope_agent_skipped_schedule_entries"); v != 5 {
		t.Errorf("skipped_schedule_entries = %v, want 5", v)
	}
}

func TestStartOffset(t *testing.T) {
	t.Parallel()
	const mean = time.Minute
	a := startOffset("vp-1\x00k-root\x00193.0.14.129", mean)
	if b := startOffset("vp-1\x00k-root\x00193.0.14.129", mean); a != b {
		t.Errorf("offset not deterministic: %v, %v", a, b)
	}
	distinct := map[time.Duration]bool{}
	for i := range 100 {
		d := startOffset(fmt.Sprintf("vp-%d\x00k-root\x00193.0.14.129", i), mean)
		if d < 0 || d >= mean {
			t.Fatalf("offset %v outside [0, %v)", d, mean)
		}
		distinct[d/time.Second] = true
	}
	if len(distinct) < 40 {
		t.Errorf("100 agents' offsets fall in only %d distinct seconds", len(distinct))
	}
	// Keys that differ only in their last byte (the addresses of one
	// target) spread as well.
	distinct = map[time.Duration]bool{}
	for i := range 100 {
		distinct[startOffset(fmt.Sprintf("vp-1\x00k-root\x00193.0.14.%d", i), mean)/time.Second] = true
	}
	if len(distinct) < 40 {
		t.Errorf("100 addresses of one target start in only %d distinct seconds", len(distinct))
	}
}

func TestPoissonInterval(t *testing.T) {
	t.Parallel()
	const mean, n = time.Second, 20000
	var sum time.Duration
	for range n {
		d := poissonInterval(mean)
		if d < mean/10 || d > 4*mean {
			t.Fatalf("interval %v outside [mean/10, 4·mean]", d)
		}
		sum += d
	}
	// The truncation keeps the mean within 2% of the requested one.
	if avg := sum / n; avg < 950*time.Millisecond || avg > 1050*time.Millisecond {
		t.Errorf("mean interval %v, want about %v", avg, mean)
	}
}

// TestPacer: a real pacer holds back what its burst does not cover (the
// budget arithmetic itself is tested in agent/probe), and a cancelled
// context ends a wait.
func TestPacer(t *testing.T) {
	t.Parallel()
	p := probe.NewPacer(100) // at most 10 per tenth of a second
	start := time.Now()
	for range 30 {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Timers never fire early: the third ten wait for the third tenth.
	if d := time.Since(start); d < 195*time.Millisecond {
		t.Errorf("30 packets at 100/s took %v, want at least 200ms", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p2 := probe.NewPacer(0.001)
	_ = p2.Wait(ctx) // the first slot is free
	if err := p2.Wait(ctx); err == nil {
		t.Error("Wait ignored a canceled context")
	}
}

// TestLostSpoolContinuesNumbering: an agent whose spool directory was lost
// learns from the collector's welcome where its numbering stopped and goes
// on after it, so no sequence number names two measurements; its configured
// location travels in the hello.
func TestLostSpoolContinuesNumbering(t *testing.T) {
	t.Parallel()
	port, _ := startSites(t, inside...)
	col, srv := newCollector(t, schedule())
	col.lastSeq = 500
	a, _, _ := newAgent(t, srv.URL, t.TempDir(), port, true)
	lat, lon := 52.37, 4.9
	a.cfg.Location = &Location{Lat: &lat, Lon: &lon, Region: "eu-west"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := col.snapshot()
	if len(got) != 18 || got[0].Seq != 501 || got[17].Seq != 518 {
		t.Fatalf("got %d results, seqs %d..%d; want 18 numbered 501..518", len(got), got[0].Seq, got[len(got)-1].Seq)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.hellos) != 1 || col.hellos[0].Location == nil || col.hellos[0].Location.Latitude != 52.37 || col.hellos[0].Location.Region != "eu-west" {
		t.Errorf("hellos %+v, want one with the configured location", col.hellos)
	}
}

// TestNewSpoolWaitsForCollector: with a new spool and no collector, a
// one-shot agent measures nothing and says why, rather than numbering from
// 1 what might follow earlier results.
func TestNewSpoolWaitsForCollector(t *testing.T) {
	t.Parallel()
	port, sites := startSites(t, inside...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	a, _, _ := newAgent(t, srv.URL, t.TempDir(), port, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "new spool and no answer from the collector") {
		t.Fatalf("Run: %v", err)
	}
	for _, h := range inside {
		if n := sites[h].queries.Load(); n != 0 {
			t.Errorf("%s got %d queries before the numbering was known", h, n)
		}
	}
}

// TestLimiterPerTarget: one target's packets are paced at max_target_rate
// while another target's go through at the agent's rate.
func TestLimiterPerTarget(t *testing.T) {
	t.Parallel()
	l := newLimiter(10000, 10) // 100ms between packets of one target, no burst
	ctx := context.Background()
	a := withTarget(ctx, "a")
	start := time.Now()
	for range 6 {
		if err := l.Wait(a); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("6 packets to one target in %v, want ≥ 500ms at 10/s", d)
	}
	// With a cancelled context, a wait fails exactly when it would have had
	// to sleep: target a's budget is spent, target b's untouched.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Wait(withTarget(done, "a")); err == nil {
		t.Error("target a's seventh packet did not have to wait")
	}
	if _, err := l.WaitSeries(withTarget(done, "b"), 1, 0); err != nil {
		t.Errorf("another target's packet waited behind the first target's: %v", err)
	}
}
