// Package store keeps agents, targets and results in PostgreSQL with pgx v5,
// and translates database errors into its own sentinels so callers never
// import pgx.
//
// Results are ingested in bulk: COPY into a per-connection temporary staging
// table, then INSERT … ON CONFLICT DO NOTHING into the daily-partitioned
// results table, so re-delivering a batch is a no-op. The staging table lives
// in the session, so the store needs session pooling (not a pooler's
// transaction mode).
package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/migrations"
)

// DBTX is what store queries run on: a *pgxpool.Pool, or a pgx.Tx inside a
// transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

var (
	_ DBTX = (*pgxpool.Pool)(nil)
	_ DBTX = pgx.Tx(nil)

	_ analysis.Source             = (*Store)(nil)
	_ analysis.VantagePointSource = (*Store)(nil)
)

// DefaultConnectTimeout bounds one connection attempt when the connection
// string sets none.
const DefaultConnectTimeout = 10 * time.Second

// Store is the database of one collector. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	db   DBTX
	now  func() time.Time // the clock of the token cache

	tokens tokenCache

	mu        sync.Mutex
	targetIDs map[string]int64 // name → id, all targets incl. retired
	days      map[int64]bool   // UTC days (since the epoch) that have a partition
}

// Open connects to the database at dsn (a postgres:// URL or key=value
// string; pool_max_conns and the other pgxpool settings apply) and checks it
// answers. It does not migrate: call Migrate.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: connection string: %w: %w", ErrInvalid, err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "anyscope"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, translate("store: open", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, translate("store: open", err)
	}
	return New(pool), nil
}

// New returns a store on an existing pool; Close closes the pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{
		pool:      pool,
		db:        pool,
		now:       time.Now,
		tokens:    tokenCache{m: map[int64]cachedToken{}},
		targetIDs: map[string]int64{},
		days:      map[int64]bool{},
	}
}

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.translate("store: ping", s.pool.Ping(ctx))
}

// Migrate applies pending schema migrations (see package migrations).
func (s *Store) Migrate(ctx context.Context) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return s.translate("store: migrate", err)
	}
	// The migrated connection leaves the pool: its cached statements and
	// session state predate the new schema.
	conn := c.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if err := migrations.Migrate(ctx, conn); err != nil {
		return s.translate("store: migrate", err)
	}
	s.mu.Lock()
	s.targetIDs, s.days = map[string]int64{}, map[int64]bool{}
	s.mu.Unlock()
	return nil
}
