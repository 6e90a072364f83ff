package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
)

// The browser acceptance of the dashboard: the demo feeds a database from
// the lab (a withdrawal, a black hole, a broken uplink) with site sin
// answering CHAOS queries with markup, then headless Chromium loads every
// page of `anyscope web` over it and checks what a person would see: the
// sites, the vantage points, vp1's switch from AMS to FRA, the black hole of
// LHR, and the markup shown as text with no script run and no console
// error. It saves screenshots of the overview, the catchment map, the
// incidents and the HTML report's map, for a person to look at.
func TestBrowser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the browser test feeds the dashboard from the anycast lab (network namespaces) and needs root (CI runs as root)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not on PATH: `make deps` installs it (Debian package chromium)")
	}
	shots := os.Getenv("ANYSCOPE_SCREENSHOT_DIR")
	if shots == "" {
		if shots, err = os.MkdirTemp("", "anyscope-screenshots-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots go to %s", shots)

	// The demo, once, keeping its database; or the database a previous run
	// kept (ANYSCOPE_BROWSER_DEMO_DIR, to work on the pages without
	// rebuilding the lab).
	dir := os.Getenv("ANYSCOPE_BROWSER_DEMO_DIR")
	if dir == "" {
		dir = runHostileDemo(t)
	}
	ev := readEvents(t, filepath.Join(dir, "events.jsonl"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pgDir := filepath.Join(dir, "pg")
	out, err := exec.CommandContext(ctx, binary, "db", "start", "--pg-dir", pgDir).Output()
	if err != nil {
		t.Fatalf("anyscope db start --pg-dir %s: %v", pgDir, err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(binary, "db", "stop", "--pg-dir", pgDir).CombinedOutput(); err != nil {
			t.Errorf("anyscope db stop: %v\n%s", err, out)
		}
	})
	dsn := strings.TrimSpace(string(out))
	base := startWeb(ctx, t, dsn, dir)

	// The HTML report of the same run, for its map.
	reportFile := filepath.Join(dir, "report.html")
	if out, err := exec.CommandContext(ctx, binary, "report", "--db", dsn, "--format", "html",
		"--since", ev["up"].Add(-time.Minute).Format(time.RFC3339), "--until", time.Now().UTC().Format(time.RFC3339), "-o", reportFile).CombinedOutput(); err != nil {
		t.Fatalf("anyscope report --format html: %v\n%s", err, out)
	}

	c, err := startChrome(ctx, chromium, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	p, err := c.newPage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := watch(ctx, c, p)
	if err := p.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		t.Fatal(err)
	}

	// The payload runs where it is not escaped: a page that shows it raw
	// opens a dialog, so the checks below can fail.
	t.Run("control: the payload runs when not escaped", func(t *testing.T) {
		w.reset()
		if err := p.navigate(ctx, "data:text/html,"+url.PathEscape("<p>"+hostileIdentity+"</p>")); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := p.eval(ctx, `document.querySelectorAll('img').length`, &n); err != nil {
			t.Fatal(err)
		}
		if d := w.waitDialog(ctx, 10*time.Second); n != 1 || d == "" {
			t.Fatalf("raw payload: %d img elements, dialog %q; want 1 and alert(1)'s dialog", n, d)
		}
	})

	const target = "lab-dns"
	sites := []string{"AMS", "FRA", "LHR", "SIN"}
	vps := []string{"vp1", "vp2", "vp3", "vp4", "vp5", "vp6", "vp7", "vp8"}
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	type pageCase struct {
		name, path string
		want       []string // in the visible text
		shot       string   // screenshot file name, if any
		check      func(t *testing.T, text string)
	}
	pages := []pageCase{
		{name: "overview", path: "/", want: append(slices.Clone(sites), target, "8 vantage points"), shot: "overview.png"},
		{name: "catchment map", path: "/targets/" + target, want: append(slices.Clone(sites), "8 vantage points"), shot: "catchment.png",
			check: func(t *testing.T, _ string) {
				// The demo's agents have no location: the map shows the
				// sites, labelled, and no vantage point dot.
				var labels string
				if err := p.eval(ctx, `[...document.querySelectorAll('.map svg text')].map(e => e.textContent).join(' ')`, &labels); err != nil {
					t.Fatal(err)
				}
				for _, s := range sites {
					if !strings.Contains(labels, s) {
						t.Errorf("the catchment map has no label %s among %q", s, labels)
					}
				}
			}},
		{name: "diff across the withdrawal", path: fmt.Sprintf("/targets/%s/diff?from=%s&to=%s", target, stamp(ev["withdraw"].Add(-5*time.Second)), stamp(ev["restore"].Add(-5*time.Second))),
			want: []string{"catchment diff", "Who moved where", "AMS", "FRA"}},
		{name: "timeline", path: fmt.Sprintf("/targets/%s/timeline?since=%s&until=%s", target, stamp(ev["up"]), stamp(time.Now())),
			want: append(slices.Clone(sites), "switch timeline", "vp1"),
			check: func(t *testing.T, _ string) {
				var marks []string
				if err := p.eval(ctx, `[...document.querySelectorAll('svg.timeline title')].map(e => e.textContent)`, &marks); err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(marks, func(m string) bool {
					return strings.HasPrefix(m, "vp1 ") && strings.Contains(m, "AMS → FRA") && strings.Contains(m, "cause: withdrawal")
				}) {
					t.Errorf("no mark of vp1's switch AMS → FRA (withdrawal) on the timeline among %d marks: %q", len(marks), marks)
				}
			}},
		{name: "incidents", path: "/incidents", want: []string{"blackhole", "LHR", "vp7", "vantage_point", "vp3"}, shot: "incidents.png"},
		{name: "agents", path: "/agents", want: vps},
	}
	for _, vp := range vps {
		pc := pageCase{name: "vantage point " + vp, path: "/vantage-points/" + vp, want: []string{vp, "Recent identities"}}
		if vp == "vp4" { // served by sin, whose CHAOS identity is the payload
			pc.want = append(pc.want, hostileIdentity, "SIN")
			pc.shot = "vantage-point-vp4.png"
		}
		pages = append(pages, pc)
	}

	for _, pc := range pages {
		t.Run(pc.name, func(t *testing.T) {
			w.reset()
			if err := p.navigate(ctx, base+pc.path); err != nil {
				t.Fatal(err)
			}
			var doc struct {
				HTML string `json:"html"`
				Text string `json:"text"`
				Imgs int    `json:"imgs"`
			}
			if err := p.eval(ctx, `({html: document.documentElement.outerHTML, text: document.body.innerText, imgs: document.querySelectorAll('img').length})`, &doc); err != nil {
				t.Fatal(err)
			}
			for _, s := range pc.want {
				if !strings.Contains(doc.Text, s) {
					t.Errorf("%s: the visible text lacks %q:\n%s", pc.path, s, clip(doc.Text, 3000))
				}
			}
			if doc.Imgs != 0 || strings.Contains(doc.HTML, "<img") {
				t.Errorf("%s: %d img elements in the DOM (untrusted markup was parsed as HTML)", pc.path, doc.Imgs)
			}
			if pc.check != nil {
				pc.check(t, doc.Text)
			}
			if pc.shot != "" {
				png, err := p.screenshot(ctx, nil, 2400)
				if err != nil {
					t.Fatal(err)
				}
				writeShot(t, shots, pc.shot, png)
			}
			// Scripts (the dashboard's own, deferred) have run by the load
			// event; anything they or the payload did is in the log now.
			for _, problem := range w.problems() {
				t.Errorf("%s: %s", pc.path, problem)
			}
		})
	}

	t.Run("report map", func(t *testing.T) {
		w.reset()
		if err := p.navigate(ctx, "file://"+reportFile); err != nil {
			t.Fatal(err)
		}
		var r struct {
			Text string    `json:"text"`
			Imgs int       `json:"imgs"`
			Map  []float64 `json:"map"`
		}
		if err := p.eval(ctx, `(() => { const s = document.querySelector('svg'); const b = s ? s.getBoundingClientRect() : null;
			return {text: document.body.innerText, imgs: document.querySelectorAll('img').length,
				map: b ? [b.x + scrollX, b.y + scrollY, b.width, b.height] : null}; })()`, &r); err != nil {
			t.Fatal(err)
		}
		for _, s := range sites {
			if !strings.Contains(r.Text, s) {
				t.Errorf("the report lacks site %s", s)
			}
		}
		if r.Imgs != 0 {
			t.Errorf("%d img elements in the report", r.Imgs)
		}
		if len(r.Map) != 4 || r.Map[2] == 0 {
			t.Fatalf("the report has no map (svg): %v", r.Map)
		}
		png, err := p.screenshot(ctx, r.Map, 0)
		if err != nil {
			t.Fatal(err)
		}
		writeShot(t, shots, "report-map.png", png)
		for _, problem := range w.problems() {
			t.Errorf("report: %s", problem)
		}
	})
}

// runHostileDemo runs the demo with site sin's hostile CHAOS identity and
// returns the directory it kept. The directory is removed when the test
// passes and kept (its path logged) when it fails. A failed check of the
// demo fails the test, and the pages are checked all the same.
func runHostileDemo(t *testing.T) string {
	t.Helper()
	demo := exec.Command(binary, "demo", "--format", "json", "--baseline", "15s", "--hostile-identity", "sin", "--keep",
		"--prefix", "bt-", "--state-dir", t.TempDir()+"/lab", "--listen", "198.19.0.1:18742")
	var stdout, stderr bytes.Buffer
	demo.Stdout, demo.Stderr = &stdout, &stderr
	err := demo.Run()
	dir := keptDir(stderr.String())
	if dir == "" {
		t.Fatalf("demo: %v; it did not say where it kept its files:\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("demo files kept in %s (ANYSCOPE_BROWSER_DEMO_DIR=%s reuses them)", dir, dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err != nil {
		t.Errorf("demo: %v\nstderr:\n%s", err, stderr.String())
	}
	return dir
}

// keptDir is the directory the demo says it kept.
func keptDir(stderr string) string {
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "demo files kept in "); ok {
			return strings.TrimSpace(d)
		}
	}
	return ""
}

// readEvents returns the time of the first lab event of each kind (up,
// withdraw, restore, blackhole…).
func readEvents(t *testing.T, path string) map[string]time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ev := map[string]time.Time{}
	for line := range strings.Lines(string(b)) {
		var e lab.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, ok := ev[e.Event]; !ok {
			ev[e.Event] = e.Time
		}
	}
	for _, k := range []string{"up", "withdraw", "restore"} {
		if ev[k].IsZero() {
			t.Fatalf("%s has no %s event", path, k)
		}
	}
	return ev
}

// startWeb runs `anyscope web` on a free loopback port over dsn until the
// test ends and returns its base URL.
func startWeb(ctx context.Context, t *testing.T, dsn, dir string) string {
	t.Helper()
	ready := filepath.Join(dir, "web.addr")
	os.Remove(ready) // a kept directory holds the previous run's address
	logf, err := os.Create(filepath.Join(dir, "web.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "web", "--db", dsn, "--listen", "127.0.0.1:0", "--ready-file", ready)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			log, _ := os.ReadFile(logf.Name())
			t.Errorf("anyscope web: %v\n%s", err, log)
		}
		logf.Close()
	})
	addr, err := waitForFile(ctx, ready, time.Minute)
	if err != nil {
		t.Fatalf("anyscope web did not start: %v", err)
	}
	return "http://" + addr
}

// pageWatch records what a page did that a test must know: JavaScript
// dialogs (a script ran alert), console errors and warnings, uncaught
// exceptions, and the browser's log (CSP violations, failed loads).
type pageWatch struct {
	mu       sync.Mutex
	dialogs  []string
	dialog   chan string
	messages []string
}

func watch(ctx context.Context, c *chrome, p *page) *pageWatch {
	w := &pageWatch{dialog: make(chan string, 16)}
	add := func(format string, args ...any) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.messages = append(w.messages, fmt.Sprintf(format, args...))
	}
	c.handle("Page.javascriptDialogOpening", func(session string, params json.RawMessage) {
		if session != p.session {
			return
		}
		var d struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}
		json.Unmarshal(params, &d)
		w.mu.Lock()
		w.dialogs = append(w.dialogs, d.Type+": "+d.Message)
		w.mu.Unlock()
		select {
		case w.dialog <- d.Type + ": " + d.Message:
		default:
		}
		// Close it, or the page waits for a person forever (not on the
		// reader goroutine, which delivers the reply).
		go p.call(ctx, "Page.handleJavaScriptDialog", map[string]any{"accept": true}, nil)
	})
	c.handle("Runtime.consoleAPICalled", func(session string, params json.RawMessage) {
		var m struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		json.Unmarshal(params, &m)
		if session != p.session || (m.Type != "error" && m.Type != "warning" && m.Type != "assert") {
			return
		}
		var parts []string
		for _, a := range m.Args {
			parts = append(parts, cmpOr(a.Description, fmt.Sprint(a.Value)))
		}
		add("console %s: %s", m.Type, strings.Join(parts, " "))
	})
	c.handle("Runtime.exceptionThrown", func(session string, params json.RawMessage) {
		var e struct {
			Details struct {
				Text      string `json:"text"`
				Exception struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		json.Unmarshal(params, &e)
		if session == p.session {
			add("uncaught exception: %s %s", e.Details.Text, e.Details.Exception.Description)
		}
	})
	c.handle("Log.entryAdded", func(session string, params json.RawMessage) {
		var e struct {
			Entry struct {
				Source string `json:"source"`
				Level  string `json:"level"`
				Text   string `json:"text"`
				URL    string `json:"url"`
			} `json:"entry"`
		}
		json.Unmarshal(params, &e)
		if session == p.session && (e.Entry.Level == "error" || e.Entry.Level == "warning") {
			add("browser log (%s, %s): %s %s", e.Entry.Source, e.Entry.Level, e.Entry.Text, e.Entry.URL)
		}
	})
	return w
}

// reset forgets what the previous page did.
func (w *pageWatch) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dialogs, w.messages = nil, nil
	for len(w.dialog) > 0 {
		<-w.dialog
	}
}

// problems are the dialogs and errors since the last reset.
func (w *pageWatch) problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, d := range w.dialogs {
		out = append(out, "a script ran: dialog "+d)
	}
	return append(out, w.messages...)
}

// waitDialog returns the next dialog's type and message, or "" if none
// opens within d.
func (w *pageWatch) waitDialog(ctx context.Context, d time.Duration) string {
	select {
	case m := <-w.dialog:
		return m
	case <-time.After(d):
		return ""
	case <-ctx.Done():
		return ""
	}
}

func writeShot(t *testing.T, dir, name string, png []byte) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestWithIdentity(t *testing.T) {
	for _, tc := range []struct {
		name, site, wantErr string
	}{
		{name: "sin", site: "sin"},
		{name: "ams", site: "ams"},
		{name: "unknown site", site: "xyz", wantErr: `--hostile-identity "xyz": the lab has no such site`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := withIdentity(lab.DefaultTopologyYAML(), tc.site, hostileIdentity)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			topo, err := lab.ParseTopology("hostile", src)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range topo.Sites {
				hostile := s.Identity == hostileIdentity
				if hostile != (s.Name == tc.site) {
					t.Errorf("site %s: identity %q", s.Name, s.Identity)
				}
				if s.NSID != s.Name+"-1" {
					t.Errorf("site %s: NSID %q changed", s.Name, s.NSID)
				}
			}
		})
	}
}
