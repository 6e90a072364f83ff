package store

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

var _ analysis.GapSource = (*Store)(nil)

// MaxGaps bounds the gaps Gaps returns.
const MaxGaps = 10_000

// upsertGaps stores gaps; a gap already stored with the same first sequence
// number is left alone unless the new one is wider (the agent kept dropping
// before it saw the first acknowledged), which replaces it.
const upsertGaps = `INSERT INTO agent_gaps AS g (agent_id, first_seq, last_seq, count, lost_from, lost_to, reason)
	SELECT $1, u.f, u.l, u.c, u.lf, u.lt, u.r
	FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[], $7::text[])
	     AS u(f, l, c, lf, lt, r)
	ON CONFLICT (agent_id, first_seq) DO UPDATE
	SET last_seq = excluded.last_seq, count = excluded.count,
	    lost_from = excluded.lost_from, lost_to = excluded.lost_to, reason = excluded.reason
	WHERE excluded.last_seq > g.last_seq OR (excluded.last_seq = g.last_seq AND excluded.count > g.count)`

// IngestGaps stores gaps an agent reported (each checked with
// api.Gap.Validate; no two overlapping) in one transaction and returns how
// many were new or widened a stored one, and how many the store already
// held. Re-delivering a gap is a no-op. The agent's last upload and highest
// sequence number are updated too: numbers in a gap were used.
func (s *Store) IngestGaps(ctx context.Context, agent Agent, gaps []api.Gap) (accepted, duplicates int, err error) {
	const op = "store: ingest gaps"
	if len(gaps) == 0 {
		return 0, 0, nil
	}
	if agent.ID <= 0 {
		return 0, 0, fmt.Errorf("%s: %w: agent id %d", op, ErrInvalid, agent.ID)
	}
	n := len(gaps)
	var (
		first, last, count = make([]int64, n), make([]int64, n), make([]int64, n)
		from, to           = make([]*time.Time, n), make([]*time.Time, n)
		reason             = make([]string, n)
		maxSeq             int64
	)
	for i, g := range gaps {
		if err := g.Validate(); err != nil {
			return 0, 0, fmt.Errorf("%s: gaps[%d]: %w", op, i, err)
		}
		if g.LastSeq > math.MaxInt64 {
			return 0, 0, fmt.Errorf("%s: %w: gaps[%d]: seq %d", op, ErrInvalid, i, g.LastSeq)
		}
		first[i], last[i], count[i], reason[i] = int64(g.FirstSeq), int64(g.LastSeq), int64(g.Count), string(g.Reason)
		if !g.LostFrom.IsZero() {
			t := g.LostFrom.UTC()
			from[i] = &t
		}
		if !g.LostTo.IsZero() {
			t := g.LostTo.UTC()
			to[i] = &t
		}
		maxSeq = max(maxSeq, last[i])
	}
	var affected int64
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		// The agent's row first, as Ingest does: it serialises the
		// agent's concurrent uploads.
		tag, err := tx.Exec(ctx, `UPDATE agents SET last_seen = now(), last_seq = greatest(last_seq, $2) WHERE id = $1`, agent.ID, maxSeq)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("agent %d: %w", agent.ID, ErrNotFound)
		}
		tag, err = tx.Exec(ctx, upsertGaps, agent.ID, first, last, count, from, to, reason)
		if err != nil {
			return err
		}
		affected = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, 0, s.translate(op, err)
	}
	return int(affected), n - int(affected), nil
}

// Gaps returns the gaps of every agent whose lost results were measured
// during [since, until), in time order, at most MaxGaps (the earliest). An
// unknown end of a gap is taken as when it was received, an unknown start
// as its end. A zero bound is open. It implements analysis.GapSource.
func (s *Store) Gaps(ctx context.Context, since, until time.Time) ([]analysis.Gap, error) {
	const op = "store: gaps"
	var (
		cond []string
		args []any
	)
	if !since.IsZero() {
		args = append(args, since.UTC())
		cond = append(cond, fmt.Sprintf("coalesce(g.lost_to, g.received_at) >= $%d", len(args)))
	}
	if !until.IsZero() {
		args = append(args, until.UTC())
		cond = append(cond, fmt.Sprintf("coalesce(g.lost_from, g.lost_to, g.received_at) < $%d", len(args)))
	}
	where := ""
	if len(cond) > 0 {
		where = "WHERE " + strings.Join(cond, " AND ")
	}
	rows, err := s.db.Query(ctx, `
		SELECT a.name, g.first_seq, g.last_seq, g.count, g.lost_from, g.lost_to, g.reason, g.received_at
		FROM agent_gaps g JOIN agents a ON a.id = g.agent_id
		`+where+`
		ORDER BY coalesce(g.lost_from, g.lost_to, g.received_at), a.name, g.first_seq
		LIMIT `+fmt.Sprint(MaxGaps), args...)
	if err != nil {
		return nil, s.translate(op, err)
	}
	var (
		out                []analysis.Gap
		name, reason       string
		first, last, count int64
		from, to           *time.Time
		received           time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &first, &last, &count, &from, &to, &reason, &received}, func() error {
		g := analysis.Gap{VantagePoint: name, FirstSeq: uint64(first), LastSeq: uint64(last), Count: uint64(count),
			Reason: api.GapReason(reason), ReceivedAt: received.UTC()}
		if from != nil {
			g.LostFrom = from.UTC()
		}
		if to != nil {
			g.LostTo = to.UTC()
		}
		out = append(out, g)
		return nil
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	return out, nil
}

// SeqAccount is how an agent's sequence numbers 1..Highest are accounted
// for. Nothing is missing when Holes is zero, and nothing was stored twice
// when Rows equals Stored.
type SeqAccount struct {
	// Highest is the highest sequence number stored or inside a gap.
	Highest int64
	// Stored counts the distinct sequence numbers with a stored result;
	// Rows the result rows (more when a number was stored twice, with
	// different measurement times).
	Stored, Rows int64
	// InGaps counts the sequence numbers inside a gap without a stored
	// result (a result can arrive although the agent recorded it lost:
	// dropped while it was being uploaded).
	InGaps int64
	// Holes counts the sequence numbers up to Highest neither stored nor
	// inside a gap: Highest − Stored − InGaps.
	Holes int64
	// Gaps counts the agent's gaps; Lost sums their counts.
	Gaps, Lost int64
}

// SeqAccounting accounts for every sequence number of the named agent:
// stored results plus numbers covered by gaps must equal the highest
// number, or results were lost without a trace.
func (s *Store) SeqAccounting(ctx context.Context, agentName string) (SeqAccount, error) {
	const op = "store: sequence accounting"
	a, err := s.AgentByName(ctx, agentName)
	if err != nil {
		return SeqAccount{}, fmt.Errorf("%s: %w", op, err)
	}
	var acc SeqAccount
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var maxSeq int64
		if err := tx.QueryRow(ctx, `SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM results WHERE agent_id = $1`,
			a.ID).Scan(&acc.Rows, &acc.Stored, &maxSeq); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT first_seq, last_seq, count FROM agent_gaps WHERE agent_id = $1 ORDER BY first_seq`, a.ID)
		if err != nil {
			return err
		}
		// Merge overlapping gaps so that no number counts twice.
		var merged [][2]int64
		var first, last, count int64
		_, err = pgx.ForEachRow(rows, []any{&first, &last, &count}, func() error {
			acc.Gaps++
			acc.Lost += count
			if n := len(merged); n > 0 && first <= merged[n-1][1]+1 {
				merged[n-1][1] = max(merged[n-1][1], last)
				return nil
			}
			merged = append(merged, [2]int64{first, last})
			return nil
		})
		if err != nil {
			return err
		}
		acc.Highest = maxSeq
		if len(merged) == 0 {
			return nil
		}
		firsts, lasts := make([]int64, len(merged)), make([]int64, len(merged))
		var covered int64
		for i, m := range merged {
			firsts[i], lasts[i] = m[0], m[1]
			covered += m[1] - m[0] + 1
		}
		acc.Highest = max(maxSeq, slices.Max(lasts))
		var storedInGaps int64
		if err := tx.QueryRow(ctx, `
			SELECT count(DISTINCT r.seq) FROM results r
			JOIN unnest($2::bigint[], $3::bigint[]) AS g(f, l) ON r.seq BETWEEN g.f AND g.l
			WHERE r.agent_id = $1`, a.ID, firsts, lasts).Scan(&storedInGaps); err != nil {
			return err
		}
		acc.InGaps = covered - storedInGaps
		return nil
	})
	if err != nil {
		return SeqAccount{}, s.translate(op, err)
	}
	acc.Holes = acc.Highest - acc.Stored - acc.InGaps
	return acc, nil
}
