package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/anyscope/anyscope/collector"
	"github.com/anyscope/anyscope/collector/store"
)

// CollectorCmd runs the collector.
type CollectorCmd struct {
	DBFlags
	Listen    string        `help:"Address to serve the agent API, /healthz, /readyz and /metrics on." default:"127.0.0.1:8740" placeholder:"HOST:PORT"`
	MaxAge    time.Duration `help:"Oldest measurement time accepted (agents that were offline longer lose the rest)." default:"720h"`
	MaxFuture time.Duration `help:"How far ahead of this clock a measurement time may be." default:"5m"`
	// ReadyFile, when set, receives the listening address once the collector serves (used by scripts and tests).
	ReadyFile string `help:"Write the address actually listened on to this file once serving." placeholder:"FILE" hidden:""`
}

// Run serves until the context ends.
func (c *CollectorCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := collector.New(st, collector.Options{
		MaxAge: c.MaxAge, MaxFuture: c.MaxFuture, Logger: log, Registry: reg,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("collector listening", "addr", ln.Addr().String())
	if c.ReadyFile != "" {
		if err := writeFileAtomic(c.ReadyFile, []byte(ln.Addr().String()+"\n")); err != nil {
			return err
		}
	}
	go keepPartitionsAhead(ctx, st, log)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Info("collector stopped")
	return nil
}

// partitionsAhead is how many days of results partitions the collector keeps
// created ahead of the clock (ingest also creates a missing one on demand).
const partitionsAhead = 7 * 24 * time.Hour

// keepPartitionsAhead creates the coming week's daily partitions now and
// then every hour, so that ingest rarely has to.
func keepPartitionsAhead(ctx context.Context, st *store.Store, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		if n, err := st.EnsurePartitions(ctx, now, now.Add(partitionsAhead)); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("cannot create results partitions ahead; ingest will create them on demand", "err", err)
		} else if n > 0 {
			log.Info("created results partitions ahead", "partitions", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
