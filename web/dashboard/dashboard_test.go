package dashboard_test

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/anyscope/anyscope/web/dashboard"
	"github.com/anyscope/anyscope/web/geomap"
)

// server starts the dashboard over w's store with w's clock.
func server(t *testing.T, w world) *httptest.Server {
	t.Helper()
	d, err := dashboard.New(w.st, dashboard.Options{Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// checkHeaders checks the security headers every response carries.
func checkHeaders(t *testing.T, res *http.Response) {
	t.Helper()
	if got := res.Header.Get("Content-Security-Policy"); got != dashboard.ContentSecurityPolicy {
		t.Errorf("Content-Security-Policy = %q", got)
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
		"base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(res.Header.Get("Content-Security-Policy"), want) {
			t.Errorf("Content-Security-Policy lacks %q", want)
		}
	}
	if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", got)
	}
	if got := res.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy = %q", got)
	}
}

var scriptTag = regexp.MustCompile(`(?i)<script`)

// checkSafe checks a page for what the Content-Security-Policy would block
// and what an unescaped identity would inject: exactly one script element,
// our own and empty; no event handler or style attribute, no style
// element, no img element; the hostile identity never raw.
func checkSafe(t *testing.T, page string) {
	t.Helper()
	if strings.Contains(page, hostile) {
		t.Errorf("the hostile identity appears unescaped")
	}
	if n := len(scriptTag.FindAllStringIndex(page, -1)); n != 1 {
		t.Errorf("%d <script occurrences, want exactly one", n)
	}
	z := html.NewTokenizer(strings.NewReader(page))
	scripts := 0
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			if z.Err() != io.EOF {
				t.Errorf("tokenize: %v", z.Err())
			}
			break
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		tok := z.Token()
		switch tok.Data {
		case "script":
			scripts++
			src := attr(tok, "src")
			if !strings.HasPrefix(src, "/static/dashboard.js") {
				t.Errorf("script src %q, want the embedded /static/dashboard.js", src)
			}
			if z.Next() != html.EndTagToken {
				t.Errorf("the script element is not empty")
			}
		case "style", "img", "iframe", "object", "embed":
			t.Errorf("a <%s> element", tok.Data)
		}
		for _, a := range tok.Attr {
			if strings.HasPrefix(strings.ToLower(a.Key), "on") || strings.EqualFold(a.Key, "style") {
				t.Errorf("<%s %s=%q>: inline handlers and styles are forbidden", tok.Data, a.Key, a.Val)
			}
			if v := strings.ToLower(strings.TrimSpace(a.Val)); strings.HasPrefix(v, "javascript:") {
				t.Errorf("<%s %s=%q>", tok.Data, a.Key, a.Val)
			}
		}
	}
	if scripts != 1 {
		t.Errorf("%d script elements, want 1", scripts)
	}
}

func attr(tok html.Token, key string) string {
	for _, a := range tok.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

const escaped = `&lt;img src=x onerror=alert(1)&gt;`

func TestPages(t *testing.T) {
	t.Parallel()
	w := seed(t)
	srv := server(t, w)
	since, until := url.QueryEscape(w.h0.Format(time.RFC3339)), url.QueryEscape(w.now.Format(time.RFC3339))
	for _, tc := range []struct {
		name, path string
		want       []string
		// shows says the page shows the hostile identity (escaped).
		shows bool
	}{
		{"overview", "/", []string{`href="/targets/k-root"`, "NL-AMS", "SIN", "4 vantage points", "blackhole", "open"}, true},
		{"catchment map", "/targets/k-root", []string{"<svg", `href="/vantage-points/vp1"`, "NL-AMS", "Amsterdam", "Singapore",
			"4 vantage points, 3 located on the map", `data-target="k-root"`, `id="replay"`, `max="24"`, "50.0%", "25.0%"}, true},
		{"catchment of one address", "/targets/k-root?address=2001:db8::53&at=" + url.QueryEscape(w.h0.Add(time.Minute).Format(time.RFC3339)),
			[]string{"1 vantage point, 1 located", "<code>2001:db8::53</code>"}, false},
		{"catchment in the first window", "/targets/k-root?at=" + url.QueryEscape(w.h0.Add(time.Minute).Format(time.RFC3339)),
			[]string{"window " + w.h0.Format("2006-01-02T15:04:05Z"), "50.0%"}, false},
		{"diff", "/targets/k-root/diff?from=" + url.QueryEscape(w.h0.Add(time.Minute).Format(time.RFC3339)),
			[]string{"<strong>1</strong> of 4 vantage points moved", `href="/vantage-points/vp2"`, "NL-AMS", "<svg"}, true},
		{"timeline", "/targets/k-root/timeline?since=" + since + "&until=" + until,
			[]string{"1 switch, 1 broke a TCP session", `<svg class="timeline"`, `class="broke"`, "cause: withdrawal",
				"the whole catchment of NL-AMS moved", "a TCP session broke", ">vp2</text>", ">vp4</text>"}, true},
		{"incidents", "/incidents", []string{"blackhole", "vantage_point", "generic_timeout_error", "198.51.100.7", "swallowed its catchment",
			`href="/vantage-points/vp4"`}, true},
		{"open incidents", "/incidents?open=1", []string{"1 incident</p>", "blackhole"}, true},
		{"vantage point", "/vantage-points/vp1", []string{"ns1.nl-ams.k.example.net", "generic_timeout_error", "12.34", "23.45",
			"udp sport=33000 dport=33435", "198.51.100.1", "<span class=\"none\">*</span>", "example-hosting", "dns/udp/hostname.bind"}, true},
		{"vantage point that switched", "/vantage-points/vp2", []string{"withdrawal", "broke"}, true},
		{"agents", "/agents", []string{"4 agents", `href="/vantage-points/vp3"`, "never", ">ok<", "eu-north"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, srv, http.MethodGet, tc.path)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d\n%s", res.StatusCode, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			checkHeaders(t, res)
			checkSafe(t, body)
			for _, want := range tc.want {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if tc.shows && !strings.Contains(body, escaped) {
				t.Errorf("page lacks the hostile identity, escaped")
			}
		})
	}
}

func TestData(t *testing.T) {
	t.Parallel()
	w := seed(t)
	srv := server(t, w)
	for _, tc := range []struct {
		name, path string
		check      func(t *testing.T, v map[string]any)
	}{
		{"overview", "/data/", func(t *testing.T, v map[string]any) {
			ts := v["targets"].([]any)
			if len(ts) != 1 || ts[0].(map[string]any)["vantage_points"].(float64) != 4 {
				t.Errorf("targets %v", ts)
			}
			if in := v["open_incidents"].([]any); len(in) != 1 || in[0].(map[string]any)["site"] != hostile {
				t.Errorf("open incidents %v", in)
			}
		}},
		{"catchment", "/data/targets/k-root", func(t *testing.T, v map[string]any) {
			sites := map[string]string{}
			for _, e := range v["vantage_points"].([]any) {
				m := e.(map[string]any)
				sites[m["name"].(string)] = m["site"].(string)
			}
			want := map[string]string{"vp1": "NL-AMS", "vp2": hostile, "vp3": "SIN", "vp4": "SIN"}
			for vp, s := range want {
				if sites[vp] != s {
					t.Errorf("%s at %q, want %q", vp, sites[vp], s)
				}
			}
			colors := v["colors"].(map[string]any)
			if colors[hostile] != geomap.Color(hostile) || colors["SIN"] != geomap.Color("SIN") {
				t.Errorf("colors %v", colors)
			}
			if r := v["replay"].(map[string]any); r["steps"].(float64) != 24 || r["step_seconds"].(float64) != 3600 {
				t.Errorf("replay %v", r)
			}
		}},
		{"catchment as the slider asks", "/data/targets/k-root/catchment?at=" + url.QueryEscape(w.h0.Add(time.Minute).Format(time.RFC3339Nano)),
			func(t *testing.T, v map[string]any) {
				for _, e := range v["vantage_points"].([]any) {
					m := e.(map[string]any)
					if m["name"] == "vp2" && m["site"] != "NL-AMS" {
						t.Errorf("vp2 at %v in the first window, want NL-AMS", m["site"])
					}
				}
				if v["window"].(map[string]any)["start"] != w.h0.Format("2006-01-02T15:04:05Z") {
					t.Errorf("window %v", v["window"])
				}
			}},
		{"diff", "/data/targets/k-root/diff?from=" + url.QueryEscape(w.h0.Add(time.Minute).Format(time.RFC3339)), func(t *testing.T, v map[string]any) {
			ms := v["movers"].([]any)
			if len(ms) != 1 || v["moved"].(float64) != 1 || v["compared"].(float64) != 4 {
				t.Fatalf("movers %v, moved %v of %v", ms, v["moved"], v["compared"])
			}
			m := ms[0].(map[string]any)
			if m["vantage_point"] != "vp2" || m["from"] != "NL-AMS" || m["to"] != hostile {
				t.Errorf("mover %v", m)
			}
		}},
		{"timeline", "/data/targets/k-root/timeline?since=" + url.QueryEscape(w.h0.Format(time.RFC3339)), func(t *testing.T, v map[string]any) {
			if v["switches"].(float64) != 1 || v["tcp_broke"].(float64) != 1 {
				t.Errorf("switches %v, broke %v", v["switches"], v["tcp_broke"])
			}
			for _, r := range v["rows"].([]any) {
				row := r.(map[string]any)
				if row["vantage_point"] != "vp2" {
					continue
				}
				segs := row["segments"].([]any)
				if len(segs) != 2 || segs[0].(map[string]any)["site"] != "NL-AMS" || segs[1].(map[string]any)["site"] != hostile {
					t.Errorf("vp2 segments %v", segs)
				}
			}
		}},
		{"incidents", "/data/incidents", func(t *testing.T, v map[string]any) {
			in := v["incidents"].([]any)
			if len(in) != 2 {
				t.Fatalf("incidents %v", in)
			}
			ev := in[0].(map[string]any)["evidence"].(map[string]any)
			if ev["failed"].(map[string]any)["generic_timeout_error"].(float64) != 7 || ev["path_ends"].([]any)[0] != "198.51.100.7" {
				t.Errorf("evidence %v", ev)
			}
		}},
		{"vantage point", "/data/vantage-points/vp1", func(t *testing.T, v map[string]any) {
			if len(v["results"].([]any)) != 4 || len(v["last_trace"].(map[string]any)["hops"].([]any)) != 3 {
				t.Errorf("results %v, trace %v", v["results"], v["last_trace"])
			}
			ids := v["identities"].([]any)
			if len(ids) != 2 {
				t.Errorf("identities %v", ids)
			}
		}},
		{"agents", "/data/agents", func(t *testing.T, v map[string]any) {
			as := v["agents"].([]any)
			if v["total"].(float64) != 4 || len(as) != 4 {
				t.Fatalf("agents %v", as)
			}
			vp1 := as[0].(map[string]any)
			if vp1["status"] != "ok" || vp1["received_last_hour"].(float64) != 4 || vp1["lag_median_seconds"].(float64) < 56 {
				t.Errorf("vp1 %v", vp1)
			}
			if as[1].(map[string]any)["status"] != "never" {
				t.Errorf("vp2 %v", as[1])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, srv, http.MethodGet, tc.path)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d\n%s", res.StatusCode, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			checkHeaders(t, res)
			if strings.Contains(body, hostile) {
				t.Errorf("the hostile identity appears raw in JSON")
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(body), &v); err != nil {
				t.Fatalf("JSON: %v", err)
			}
			tc.check(t, v)
		})
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	w := seed(t)
	srv := server(t, w)
	for _, tc := range []struct {
		name, method, path string
		status             int
		want               string
	}{
		{"POST", http.MethodPost, "/", http.StatusMethodNotAllowed, "read-only"},
		{"PUT on a page", http.MethodPut, "/targets/k-root", http.StatusMethodNotAllowed, "read-only"},
		{"DELETE on data", http.MethodDelete, "/data/agents", http.StatusMethodNotAllowed, "read-only"},
		{"POST to a path that does not exist", http.MethodPost, "/admin", http.StatusMethodNotAllowed, "read-only"},
		{"unknown page", http.MethodGet, "/nope", http.StatusNotFound, "no such page"},
		{"unknown target", http.MethodGet, "/targets/nope", http.StatusNotFound, "no target"},
		{"unknown vantage point", http.MethodGet, "/vantage-points/nope", http.StatusNotFound, "not found"},
		{"unknown vantage point's data", http.MethodGet, "/data/vantage-points/nope", http.StatusNotFound, "not found"},
		{"invalid name", http.MethodGet, "/targets/" + url.PathEscape("<b>x</b>"), http.StatusBadRequest, "&lt;b&gt;x&lt;/b&gt;"},
		{"invalid time, reflected escaped", http.MethodGet, "/targets/k-root?at=" + url.QueryEscape("<script>alert(1)</script>"), http.StatusBadRequest,
			"&lt;script&gt;alert(1)&lt;/script&gt;"},
		{"invalid address", http.MethodGet, "/targets/k-root?address=192.0.2.300", http.StatusBadRequest, "not an IP address"},
		{"window too long", http.MethodGet, "/targets/k-root/timeline?since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z", http.StatusBadRequest, "longer than 31 days"},
		{"window reversed", http.MethodGet, "/incidents?since=2026-03-01T00:00:00Z&until=2026-01-01T00:00:00Z", http.StatusBadRequest, "is not before"},
		{"time out of range", http.MethodGet, "/targets/k-root?at=1900-01-01T00:00:00Z", http.StatusBadRequest, "out of range"},
		{"parameter twice", http.MethodGet, "/targets/k-root?at=now&at=now", http.StatusBadRequest, "given 2 times"},
		{"parameter too long", http.MethodGet, "/targets/k-root?at=" + strings.Repeat("1", 65), http.StatusBadRequest, "longer than 64 bytes"},
		{"query too long", http.MethodGet, "/?x=" + strings.Repeat("a", 1100), http.StatusBadRequest, "longer than 1024 bytes"},
		{"incidents of an invalid target", http.MethodGet, "/incidents?target=" + url.QueryEscape(hostile), http.StatusBadRequest, "not a valid name"},
		{"incidents of an unknown target", http.MethodGet, "/data/incidents?target=nope", http.StatusNotFound, "not found"},
		{"recent results out of range", http.MethodGet, "/vantage-points/vp1?n=100000", http.StatusBadRequest, "from 1 to 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, srv, tc.method, tc.path)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d\n%s", res.StatusCode, tc.status, body)
			}
			checkHeaders(t, res)
			if tc.status == http.StatusMethodNotAllowed && res.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q", res.Header.Get("Allow"))
			}
			if !strings.Contains(body, tc.want) {
				t.Errorf("body lacks %q:\n%s", tc.want, body)
			}
			if strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
				checkSafe(t, body)
			}
		})
	}
}

func TestHeadAndAssets(t *testing.T) {
	t.Parallel()
	w := seed(t)
	srv := server(t, w)
	res, body := get(t, srv, http.MethodHead, "/")
	if res.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD /: status %d, %d bytes of body", res.StatusCode, len(body))
	}
	checkHeaders(t, res)
	_, page := get(t, srv, http.MethodGet, "/")
	for _, tc := range []struct{ name, ctype, contains string }{
		{"dashboard.css", "text/css; charset=utf-8", ".mapbox"},
		{"dashboard.js", "text/javascript; charset=utf-8", "addEventListener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			link := regexp.MustCompile(`/static/` + regexp.QuoteMeta(tc.name) + `\?v=[0-9a-f]+`).FindString(page)
			if link == "" {
				t.Fatalf("the page does not link %s", tc.name)
			}
			res, body := get(t, srv, http.MethodGet, link)
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.contains) {
				t.Errorf("status %d, type %q, %d bytes", res.StatusCode, res.Header.Get("Content-Type"), len(body))
			}
			if !strings.Contains(res.Header.Get("Cache-Control"), "immutable") {
				t.Errorf("Cache-Control %q for a versioned asset", res.Header.Get("Cache-Control"))
			}
			checkHeaders(t, res)
			if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
				t.Errorf("%s refers to another origin", tc.name)
			}
		})
	}
	if res, _ := get(t, srv, http.MethodGet, "/static/other.js"); res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown asset: status %d", res.StatusCode)
	}
}

func TestGzip(t *testing.T) {
	t.Parallel()
	w := seed(t)
	srv := server(t, w)
	_, plain := get(t, srv, http.MethodGet, "/targets/k-root")
	for _, tc := range []struct {
		name, accept string
		gzipped      bool
	}{
		{"gzip", "gzip", true},
		{"among others", "br, gzip;q=0.5, deflate", true},
		{"refused", "gzip;q=0", false},
		{"not asked", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/targets/k-root", nil)
			if tc.accept != "" {
				req.Header.Set("Accept-Encoding", tc.accept)
			}
			// A transport that leaves the body as sent.
			res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var r io.Reader = res.Body
			if got := res.Header.Get("Content-Encoding") == "gzip"; got != tc.gzipped {
				t.Fatalf("Content-Encoding %q, want gzip %v", res.Header.Get("Content-Encoding"), tc.gzipped)
			}
			if tc.gzipped {
				if r, err = gzip.NewReader(res.Body); err != nil {
					t.Fatal(err)
				}
			}
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != plain {
				t.Errorf("the body differs from the plain page (%d bytes, want %d)", len(b), len(plain))
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	w := seed(t)
	// A deadline that has passed before the first read: every page that
	// reads the database answers 503 with an error page, never half a page.
	d, err := dashboard.New(w.st, dashboard.Options{Timeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	for _, path := range []string{"/", "/targets/k-root", "/data/agents"} {
		res, body := get(t, srv, http.MethodGet, path)
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d, want 503\n%s", path, res.StatusCode, body)
		}
		checkHeaders(t, res)
	}
}

func TestNew(t *testing.T) {
	if _, err := dashboard.New(nil, dashboard.Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	w := seed(t)
	if _, err := dashboard.New(w.st, dashboard.Options{Timeout: -time.Second}); err == nil {
		t.Error("a negative timeout was accepted")
	}
}
