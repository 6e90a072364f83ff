package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// sessionHelperEnv switches the test binary into a helper process of
// TestSessionLab: "httpd" (a site's HTTP responder) or "session" (a session
// loop inside a vantage point, printing one JSON result per line).
const sessionHelperEnv = "ANYSCOPE_SESSION_TEST_HELPER"

// sessionHelperArgs re-execute this test binary as a helper.
func sessionHelperArgs(self string) []string {
	return []string{self, "-test.run=^TestHelperSession$", "--"}
}

// TestHelperSession is not a test: TestSessionLab runs this binary in the
// lab's namespaces with sessionHelperEnv set, and this function then serves
// as the helper and exits.
func TestHelperSession(t *testing.T) {
	mode := os.Getenv(sessionHelperEnv)
	if mode == "" {
		t.Skip("helper process of TestSessionLab: runs only when re-executed by it")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch mode {
	case "httpd":
		fs := flag.NewFlagSet("httpd", flag.ContinueOnError)
		site := fs.String("site", "", "")
		var listen []string
		fs.Func("listen", "", func(s string) error { listen = append(listen, s); return nil })
		if err := fs.Parse(flag.Args()); err != nil {
			os.Exit(2)
		}
		if err := lab.ServeHTTP(ctx, *site, listen); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "session":
		fs := flag.NewFlagSet("session", flag.ContinueOnError)
		addr := fs.String("addr", "", "")
		query := fs.String("query", api.QuerySessionDNS, "")
		interval := fs.Duration("interval", time.Second, "")
		if err := fs.Parse(flag.Args()); err != nil {
			os.Exit(2)
		}
		a, err := netip.ParseAddr(*addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		s, err := NewSession(SessionOptions{Interval: *interval, Life: time.Minute})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		tg := api.ScheduleTarget{Name: "lab", Addresses: []string{a.String()}, Probes: []api.Kind{api.KindSession}, IntervalSeconds: 60,
			HTTP: &api.HTTPSpec{Scheme: "http"}}
		enc := json.NewEncoder(os.Stdout)
		s.Loop(ctx, tg, a, *query, func(r api.Result) { _ = enc.Encode(r) })
		os.Exit(0)
	}
	t.Fatalf("unknown helper mode %q", mode)
}

// sessionLabPrefix keeps this test's namespaces apart from other labs.
const sessionLabPrefix = "ss-"

// TestSessionLab runs DNS and HTTP sessions from vp1 to both anycast
// addresses of the default lab, withdraws vp1's site (ams) and checks that
// every session notices within two query intervals and that the next one
// reaches the site ground truth names.
func TestSessionLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the session lab test needs root (network namespaces, bird2, nsd): run `go test` as root")
	}
	for _, bin := range []string{"ip", "bird", "nsd", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("the session lab test needs %s (make deps installs bird2, nsd and nftables): %v", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := lab.New(lab.Options{StateDir: dir, Prefix: sessionLabPrefix,
		HTTPD: append([]string{"env", sessionHelperEnv + "=httpd"}, sessionHelperArgs(self)...)})
	if err != nil {
		t.Fatal(err)
	}
	// No management veth on the host: another lab may hold its address.
	src := strings.Replace(string(lab.DefaultTopologyYAML()), ", host: 198.19.0.1", "", 1)
	start := time.Now()
	if err := l.Up(ctx, "session-test", []byte(src)); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if _, err := l.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
	})

	topo := lab.DefaultTopology()
	names := map[string]string{} // identity (NSID, hostname.bind, site name) → site
	for _, s := range topo.Sites {
		names[s.NSID], names[s.Identity], names[s.Name] = s.Name, s.Name, s.Name
	}
	var addrs []string
	for _, a := range topo.Anycast {
		addrs = append(addrs, a.Address.String())
	}
	vpSites := func() map[string][]string {
		tr, err := l.Truth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][]string{}
		for _, e := range tr.VantagePoints {
			if e.VantagePoint == "vp1" {
				m[e.Address] = e.Sites
			}
		}
		return m
	}
	for _, a := range addrs {
		if got := vpSites()[a]; !slices.Equal(got, []string{"ams"}) {
			t.Fatalf("before: vp1 → %s reaches %v, want [ams]", a, got)
		}
	}

	const interval = time.Second
	type helper struct {
		name    string
		cmd     *exec.Cmd
		results []api.Result
		done    chan struct{}
	}
	var helpers []*helper
	for _, q := range []string{api.QuerySessionDNS, api.QuerySessionHTTP} {
		for _, a := range addrs {
			argv := append(sessionHelperArgs(self), "-addr", a, "-query", q, "-interval", interval.String())
			cmd, err := l.Command(ctx, "vp1", argv...)
			if err != nil {
				t.Fatal(err)
			}
			cmd.Env = append(os.Environ(), sessionHelperEnv+"=session")
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			h := &helper{name: q + " " + a, cmd: cmd, done: make(chan struct{})}
			helpers = append(helpers, h)
			go func() {
				defer close(h.done)
				sc := bufio.NewScanner(out)
				sc.Buffer(nil, 16<<20)
				for sc.Scan() {
					var r api.Result
					if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
						t.Errorf("%s: %v: %s", h.name, err, sc.Text())
						continue
					}
					h.results = append(h.results, r)
				}
			}()
		}
	}
	var once sync.Once
	stopHelpers := func() {
		once.Do(func() {
			for _, h := range helpers {
				_ = h.cmd.Process.Signal(syscall.SIGTERM)
			}
			for _, h := range helpers {
				<-h.done
				_ = h.cmd.Wait()
			}
		})
	}
	t.Cleanup(stopHelpers)

	// Let every session answer a few times from ams, then withdraw it.
	time.Sleep(2500 * time.Millisecond)
	if err := l.Run(ctx, lab.Step{Do: "withdraw", Target: "ams"}); err != nil {
		t.Fatal(err)
	}
	withdrawn := sessionLastEvent(t, l.EventLog(), "withdraw")
	var want string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m := vpSites()
		if s := m[addrs[0]]; len(s) == 1 && s[0] != "ams" && slices.Equal(m[addrs[1]], s) {
			want = s[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vp1 still reaches %v 10s after the withdrawal", m)
		}
	}
	t.Logf("withdrew ams at %s; truth now sends vp1 to %s", withdrawn.Format(time.RFC3339Nano), want)
	if want != "fra" {
		t.Errorf("truth sends vp1 to %s after withdrawing ams, want fra (default topology)", want)
	}
	// Let the next sessions answer a few times, then stop: the helpers
	// emit the open sessions as they end.
	time.Sleep(3500 * time.Millisecond)
	stopHelpers()

	for _, h := range helpers {
		t.Run(h.name, func(t *testing.T) {
			for i, r := range h.results {
				r.Seq = uint64(i + 1)
				if err := r.Validate(); err != nil {
					t.Errorf("result %d invalid: %v", i, err)
				}
				t.Logf("session %d: opened %s, closed %s (%+.3fs from withdraw), %s %s, answers %v",
					i, r.Session.OpenedAt.Format("15:04:05.000"), r.Session.ClosedAt.Format("15:04:05.000"),
					r.Session.ClosedAt.Sub(withdrawn).Seconds(), r.Session.End, r.Failure, sessionIdentities(r))
			}
			// The session open at the withdrawal.
			k := slices.IndexFunc(h.results, func(r api.Result) bool {
				return r.Session.End != api.EndConnectFailed && r.Session.ClosedAt.After(withdrawn.Add(-interval))
			})
			if k < 0 {
				t.Fatal("no session was open at the withdrawal")
			}
			hit := h.results[k]
			if !hit.Session.OpenedAt.Before(withdrawn) {
				t.Errorf("the first session to end after the withdrawal opened after it, at %s", hit.Session.OpenedAt)
			}
			if e := hit.Session.End; e != api.EndReset && e != api.EndTimeout {
				t.Errorf("session open at the withdrawal ended with %q, want reset or timeout", e)
			}
			if d := hit.Session.ClosedAt.Sub(withdrawn); d > 2*interval {
				t.Errorf("session ended %s after the withdrawal, want within two intervals (%s)", d, 2*interval)
			}
			if len(hit.Session.Answers) < 2 {
				t.Errorf("only %d answers before the withdrawal", len(hit.Session.Answers))
			}
			for _, id := range sessionIdentities(hit) {
				if names[id] != "ams" {
					t.Errorf("answer %q before the withdrawal: site %q, want ams", id, names[id])
				}
			}
			// The reconnection.
			next := slices.IndexFunc(h.results[k+1:], func(r api.Result) bool { return len(r.Session.Answers) > 0 })
			if next < 0 {
				t.Fatal("no session answered after the withdrawal")
			}
			for _, id := range sessionIdentities(h.results[k+1+next]) {
				if names[id] != want {
					t.Errorf("answer %q after the withdrawal: site %q, want %s", id, names[id], want)
				}
			}
		})
	}
}

// sessionLastEvent returns the time of the last event of a kind in a lab's event
// log.
func sessionLastEvent(t *testing.T, path, kind string) time.Time {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var at time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e lab.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event log: %v", err)
		}
		if e.Event == kind {
			at = e.Time
		}
	}
	if at.IsZero() {
		t.Fatalf("no %s event in %s", kind, path)
	}
	return at
}
