package store

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Observations calls fn for every stored result measured in [since, until)
// (a zero time leaves that end open), of the named target or of all targets
// when target is "", in order of measured_at, then agent, then sequence. Rows
// stream from the database; nothing is collected in memory. An error from
// fn stops the iteration and is returned as is. It implements
// analysis.Source.
func (s *Store) Observations(ctx context.Context, since, until time.Time, target string, fn func(analysis.Observation) error) error {
	const op = "store: observations"
	var tid int64 // 0: all targets
	if target != "" {
		var err error
		if tid, err = s.targetID(ctx, target); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	// Only the bounds given appear in the query, so the planner prunes
	// partitions.
	var (
		where []string
		args  []any
	)
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if !since.IsZero() {
		arg("r.measured_at >= $%d", since)
	}
	if !until.IsZero() {
		arg("r.measured_at < $%d", until)
	}
	if tid != 0 {
		arg("r.target_id = $%d", tid)
	}
	sql := `
		SELECT a.name, t.name, r.address, r.kind, r.transport, r.query, r.measured_at, r.failure,
		       coalesce(r.identity, ''), coalesce(r.rtt_us, 0), coalesce(r.round, 0)
		FROM results r
		JOIN agents a ON a.id = r.agent_id
		JOIN targets t ON t.id = r.target_id`
	if len(where) > 0 {
		sql += "\n\t\tWHERE " + strings.Join(where, " AND ")
	}
	sql += "\n\t\tORDER BY r.measured_at, r.agent_id, r.seq"
	rows, err := s.db.Query(ctx, sql, args...)
	if err != nil {
		return s.translate(op, err)
	}
	defer rows.Close()
	var (
		o                     analysis.Observation
		addr                  netip.Addr
		kind, transport, fail string
		rttMicros, round      int64
	)
	for rows.Next() {
		if err := rows.Scan(&o.VantagePoint, &o.Target, &addr, &kind, &transport, &o.Query, &o.At, &fail, &o.Identity, &rttMicros, &round); err != nil {
			return s.translate(op, err)
		}
		o.Address, o.Kind, o.Transport, o.Failure = addr, api.Kind(kind), api.Transport(transport), api.Failure(fail)
		o.At = o.At.UTC()
		o.RTT = time.Duration(rttMicros) * time.Microsecond
		o.Round = uint64(round)
		if err := fn(o); err != nil {
			return err
		}
	}
	return s.translate(op, rows.Err())
}
