package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/web/dashboard"
)

// WebCmd serves the dashboard.
type WebCmd struct {
	DBFlags
	Listen string `help:"Address to serve the dashboard and its GET /healthz on (read-only; put it behind a proxy with authentication to expose it)." default:"127.0.0.1:8741" placeholder:"HOST:PORT"`
	// ReadyFile, when set, receives the listening address once the dashboard serves (used by scripts and tests).
	ReadyFile string `help:"Write the address actually listened on to this file once serving." placeholder:"FILE" hidden:""`
}

// Run serves the dashboard until the context ends.
func (c *WebCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	return serveDashboard(ctx, st, c.Listen, c.ReadyFile, log)
}

// dashboardWriteTimeout bounds writing one dashboard response; it exceeds
// the dashboard's own per-request timeout, which answers first.
const dashboardWriteTimeout = dashboard.DefaultTimeout + 30*time.Second

// serveDashboard serves the dashboard over st on listen until ctx ends,
// then shuts down gracefully.
func serveDashboard(ctx context.Context, st *store.Store, listen, readyFile string, log *slog.Logger) error {
	log = log.With("component", "dashboard")
	d, err := dashboard.New(st, dashboard.Options{Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("dashboard: listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", dbHealth(st)) // for container health checks
	mux.Handle("/", d.Handler())
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      dashboardWriteTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("dashboard listening", "url", "http://"+ln.Addr().String()+"/")
	if readyFile != "" {
		if err := writeFileAtomic(readyFile, []byte(ln.Addr().String()+"\n")); err != nil {
			ln.Close()
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("dashboard: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("dashboard stopped")
	return nil
}

// ServeCmd is the all-in-one process: collector, incremental analyzer and
// dashboard over one database.
type ServeCmd struct {
	DBFlags
	Listen          string        `help:"Address to serve the dashboard on." default:"127.0.0.1:8741" placeholder:"HOST:PORT"`
	CollectorListen string        `name:"collector-listen" help:"Address to serve the agent API, /healthz, /readyz and /metrics on." default:"127.0.0.1:8740" placeholder:"HOST:PORT"`
	Every           time.Duration `help:"Analyse what arrived this often." default:"30s"`
	MaxAge          time.Duration `help:"Collector: oldest measurement time accepted." default:"720h"`
	MaxFuture       time.Duration `help:"Collector: how far ahead of this clock a measurement time may be." default:"5m"`
	Name            string        `help:"Name under which the incremental analyzer records how far it has read." default:"default"`
	Warmup          time.Duration `help:"Analyzer: on start, replay this much already analysed history so switches and incidents continue where they were." default:"1h"`
	Settle          time.Duration `help:"Analyzer: leave results received in the last this long for the next run." default:"10s"`
	MaxLate         time.Duration `name:"max-late" help:"Analyzer: ignore results measured this long before the previous run." default:"48h"`
	// ReadyFile and CollectorReadyFile receive the listening addresses (for scripts and tests).
	ReadyFile          string `help:"Write the dashboard's address to this file once serving." placeholder:"FILE" hidden:""`
	CollectorReadyFile string `help:"Write the collector's address to this file once serving." placeholder:"FILE" hidden:""`

	// Collector holds the collector's TLS and admission limits.
	Collector CollectorFlags `embed:"" prefix:"collector-"`
}

// Run runs the collector, the analyzer and the dashboard until the context
// ends, or until one of them fails, which stops the others.
func (c *ServeCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Every <= 0 {
		return fmt.Errorf("--every %s: want a positive interval", c.Every)
	}
	// One database for all three: resolve it once (starting the private
	// cluster if need be), migrate, then let each part use it.
	dsn, err := c.dsn(ctx, log)
	if err != nil {
		return err
	}
	db := DBFlags{DB: dsn}
	st, err := db.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	run := func(part string, fn func() error) {
		wg.Go(func() {
			err := fn()
			if err != nil && ctx.Err() == nil {
				once.Do(func() { first = fmt.Errorf("%s: %w", part, err) })
			}
			cancel() // one part stopping stops the process
		})
	}
	// The collector as `anyscope collector` runs it, on its own connection
	// pool, so dashboard queries never hold up ingest.
	col := &CollectorCmd{DBFlags: db, Listen: c.CollectorListen, MaxAge: c.MaxAge, MaxFuture: c.MaxFuture, CollectorFlags: c.Collector, ReadyFile: c.CollectorReadyFile}
	run("collector", func() error { return col.Run(ctx, log.With("component", "collector")) })
	run("analyzer", func() error { return c.analyze(ctx, st, log.With("component", "analyzer")) })
	run("dashboard", func() error { return serveDashboard(ctx, st, c.Listen, c.ReadyFile, log) })
	wg.Wait()
	return first
}

// analyze runs the incremental analyzer every c.Every until ctx ends; a
// failed step is logged and retried at the next tick.
func (c *ServeCmd) analyze(ctx context.Context, st *store.Store, log *slog.Logger) error {
	inc, err := newIncremental(ctx, st, c.Name, c.Warmup, c.Settle, c.MaxLate, log)
	if err != nil {
		return err
	}
	t := time.NewTicker(c.Every)
	defer t.Stop()
	for {
		stats, err := inc.step(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("analyze step failed; retrying at the next tick", "err", err)
		case stats.rows > 0:
			log.Info("analyzed", "results", stats.rows, "switches", stats.saved.Switches, "incidents", stats.saved.Incidents,
				"catchments", stats.saved.Catchments, "received_through", stats.through, "took", stats.took.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
