package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"runtime/pprof"
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
	// CPUProfile is for benchmarks (anyscope bench agent --agent-cpu-profile).
	CPUProfile string `name:"cpu-profile" hidden:"" help:"Write a CPU profile of the whole run to this file (pprof)." placeholder:"FILE"`
}

// Run runs the agent until the context ends (or one round with --once).
func (c *AgentCmd) Run(ctx context.Context, log *slog.Logger) error {
	agentRuntime(log)
	cfg, err := agent.LoadConfig(c.Config)
	if err != nil {
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
		defer pprof.StopCPUProfile()
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
