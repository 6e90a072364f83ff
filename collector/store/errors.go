package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Errors callers branch on. Every error the store returns wraps one of these
// or is an unexpected database fault; the message keeps the details.
var (
	// ErrNotFound: the named agent (or other object) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrUnauthorized: the token is malformed, unknown, wrong, revoked or
	// expired. Deliberately without detail.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnknownTarget: a result names a target the collector does not know.
	ErrUnknownTarget = errors.New("unknown target")
	// ErrInvalid: the input breaks a rule of the schema or of the wire
	// contract (it is the contract's own sentinel, so both checks agree).
	ErrInvalid = api.ErrInvalid
	// ErrUnavailable: the database cannot be reached or refuses work for now
	// (down, starting, shutting down, too many connections); retry later.
	ErrUnavailable = errors.New("database unavailable")
)

var sentinels = []error{ErrNotFound, ErrExists, ErrUnauthorized, ErrUnknownTarget, ErrInvalid, ErrUnavailable}

// translate maps a pgx/pgconn error to the store's sentinels at the package
// boundary, prefixing what the store was doing.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%s: %w: %w", op, ErrExists, err)
		case strings.HasPrefix(pe.Code, "22"), // data_exception
			pe.Code == "23502", pe.Code == "23503", pe.Code == "23514": // not null, foreign key, check
			return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
		case pe.Code == "42P01", pe.Code == "42703", pe.Code == "42883": // undefined table, column, function
			return fmt.Errorf("%s: the database schema is missing or out of date (run anyscope migrate): %w", op, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable reports whether err means the server is unreachable or is not
// taking work right now, as opposed to rejecting this request.
func unavailable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			"53300", "53400": // too_many_connections, configuration_limit_exceeded
			return true
		}
		return strings.HasPrefix(pe.Code, "08") // connection_exception
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ENOENT) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return true
	}
	// The connection broke before the statement was sent (pgconn's
	// "conn closed" and the like).
	return pgconn.SafeToRetry(err)
}

// translate translates err like the package function; when the database
// turns out to be unavailable, the pool also drops its idle connections, so
// none that died with the server is handed out once it is back.
func (s *Store) translate(op string, err error) error {
	err = translate(op, err)
	if errors.Is(err, ErrUnavailable) {
		s.pool.Reset()
	}
	return err
}
