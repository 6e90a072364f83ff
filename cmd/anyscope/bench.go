package main

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/anyscope/anyscope/collector"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
)

// BenchCmd groups benchmarks whose last line is machine-readable.
type BenchCmd struct {
	Ingest   BenchIngestCmd   `cmd:"" help:"Collector ingest rate (HTTP → committed rows) against raw COPY into the same table."`
	Agent    BenchAgentCmd    `cmd:"" help:"Agent CPU and RSS at 20 targets × every probe kind every 10s, in the anycast lab, against the same agent idling (root only)."`
	Analysis BenchAnalysisCmd `cmd:"" help:"Full and incremental analysis of a synthetic RIPE Atlas-scale day (12,000 vantage points × 13 targets every 4 minutes) stored in PostgreSQL, against reading the same rows."`
	Map      BenchMapCmd      `cmd:"" help:"SVG catchment map of 12,000 synthetic vantage points and 50 sites, with dots only and with great-circle lines (the BENCH line: with lines)."`
	Load     BenchLoadCmd     `cmd:"" help:"One collector (a child process) under 200 simulated agents posting at once: latency against one client alone, throughput, collector memory, every result stored exactly once."`
}

// BenchIngestCmd measures ingest.
type BenchIngestCmd struct {
	DB          string `name:"db" help:"PostgreSQL to use (default: a throwaway private cluster)." placeholder:"DSN"`
	Results     int    `help:"Results per measured path." default:"200000"`
	Batch       int    `help:"Results per batch (HTTP batch and COPY alike)." default:"1000"`
	Concurrency int    `help:"Concurrent uploaders (and concurrent COPY streams)." default:"2"`
	Reps        int    `help:"Repetitions of both paths, interleaved; the median ratio is reported." default:"3"`
	CPUProfile  string `help:"Write a CPU profile of the ingest phase to this file." placeholder:"FILE"`
}

// Run measures both paths in one run and prints the BENCH line last.
func (c *BenchIngestCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Batch < 1 || c.Batch > api.MaxBatchResults || c.Results < c.Batch || c.Concurrency < 1 {
		return fmt.Errorf("need 1 <= --batch <= %d <= --results and --concurrency >= 1", api.MaxBatchResults)
	}
	dsn := c.DB
	if dsn == "" {
		dir, err := os.MkdirTemp("", "anyscope-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		cl, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "pg"), Fsync: true, Logger: log})
		if err != nil {
			return err
		}
		defer cl.Stop(context.Background())
		dsn = cl.ConnString("anyscope")
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	// One agent per uploader: an agent ships its batches one after the
	// other (and the store serialises one agent's uploads), so concurrency
	// comes from several agents, as in a real deployment.
	run := time.Now().UnixNano()
	type benchAgent struct {
		agent store.Agent
		token string
	}
	var httpAgents, copyAgents []benchAgent
	for w := 0; w < c.Concurrency; w++ {
		for _, list := range []*[]benchAgent{&httpAgents, &copyAgents} {
			kind := "http"
			if list == &copyAgents {
				kind = "copy"
			}
			a, token, err := st.AddAgent(ctx, store.AgentSpec{Name: fmt.Sprintf("bench-%s-%d-%d", kind, w, run)})
			if err != nil {
				return err
			}
			*list = append(*list, benchAgent{a, token})
		}
	}
	if _, err := st.ApplyTargets(ctx, []store.Target{{
		Name: "bench-dns", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Probes: []string{"dns"}, Interval: 30 * time.Second, NSIDQName: ".",
	}}); err != nil {
		return err
	}
	srv, err := collector.New(st, collector.Options{Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String() + api.PathResults

	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	perAgent := c.Results / c.Batch / c.Concurrency // batches per agent
	if perAgent < 1 {
		return fmt.Errorf("--results %d is too few for %d agents with batches of %d", c.Results, c.Concurrency, c.Batch)
	}
	// mkBatch is the i-th batch of an agent: seqs continue from batch to batch.
	mkBatch := func(agent string, i int) api.Batch {
		rs := make([]api.Result, c.Batch)
		for j := range rs {
			seq := uint64(i*c.Batch + j + 1)
			rs[j] = api.Result{
				Seq: seq, Round: seq - seq%18 + 1, MeasuredAt: start.Add(time.Duration(seq) * time.Millisecond),
				Target: "bench-dns", Address: "192.0.2.53", Kind: api.KindDNS,
				Transport: api.TransportUDP, Query: api.QueryHostnameBind, RTTMicros: 12345,
				DNS: &api.DNSValues{Rcode: "NOERROR", TXT: []string{"ns1.nl-ams.example.net"},
					NSIDHex: "616d732d31", NSIDText: "ams-1", Identity: "ns1.nl-ams.example.net", Size: 96},
			}
			if rs[j].Round > seq {
				rs[j].Round = seq
			}
		}
		return api.Batch{Agent: agent, BatchSeq: uint64(i + 1), Results: rs}
	}
	// Request bodies are encoded (and gzipped, as agents send them) before
	// the clock starts: the agent's cost is not the collector's.
	if c.Reps < 1 {
		return fmt.Errorf("--reps must be at least 1")
	}
	bodies := make([][][]byte, c.Concurrency)
	copyBatches := make([][][]api.Result, c.Concurrency)
	for w := range bodies {
		for i := 0; i < perAgent*c.Reps; i++ {
			b, err := json.Marshal(mkBatch(httpAgents[w].agent.Name, i))
			if err != nil {
				return err
			}
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(b)
			zw.Close()
			bodies[w] = append(bodies[w], buf.Bytes())
			copyBatches[w] = append(copyBatches[w], mkBatch(copyAgents[w].agent.Name, i).Results)
		}
	}
	post := func(token string, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != 200 {
			return fmt.Errorf("collector answered %d: %s", resp.StatusCode, b)
		}
		return nil
	}
	// parallel runs one worker per agent, each doing its batches of
	// repetition rep in order.
	parallel := func(rep int, f func(w, i int) error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make(chan error, c.Concurrency)
		t0 := time.Now()
		for w := 0; w < c.Concurrency; w++ {
			wg.Go(func() {
				for i := rep * perAgent; i < (rep+1)*perAgent; i++ {
					if err := f(w, i); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return time.Since(t0), <-errs
	}

	// Warm up both paths (connections, partitions, caches) on other rows.
	if _, err := st.CopyRaw(ctx, copyAgents[0].agent.ID, mkBatch(copyAgents[0].agent.Name, perAgent*c.Reps+1).Results); err != nil {
		return err
	}

	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	// The two paths alternate, repetition after repetition, so that drift in
	// the machine's speed hits both alike; the median repetition is reported.
	type rep struct{ ingest, copy, ratio float64 }
	var reps []rep
	total := perAgent * c.Batch * c.Concurrency // per path and repetition
	for r := 0; r < c.Reps; r++ {
		httpTook, err := parallel(r, func(w, i int) error { return post(httpAgents[w].token, bodies[w][i]) })
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		copyTook, err := parallel(r, func(w, i int) error {
			_, err := st.CopyRaw(ctx, copyAgents[w].agent.ID, copyBatches[w][i])
			return err
		})
		if err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		x := rep{ingest: float64(total) / httpTook.Seconds(), copy: float64(total) / copyTook.Seconds()}
		x.ratio = x.ingest / x.copy
		fmt.Printf("repetition %d: ingest over HTTP %.0f results/s, raw COPY %.0f rows/s, ratio %.2f\n", r+1, x.ingest, x.copy, x.ratio)
		reps = append(reps, x)
	}
	if c.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	dupTook, err := parallel(0, func(w, i int) error { return post(httpAgents[w].token, bodies[w][i]) })
	if err != nil {
		return fmt.Errorf("re-delivery: %w", err)
	}
	for _, a := range httpAgents {
		n, max, err := st.AgentSeqStats(ctx, a.agent.Name)
		if err != nil {
			return err
		}
		if want := int64(perAgent * c.Batch * c.Reps); n != want || max != want {
			return fmt.Errorf("agent %s: stored %d results (max seq %d), want %d", a.agent.Name, n, max, want)
		}
	}
	slices.SortFunc(reps, func(a, b rep) int { return cmp.Compare(a.ratio, b.ratio) })
	med := reps[len(reps)/2]
	fmt.Printf("ingest over HTTP: %d results per repetition from %d agents uploading at once, batches of %d\n", total, c.Concurrency, c.Batch)
	fmt.Printf("re-delivery of the same batches (all duplicates): %.0f results/s\n", float64(total)/dupTook.Seconds())
	fmt.Printf("BENCH ingest_results_per_s=%.0f copy_rows_per_s=%.0f ratio=%.2f\n", med.ingest, med.copy, med.ratio)
	return nil
}
