package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
	CollectorFlags
	// ReadyFile, when set, receives the listening address once the collector serves (used by scripts and tests).
	ReadyFile string `help:"Write the address actually listened on to this file once serving." placeholder:"FILE" hidden:""`
}

// CollectorFlags are the collector's TLS and admission settings, shared by
// `collector` and `serve` (there prefixed with collector-).
type CollectorFlags struct {
	TLSCert  string `name:"tls-cert" help:"Serve HTTPS (TLS 1.2+) with this PEM certificate chain; it and its key are read again when they change, so renewals need no restart." placeholder:"FILE"`
	TLSKey   string `name:"tls-key" help:"The PEM private key of the TLS certificate." placeholder:"FILE"`
	ClientCA string `name:"client-ca" help:"Require agents to present a client certificate issued by a CA in this PEM file (mutual TLS) and naming the agent of the bearer token: a URI SAN anyscope://agent/<name> or a DNS SAN <name>. Needs the TLS certificate and key." placeholder:"FILE"`

	AgentRequestRate  float64       `name:"agent-request-rate" help:"Requests per second each agent token may make on average (0: no limit); beyond it 429 with Retry-After." default:"10"`
	AgentRequestBurst float64       `name:"agent-request-burst" help:"Requests each agent token may make at once." default:"20"`
	AgentResultRate   float64       `name:"agent-result-rate" help:"Results per second each agent may deliver on average (0: no limit); beyond it 429 with Retry-After." default:"5000"`
	AgentResultBurst  float64       `name:"agent-result-burst" help:"Results each agent may deliver at once." default:"10000"`
	MaxIngest         int           `name:"max-ingest" help:"Results requests decoded and stored at once (0: the database pool size less one; the pool is 16 unless pool_max_conns in --db sets it)." default:"0"`
	IngestWait        time.Duration `name:"ingest-wait" help:"How long a results request waits for a free ingest slot before it is answered 503 with Retry-After." default:"2s"`
}

// options returns the collector options the flags set, for a database
// whose connection pool holds poolSize connections.
func (f *CollectorFlags) options(poolSize int) (collector.Options, error) {
	o := collector.Options{
		RequestRate: f.AgentRequestRate, RequestBurst: f.AgentRequestBurst,
		ResultRate: f.AgentResultRate, ResultBurst: f.AgentResultBurst,
		MaxIngest: f.MaxIngest, IngestWait: f.IngestWait,
	}
	if o.MaxIngest == 0 {
		// Leave a connection for hellos, schedules and /readyz.
		o.MaxIngest = max(1, poolSize-1)
	}
	switch {
	case f.TLSCert != "" && f.TLSKey != "":
		o.TLS = &collector.TLSOptions{CertFile: f.TLSCert, KeyFile: f.TLSKey, ClientCAFile: f.ClientCA}
	case f.TLSCert != "" || f.TLSKey != "":
		return o, errors.New("--tls-cert and --tls-key go together")
	case f.ClientCA != "":
		return o, errors.New("--client-ca needs --tls-cert and --tls-key: client certificates are checked in the TLS handshake")
	}
	return o, nil
}

// collectorPool is the collector's connection pool unless the connection
// string sets pool_max_conns: pgx's default (the larger of 4 and the CPU
// count) leaves three ingest slots on a small machine, and each batch's
// commit waits for its WAL flush, so a few hundred agents would queue behind
// them; concurrent commits share flushes. Several collectors on one
// PostgreSQL need max_connections ≥ their sum plus the analyzer and web.
const collectorPool = 16

// withPoolDefault returns dsn with pool_max_conns=n unless it sets one.
func withPoolDefault(dsn string, n int) (string, error) {
	if strings.Contains(dsn, "pool_max_conns") {
		return dsn, nil
	}
	return withDSNParam(dsn, "pool_max_conns", strconv.Itoa(n))
}

// withDSNParam returns dsn, a URL (postgres://…) or key=value pairs, with
// key set to value (appended last, a key=value string's later pair wins).
func withDSNParam(dsn, key, value string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("connection string: %w", err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return strings.TrimSpace(dsn + " " + key + "=" + value), nil
}

// poolSize returns the size of the connection pool the store opens for dsn.
func poolSize(dsn string) (int, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return 0, fmt.Errorf("connection string: %w", err)
	}
	return int(cfg.MaxConns), nil
}

// Run serves until the context ends.
func (c *CollectorCmd) Run(ctx context.Context, log *slog.Logger) error {
	dsn, err := c.dsn(ctx, log)
	if err != nil {
		return err
	}
	if dsn, err = withPoolDefault(dsn, collectorPool); err != nil {
		return err
	}
	pool, err := poolSize(dsn)
	if err != nil {
		return err
	}
	opts, err := c.options(pool)
	if err != nil {
		return err
	}
	st, err := (&DBFlags{DB: dsn}).open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts.MaxAge, opts.MaxFuture, opts.Logger, opts.Registry = c.MaxAge, c.MaxFuture, log, reg
	srv, err := collector.New(st, opts)
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
	tlsCfg := srv.TLSConfig()
	hs.TLSConfig = tlsCfg
	log.Info("collector listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil, "client_certs", opts.TLS != nil && opts.TLS.ClientCAFile != "",
		"max_ingest", opts.MaxIngest, "agent_request_rate", opts.RequestRate, "agent_result_rate", opts.ResultRate)
	if c.ReadyFile != "" {
		if err := writeFileAtomic(c.ReadyFile, []byte(ln.Addr().String()+"\n")); err != nil {
			return err
		}
	}
	go keepPartitionsAhead(ctx, st, log)
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- hs.ServeTLS(ln, "", "")
			return
		}
		errc <- hs.Serve(ln)
	}()
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
