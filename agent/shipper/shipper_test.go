package shipper

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

const token = "s3cret-token"

// collector is a small honest fake of the collector API: it checks
// credentials and encoding like the real one, stores what it acknowledges,
// and misbehaves on demand. The real collector is tested in its own package.
type collector struct {
	t  *testing.T
	mu sync.Mutex
	// script answers the next requests, one entry each; "" means behave.
	script   []string
	batches  []api.Batch // acknowledged batches
	attempts []time.Time // every POST
	stored   map[uint64]api.Result
	gaps     map[uint64]api.Gap // by first seq
	schedule api.Schedule
}

func newCollector(t *testing.T, script ...string) (*collector, *httptest.Server) {
	c := &collector{t: t, script: script, stored: map[uint64]api.Result{}, gaps: map[uint64]api.Gap{}}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv
}

func (c *collector) fail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: msg})
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+token {
		c.fail(w, http.StatusUnauthorized, "bad token")
		return
	}
	if r.URL.Path == api.PathSchedule && r.Method == http.MethodGet {
		c.mu.Lock()
		defer c.mu.Unlock()
		_ = json.NewEncoder(w).Encode(c.schedule)
		return
	}
	if r.URL.Path != api.PathResults || r.Method != http.MethodPost {
		c.fail(w, http.StatusNotFound, "no such endpoint")
		return
	}
	c.mu.Lock()
	c.attempts = append(c.attempts, time.Now())
	step := ""
	if len(c.script) > 0 {
		step, c.script = c.script[0], c.script[1:]
	}
	c.mu.Unlock()
	switch step {
	case "":
	case "hangup":
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	case "500":
		c.fail(w, http.StatusInternalServerError, "database unavailable")
		return
	case "429":
		w.Header().Set("Retry-After", "1")
		c.fail(w, http.StatusTooManyRequests, "slow down")
		return
	case "400":
		c.fail(w, http.StatusBadRequest, "results[3]: invalid: dns.identity contains control characters")
		return
	case "413":
		c.fail(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	case "html":
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>captive portal</html>")
		return
	case "huge":
		_, _ = w.Write(bytes.Repeat([]byte(" "), maxAckBytes+10))
		return
	case "nogaps":
		// Acknowledges the results but not the gaps: not an answer to
		// this batch.
	default:
		c.t.Errorf("unknown script step %q", step)
	}
	if r.Header.Get("Content-Encoding") != "gzip" {
		c.fail(w, http.StatusUnsupportedMediaType, "want gzip")
		return
	}
	zr, err := gzip.NewReader(io.LimitReader(r.Body, api.MaxBodyBytes))
	if err != nil {
		c.fail(w, http.StatusBadRequest, "not gzip")
		return
	}
	var b api.Batch
	dec := json.NewDecoder(io.LimitReader(zr, api.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		c.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := b.Validate(); err != nil {
		c.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	ack := api.Ack{BatchSeq: b.BatchSeq}
	c.mu.Lock()
	if step != "nogaps" {
		for _, g := range b.Gaps {
			if old, ok := c.gaps[g.FirstSeq]; !ok || g.LastSeq > old.LastSeq {
				c.gaps[g.FirstSeq] = g
			}
		}
		ack.Gaps = len(b.Gaps)
	}
	for _, r := range b.Results {
		if _, ok := c.stored[r.Seq]; ok {
			ack.Duplicates++
			continue
		}
		c.stored[r.Seq] = r
		ack.Accepted++
	}
	c.batches = append(c.batches, b)
	c.mu.Unlock()
	_ = json.NewEncoder(w).Encode(ack)
}

func (c *collector) storedSeqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for s := range c.stored {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func (c *collector) attemptTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.attempts)
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func result(i int) api.Result {
	return api.Result{
		MeasuredAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Target:     "k-root",
		Address:    "192.0.2.53",
		Kind:       api.KindDNS,
		Transport:  api.TransportTCP,
		Query:      api.QueryNSID,
		RTTMicros:  int64(1000 + i),
		DNS:        &api.DNSValues{Rcode: "NOERROR", NSIDHex: "6b31", NSIDText: "k1", Identity: "k1", Size: 90},
	}
}

func newSpool(t *testing.T, n int) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	appendN(t, sp, n)
	return sp
}

func appendN(t *testing.T, sp *spool.Spool, n int) {
	t.Helper()
	for n > 0 {
		k := min(n, 1000)
		rs := make([]api.Result, k)
		for i := range rs {
			rs[i] = result(i)
		}
		if _, err := sp.Append(rs); err != nil {
			t.Fatal(err)
		}
		n -= k
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

func newShipper(t *testing.T, sp Spool, url string, o Options) (*Shipper, *logBuffer, *prometheus.Registry) {
	t.Helper()
	c, err := NewClient(ClientOptions{URL: url, Token: token, Agent: "vp-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuffer{}
	reg := prometheus.NewPedanticRegistry()
	if o.MinBackoff == 0 {
		o.MinBackoff = time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 50 * time.Millisecond
	}
	o.Logger = slog.New(slog.NewTextHandler(lb, nil))
	o.Registerer = reg
	s, err := New(sp, c, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, lb, reg
}

// counter reads a counter with the given outcome label from reg.
func counter(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{outcome=%q}", name, outcome)
	return 0
}

func pendingCount(sp *spool.Spool) int {
	n, _, _ := sp.Stats()
	return n
}

func flush(t *testing.T, s *Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestShipInBatches(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t)
	sp := newSpool(t, 12000)
	s, _, reg := newShipper(t, sp, srv.URL, Options{})
	flush(t, s)
	if got := col.storedSeqs(); !slices.Equal(got, seqRange(1, 12000)) {
		t.Errorf("collector stored %d results, not 1..12000", len(got))
	}
	if pendingCount(sp) != 0 {
		t.Errorf("%d results still pending after the collector acknowledged all", pendingCount(sp))
	}
	for i, b := range col.batches {
		if b.Agent != "vp-test" || b.BatchSeq != uint64(i+1) || len(b.Results) > api.MaxBatchResults {
			t.Errorf("batch %d: agent %q, batch_seq %d, %d results", i, b.Agent, b.BatchSeq, len(b.Results))
		}
	}
	if len(col.batches) != 3 {
		t.Errorf("%d batches, want 3", len(col.batches))
	}
	if got := counter(t, reg, "anyscope_shipper_uploads_total", "ok"); got != 3 {
		t.Errorf("uploads ok = %v", got)
	}
}

func TestBatchBytes(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t)
	sp := newSpool(t, 100)
	s, _, _ := newShipper(t, sp, srv.URL, Options{MaxBatchBytes: 4000})
	flush(t, s)
	if len(col.batches) < 5 {
		t.Errorf("%d batches for 100 results of ~350 bytes with a 4000-byte limit", len(col.batches))
	}
}

func TestRetriesKeepData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		script  []string
		outcome string
	}{
		{"server errors", []string{"500", "500", "500"}, "server_error"},
		{"connection failures", []string{"hangup", "hangup"}, "network_error"},
		{"not an acknowledgement", []string{"html", "html"}, "bad_answer"},
		{"oversized answer", []string{"huge"}, "bad_answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			col, srv := newCollector(t, tt.script...)
			sp := newSpool(t, 10)
			s, _, reg := newShipper(t, sp, srv.URL, Options{})
			// Every failed attempt leaves the data in the spool.
			for range tt.script {
				if n, err := s.ShipOnce(context.Background()); err == nil || n != 0 {
					t.Fatalf("ShipOnce = %d, %v; want an error", n, err)
				}
				if pendingCount(sp) != 10 {
					t.Fatalf("a failed upload removed data: %d pending", pendingCount(sp))
				}
			}
			if len(col.storedSeqs()) != 0 {
				t.Errorf("collector stored data on a failed attempt")
			}
			flush(t, s)
			if pendingCount(sp) != 0 || !slices.Equal(col.storedSeqs(), seqRange(1, 10)) {
				t.Errorf("after recovery: %d pending, collector has %v", pendingCount(sp), col.storedSeqs())
			}
			if got := counter(t, reg, "anyscope_shipper_uploads_total", tt.outcome); got != float64(len(tt.script)) {
				t.Errorf("uploads{outcome=%q} = %v, want %d", tt.outcome, got, len(tt.script))
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t, "429")
	sp := newSpool(t, 5)
	s, _, _ := newShipper(t, sp, srv.URL, Options{})
	flush(t, s)
	at := col.attemptTimes()
	if len(at) != 2 {
		t.Fatalf("%d attempts, want 2", len(at))
	}
	if gap := at[1].Sub(at[0]); gap < 900*time.Millisecond {
		t.Errorf("retried %v after a 429 with Retry-After: 1", gap)
	}
	if pendingCount(sp) != 0 {
		t.Error("data not shipped after the 429")
	}
}

func TestRejectedIsLoudAndKeepsData(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t, "400", "400")
	sp := newSpool(t, 5)
	s, logs, _ := newShipper(t, sp, srv.URL, Options{MaxBackoff: 200 * time.Millisecond})

	// Flush gives up at once: waiting does not fix a rejection.
	err := s.Flush(context.Background())
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
		t.Fatalf("Flush against a rejecting collector: %v", err)
	}
	if !strings.Contains(logs.String(), "COLLECTOR REJECTED UPLOAD") || !strings.Contains(logs.String(), "dns.identity contains control characters") {
		t.Errorf("rejection not logged with the collector's message:\n%s", logs)
	}
	if pendingCount(sp) != 5 {
		t.Fatalf("%d pending after a rejection, want all 5 kept", pendingCount(sp))
	}

	// Run keeps the data and retries at the cap.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(col.storedSeqs()) < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	at := col.attemptTimes()
	if len(at) != 3 {
		t.Fatalf("%d attempts, want 3", len(at))
	}
	if gap := at[2].Sub(at[1]); gap < 100*time.Millisecond {
		t.Errorf("retried %v after a rejection; want backoff at the cap (100-200ms)", gap)
	}
	if len(col.storedSeqs()) != 5 || pendingCount(sp) != 0 {
		t.Error("data lost or not shipped")
	}
}

func TestTooLargeShrinksBatches(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t, "413", "413")
	sp := newSpool(t, 40)
	s, _, _ := newShipper(t, sp, srv.URL, Options{MaxBatchResults: 40})
	flush(t, s)
	if len(col.batches) == 0 || len(col.batches[0].Results) != 10 {
		t.Errorf("first accepted batch has %d results, want 10 after halving twice", len(col.batches[0].Results))
	}
	if pendingCount(sp) != 0 {
		t.Error("data not shipped")
	}
}

func TestWrongToken(t *testing.T) {
	t.Parallel()
	_, srv := newCollector(t)
	c, err := NewClient(ClientOptions{URL: srv.URL, Token: "wrong", Agent: "vp-test"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Upload(context.Background(), &api.Batch{Agent: "vp-test", BatchSeq: 1, Results: []api.Result{result(1)}})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized || se.Message != "bad token" || se.Temporary() {
		t.Errorf("Upload with a wrong token: %v", err)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t)
	sp := newSpool(t, 0)
	s, _, _ := newShipper(t, sp, srv.URL, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{}, 1)
	done := make(chan error)
	go func() { done <- s.Run(ctx, wake) }()

	appendN(t, sp, 7)
	wake <- struct{}{}
	deadline := time.Now().Add(10 * time.Second)
	for len(col.storedSeqs()) < 7 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := col.storedSeqs(); !slices.Equal(got, seqRange(1, 7)) {
		t.Fatalf("after a wake-up the collector has %v", got)
	}
	// Appended without a wake-up just before shutdown: the final flush
	// ships it.
	appendN(t, sp, 3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := col.storedSeqs(); !slices.Equal(got, seqRange(1, 10)) {
		t.Errorf("after shutdown the collector has %v", got)
	}
	if pendingCount(sp) != 0 {
		t.Errorf("%d results pending after the final flush", pendingCount(sp))
	}
}

func TestFinalFlushGivesUp(t *testing.T) {
	t.Parallel()
	_, srv := newCollector(t, "500", "500", "500", "500", "500", "500", "500", "500")
	sp := newSpool(t, 3)
	s, _, _ := newShipper(t, sp, srv.URL, Options{FinalFlush: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := s.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v to stop", d)
	}
	if pendingCount(sp) != 3 {
		t.Errorf("%d pending, want all 3 kept", pendingCount(sp))
	}
}

func TestFlushInterrupted(t *testing.T) {
	t.Parallel()
	_, srv := newCollector(t, slices.Repeat([]string{"500"}, 1000)...)
	sp := newSpool(t, 3)
	s, _, _ := newShipper(t, sp, srv.URL, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush against a failing collector: %v", err)
	}
	if pendingCount(sp) != 3 {
		t.Error("data lost")
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t)
	col.schedule = api.Schedule{Agent: "vp-test", Targets: []api.ScheduleTarget{{Name: "k-root", Addresses: []string{"193.0.14.129"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 60}}}
	c, err := NewClient(ClientOptions{URL: srv.URL + "/", Token: token, Agent: "vp-test"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Schedule(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(*got) != fmt.Sprint(col.schedule) {
		t.Errorf("schedule %+v", got)
	}
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	for _, o := range []ClientOptions{
		{URL: "ftp://collector.example.org", Token: "t", Agent: "a"},
		{URL: "https://", Token: "t", Agent: "a"},
		{URL: "https://collector.example.org", Agent: "a"},
		{URL: "https://collector.example.org", Token: "t", Agent: "bad name"},
	} {
		if _, err := NewClient(o); err == nil {
			t.Errorf("NewClient(%+v) succeeded", o)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Sat, 01 Mar 2025 12:00:30 GMT": 30 * time.Second,
		"Sat, 01 Mar 2025 11:00:00 GMT": 0,
		"99999999999":                   24 * time.Hour,
	} {
		if got := retryAfter(h, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := &Backoff{Min: 100 * time.Millisecond, Cap: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		if d := b.Next(); d < w/2 || d > w {
			t.Errorf("attempt %d: %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	for range 100 {
		b.Next()
	}
	if d := b.Next(); d > time.Second {
		t.Errorf("backoff exceeded its cap: %v", d)
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}
}

// TestLingerBatchesRounds: rounds spooled one after another within the
// linger window travel in one upload, not one upload each.
func TestLingerBatchesRounds(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t)
	sp := newSpool(t, 0)
	s, _, _ := newShipper(t, sp, srv.URL, Options{Linger: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{}, 1)
	done := make(chan error)
	go func() { done <- s.Run(ctx, wake) }()
	// Let Run find the spool empty and wait for a wake-up first.
	time.Sleep(200 * time.Millisecond)
	for range 5 {
		appendN(t, sp, 2)
		select {
		case wake <- struct{}{}:
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(col.storedSeqs()) < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	n := len(col.batches)
	col.mu.Unlock()
	if got := col.storedSeqs(); !slices.Equal(got, seqRange(1, 10)) || n != 1 {
		t.Errorf("%d uploads delivered %v; want one upload of seqs 1..10", n, got)
	}
}
