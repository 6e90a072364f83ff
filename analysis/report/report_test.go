package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func fixedNow() time.Time { return time.Date(2025, 3, 1, 13, 5, 0, 0, time.UTC) }

func build(t *testing.T, src analysis.Source, opts report.Options) *report.Report {
	t.Helper()
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	r, err := report.Build(context.Background(), src, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return r
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(g) && i < len(w) && g[i] == w[i] {
			i++
		}
		line := func(ls []string) string {
			if i >= len(ls) {
				return "(end of file)"
			}
			return ls[i]
		}
		t.Errorf("%s differs from the golden file from line %d (run go test -update and review the diff):\n got %q\nwant %q", path, i+1, line(g), line(w))
	}
}

func render(t *testing.T, r *report.Report) (jsonOut, mdOut []byte) {
	t.Helper()
	var j, m bytes.Buffer
	if err := report.WriteJSON(&j, r); err != nil {
		t.Fatalf("WriteJSON: %v", err)
	}
	if err := report.WriteMarkdown(&m, r); err != nil {
		t.Fatalf("WriteMarkdown: %v", err)
	}
	return j.Bytes(), m.Bytes()
}

func TestGolden(t *testing.T) {
	t.Parallel()
	r := build(t, fixture(), report.Options{Since: start, Until: start.Add(time.Hour)})
	j, m := render(t, r)
	golden(t, "report.json.golden", j)
	golden(t, "report.md.golden", m)
}

// TestFindings checks the fixture's story in the report, independently of
// the golden files.
func TestFindings(t *testing.T) {
	t.Parallel()
	r := build(t, fixture(), report.Options{Since: start, Until: start.Add(time.Hour)})
	if len(r.Targets) != 2 || r.Targets[0].Name != "i-root" || r.Targets[1].Name != "k-root" {
		t.Fatalf("targets = %+v", r.Targets)
	}
	k := r.Targets[1]

	sites := map[string]report.Site{}
	for _, s := range k.Sites {
		sites[s.Site] = s
	}
	// vp-hel-1 and vp-ams-1 (HEL 18 of 33 observations) at HEL, vp-fra-1 at
	// AMS; vp-nyc-1 resolved nothing and is not counted.
	if k.VantagePoints != 3 || sites["HEL"].VantagePoints != 2 || sites["AMS"].VantagePoints != 1 || sites["STO"].VantagePoints != 0 {
		t.Errorf("k-root sites = %+v, %d vantage points", k.Sites, k.VantagePoints)
	}
	if sites["HEL"].Share != 0.6667 || sites["AMS"].Share != 0.3333 {
		t.Errorf("shares HEL %v AMS %v", sites["HEL"].Share, sites["AMS"].Share)
	}

	var sw []string
	for _, s := range k.Switches {
		sw = append(sw, s.VantagePoint+" "+string(s.Transport)+" "+s.Query+" "+s.From+">"+s.To+" "+s.At.Format("15:04:05")+" "+s.LastFrom.Format("15:04:05"))
	}
	want := []string{
		"vp-ams-1 udp hostname.bind AMS>HEL 12:30:00 12:20:00",
		"vp-ams-1 udp nsid AMS>HEL 12:30:02 12:20:02",
		"vp-ams-1 tcp hostname.bind AMS>HEL 12:30:04 12:20:04",
		"vp-fra-1 udp nsid AMS>HEL 12:15:02 12:10:02",
		"vp-fra-1 udp nsid HEL>AMS 12:25:02 12:20:02",
	}
	slices.Sort(sw)
	slices.Sort(want)
	if !reflect.DeepEqual(sw, want) {
		t.Errorf("switches:\n got %q\nwant %q", sw, want)
	}
	for _, s := range k.Switches {
		if s.VantagePoint == "vp-ams-1" && s.FailuresBetween != 1 {
			t.Errorf("switch %+v: want one failure between", s)
		}
	}
	if len(k.Disagreements) != 2 {
		t.Errorf("disagreements = %+v, want vp-fra-1's NSID against each hostname.bind", k.Disagreements)
	}
	for _, d := range k.Disagreements {
		if d.VantagePoint != "vp-fra-1" || d.Rounds != 2 {
			t.Errorf("disagreement %+v", d)
		}
	}
	if got := k.Failures; !reflect.DeepEqual(got, map[string]int{"generic_timeout_error": 3, "connection_refused": 9}) {
		t.Errorf("failures = %v", got)
	}
	if len(k.Unresolved) != 3 || k.Unresolved[0].Observations != 9 {
		t.Errorf("unresolved = %+v", k.Unresolved)
	}

	// Latency by site: HEL answered vp-hel-1 in 5–7 ms (72 answers),
	// vp-ams-1 in 25–27 ms (18) and vp-fra-1's NSID in 18 and 19 ms; the
	// lower median of the 92 is 6 ms. AMS: vp-fra-1's 18–20 ms (34) and
	// vp-ams-1's 25–27 ms (15), median 20 ms.
	wantLatency := []report.SiteLatency{
		{Site: "HEL", Observations: 92, MedianRTTMs: 6, MinRTTMs: 5},
		{Site: "AMS", Observations: 49, MedianRTTMs: 20, MinRTTMs: 18},
	}
	if !reflect.DeepEqual(k.SiteLatency, wantLatency) {
		t.Errorf("site latency = %+v, want %+v", k.SiteLatency, wantLatency)
	}

	i := r.Targets[0]
	if len(i.Sites) != 2 || i.Sites[0].Site != "CHI" || i.Sites[1].Site != "LON" || !i.Sites[1].Declared || i.Sites[0].Declared {
		t.Errorf("i-root sites = %+v", i.Sites)
	}
}

func TestJSONContract(t *testing.T) {
	t.Parallel()
	r := build(t, fixture(), report.Options{Since: start, Until: start.Add(time.Hour)})
	j, _ := render(t, r)
	var doc map[string]any
	if err := json.Unmarshal(j, &doc); err != nil {
		t.Fatal(err)
	}
	requireKeys(t, "report", doc, "generated_at", "since", "until", "targets")
	for _, key := range []string{"generated_at", "since", "until"} {
		if _, err := time.Parse(time.RFC3339, doc[key].(string)); err != nil || !strings.HasSuffix(doc[key].(string), "Z") {
			t.Errorf("%s = %v: want RFC 3339 UTC", key, doc[key])
		}
	}
	for _, tv := range doc["targets"].([]any) {
		target := tv.(map[string]any)
		requireKeys(t, "target", target, "name", "sites", "catchment", "switches", "unresolved", "failures", "disagreements", "assignments", "site_latency")
		for _, key := range []string{"sites", "catchment", "switches", "unresolved", "disagreements", "assignments", "site_latency"} {
			if _, ok := target[key].([]any); !ok {
				t.Errorf("target %v: %s is %T, want an array (never null)", target["name"], key, target[key])
			}
		}
		if _, ok := target["failures"].(map[string]any); !ok {
			t.Errorf("failures is %T, want an object", target["failures"])
		}
		for _, s := range target["sites"].([]any) {
			requireKeys(t, "site", s.(map[string]any), "site", "vantage_points", "share")
		}
		for _, c := range target["catchment"].([]any) {
			requireKeys(t, "catchment", c.(map[string]any), "vantage_point", "address", "site", "observations", "confidence")
		}
		for _, s := range target["switches"].([]any) {
			sw := s.(map[string]any)
			requireKeys(t, "switch", sw, "vantage_point", "address", "transport", "query", "from", "to", "at", "last_from")
			if _, err := time.Parse(time.RFC3339, sw["at"].(string)); err != nil {
				t.Errorf("at: %v", err)
			}
		}
		for _, u := range target["unresolved"].([]any) {
			requireKeys(t, "unresolved", u.(map[string]any), "identity", "observations")
		}
		for _, a := range target["assignments"].([]any) {
			requireKeys(t, "assignment", a.(map[string]any), "vantage_point", "site", "observations", "confidence")
		}
		for _, l := range target["site_latency"].([]any) {
			requireKeys(t, "site latency", l.(map[string]any), "site", "observations", "median_rtt_ms", "min_rtt_ms")
		}
	}
}

func requireKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s has no %q: %v", what, k, m)
		}
	}
}

// hostileSource answers with strings crafted to break Markdown and HTML.
func hostileSource() *sliceSource {
	src := &sliceSource{targets: []analysis.Target{{Name: "example", Sites: []analysis.Site{{Code: "AMS", Name: "<b>Ams</b> | *x*"}}}}}
	ids := []string{
		"<img src=x onerror=alert(1)>",
		"a|b\n# heading",
		"<script>alert(1)</script>",
		"[click](javascript:alert(1))",
		"![x](http://example.com/x.png)",
		"`code` *bold* _em_ ~~del~~ $x^2$",
		"http://example.com/ www.example.com user@example.com",
		"\u202eevil\u200b\r\n| --- |",
		"&lt;already&gt; &amp; \\|",
		strings.Repeat("long-", 60),
		"\xff\xfe invalid",
	}
	for i, id := range ids {
		src.obs = append(src.obs, analysis.Observation{
			VantagePoint: "vp|<i>x</i>", Target: "example", Address: netip.MustParseAddr("192.0.2.1"),
			Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			At: start.Add(time.Duration(i) * time.Minute), Identity: id,
		})
	}
	// Resolved answers, so the vantage point appears in the switch table too.
	for i, id := range []string{"ams", "LHR"} {
		src.obs = append(src.obs, analysis.Observation{
			VantagePoint: "vp|<i>x</i>", Target: "example", Address: netip.MustParseAddr("192.0.2.1"),
			Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			At: start.Add(time.Duration(30+i) * time.Minute), Identity: id,
		})
	}
	return src
}

func TestMarkdownHostile(t *testing.T) {
	t.Parallel()
	r := build(t, hostileSource(), report.Options{Since: start, Until: start.Add(time.Hour)})
	j, m := render(t, r)
	golden(t, "hostile.md.golden", m)

	md := string(m)
	for _, bad := range []string{"<img", "<script", "<b>", "<i>", "](", "\u202e", "\u200b", "\r", "www.example"} {
		if strings.Contains(md, bad) {
			t.Errorf("Markdown contains %q", bad)
		}
	}
	var cols int
	for _, line := range strings.Split(strings.TrimSuffix(md, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "#"):
			if !strings.HasPrefix(line, "# Anycast catchment report") && !strings.HasPrefix(line, "## Target ") && !strings.HasPrefix(line, "### ") {
				t.Errorf("unexpected heading line %q", line)
			}
		case strings.HasPrefix(line, "|"):
			n := strings.Count(line, "|")
			if strings.HasPrefix(line, "|-") || strings.HasPrefix(line, "|--") {
				if n != cols {
					t.Errorf("separator %q has %d pipes, header had %d", line, n, cols)
				}
				continue
			}
			if cols == 0 {
				cols = n
			} else if n != cols {
				t.Errorf("row %q has %d pipes, want %d", line, n, cols)
			}
		default:
			cols = 0
		}
	}

	// JSON keeps the identities as they are (encoding/json escapes <, >, &).
	var back report.Report
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, u := range back.Targets[0].Unresolved {
		if u.Identity == "a|b\n# heading" {
			found = true
		}
	}
	if !found {
		t.Errorf("JSON lost the identity %q: %+v", "a|b\n# heading", back.Targets[0].Unresolved)
	}
	if bytes.Contains(j, []byte("<img")) {
		t.Errorf("JSON contains a raw <img")
	}
}

func TestBuildOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("since-after-until", func(t *testing.T) {
		t.Parallel()
		_, err := report.Build(ctx, fixture(), report.Options{Since: start, Until: start, Now: fixedNow})
		if !errors.Is(err, report.ErrInvalid) {
			t.Errorf("err = %v, want ErrInvalid", err)
		}
	})
	t.Run("unknown-target", func(t *testing.T) {
		t.Parallel()
		_, err := report.Build(ctx, fixture(), report.Options{Target: "x-root", Now: fixedNow})
		if !errors.Is(err, report.ErrUnknownTarget) || err.Error() != `unknown target: "x-root"` {
			t.Errorf("err = %v, want ErrUnknownTarget", err)
		}
	})
	t.Run("one-target", func(t *testing.T) {
		t.Parallel()
		r := build(t, fixture(), report.Options{Target: "i-root", Since: start, Until: start.Add(time.Hour)})
		if len(r.Targets) != 1 || r.Targets[0].Name != "i-root" || r.Targets[0].Observations != 72 {
			t.Errorf("targets = %+v", r.Targets)
		}
	})
	t.Run("default-window", func(t *testing.T) {
		t.Parallel()
		r := build(t, fixture(), report.Options{})
		if !r.Until.Equal(fixedNow()) || !r.Since.Equal(fixedNow().Add(-report.DefaultSpan)) || !r.GeneratedAt.Equal(fixedNow()) {
			t.Errorf("window %s..%s generated %s", r.Since, r.Until, r.GeneratedAt)
		}
		if r.Targets[1].Observations != 12*3*5 {
			t.Errorf("k-root observations = %d", r.Targets[1].Observations)
		}
	})
	t.Run("narrow-window", func(t *testing.T) {
		t.Parallel()
		r := build(t, fixture(), report.Options{Since: start.Add(30 * time.Minute), Until: start.Add(time.Hour)})
		for _, s := range r.Targets[1].Switches {
			if s.VantagePoint == "vp-ams-1" {
				t.Errorf("switch before the window reported: %+v", s)
			}
		}
	})
	t.Run("empty-target-listed", func(t *testing.T) {
		t.Parallel()
		src := fixture()
		src.targets = append(src.targets, analysis.Target{Name: "quiet", Sites: []analysis.Site{{Code: "FRA"}}})
		r := build(t, src, report.Options{Since: start, Until: start.Add(time.Hour)})
		q := r.Targets[2]
		if q.Name != "quiet" || q.Observations != 0 || len(q.Sites) != 1 || q.Sites[0].Share != 0 {
			t.Errorf("quiet target = %+v", q)
		}
	})
	t.Run("undeclared-target", func(t *testing.T) {
		t.Parallel()
		src := fixture()
		src.targets = src.targets[:1] // k-root only; i-root observations remain
		r := build(t, src, report.Options{Since: start, Until: start.Add(time.Hour)})
		if len(r.Targets) != 2 || r.Targets[0].Name != "i-root" || r.Targets[0].Sites[0].Site != "CHI" {
			t.Errorf("targets = %+v", r.Targets)
		}
	})
	t.Run("invalid-rule", func(t *testing.T) {
		t.Parallel()
		src := fixture()
		src.targets[1].Rules = []analysis.Rule{{Pattern: "(", Site: "X"}}
		_, err := report.Build(ctx, src, report.Options{Now: fixedNow})
		if err == nil || !strings.Contains(err.Error(), `target "i-root"`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("source-error", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		_, err := report.Build(ctx, failingSource{boom}, report.Options{Now: fixedNow})
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want boom", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := report.Build(cctx, fixture(), report.Options{Now: fixedNow})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

type failingSource struct{ err error }

func (f failingSource) Targets(context.Context) ([]analysis.Target, error) { return nil, nil }

func (f failingSource) Observations(context.Context, time.Time, time.Time, string, func(analysis.Observation) error) error {
	return f.err
}

// Each vantage point counts once, under its majority site across the
// target's addresses, with its location when the source knows it.
func TestAssignments(t *testing.T) {
	t.Parallel()
	describe := func(r *report.Report) []string {
		var out []string
		for _, a := range r.Targets[1].Assignments {
			s := a.VantagePoint + " " + a.Site
			if a.Latitude != nil && a.Longitude != nil {
				s += fmt.Sprintf(" %.2f,%.2f", *a.Latitude, *a.Longitude)
			}
			out = append(out, s)
		}
		return out
	}
	tests := []struct {
		name string
		src  *sliceSource
		want []string
	}{
		{"unlocated", fixture(), []string{"vp-ams-1 HEL", "vp-fra-1 AMS", "vp-hel-1 HEL", "vp-nyc-1 "}},
		{"located", located(), []string{"vp-ams-1 HEL 52.37,4.90", "vp-fra-1 AMS 50.11,8.68", "vp-hel-1 HEL 60.17,24.94", "vp-nyc-1  40.71,-74.01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := build(t, tt.src, report.Options{Since: start, Until: start.Add(time.Hour)})
			if got := describe(r); !slices.Equal(got, tt.want) {
				t.Errorf("assignments %q, want %q", got, tt.want)
			}
		})
	}
}
