package collector_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/shipper"
	"github.com/anyscope/anyscope/agent/spool"
	"github.com/anyscope/anyscope/collector"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// Several collectors behind a load balancer on one PostgreSQL (the
// deployment collector/deploy/README.md describes): two collectors, each
// with its own connection pool, behind a round-robin reverse proxy; two
// agents ship through it at once, so each agent's batches alternate between
// the collectors, and one collector goes away half-way (the proxy answers
// 502 for it, as a load balancer does before its health check catches up).
// Every result is stored exactly once: ingest is idempotent on the agent's
// sequence numbers, whichever collector a batch reaches.
func TestCollectorsBehindLoadBalancer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgtest.DB(t)
	e := newEnvOn(t, dsn)

	var backends [2]*httptest.Server
	for i := range backends {
		st, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		c, err := collector.New(st, collector.Options{Registry: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		backends[i] = httptest.NewServer(c.Handler())
		t.Cleanup(backends[i].Close)
	}
	var (
		next   atomic.Uint64
		served [2]atomic.Int64 // batches each collector answered 200
	)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			u, _ := url.Parse(backends[next.Add(1)%2].URL)
			r.SetURL(u)
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/api/v1/results" {
				for i, b := range backends {
					if "http://"+resp.Request.URL.Host == b.URL {
						served[i].Add(1)
					}
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	lb := httptest.NewServer(proxy)
	t.Cleanup(lb.Close)

	const perAgent = 3000
	agents := []string{"vp1", "vp2"}
	sps := map[string]*spool.Spool{}
	for _, name := range agents {
		sp, err := spool.Open(t.TempDir(), spool.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sp.Close() })
		// Thirty appends, like rounds, so that batches are many and small.
		for i := 0; i < 30; i++ {
			if _, err := sp.Append(results(perAgent/30, 0, time.Now().Add(-time.Hour+time.Duration(i)*time.Second))); err != nil {
				t.Fatal(err)
			}
		}
		sps[name] = sp
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(agents))
	for _, name := range agents {
		cl, err := shipper.NewClient(shipper.ClientOptions{URL: lb.URL, Token: e.tokens[name], Agent: name})
		if err != nil {
			t.Fatal(err)
		}
		sh, err := shipper.New(sps[name], cl, shipper.Options{
			MaxBatchResults: 50, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs <- sh.Flush(ctx) })
	}
	// Half-way through, one collector goes away for good.
	for served[0].Load()+served[1].Load() < perAgent*int64(len(agents))/50/2 {
		select {
		case <-ctx.Done():
			t.Fatal("the agents did not get half-way")
		case <-time.After(10 * time.Millisecond):
		}
	}
	backends[1].CloseClientConnections()
	backends[1].Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("shipping: %v", err)
		}
	}
	if served[0].Load() == 0 || served[1].Load() == 0 {
		t.Errorf("batches answered per collector %d, %d: want both to have served", served[0].Load(), served[1].Load())
	}
	for _, name := range agents {
		acc, err := e.st.SeqAccounting(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if acc.Highest != perAgent || acc.Stored != perAgent || acc.Rows != perAgent || acc.Holes != 0 {
			t.Errorf("%s: %+v; want %d results stored once each, no holes", name, acc, perAgent)
		}
	}
}
