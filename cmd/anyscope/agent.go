package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/anyscope/anyscope/agent"
)

// AgentCmd runs an agent.
type AgentCmd struct {
	Config  string `help:"Agent configuration file (YAML)." type:"existingfile" required:"" placeholder:"FILE"`
	Once    bool   `help:"Run one round of every scheduled probe, ship the results, and exit."`
	Metrics string `help:"Serve Prometheus metrics on this address (empty: off)." placeholder:"HOST:PORT"`
}

// Run runs the agent until the context ends (or one round with --once).
func (c *AgentCmd) Run(ctx context.Context, log *slog.Logger) error {
	cfg, err := agent.LoadConfig(c.Config)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := agent.New(cfg, log, reg)
	if err != nil {
		return err
	}
	if c.Metrics != "" {
		hs := &http.Server{Addr: c.Metrics, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.Error("metrics server", "err", err)
			}
		}()
		defer hs.Close()
	}
	if c.Once {
		return a.RunOnce(ctx)
	}
	return a.Run(ctx)
}
