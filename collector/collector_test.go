package collector_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyscope/anyscope/collector"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is a collector in front of a fresh database with two agents and one
// target.
type env struct {
	st     *store.Store
	srv    *httptest.Server
	tokens map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, pgtest.DB(t))
}

// newEnvOn is newEnv on the database dsn.
func newEnvOn(t *testing.T, dsn string) *env {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e := &env{st: st, tokens: map[string]string{}}
	for _, name := range []string{"vp1", "vp2"} {
		_, tok, err := st.AddAgent(ctx, store.AgentSpec{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = tok
	}
	_, err = st.ApplyTargets(ctx, []store.Target{{
		Name:      "example-dns",
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")},
		Probes:    []string{"dns"},
		Interval:  30 * time.Second,
		NSIDQName: ".",
	}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := collector.New(st, collector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(c.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func results(n int, firstSeq uint64, at time.Time) []api.Result {
	rs := make([]api.Result, n)
	for i := range rs {
		rs[i] = api.Result{
			Seq:        firstSeq + uint64(i),
			MeasuredAt: at.Add(time.Duration(i) * time.Millisecond).UTC(),
			Target:     "example-dns",
			Address:    "192.0.2.53",
			Kind:       api.KindDNS,
			Transport:  api.TransportUDP,
			Query:      api.QueryHostnameBind,
			RTTMicros:  1234,
			DNS:        &api.DNSValues{Rcode: "NOERROR", TXT: []string{"ns1.nl-ams.example"}, Identity: "ns1.nl-ams.example", Size: 80},
		}
	}
	return rs
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// postTo posts a JSON body to path with the given token.
func (e *env) postTo(t *testing.T, path, token string, body []byte) (int, string) {
	t.Helper()
	return e.request(t, path, token, body, nil)
}

// post sends body to the results endpoint with the given token and headers
// and returns status and body.
func (e *env) post(t *testing.T, token string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	return e.request(t, api.PathResults, token, body, hdr)
}

func (e *env) request(t *testing.T, path, token string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

func TestPostTwiceStoresOnce(t *testing.T) {
	e := newEnv(t)
	b := mustJSON(t, api.Batch{Agent: "vp1", BatchSeq: 1, Results: results(100, 1, time.Now().Add(-time.Minute))})
	for i, want := range []api.Ack{{BatchSeq: 1, Accepted: 100}, {BatchSeq: 1, Duplicates: 100}} {
		code, body := e.post(t, e.tokens["vp1"], b, nil)
		if code != 200 {
			t.Fatalf("post %d: %d %s", i, code, body)
		}
		var ack api.Ack
		if err := json.Unmarshal([]byte(body), &ack); err != nil {
			t.Fatal(err)
		}
		if ack != want {
			t.Errorf("post %d: ack %+v, want %+v", i, ack, want)
		}
	}
	n, max, err := e.st.AgentSeqStats(context.Background(), "vp1")
	if err != nil {
		t.Fatal(err)
	}
	if n != 100 || max != 100 {
		t.Errorf("stored %d results, max seq %d; want 100, 100", n, max)
	}
}

func TestPostGzip(t *testing.T) {
	e := newEnv(t)
	b := gz(t, mustJSON(t, api.Batch{Agent: "vp1", BatchSeq: 7, Results: results(10, 1, time.Now())}))
	code, body := e.post(t, e.tokens["vp1"], b, map[string]string{"Content-Encoding": "gzip"})
	if code != 200 || !strings.Contains(body, `"accepted":10`) {
		t.Fatalf("%d %s", code, body)
	}
}

// Hostile input gets a 4xx with a message, never a 5xx, and the collector
// keeps serving.
func TestHostileInput(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["vp1"]
	now := time.Now()
	valid := func(mut func(*api.Result)) []byte {
		rs := results(1, 1, now)
		mut(&rs[0])
		return mustJSON(t, api.Batch{Agent: "vp1", Results: rs})
	}
	// A gzip bomb: 24 MiB of JSON whitespace (over the 16 MiB cap) in about 24 KiB.
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	spaces := bytes.Repeat([]byte(" "), 1<<20)
	zw.Write([]byte(`{"agent":"vp1","results":[`))
	for i := 0; i < 24; i++ {
		zw.Write(spaces)
	}
	zw.Close()

	cases := []struct {
		name  string
		token string
		body  []byte
		hdr   map[string]string
		code  int
		msg   string
	}{
		{"malformed JSON", tok, []byte(`{"agent": "vp1", "results": [`), nil, 400, "malformed JSON"},
		{"not JSON", tok, []byte("\x00\x01binary"), nil, 400, "malformed JSON"},
		{"wrong type", tok, []byte(`{"agent": 5, "results": []}`), nil, 400, "wrong JSON type"},
		{"wrong nested type", tok, []byte(`{"agent": "vp1", "results": [{"seq": "one"}]}`), nil, 400, "wrong JSON type"},
		{"unknown field", tok, []byte(`{"agent": "vp1", "resultz": []}`), nil, 400, "unknown field"},
		{"trailing data", tok, append(valid(func(*api.Result) {}), []byte(`{"agent":"vp1"}`)...), nil, 400, "after the value"},
		{"empty body", tok, nil, nil, 400, "malformed JSON"},
		{"huge body", tok, bytes.Repeat([]byte(" "), api.MaxBodyBytes+10), nil, 413, "exceeds"},
		{"gzip bomb", tok, bomb.Bytes(), map[string]string{"Content-Encoding": "gzip"}, 413, "decompressed body exceeds"},
		{"bad gzip", tok, []byte("not gzip at all"), map[string]string{"Content-Encoding": "gzip"}, 400, "gzip"},
		{"unsupported encoding", tok, valid(func(*api.Result) {}), map[string]string{"Content-Encoding": "br"}, 415, "Content-Encoding"},
		{"wrong content type", tok, valid(func(*api.Result) {}), map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type"},
		{"no token", "", valid(func(*api.Result) {}), nil, 401, "missing Authorization"},
		{"bad token", "ast_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", valid(func(*api.Result) {}), nil, 401, "token"},
		{"garbage token", "x", valid(func(*api.Result) {}), nil, 401, "token"},
		{"basic auth", "", valid(func(*api.Result) {}), map[string]string{"Authorization": "Basic dnAxOnB3"}, 401, "malformed Authorization"},
		{"another agent's name", e.tokens["vp2"], valid(func(*api.Result) {}), nil, 403, `belongs to "vp2"`},
		{"10000 results", tok, mustJSON(t, api.Batch{Agent: "vp1", Results: results(10000, 1, now)}), nil, 413, "at most 5000"},
		{"no results", tok, mustJSON(t, api.Batch{Agent: "vp1"}), nil, 422, "no results"},
		{"far past", tok, valid(func(r *api.Result) { r.MeasuredAt = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC) }), nil, 422, "outside the accepted window"},
		{"far future", tok, valid(func(r *api.Result) { r.MeasuredAt = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) }), nil, 422, "outside the accepted window"},
		{"missing time", tok, valid(func(r *api.Result) { r.MeasuredAt = time.Time{} }), nil, 422, "measured_at missing"},
		{"invalid address", tok, valid(func(r *api.Result) { r.Address = "192.0.2.300" }), nil, 422, "address"},
		{"address with zone", tok, valid(func(r *api.Result) { r.Address = "fe80::1%eth0" }), nil, 422, "address"},
		{"seq zero", tok, valid(func(r *api.Result) { r.Seq = 0 }), nil, 422, "seq"},
		{"unknown kind", tok, valid(func(r *api.Result) { r.Kind = "smoke-signal" }), nil, 422, "kind"},
		{"unknown failure", tok, valid(func(r *api.Result) { r.Failure = "it broke" }), nil, 422, "classified failure"},
		{"negative rtt", tok, valid(func(r *api.Result) { r.RTTMicros = -5 }), nil, 422, "rtt_us"},
		{"overlong identity", tok, valid(func(r *api.Result) { r.DNS.Identity = strings.Repeat("a", 5000) }), nil, 422, "dns.identity longer"},
		{"overlong target", tok, valid(func(r *api.Result) { r.Target = strings.Repeat("t", 300) }), nil, 422, "target name"},
		{"NUL in identity", tok, valid(func(r *api.Result) { r.DNS.Identity = "ns1\x00evil" }), nil, 422, "control characters"},
		{"escaped control character", tok, []byte(`{"agent":"vp1","results":[{"seq":1,"measured_at":"` + now.UTC().Format(time.RFC3339Nano) + `","target":"example-dns","address":"192.0.2.53","kind":"dns","transport":"udp","query":"hostname.bind","dns":{"identity":"bell\u0007"}}]}`), nil, 422, "control characters"},
		{"too many TXT", tok, valid(func(r *api.Result) { r.DNS.TXT = make([]string, 100) }), nil, 422, "dns.txt"},
		{"bad NSID hex", tok, valid(func(r *api.Result) { r.DNS.NSIDHex = "zz" }), nil, 422, "nsid_hex"},
		{"unknown target", tok, valid(func(r *api.Result) { r.Target = "no-such-target" }), nil, 422, "no-such-target"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := e.post(t, c.token, c.body, c.hdr)
			if code != c.code {
				t.Errorf("status %d, want %d (body %s)", code, c.code, body)
			}
			var ae api.Error
			if err := json.Unmarshal([]byte(body), &ae); err != nil || ae.Error == "" {
				t.Errorf("body %q is not an api.Error with a message", body)
			}
			if !strings.Contains(ae.Error, c.msg) {
				t.Errorf("message %q does not contain %q", ae.Error, c.msg)
			}
		})
	}
	// Still up, still storing, nothing from the hostile requests stored.
	code, body := e.post(t, tok, mustJSON(t, api.Batch{Agent: "vp1", Results: results(3, 1, now)}), nil)
	if code != 200 || !strings.Contains(body, `"accepted":3`) {
		t.Fatalf("after hostile input: %d %s", code, body)
	}
}

// Many hostile and valid requests at once: only 4xx and 200, never a 5xx.
func TestHostileConcurrent(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				var body []byte
				switch i % 4 {
				case 0:
					body = []byte(`{"agent":`)
				case 1:
					body = mustJSON(t, api.Batch{Agent: "vp2", Results: results(5, 1, time.Now())})
				default:
					body = mustJSON(t, api.Batch{Agent: "vp1", Results: results(50, uint64(w*10000+i*50+1), time.Now())})
				}
				code, _ := e.post(t, e.tokens["vp1"], body, nil)
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	for code, n := range codes {
		if code != 200 && code != 400 && code != 403 {
			t.Errorf("%d answers with status %d", n, code)
		}
	}
	if codes[200] != 8*10 {
		t.Errorf("%d successful posts, want 80", codes[200])
	}
}

func TestSchedule(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("GET", e.srv.URL+api.PathSchedule, nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens["vp2"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s api.Schedule
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || s.Agent != "vp2" || len(s.Targets) != 1 {
		t.Fatalf("status %d, schedule %+v", resp.StatusCode, s)
	}
	tg := s.Targets[0]
	if tg.Name != "example-dns" || tg.IntervalSeconds != 30 || fmt.Sprint(tg.Addresses) != "[192.0.2.53 2001:db8::53]" || fmt.Sprint(tg.Probes) != "[dns]" {
		t.Errorf("target %+v", tg)
	}

	req, _ = http.NewRequest("GET", e.srv.URL+api.PathSchedule, nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("bad token: status %d, want 401", resp.StatusCode)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t)
	e.post(t, e.tokens["vp1"], mustJSON(t, api.Batch{Agent: "vp1", Results: results(4, 1, time.Now())}), nil)
	e.post(t, "", nil, nil)
	for path, want := range map[string][]string{
		"/healthz": {"ok"},
		"/readyz":  {"ready"},
		"/metrics": {"anyscope_collector_results_ingested_total 4", `anyscope_collector_requests_rejected_total{reason="no_token"} 1`},
	} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", path, resp.StatusCode)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s does not contain %q", path, w)
			}
		}
	}
}

// With the database down, uploads get 503 and Retry-After (the agent keeps
// its data and retries); once it is back, the same batch is stored.
func TestDatabaseDown(t *testing.T) {
	e := newEnv(t)
	cl := pgtest.Cluster(t)
	b := mustJSON(t, api.Batch{Agent: "vp1", Results: results(5, 1, time.Now())})
	// Authenticate once so the token is cached, then stop the server.
	if code, body := e.post(t, e.tokens["vp1"], mustJSON(t, api.Batch{Agent: "vp1", Results: results(1, 100, time.Now())}), nil); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	ctx := context.Background()
	if err := cl.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			pgcluster.Start(context.Background(), cl.Options())
		}
	})
	req, _ := http.NewRequest("POST", e.srv.URL+api.PathResults, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+e.tokens["vp1"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("database down: status %d, Retry-After %q, body %s; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if _, err := pgcluster.Start(ctx, cl.Options()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := e.post(t, e.tokens["vp1"], b, nil)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Hello records the agent's location and tells it the highest sequence
// number stored for it, so an agent that lost its spool continues after it.
func TestHello(t *testing.T) {
	e := newEnv(t)
	hello := func(token string, h api.Hello) (int, string) {
		return e.postTo(t, api.PathHello, token, mustJSON(t, h))
	}
	code, body := hello(e.tokens["vp1"], api.Hello{Agent: "vp1"})
	if code != 200 || !strings.Contains(body, `"last_seq":0`) {
		t.Fatalf("first hello: %d %s", code, body)
	}
	if code, body := e.post(t, e.tokens["vp1"], mustJSON(t, api.Batch{Agent: "vp1", Results: results(7, 1, time.Now())}), nil); code != 200 {
		t.Fatalf("post: %d %s", code, body)
	}
	loc := &api.Location{Latitude: 52.37, Longitude: 4.9, Provider: "example-hosting", Region: "eu-west"}
	code, body = hello(e.tokens["vp1"], api.Hello{Agent: "vp1", Version: "test", Location: loc})
	if code != 200 || !strings.Contains(body, `"last_seq":7`) {
		t.Fatalf("second hello: %d %s", code, body)
	}
	a, err := e.st.AgentByName(context.Background(), "vp1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Latitude == nil || *a.Latitude != 52.37 || a.Region != "eu-west" || a.Provider != "example-hosting" {
		t.Errorf("location not recorded: %+v", a)
	}
	for name, c := range map[string]struct {
		token string
		h     api.Hello
		code  int
	}{
		"another agent": {e.tokens["vp2"], api.Hello{Agent: "vp1"}, 403},
		"bad latitude":  {e.tokens["vp1"], api.Hello{Agent: "vp1", Location: &api.Location{Latitude: 91}}, 422},
		"control chars": {e.tokens["vp1"], api.Hello{Agent: "vp1", Location: &api.Location{Region: "a\x00b"}}, 422},
		"no token":      {"", api.Hello{Agent: "vp1"}, 401},
	} {
		if code, body := hello(c.token, c.h); code != c.code {
			t.Errorf("%s: %d %s, want %d", name, code, body, c.code)
		}
	}
	if code, _ := e.postTo(t, api.PathHello, e.tokens["vp1"], bytes.Repeat([]byte(" "), 1<<20)); code != 413 {
		t.Errorf("1 MiB hello: status %d, want 413", code)
	}
}
