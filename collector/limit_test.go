package collector_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/shipper"
	"github.com/anyscope/anyscope/agent/spool"
	"github.com/anyscope/anyscope/collector"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingStore counts token lookups.
type countingStore struct {
	*store.Store
	lookups atomic.Int64
}

func (s *countingStore) Authenticate(ctx context.Context, token string) (store.Agent, error) {
	s.lookups.Add(1)
	return s.Store.Authenticate(ctx, token)
}

// do makes one request and returns its status and Retry-After header.
func do(method, url, token string, body []byte) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), err
}

// call is do on the test's goroutine.
func call(t *testing.T, method, url, token string, body []byte) (int, string) {
	t.Helper()
	code, retry, err := do(method, url, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, retry
}

// retrySeconds parses a Retry-After header as delay-seconds.
func retrySeconds(t *testing.T, h string) int {
	t.Helper()
	n, err := strconv.Atoi(h)
	if err != nil || n < 1 {
		t.Fatalf("Retry-After %q: want a positive number of seconds", h)
	}
	return n
}

func TestRequestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	st := &countingStore{Store: e.st}
	clk := &clock{t: time.Now()}
	reg := prometheus.NewRegistry()
	c, err := collector.New(st, collector.Options{Registry: reg, Now: clk.now, RequestRate: 1, RequestBurst: 2})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	schedule := func(token string) (int, string) { return call(t, "GET", srv.URL+api.PathSchedule, token, nil) }

	for i := range 2 {
		if code, _ := schedule(e.tokens["vp1"]); code != http.StatusOK {
			t.Fatalf("request %d within the burst: %d", i+1, code)
		}
	}
	code, retry := schedule(e.tokens["vp1"])
	if code != http.StatusTooManyRequests {
		t.Fatalf("request beyond the burst: %d, want 429", code)
	}
	if n := retrySeconds(t, retry); n != 1 {
		t.Errorf("Retry-After %d s, want 1 (one token at 1/s)", n)
	}
	// The limit is per token: vp2 is not affected, nor are health checks.
	if code, _ := schedule(e.tokens["vp2"]); code != http.StatusOK {
		t.Errorf("another agent's request: %d, want 200", code)
	}
	if code, _ := call(t, "GET", srv.URL+"/healthz", "", nil); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	clk.advance(time.Second)
	if code, _ := schedule(e.tokens["vp1"]); code != http.StatusOK {
		t.Errorf("request a second later: %d, want 200", code)
	}
	if got := metric(t, reg, `anyscope_collector_requests_rejected_total{reason="rate_limited"}`); got != 1 {
		t.Errorf("rate_limited rejections %v, want 1", got)
	}
	if got := metric(t, reg, `anyscope_collector_rate_limited_total{bucket="requests"}`); got != 1 {
		t.Errorf("requests bucket refusals %v, want 1", got)
	}

	// A flood with one forged token reaches the database only until the
	// token's bucket is empty.
	forged := "ast_999_" + strings.Repeat("A", 43)
	before := st.lookups.Load()
	for range 10 {
		code, _ := schedule(forged)
		if code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
			t.Fatalf("forged token: %d", code)
		}
	}
	if n := st.lookups.Load() - before; n != 2 {
		t.Errorf("10 requests with a forged token made %d token lookups, want 2 (the burst)", n)
	}
}

func TestResultRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	clk := &clock{t: time.Now()}
	reg := prometheus.NewRegistry()
	c, err := collector.New(e.st, collector.Options{Registry: reg, Now: clk.now, ResultRate: 100, ResultBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	at := clk.now().Add(-time.Minute)
	post := func(agent string, first uint64, n int) (int, string) {
		b := mustJSON(t, api.Batch{Agent: agent, BatchSeq: first, Results: results(n, first, at)})
		return call(t, "POST", srv.URL+api.PathResults, e.tokens[agent], b)
	}
	// The burst, then one batch more, which overdraws the bucket: both
	// stored. The next batch waits until the debt of 50 is repaid at 100/s.
	if code, _ := post("vp1", 1, 100); code != http.StatusOK {
		t.Fatalf("first batch: %d", code)
	}
	if code, _ := post("vp1", 101, 50); code != http.StatusOK {
		t.Fatalf("second batch: %d", code)
	}
	code, retry := post("vp1", 151, 10)
	if code != http.StatusTooManyRequests {
		t.Fatalf("batch while in debt: %d, want 429", code)
	}
	if n := retrySeconds(t, retry); n != 1 {
		t.Errorf("Retry-After %d s, want 1 (0.5 s rounded up)", n)
	}
	if code, _ := post("vp2", 1, 100); code != http.StatusOK {
		t.Errorf("another agent's batch: %d, want 200", code)
	}
	clk.advance(500 * time.Millisecond)
	if code, _ := post("vp1", 151, 10); code != http.StatusOK {
		t.Errorf("batch once the debt is repaid: %d, want 200", code)
	}
	if got := metric(t, reg, `anyscope_collector_rate_limited_total{bucket="results"}`); got != 1 {
		t.Errorf("results bucket refusals %v, want 1", got)
	}
	if n, maxSeq, err := e.st.AgentSeqStats(context.Background(), "vp1"); err != nil || n != 160 || maxSeq != 160 {
		t.Errorf("vp1 stored %d results up to %d (%v); want 160 up to 160", n, maxSeq, err)
	}
}

// The real shipper, draining a real spool faster than the collector lets
// it, is told to wait with 429 and Retry-After, waits, and delivers every
// result exactly once.
func TestShipperHonoursRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	// A batch of 100 at 50/s is two seconds of budget: the third batch
	// comes long before the second is paid for.
	c, err := collector.New(e.st, collector.Options{Registry: reg, ResultRate: 50, ResultBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)

	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	const total = 300
	if _, err := sp.Append(results(total, 0, time.Now().Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	cl, err := shipper.NewClient(shipper.ClientOptions{URL: srv.URL, Token: e.tokens["vp1"], Agent: "vp1"})
	if err != nil {
		t.Fatal(err)
	}
	shipReg := prometheus.NewRegistry()
	sh, err := shipper.New(sp, cl, shipper.Options{MaxBatchResults: 100, Registerer: shipReg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sh.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, shipReg, `anyscope_shipper_uploads_total{outcome="throttled"}`); got < 1 {
		t.Errorf("the shipper was throttled %v times, want at least once", got)
	}
	if got := metric(t, reg, `anyscope_collector_requests_rejected_total{reason="rate_limited"}`); got < 1 {
		t.Errorf("the collector answered 429 %v times, want at least once", got)
	}
	if got := metric(t, shipReg, "anyscope_shipper_results_duplicate_total"); got != 0 {
		t.Errorf("%v duplicates acknowledged, want 0", got)
	}
	n, maxSeq, err := e.st.AgentSeqStats(ctx, "vp1")
	if err != nil {
		t.Fatal(err)
	}
	if n != total || maxSeq != total {
		t.Errorf("stored %d results up to seq %d; want %d up to %d, each once", n, maxSeq, total, total)
	}
}

// gatedStore holds every Ingest until released.
type gatedStore struct {
	*store.Store
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Ingest(ctx context.Context, a store.Agent, rs []api.Result) (int, int, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Store.Ingest(ctx, a, rs)
}

func TestIngestLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := &gatedStore{Store: e.st, entered: make(chan struct{}, 10), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c, err := collector.New(g, collector.Options{Registry: reg, MaxIngest: 1, IngestWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	at := time.Now().Add(-time.Minute)
	batch := func(agent string) []byte {
		return mustJSON(t, api.Batch{Agent: agent, BatchSeq: 1, Results: results(5, 1, at)})
	}
	post := func(agent string) (int, string) {
		return call(t, "POST", srv.URL+api.PathResults, e.tokens[agent], batch(agent))
	}
	released := sync.OnceFunc(func() { close(g.release) })
	t.Cleanup(released)

	// vp1's batch takes the only slot and stays in the store.
	first := make(chan error, 1)
	b1 := batch("vp1")
	go func() {
		code, _, err := do("POST", srv.URL+api.PathResults, e.tokens["vp1"], b1)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		first <- err
	}()
	<-g.entered

	code, retry := post("vp2")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("batch while the only slot is taken: %d, want 503", code)
	}
	if n := retrySeconds(t, retry); n > 3 {
		t.Errorf("Retry-After %d s: want a small delay", n)
	}
	// Everything but ingest still answers.
	for _, r := range []struct{ method, path, token string }{
		{"GET", "/healthz", ""}, {"GET", "/readyz", ""}, {"GET", "/metrics", ""},
		{"GET", api.PathSchedule, e.tokens["vp2"]},
	} {
		if code, _ := call(t, r.method, srv.URL+r.path, r.token, nil); code != http.StatusOK {
			t.Errorf("%s %s while ingest is full: %d", r.method, r.path, code)
		}
	}
	hello := mustJSON(t, api.Hello{Agent: "vp2", Version: "test"})
	if code, _ := call(t, "POST", srv.URL+api.PathHello, e.tokens["vp2"], hello); code != http.StatusOK {
		t.Errorf("hello while ingest is full: %d", code)
	}
	for name, want := range map[string]float64{
		`anyscope_collector_ingest_in_flight`:                                 1,
		`anyscope_collector_requests_rejected_total{reason="overloaded"}`:     1,
		`anyscope_collector_ingest_waits_total{outcome="overloaded"}`:         1,
		`anyscope_collector_ingest_waits_total{outcome="admitted"}`:           0,
		`anyscope_collector_requests_rejected_total{reason="cert_mismatch"}`:  0,
		`anyscope_collector_requests_rejected_total{reason="rate_limited"}`:   0,
		`anyscope_collector_results_ingested_total`:                           0,
		`anyscope_collector_ingest_waiting`:                                   0,
		`anyscope_collector_tls_certificate_expiry_timestamp_seconds`:         0,
		`anyscope_collector_requests_rejected_total{reason="no_client_cert"}`: 0,
	} {
		if got := metric(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	released()
	if err := <-first; err != nil {
		t.Fatalf("the batch holding the slot: %v", err)
	}
	if code, _ := post("vp2"); code != http.StatusOK {
		t.Fatalf("batch after the slot was freed: %d", code)
	}
	if got := metric(t, reg, `anyscope_collector_ingest_in_flight`); got != 0 {
		t.Errorf("ingest_in_flight = %v after every request, want 0", got)
	}
}

// A results request that finds every slot taken waits, and is admitted
// when one frees.
func TestIngestLimitWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := &gatedStore{Store: e.st, entered: make(chan struct{}, 10), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	c, err := collector.New(g, collector.Options{Registry: reg, MaxIngest: 1, IngestWait: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	released := sync.OnceFunc(func() { close(g.release) })
	t.Cleanup(released)
	at := time.Now().Add(-time.Minute)
	errs := make(chan error, 2)
	for _, agent := range []string{"vp1", "vp2"} {
		b := mustJSON(t, api.Batch{Agent: agent, BatchSeq: 1, Results: results(5, 1, at)})
		go func() {
			code, _, err := do("POST", srv.URL+api.PathResults, e.tokens[agent], b)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("%s's batch: status %d, want 200", agent, code)
			}
			errs <- err
		}()
	}
	<-g.entered // one holds the slot
	// Until the other is seen waiting for it.
	deadline := time.Now().Add(time.Minute)
	for metric(t, reg, "anyscope_collector_ingest_waiting") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the second batch never waited for the slot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	released()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := metric(t, reg, `anyscope_collector_ingest_waits_total{outcome="admitted"}`); got != 1 {
		t.Errorf("admitted after waiting: %v, want 1", got)
	}
}
