package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
)

// DBFlags choose the database. Without --db, a private PostgreSQL cluster is
// started (or reused) under --pg-dir from the binaries on this machine.
type DBFlags struct {
	DB    string `name:"db" help:"PostgreSQL connection string (URL or key=value). Empty: start or reuse a private cluster under --pg-dir." placeholder:"DSN"`
	PGDir string `name:"pg-dir" help:"Data directory of the private PostgreSQL cluster used when --db is empty (default: $ANYSCOPE_DATA_DIR/postgres, /var/lib/anyscope/postgres as root, else ~/.local/share/anyscope/postgres)." placeholder:"DIR"`
}

// dsn returns the connection string to use, starting the private cluster
// when none was given.
func (f *DBFlags) dsn(ctx context.Context, log *slog.Logger) (string, error) {
	if f.DB != "" {
		return f.DB, nil
	}
	dir := f.PGDir
	if dir == "" {
		dir = pgcluster.DefaultDir()
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dir, Fsync: true, Logger: log})
	if err != nil {
		return "", fmt.Errorf("no --db given and the private PostgreSQL cluster did not start: %w", err)
	}
	if c.Started() {
		log.Info("started private PostgreSQL cluster (no --db given); stop it with `anyscope db stop`", "dir", dir)
	} else {
		log.Info("using private PostgreSQL cluster (no --db given)", "dir", dir)
	}
	return c.ConnString("anyscope"), nil
}

// open connects to the database and applies pending migrations.
func (f *DBFlags) open(ctx context.Context, log *slog.Logger) (*store.Store, error) {
	dsn, err := f.dsn(ctx, log)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := store.Open(octx, dsn)
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(octx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// MigrateCmd applies the schema migrations.
type MigrateCmd struct {
	DBFlags
}

// Run applies every pending migration under tern's advisory lock.
func (c *MigrateCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("schema is up to date")
	return nil
}

// DBCmd manages the private cluster.
type DBCmd struct {
	Start DBStartCmd `cmd:"" help:"Start (or reuse) the private PostgreSQL cluster and print its connection string."`
	Stop  DBStopCmd  `cmd:"" help:"Stop the private PostgreSQL cluster."`
}

// DBStartCmd starts the private cluster.
type DBStartCmd struct {
	PGDir string `name:"pg-dir" help:"Data directory of the private cluster (default as for --db)." placeholder:"DIR"`
}

// Run starts the cluster and prints a DSN usable as --db.
func (c *DBStartCmd) Run(ctx context.Context, log *slog.Logger) error {
	f := DBFlags{PGDir: c.PGDir}
	dsn, err := f.dsn(ctx, log)
	if err != nil {
		return err
	}
	fmt.Println(dsn)
	return nil
}

// DBStopCmd stops the private cluster.
type DBStopCmd struct {
	PGDir string `name:"pg-dir" help:"Data directory of the private cluster (default as for --db)." placeholder:"DIR"`
}

// Run stops the cluster if it runs.
func (c *DBStopCmd) Run(ctx context.Context, log *slog.Logger) error {
	dir := c.PGDir
	if dir == "" {
		dir = pgcluster.DefaultDir()
	}
	return pgcluster.Stop(ctx, pgcluster.Options{Dir: dir, Logger: log})
}
