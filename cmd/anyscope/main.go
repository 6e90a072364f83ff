// Command anyscope measures anycast services from the outside: agents probe
// anycast addresses from vantage points, the collector stores what they saw in
// PostgreSQL, and reports tell which site serves whom and who moved.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
)

// Globals are flags every subcommand accepts.
type Globals struct {
	LogLevel  string `help:"Log level: debug, info, warn or error." default:"info" enum:"debug,info,warn,error"`
	LogFormat string `help:"Log format: text or json." default:"text" enum:"text,json"`
}

// CLI is the command tree.
type CLI struct {
	Globals

	Collector CollectorCmd `cmd:"" help:"Run the collector: agents upload results and fetch their schedule here."`
	Agent     AgentCmd     `cmd:"" help:"Run an agent on a vantage point: probe the scheduled anycast targets and ship results."`
	Agents    AgentsCmd    `cmd:"" help:"Register vantage points (agents) and manage their tokens."`
	Targets   TargetsCmd   `cmd:"" help:"Declare the anycast targets to measure (YAML)."`
	Probe     ProbeCmd     `cmd:"" help:"Probe anycast addresses once from this host with every probe kind (DNS identity, ping, Paris traceroute, HTTP identity, a short session) and show who answered."`
	Report    ReportCmd    `cmd:"" help:"Report catchments (which site serves each vantage point) and PoP switches."`
	Analyze   AnalyzeCmd   `cmd:"" help:"Compute catchments, switches with their causes, and incidents, and keep them in the database (once over a window, or --every 30s incrementally)."`
	Import    ImportCmd    `cmd:"" help:"Import measurements from other platforms (RIPE Atlas) as vantage points and results."`
	Migrate   MigrateCmd   `cmd:"" help:"Create or upgrade the database schema."`
	DB        DBCmd        `cmd:"" name:"db" help:"Manage the private PostgreSQL cluster used when no --db is given."`
	Demo      DemoCmd      `cmd:"" help:"Run the end-to-end demo on loopback: database, collector, three DNS sites, one agent, a report."`
	Bench     BenchCmd     `cmd:"" help:"Benchmarks (used by make bench); the last line is machine-readable."`
	Lab       LabCmd       `cmd:"" help:"The anycast lab: routers, sites and vantage points in network namespaces, with real BGP (root only)."`
	Web       WebCmd       `cmd:"" help:"Serve the read-only web dashboard: catchment maps, diffs, switch timelines, incidents, vantage points, agents' health."`
	Serve     ServeCmd     `cmd:"" help:"Run everything in one process: the collector, the incremental analyzer and the web dashboard."`

	Healthcheck HealthcheckCmd `cmd:"" help:"GET a health URL; exit 0 on a 2xx answer (for container health checks on images without curl)."`
}

const description = `anyscope measures anycast services from the outside.

Agents on vantage points ask anycast DNS servers who they are (CHAOS TXT
hostname.bind and id.server, EDNS NSID, over UDP and TCP), spool the answers
on disk and ship them to the collector, which stores them in PostgreSQL.
Reports turn identities into sites and show each vantage point's catchment
and every PoP switch.

Every flag can also be set with an ANYSCOPE_* environment variable
(--db is ANYSCOPE_DB, --listen is ANYSCOPE_LISTEN, and so on).`

func main() {
	var cli CLI
	kctx := kong.Parse(&cli, cliOptions()...)
	logger := newLogger(cli.Globals)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(&cli.Globals, logger)
	err := kctx.Run()
	stop()
	var status exitStatus
	if errors.As(err, &status) {
		os.Exit(int(status)) // lab exec: the command's own status
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "anyscope: %v\n", err)
		os.Exit(1)
	}
}

// cliOptions build the command line parser (tests build the same one).
func cliOptions() []kong.Option {
	return []kong.Option{
		kong.Name("anyscope"),
		kong.Description(description),
		kong.DefaultEnvars("ANYSCOPE"),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	}
}

func newLogger(g Globals) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(g.LogLevel))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
