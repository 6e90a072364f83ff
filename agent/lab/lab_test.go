package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv switches the test binary into a helper process (see TestMain).
const helperEnv = "ANYSCOPE_LAB_TEST_HELPER"

func helperHTTPD(args []string) int {
	fs := flag.NewFlagSet("httpd", flag.ContinueOnError)
	site := fs.String("site", "", "")
	var listen []string
	fs.Func("listen", "", func(s string) error { listen = append(listen, s); return nil })
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := ServeHTTP(ctx, *site, listen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func helperHTTPGet(args []string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	resp.Body.Close()
	fmt.Print(resp.Header.Get("X-Served-By"))
	return 0
}

// testPrefix keeps the test's namespaces apart from a lab started by hand.
const testPrefix = "at-"

// TestLab brings the default topology up in real namespaces with real BGP,
// NSD and HTTP responders, and checks ground truth against what the
// services answer, through withdrawals, black holes and broken vantage
// points, then that down leaves nothing behind.
func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab tests need root (network namespaces, veth pairs, bird2, nsd): run `go test` as root; CI does")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := New(Options{StateDir: dir, Prefix: testPrefix, HTTPD: []string{"env", helperEnv + "=httpd", self}})
	if err != nil {
		t.Fatal(err)
	}
	// No management veth on the host: a lab started by hand may hold its
	// address. The management network inside the lab is still built.
	src := strings.Replace(string(DefaultTopologyYAML()), ", host: 198.19.0.1", "", 1)
	start := time.Now()
	if err := l.Up(ctx, "default-test", []byte(src)); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if _, err := l.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	topo := DefaultTopology()
	byIdentity := map[string]Site{}
	for _, s := range topo.Sites {
		byIdentity[s.Identity] = s
	}
	v4, v6 := topo.Anycast[0].Address.String(), topo.Anycast[1].Address.String()

	t.Run("up twice", func(t *testing.T) {
		if err := l.Up(ctx, "default-test", []byte(src)); !errors.Is(err, ErrAlreadyUp) {
			t.Fatalf("second up: %v, want ErrAlreadyUp", err)
		}
	})

	t.Run("DNS and HTTP answer from the site truth names", func(t *testing.T) {
		tr, err := l.Truth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.VantagePoints) != len(topo.VantagePoints)*len(topo.Anycast) {
			t.Fatalf("%d truth entries", len(tr.VantagePoints))
		}
		multi := 0
		for _, e := range tr.VantagePoints {
			if len(e.Sites) == 0 {
				t.Errorf("%s → %s: no site (%s)", e.VantagePoint, e.Address, e.Problem)
				continue
			}
			if len(e.Sites) > 1 {
				multi++
			}
			id, err := dig(ctx, testPrefix+e.VantagePoint, e.Address)
			if err != nil {
				t.Errorf("%s → %s: %v", e.VantagePoint, e.Address, err)
				continue
			}
			if s, ok := byIdentity[id]; !ok || !slices.Contains(e.Sites, s.Name) {
				t.Errorf("%s → %s: answered %q (site %q), truth says %v", e.VantagePoint, e.Address, id, s.Name, e.Sites)
			}
			served, err := httpGet(ctx, self, testPrefix+e.VantagePoint, e.Address)
			if err != nil {
				t.Errorf("%s → http %s: %v", e.VantagePoint, e.Address, err)
			} else if !slices.Contains(e.Sites, served) {
				t.Errorf("%s → http %s: X-Served-By %q, truth says %v", e.VantagePoint, e.Address, served, e.Sites)
			}
		}
		if multi == 0 {
			t.Error("no vantage point has equal-cost paths to two sites: ECMP is not in effect")
		}
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", testPrefix+"vp4", "dig", "+nsid", "+time=1", "+tries=1", "@"+v6, "CH", "TXT", "id.server").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `("sin-1")`) {
			t.Errorf("NSID from vp4 over IPv6: %v\n%s", err, out)
		}
	})

	t.Run("withdraw moves the catchment and DNS follows", func(t *testing.T) {
		if got := sitesOf(t, l, "vp1", v4); !slices.Equal(got, []string{"ams"}) {
			t.Fatalf("before: vp1 reaches %v, want [ams]", got)
		}
		if err := l.Run(ctx, Step{Do: "withdraw", Target: "ams"}); err != nil {
			t.Fatal(err)
		}
		waitSites(t, l, "vp1", []string{"fra"}, 10*time.Second, v4, v6)
		for _, addr := range []string{v4, v6} {
			if id, err := dig(ctx, testPrefix+"vp1", addr); err != nil || byIdentity[id].Name != "fra" {
				t.Errorf("vp1 → %s after withdrawal: %q, %v; want fra", addr, id, err)
			}
		}
		if err := l.Run(ctx, Step{Do: "restore", Target: "ams"}); err != nil {
			t.Fatal(err)
		}
		waitSites(t, l, "vp1", []string{"ams"}, 10*time.Second, v4, v6)
		if id, err := dig(ctx, testPrefix+"vp1", v4); err != nil || byIdentity[id].Name != "ams" {
			t.Errorf("vp1 after restore: %q, %v; want ams", id, err)
		}
	})

	t.Run("black hole keeps the route and swallows DNS", func(t *testing.T) {
		if err := l.Run(ctx, Step{Do: "blackhole", Target: "lhr"}); err != nil {
			t.Fatal(err)
		}
		tr, err := l.Truth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tr.VantagePoints {
			if e.VantagePoint == "vp7" && (!slices.Equal(e.Sites, []string{"lhr"}) || !e.Blackholed) {
				t.Errorf("vp7 → %s during black hole: sites %v blackholed %v, want [lhr] true", e.Address, e.Sites, e.Blackholed)
			}
		}
		for _, addr := range []string{v4, v6} {
			if id, err := dig(ctx, testPrefix+"vp7", addr); err == nil {
				t.Errorf("vp7 → %s during black hole answered %q", addr, id)
			} else if !strings.Contains(err.Error(), "no servers could be reached") {
				t.Errorf("vp7 → %s: %v, want a timeout", addr, err)
			}
		}
		if err := l.Run(ctx, Step{Do: "restore", Target: "lhr"}); err != nil {
			t.Fatal(err)
		}
		if id, err := dig(ctx, testPrefix+"vp7", v4); err != nil || byIdentity[id].Name != "lhr" {
			t.Errorf("vp7 after restore: %q, %v; want lhr", id, err)
		}
	})

	t.Run("broken vantage point has no route", func(t *testing.T) {
		if err := l.Run(ctx, Step{Do: "break-vp", Target: "vp3"}); err != nil {
			t.Fatal(err)
		}
		if got := sitesOf(t, l, "vp3", v6); len(got) != 0 {
			t.Errorf("broken vp3 reaches %v", got)
		}
		if err := l.Run(ctx, Step{Do: "fix-vp", Target: "vp3"}); err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{v4, v6} {
			if id, err := dig(ctx, testPrefix+"vp3", addr); err != nil || byIdentity[id].Name != "fra" {
				t.Errorf("vp3 → %s after fix: %q, %v; want fra", addr, id, err)
			}
		}
	})

	t.Run("every step is in the event log", func(t *testing.T) {
		f, err := os.Open(l.EventLog())
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var got []string
		var last time.Time
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e struct {
				Time            string
				Event, Site, VP string
			}
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			ts, err := time.Parse(time.RFC3339, e.Time)
			if err != nil || ts.Before(last) {
				t.Errorf("time %q: %v (previous %s)", e.Time, err, last)
			}
			last = ts
			got = append(got, strings.TrimSpace(e.Event+" "+e.Site+e.VP))
		}
		want := []string{"up", "withdraw ams", "restore ams", "blackhole lhr", "restore lhr", "break-vp vp3", "fix-vp vp3"}
		if !slices.Equal(got, want) {
			t.Errorf("events %q, want %q", got, want)
		}
	})

	t.Run("down leaves nothing, even without its state", func(t *testing.T) {
		nss, err := listNamespaces(ctx, testPrefix)
		if err != nil {
			t.Fatal(err)
		}
		var pids []int
		for _, ns := range nss {
			out, err := run(ctx, "", "ip", "netns", "pids", ns)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range strings.Fields(out) {
				pid, _ := strconv.Atoi(f)
				pids = append(pids, pid)
			}
		}
		if len(pids) < 3*len(topo.Sites)+len(topo.Routers) {
			t.Errorf("only %d processes in the lab before down", len(pids))
		}
		// As after a crash: Down finds everything by its name prefix.
		if err := os.Remove(filepath.Join(dir, stateFile)); err != nil {
			t.Fatal(err)
		}
		rep, err := l.Down(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Namespaces) != len(nss) {
			t.Errorf("down removed %d namespaces, %d existed", len(rep.Namespaces), len(nss))
		}
		if left, _ := listNamespaces(ctx, testPrefix); len(left) > 0 {
			t.Errorf("namespaces left: %v", left)
		}
		for _, pid := range pids {
			if exists(pid) {
				t.Errorf("process %d still exists", pid)
			}
		}
		if _, err := os.Stat("/sys/class/net/" + testPrefix + "mgmt"); err == nil {
			t.Error("host management interface left")
		}
		if rep, err := l.Down(ctx); err != nil || len(rep.Namespaces) != 0 {
			t.Errorf("second down: %+v, %v", rep, err)
		}
	})
}

// dig asks addr for CHAOS TXT hostname.bind from inside ns, once, with a
// one-second timeout, and returns the identity.
func dig(ctx context.Context, ns, addr string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "dig", "+short", "+time=1", "+tries=1", "@"+addr, "CH", "TXT", "hostname.bind").CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return "", fmt.Errorf("dig in %s: %w: %s", ns, err, s)
	}
	return strings.Trim(s, `"`), nil
}

// httpGet fetches http://addr/ from inside ns and returns X-Served-By.
func httpGet(ctx context.Context, self, ns, addr string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "env", helperEnv+"=httpget", self, "http://"+netJoin(addr, "80")+"/")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("http get in %s: %w", ns, err)
	}
	return string(out), nil
}

func sitesOf(t *testing.T, l *Lab, vp, addr string) []string {
	t.Helper()
	tr, err := l.Truth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tr.VantagePoints {
		if e.VantagePoint == vp && e.Address == addr {
			return e.Sites
		}
	}
	t.Fatalf("no truth for %s → %s", vp, addr)
	return nil
}

// waitSites waits until truth sends vp to want for every address.
func waitSites(t *testing.T, l *Lab, vp string, want []string, timeout time.Duration, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for {
		ok := true
		var got []string
		for _, a := range addrs {
			got = sitesOf(t, l, vp, a)
			ok = ok && slices.Equal(got, want)
		}
		if ok {
			t.Logf("%s reaches %v after %s", vp, want, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still reaches %v after %s, want %v", vp, got, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
