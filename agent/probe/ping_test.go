package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	probing "github.com/prometheus-community/pro-bing"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// pingHTTPHelperEnv switches the test binary into a helper process: the tests
// re-execute it inside fresh or lab network namespaces (see init).
const pingHTTPHelperEnv = "ANYSCOPE_PROBE_TEST_HELPER"

func init() {
	// An init function rather than TestMain, so that the helpers live in
	// this file alone. Each helper reads its job from pingHTTPHelperArg and
	// writes JSON to stdout.
	mode := os.Getenv(pingHTTPHelperEnv)
	if mode == "" {
		return
	}
	var code int
	switch mode {
	case "ping":
		code = pingHTTPHelperPing()
	case "http":
		code = pingHTTPHelperHTTP()
	case "httpd":
		code = pingHTTPHelperHTTPD(os.Args[1:])
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", mode)
		code = 2
	}
	os.Exit(code)
}

// pingHTTPHelperArg carries a helper's job as JSON.
const pingHTTPHelperArg = "ANYSCOPE_PROBE_TEST_HELPER_ARG"

// pingJob is one helper run: set up the (fresh) namespace, then ping.
type pingJob struct {
	// Namespace set-up, applied only in a fresh network namespace.
	LoUp           bool   `json:"lo_up,omitempty"`
	PingGroupRange string `json:"ping_group_range,omitempty"`
	IgnoreEcho     bool   `json:"ignore_echo,omitempty"`

	Count      int        `json:"count,omitempty"`
	Interval   string     `json:"interval,omitempty"`
	Timeout    string     `json:"timeout,omitempty"`
	Socket     PingSocket `json:"socket,omitempty"`
	Addrs      []string   `json:"addrs"`
	Concurrent bool       `json:"concurrent,omitempty"`
	// SameID forces one echo identifier on every pinger (raw sockets only:
	// datagram sockets get theirs from the kernel).
	SameID int `json:"same_id,omitempty"`
}

// pingOutcome is what one ping of a job produced.
type pingOutcome struct {
	Addr    string       `json:"addr"`
	Results []api.Result `json:"results"`
	// From lists the source of every reply the series counted.
	From []string `json:"from"`
}

func (j pingJob) setup() error {
	if j.LoUp {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			return fmt.Errorf("lo up: %v: %s", err, out)
		}
	}
	sysctls := map[string]string{}
	if j.PingGroupRange != "" {
		sysctls["net/ipv4/ping_group_range"] = j.PingGroupRange
	}
	if j.IgnoreEcho {
		sysctls["net/ipv4/icmp_echo_ignore_all"] = "1"
		sysctls["net/ipv6/icmp/echo_ignore_all"] = "1"
	}
	for k, v := range sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// run runs the job's pings in this process.
func (j pingJob) run() ([]pingOutcome, error) {
	o := PingOptions{Count: j.Count, Privileged: j.Socket}
	var err error
	if j.Interval != "" {
		if o.Interval, err = time.ParseDuration(j.Interval); err != nil {
			return nil, err
		}
	}
	if j.Timeout != "" {
		if o.Timeout, err = time.ParseDuration(j.Timeout); err != nil {
			return nil, err
		}
	}
	out := make([]pingOutcome, len(j.Addrs))
	var wg sync.WaitGroup
	for i, a := range j.Addrs {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, err
		}
		p, err := NewPing(o)
		if err != nil {
			return nil, err
		}
		out[i].Addr = a
		out[i].From = []string{}
		// A series' echo requests are pingers of their own, answered
		// concurrently.
		var mu sync.Mutex
		p.testHook = func(pinger *probing.Pinger) {
			if j.SameID != 0 {
				pinger.SetID(j.SameID)
			}
			next := pinger.OnRecv
			pinger.OnRecv = func(pkt *probing.Packet) {
				mu.Lock()
				out[i].From = append(out[i].From, pkt.IPAddr.IP.String())
				mu.Unlock()
				next(pkt)
			}
		}
		ping := func() {
			t := api.ScheduleTarget{Name: "loopback"}
			out[i].Results = p.Probe(context.Background(), t, addr, api.TransportICMP)
		}
		if j.Concurrent {
			wg.Go(ping)
		} else {
			ping()
		}
	}
	wg.Wait()
	return out, nil
}

func pingHTTPHelperPing() int {
	var j pingJob
	if err := json.Unmarshal([]byte(os.Getenv(pingHTTPHelperArg)), &j); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := j.setup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, err := j.run()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

// runPingHTTPHelper runs cmd (this test binary in helper mode, maybe inside a
// namespace) with job as its argument and decodes its JSON output into out.
func runPingHTTPHelper(t *testing.T, cmd *exec.Cmd, mode string, job, out any) {
	t.Helper()
	arg, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), pingHTTPHelperEnv+"="+mode, pingHTTPHelperArg+"="+string(arg))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", mode, err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("helper %s output: %v\n%s", mode, err, b)
	}
}

// pingInFreshNetns runs job in a new network namespace (with a private
// ping_group_range, echo settings and no routes but loopback), as uid/gid
// when they are not zero.
func pingInFreshNetns(t *testing.T, job pingJob, uid, gid uint32) []pingOutcome {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	bin := os.Args[0]
	if uid != 0 {
		// The test binary sits in a directory only root may enter.
		dir, err := os.MkdirTemp("", "anyscope-ping-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(dir, "probe.test")
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if uid != 0 {
		// Bring loopback up is impossible without root: the namespace's
		// loopback stays down, which does not matter for a refusal.
		job.LoUp = false
		job.PingGroupRange = ""
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	}
	var out []pingOutcome
	runPingHTTPHelper(t, cmd, "ping", job, &out)
	return out
}

// checkPing checks that every outcome is one valid ping result.
func checkPing(t *testing.T, out []pingOutcome, n int) []api.Result {
	t.Helper()
	if len(out) != n {
		t.Fatalf("%d outcomes, want %d", len(out), n)
	}
	var rs []api.Result
	for _, o := range out {
		if len(o.Results) != 1 {
			t.Fatalf("%s: %d results, want 1", o.Addr, len(o.Results))
		}
		r := o.Results[0]
		r.Seq = 1
		if err := r.Validate(); err != nil {
			t.Errorf("%s: invalid result %+v: %v", o.Addr, r, err)
		}
		if r.Address != o.Addr || r.Kind != api.KindPing || r.Transport != api.TransportICMP || r.Query != api.QueryEcho {
			t.Errorf("%s: result %+v", o.Addr, r)
		}
		rs = append(rs, r)
	}
	return rs
}

// checkPingReplies checks a successful series of count requests.
func checkPingReplies(t *testing.T, o pingOutcome, r api.Result, count int, privileged bool) {
	t.Helper()
	v := r.Ping
	if r.Failure != api.FailureNone || v == nil {
		t.Fatalf("%s: failure %q values %+v", o.Addr, r.Failure, v)
	}
	if v.Sent != count || v.Received != count || v.Privileged != privileged {
		t.Errorf("%s: sent %d received %d privileged %v, want %d %d %v", o.Addr, v.Sent, v.Received, v.Privileged, count, count, privileged)
	}
	if v.MinUS <= 0 || v.MinUS > v.AvgUS || v.AvgUS > v.MaxUS || r.RTTMicros != v.AvgUS {
		t.Errorf("%s: rtt min %d avg %d max %d result %d", o.Addr, v.MinUS, v.AvgUS, v.MaxUS, r.RTTMicros)
	}
	if v.ReplyTTL != 64 {
		t.Errorf("%s: reply ttl %d, want 64 on loopback", o.Addr, v.ReplyTTL)
	}
	if len(o.From) != count {
		t.Errorf("%s: counted %d replies, want %d", o.Addr, len(o.From), count)
	}
	want := netip.MustParseAddr(o.Addr)
	for _, f := range o.From {
		if a, err := netip.ParseAddr(f); err != nil || a.Unmap() != want {
			t.Errorf("pinger of %s counted a reply from %s", o.Addr, f)
		}
	}
}

func TestNewPingRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    PingOptions
		want string
	}{
		{"negative count", PingOptions{Count: -1}, "ping count -1 out of range"},
		{"huge count", PingOptions{Count: MaxPingCount + 1, Timeout: api.MaxRTT}, "ping count 10001 out of range"},
		{"fast interval", PingOptions{Interval: time.Millisecond}, "ping interval 1ms below 10ms"},
		{"negative timeout", PingOptions{Timeout: -time.Second}, "ping timeout -1s out of range"},
		{"timeout too short for the series", PingOptions{Count: 5, Interval: time.Second, Timeout: 3 * time.Second}, "ping timeout 3s leaves no time for 5 requests 1s apart"},
		{"unknown socket", PingOptions{Privileged: 7}, "ping socket kind PingSocket(7) unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPing(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewPing(%+v): %v, want %q", tc.o, err, tc.want)
			}
		})
	}
	p, err := NewPing(PingOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.opts.Count != 3 || p.opts.Interval != 200*time.Millisecond || p.opts.Timeout != 2*time.Second || p.opts.Privileged != PingAuto {
		t.Errorf("defaults %+v", p.opts)
	}
}

func TestParsePingGroupRange(t *testing.T) {
	for in, want := range map[string][3]int64{
		"1\t0\n":                {0, 0, 0}, // the kernel default: nobody
		"0\t2147483647\n":       {0, 2147483647, 1},
		"100 200":               {100, 200, 1},
		"garbage":               {0, 0, 0},
		"1 2 3":                 {0, 0, 0},
		"-1 x":                  {0, 0, 0},
		"4294967294 4294967294": {4294967294, 4294967294, 1},
	} {
		lo, hi, ok := parsePingGroupRange(in)
		if ok != (want[2] == 1) || ok && (lo != want[0] || hi != want[1]) {
			t.Errorf("parsePingGroupRange(%q) = %d, %d, %v; want %v", in, lo, hi, ok, want)
		}
	}
}

func TestPingLoopbackPrivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw ICMP sockets need root")
	}
	t.Parallel()
	for _, socket := range []PingSocket{PingPrivileged, PingAuto} {
		if socket == PingAuto && PingGroupAllowed() {
			continue // auto would pick a datagram socket here
		}
		t.Run(socket.String(), func(t *testing.T) {
			t.Parallel()
			j := pingJob{Socket: socket, Addrs: []string{"127.0.0.1", "::1"}, Interval: "20ms"}
			out, err := j.run()
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range checkPing(t, out, 2) {
				checkPingReplies(t, out[i], r, 3, true)
			}
		})
	}
}

func TestPingLoopbackUnprivileged(t *testing.T) {
	t.Parallel()
	// A fresh namespace whose ping_group_range admits root: datagram
	// sockets, chosen automatically.
	j := pingJob{LoUp: true, PingGroupRange: "0 2147483647", Addrs: []string{"127.0.0.1", "::1"}, Interval: "20ms"}
	out := pingInFreshNetns(t, j, 0, 0)
	for i, r := range checkPing(t, out, 2) {
		checkPingReplies(t, out[i], r, 3, false)
	}
}

// tenLoopbacks are ten addresses that all answer on loopback.
func tenLoopbacks() []string {
	var as []string
	for i := range 9 {
		as = append(as, fmt.Sprintf("127.0.0.%d", i+1))
	}
	return append(as, "::1")
}

func TestPingConcurrentPingersSeeOnlyTheirReplies(t *testing.T) {
	t.Parallel()
	t.Run("raw sockets, random ids", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("raw ICMP sockets need root")
		}
		t.Parallel()
		j := pingJob{Socket: PingPrivileged, Addrs: tenLoopbacks(), Concurrent: true, Count: 5, Interval: "20ms"}
		out, err := j.run()
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range checkPing(t, out, 10) {
			checkPingReplies(t, out[i], r, 5, true)
		}
	})
	t.Run("raw sockets, one id for all", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("raw ICMP sockets need root")
		}
		t.Parallel()
		// Every socket receives every reply: only the tracker UUID in the
		// payload keeps the series apart.
		j := pingJob{Socket: PingPrivileged, Addrs: tenLoopbacks(), Concurrent: true, Count: 5, Interval: "20ms", SameID: 4242}
		out, err := j.run()
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range checkPing(t, out, 10) {
			checkPingReplies(t, out[i], r, 5, true)
		}
	})
	t.Run("datagram sockets", func(t *testing.T) {
		t.Parallel()
		j := pingJob{LoUp: true, PingGroupRange: "0 0", Socket: PingUnprivileged, Addrs: tenLoopbacks(), Concurrent: true, Count: 5, Interval: "20ms"}
		out := pingInFreshNetns(t, j, 0, 0)
		for i, r := range checkPing(t, out, 10) {
			checkPingReplies(t, out[i], r, 5, false)
		}
	})
}

func TestPingTimeoutAndUnreachable(t *testing.T) {
	t.Parallel()
	// Loopback ignores echo requests; 192.0.2.1 has no route at all.
	j := pingJob{LoUp: true, IgnoreEcho: true, Socket: PingPrivileged, Timeout: "500ms", Interval: "50ms",
		Addrs: []string{"127.0.0.1", "::1", "192.0.2.1", "2001:db8::1"}, Concurrent: true}
	start := time.Now()
	out := pingInFreshNetns(t, j, 0, 0)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
	rs := checkPing(t, out, 4)
	for i, r := range rs {
		want := api.FailureTimeout
		if i >= 2 {
			want = api.FailureNetworkUnreachable
		}
		if r.Failure != want || r.RTTMicros != 0 || r.Ping == nil || r.Ping.Received != 0 {
			t.Errorf("%s: %+v %+v, want %s and no replies", r.Address, r, r.Ping, want)
		}
		if i < 2 && r.Ping.Sent != 3 {
			t.Errorf("%s: sent %d, want 3", r.Address, r.Ping.Sent)
		}
	}
}

func TestPingPermissionDenied(t *testing.T) {
	t.Parallel()
	// As nobody in a namespace whose ping_group_range is the kernel's
	// default ("1 0"): neither socket kind may be opened.
	for _, socket := range []PingSocket{PingAuto, PingUnprivileged, PingPrivileged} {
		t.Run(socket.String(), func(t *testing.T) {
			t.Parallel()
			j := pingJob{Socket: socket, Addrs: []string{"127.0.0.1", "::1"}}
			out := pingInFreshNetns(t, j, 65534, 65534)
			for _, r := range checkPing(t, out, 2) {
				if r.Failure != api.FailurePermissionDenied {
					t.Errorf("%s: failure %q, want permission_denied", r.Address, r.Failure)
				}
			}
		})
	}
}

func TestPingWrongTransportAndCancel(t *testing.T) {
	p, err := NewPing(PingOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tg := api.ScheduleTarget{Name: "loopback"}
	rs := p.Probe(context.Background(), tg, netip.MustParseAddr("127.0.0.1"), api.TransportUDP)
	if len(rs) != 1 || rs[0].Failure != api.FailureUnknown || rs[0].Transport != api.TransportICMP {
		t.Errorf("udp transport: %+v", rs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rs := p.Probe(ctx, tg, netip.MustParseAddr("127.0.0.1"), api.TransportICMP); len(rs) != 0 {
		t.Errorf("cancelled: %+v", rs)
	}
}

// pingLimiter counts waits and the packets of booked series.
type pingLimiter struct {
	mu             sync.Mutex
	waits, packets int
	every          time.Duration
}

func (l *pingLimiter) Wait(ctx context.Context) error {
	_, err := l.WaitSeries(ctx, 1, 0)
	return err
}

func (l *pingLimiter) WaitSeries(ctx context.Context, n int, every time.Duration) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits++
	l.packets += n
	return max(every, l.every), ctx.Err()
}

// TestPingBooksTheSeriesOnce: a series is booked with the limiter once,
// for all its requests, before the first leaves.
func TestPingBooksTheSeriesOnce(t *testing.T) {
	if os.Geteuid() != 0 && !PingGroupAllowed() {
		t.Skip("no ICMP socket allowed")
	}
	t.Parallel()
	l := &pingLimiter{}
	p, err := NewPing(PingOptions{Count: 4, Interval: 20 * time.Millisecond, Limiter: l})
	if err != nil {
		t.Fatal(err)
	}
	rs := p.Probe(context.Background(), api.ScheduleTarget{Name: "loopback"}, netip.MustParseAddr("127.0.0.1"), api.TransportICMP)
	if len(rs) != 1 || rs[0].Ping == nil || rs[0].Ping.Sent != 4 || rs[0].Ping.Received != 4 || l.waits != 1 || l.packets != 4 {
		t.Errorf("%d waits for %d packets, results %+v", l.waits, l.packets, rs)
	}
}

// TestPingKeepsTheLimitersSpacing: when the limiter's budget cannot take
// the series as close together as configured, the requests leave at the
// spacing it returns, and the timeout stretches so that all are sent.
func TestPingKeepsTheLimitersSpacing(t *testing.T) {
	if os.Geteuid() != 0 && !PingGroupAllowed() {
		t.Skip("no ICMP socket allowed")
	}
	t.Parallel()
	l := &pingLimiter{every: 150 * time.Millisecond}
	p, err := NewPing(PingOptions{Count: 3, Interval: 10 * time.Millisecond, Timeout: 100 * time.Millisecond, Limiter: l})
	if err != nil {
		t.Fatal(err)
	}
	var sent []time.Time
	p.testHook = func(pg *probing.Pinger) {
		pg.OnSend = func(*probing.Packet) { sent = append(sent, time.Now()) }
	}
	rs := p.Probe(context.Background(), api.ScheduleTarget{Name: "loopback"}, netip.MustParseAddr("127.0.0.1"), api.TransportICMP)
	if len(rs) != 1 || rs[0].Ping == nil || rs[0].Ping.Sent != 3 || rs[0].Ping.Received != 3 {
		t.Fatalf("results %+v", rs)
	}
	for i := 1; i < len(sent); i++ {
		// A ticker never fires early.
		if d := sent[i].Sub(sent[i-1]); d < 140*time.Millisecond {
			t.Errorf("requests %d and %d %v apart, want the limiter's 150ms", i-1, i, d)
		}
	}
}

// TestPingRTTExcludesLimiterWaits: a slow limiter (here, every request waits
// 150 ms for its slot) delays requests but never the reading of replies, so
// loopback RTTs stay far below the wait. (Holding pro-bing's send loop in its
// OnSend callback had added the waits to the RTTs.)
func TestPingRTTExcludesLimiterWaits(t *testing.T) {
	if os.Geteuid() != 0 && !PingGroupAllowed() {
		t.Skip("no ICMP socket allowed")
	}
	t.Parallel()
	p, err := NewPing(PingOptions{Count: 3, Interval: 20 * time.Millisecond, Timeout: 3 * time.Second, Limiter: NewPacer(1000.0 / 150)})
	if err != nil {
		t.Fatal(err)
	}
	rs := p.Probe(context.Background(), api.ScheduleTarget{Name: "loopback"}, netip.MustParseAddr("127.0.0.1"), api.TransportICMP)
	if len(rs) != 1 || rs[0].Ping == nil || rs[0].Ping.Received != 3 {
		t.Fatalf("results %+v", rs)
	}
	if v := rs[0].Ping; v.MaxUS > 50_000 {
		t.Errorf("max RTT %d µs on loopback: a limiter wait was counted as RTT", v.MaxUS)
	}
}
