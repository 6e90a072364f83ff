// Package migrations embeds anyscope's numbered SQL schema migrations and
// applies the pending ones with tern.
package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

// VersionTable records the schema version (the number of the last applied
// migration).
const VersionTable = "public.schema_version"

//go:embed *.sql
var files embed.FS

// Migrate applies every pending migration to the database conn is connected
// to, each in its own transaction. Concurrent calls (from other processes
// too) are serialised by tern's advisory lock; applying an up-to-date schema
// is a no-op.
func Migrate(ctx context.Context, conn *pgx.Conn) error {
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return fmt.Errorf("migrations: prepare %s: %w", VersionTable, err)
	}
	if err := m.LoadMigrations(files); err != nil {
		return fmt.Errorf("migrations: load: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrations: apply: %w", err)
	}
	return nil
}

// Version returns the schema version of the database conn is connected to:
// 0 when no migration was ever applied.
func Version(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, VersionTable).Scan(&exists); err != nil {
		return 0, fmt.Errorf("migrations: read version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int32
	if err := conn.QueryRow(ctx, `SELECT version FROM `+VersionTable).Scan(&v); err != nil {
		return 0, fmt.Errorf("migrations: read version: %w", err)
	}
	return int(v), nil
}

var (
	scan    sync.Once
	latest  int
	digest  string
	scanErr error
)

func load() {
	scan.Do(func() {
		names, err := migrate.FindMigrations(files)
		if err != nil {
			scanErr = err
			return
		}
		h := sha256.New()
		for _, n := range names {
			b, err := fs.ReadFile(files, n)
			if err != nil {
				scanErr = err
				return
			}
			fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
			h.Write(b)
		}
		latest, digest = len(names), hex.EncodeToString(h.Sum(nil))
	})
	if scanErr != nil {
		// The files are embedded at build time: a broken set is a build bug.
		panic("migrations: embedded files: " + scanErr.Error())
	}
}

// Latest is the version a fully migrated database has: the number of
// embedded migrations.
func Latest() int {
	load()
	return latest
}

// Fingerprint identifies the content of the embedded migrations (a SHA-256
// hex digest); it changes whenever a migration file does. Test harnesses use
// it to name template databases.
func Fingerprint() string {
	load()
	return digest
}
