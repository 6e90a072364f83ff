package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// resultColumns are the columns a result fills, in COPY order; received_at
// takes its default.
var resultColumns = []string{
	"agent_id", "seq", "measured_at", "target_id", "address", "kind", "transport",
	"query", "failure", "rtt_us", "rcode", "identity", "nsid", "detail", "round",
}

var columnList = strings.Join(resultColumns, ", ")

const (
	// stagingKey marks, in a connection's custom data, that the connection
	// has its results_staging table (temporary tables live per session).
	stagingKey = "anyscope.results_staging"

	createStaging = `CREATE TEMP TABLE IF NOT EXISTS results_staging (LIKE results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`

	// partitionAhead is how many days after a result's day get their
	// partition too, so partitions exist before the clock reaches them.
	partitionAhead = 1

	// maxPartitionRun is the longest range one anyscope_ensure_partitions
	// call accepts (it refuses more than 400 days).
	maxPartitionRun = 365
)

var insertFromStaging = `INSERT INTO results (` + columnList + `) SELECT ` + columnList + ` FROM results_staging ON CONFLICT DO NOTHING`

// resultRow is one result as stored.
type resultRow struct {
	seq, round                      int64 // round 0 is stored as NULL
	at                              time.Time
	targetID                        int64
	addr                            netip.Addr
	kind, transport, query, failure string
	rtt                             int64
	rttNull                         bool
	rcode, identity                 string // "" is stored as NULL
	nsid, detail                    []byte // nil is stored as NULL
}

// batch is a set of results of one agent ready for COPY.
type batch struct {
	agentID int64
	rows    []resultRow
	maxSeq  int64
	days    []int64 // distinct UTC days (since the epoch) of the rows, ascending

	hops     hopColumns     // of trace results
	sessions sessionColumns // of session results
}

// hopColumns are trace_hops rows, column by column (for unnest).
type hopColumns struct {
	at                           []time.Time
	seq                          []int64
	ttl, attempt                 []int16
	hop, mpls                    []*string
	rtt                          []*int64
	icmpType, icmpCode, replyTTL []*int16
}

// sessionColumns are sessions rows, column by column (for unnest).
type sessionColumns struct {
	at, closed                  []time.Time
	seq, targetID               []int64
	addr, protocol, end         []string
	queries, answers            []int32
	firstIdentity, lastIdentity []*string
}

const insertHops = `INSERT INTO trace_hops (agent_id, measured_at, seq, ttl, attempt, hop, rtt_us, icmp_type, icmp_code, reply_ttl, mpls)
	SELECT $1, u.at, u.seq, u.ttl, u.attempt, u.hop::inet, u.rtt, u.it, u.ic, u.rttl, u.mpls::jsonb
	FROM unnest($2::timestamptz[], $3::bigint[], $4::smallint[], $5::smallint[], $6::text[], $7::bigint[],
	            $8::smallint[], $9::smallint[], $10::smallint[], $11::text[])
	     AS u(at, seq, ttl, attempt, hop, rtt, it, ic, rttl, mpls)
	ON CONFLICT DO NOTHING`

const insertSessions = `INSERT INTO sessions (agent_id, measured_at, seq, target_id, address, protocol, closed_at, end_reason, queries, answers, first_identity, last_identity)
	SELECT $1, u.at, u.seq, u.tid, u.addr::inet, u.proto, u.closed, u.reason, u.q, u.a, u.fi, u.li
	FROM unnest($2::timestamptz[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::timestamptz[],
	            $8::text[], $9::int[], $10::int[], $11::text[], $12::text[])
	     AS u(at, seq, tid, addr, proto, closed, reason, q, a, fi, li)
	ON CONFLICT DO NOTHING`

// children records the trace hops and the session of r, stored beside it.
func (b *batch) children(r *api.Result, row *resultRow) error {
	if t := r.Trace; t != nil {
		for _, h := range t.Hops {
			b.hops.at = append(b.hops.at, r.MeasuredAt)
			b.hops.seq = append(b.hops.seq, row.seq)
			b.hops.ttl = append(b.hops.ttl, int16(h.TTL))
			b.hops.attempt = append(b.hops.attempt, int16(h.Attempt))
			var hop, mpls *string
			var rtt *int64
			var it, ic, rttl *int16
			if h.Addr != "" {
				// Like result addresses: an IPv4 hop quoted as
				// IPv4-mapped IPv6 (a dual-stack socket's view) is
				// stored as IPv4, so one router has one address.
				a := h.Addr
				if ip, err := netip.ParseAddr(a); err == nil {
					a = ip.Unmap().String()
				}
				hop, rtt = &a, &h.RTTUS
				t, c, l := int16(h.ICMPType), int16(h.ICMPCode), int16(h.ReplyTTL)
				it, ic, rttl = &t, &c, &l
			}
			if len(h.MPLS) > 0 {
				j, err := json.Marshal(h.MPLS)
				if err != nil {
					return err
				}
				m := string(j)
				mpls = &m
			}
			b.hops.hop = append(b.hops.hop, hop)
			b.hops.rtt = append(b.hops.rtt, rtt)
			b.hops.icmpType = append(b.hops.icmpType, it)
			b.hops.icmpCode = append(b.hops.icmpCode, ic)
			b.hops.replyTTL = append(b.hops.replyTTL, rttl)
			b.hops.mpls = append(b.hops.mpls, mpls)
		}
	}
	if ss := r.Session; ss != nil {
		c := &b.sessions
		c.at = append(c.at, r.MeasuredAt)
		c.closed = append(c.closed, ss.ClosedAt)
		c.seq = append(c.seq, row.seq)
		c.targetID = append(c.targetID, row.targetID)
		c.addr = append(c.addr, row.addr.String())
		c.protocol = append(c.protocol, r.Query)
		c.end = append(c.end, ss.End)
		c.queries = append(c.queries, int32(ss.Queries))
		c.answers = append(c.answers, int32(len(ss.Answers)))
		var first, last *string
		if n := len(ss.Answers); n > 0 {
			first, last = &ss.Answers[0].Identity, &ss.Answers[n-1].Identity
		}
		c.firstIdentity = append(c.firstIdentity, first)
		c.lastIdentity = append(c.lastIdentity, last)
	}
	return nil
}

// insertChildren stores the batch's trace hops and sessions; like results,
// re-delivered rows are no-ops.
func (b *batch) insertChildren(ctx context.Context, tx pgx.Tx) error {
	if h := &b.hops; len(h.seq) > 0 {
		if _, err := tx.Exec(ctx, insertHops, b.agentID, h.at, h.seq, h.ttl, h.attempt, h.hop, h.rtt,
			h.icmpType, h.icmpCode, h.replyTTL, h.mpls); err != nil {
			return fmt.Errorf("trace hops: %w", err)
		}
	}
	if c := &b.sessions; len(c.seq) > 0 {
		if _, err := tx.Exec(ctx, insertSessions, b.agentID, c.at, c.seq, c.targetID, c.addr, c.protocol,
			c.closed, c.end, c.queries, c.answers, c.firstIdentity, c.lastIdentity); err != nil {
			return fmt.Errorf("sessions: %w", err)
		}
	}
	return nil
}

// prepare converts results to rows, resolving target names to ids.
func (s *Store) prepare(ctx context.Context, agentID int64, results []api.Result) (*batch, error) {
	if agentID <= 0 {
		return nil, fmt.Errorf("%w: agent id %d", ErrInvalid, agentID)
	}
	b := &batch{agentID: agentID, rows: make([]resultRow, len(results))}
	ids := map[string]int64{}
	for i := range results {
		r := &results[i]
		row := &b.rows[i]
		tid, ok := ids[r.Target]
		if !ok {
			var err error
			if tid, err = s.targetID(ctx, r.Target); err != nil {
				return nil, fmt.Errorf("results[%d]: %w", i, err)
			}
			ids[r.Target] = tid
		}
		addr, err := netip.ParseAddr(r.Address)
		if err != nil || addr.Zone() != "" {
			return nil, fmt.Errorf("%w: results[%d]: address %q", ErrInvalid, i, api.Clip(r.Address))
		}
		if r.Seq == 0 || r.Seq > math.MaxInt64 || r.MeasuredAt.IsZero() {
			return nil, fmt.Errorf("%w: results[%d]: seq %d, measured_at %s", ErrInvalid, i, r.Seq, r.MeasuredAt)
		}
		*row = resultRow{
			seq: int64(r.Seq), round: int64(r.Round), at: r.MeasuredAt, targetID: tid, addr: addr.Unmap(),
			kind: string(r.Kind), transport: string(r.Transport), query: r.Query, failure: string(r.Failure),
			rtt: r.RTTMicros, rttNull: r.RTTMicros == 0 && r.Failure != api.FailureNone,
		}
		var values any
		switch {
		case r.DNS != nil:
			d := r.DNS
			values, row.rcode, row.identity = d, d.Rcode, d.Identity
			if d.NSIDHex != "" {
				if row.nsid, err = hex.DecodeString(d.NSIDHex); err != nil {
					return nil, fmt.Errorf("%w: results[%d]: dns.nsid_hex is not hex", ErrInvalid, i)
				}
			}
		case r.HTTP != nil:
			values, row.identity = r.HTTP, r.HTTP.Identity
		case r.Session != nil:
			values = r.Session
			if len(r.Session.Answers) > 0 {
				row.identity = r.Session.Answers[0].Identity
			}
		case r.Ping != nil:
			values = r.Ping
		case r.Trace != nil:
			values = r.Trace
		}
		if values != nil {
			if row.detail, err = json.Marshal(values); err != nil {
				return nil, fmt.Errorf("%w: results[%d]: %s values: %w", ErrInvalid, i, r.Kind, err)
			}
		}
		if err := b.children(r, row); err != nil {
			return nil, fmt.Errorf("%w: results[%d]: %w", ErrInvalid, i, err)
		}
		b.maxSeq = max(b.maxSeq, row.seq)
		b.days = append(b.days, utcDay(r.MeasuredAt))
	}
	slices.Sort(b.days)
	b.days = slices.Compact(b.days)
	return b, nil
}

func utcDay(t time.Time) int64 {
	sec := t.Unix()
	d := sec / 86400
	if sec%86400 < 0 {
		d--
	}
	return d
}

func dayStart(d int64) time.Time { return time.Unix(d*86400, 0).UTC() }

// rowSource feeds a batch to COPY, reusing one slice of values.
type rowSource struct {
	b    *batch
	i    int
	vals [15]any
}

func (r *rowSource) Next() bool { r.i++; return r.i <= len(r.b.rows) }
func (r *rowSource) Err() error { return nil }

func (r *rowSource) Values() ([]any, error) {
	row := &r.b.rows[r.i-1]
	v := r.vals[:]
	v[0], v[1], v[2], v[3], v[4] = r.b.agentID, row.seq, row.at, row.targetID, row.addr
	v[5], v[6], v[7], v[8] = row.kind, row.transport, row.query, row.failure
	v[9], v[10], v[11], v[12], v[13], v[14] = nil, nil, nil, nil, nil, nil
	if !row.rttNull {
		v[9] = row.rtt
	}
	if row.rcode != "" {
		v[10] = row.rcode
	}
	if row.identity != "" {
		v[11] = row.identity
	}
	if row.nsid != nil {
		v[12] = row.nsid
	}
	if row.detail != nil {
		v[13] = row.detail
	}
	if row.round != 0 {
		v[14] = row.round
	}
	return v, nil
}

// Ingest stores results of one agent (each already checked with
// api.Result.Validate) in one transaction and returns how many were new and
// how many were already stored. Re-delivering results is a no-op: a result
// is identified by (agent, measured_at, seq). It also records the agent's
// last upload and highest sequence number. A result naming an unknown target
// fails the whole batch with ErrUnknownTarget.
//
// The rows are COPYed into a per-connection temporary staging table, then
// moved with INSERT … ON CONFLICT DO NOTHING; daily partitions are created on
// the first result of a day (and for the day after).
func (s *Store) Ingest(ctx context.Context, agent Agent, results []api.Result) (accepted, duplicates int, err error) {
	const op = "store: ingest"
	if len(results) == 0 {
		return 0, 0, nil
	}
	b, err := s.prepare(ctx, agent.ID, results)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", op, err)
	}
	n, err := s.withPartitions(ctx, b, s.insert)
	if err != nil {
		return 0, 0, s.translate(op, err)
	}
	return int(n), len(results) - int(n), nil
}

// CopyRaw COPYs results straight into the results table, without staging,
// duplicate handling or agent bookkeeping: a re-delivered result fails the
// whole COPY. It exists only as the reference the ingest benchmarks compare
// Ingest against (the fastest way PostgreSQL can take the same rows); do not
// use it to store results.
func (s *Store) CopyRaw(ctx context.Context, agentID int64, results []api.Result) (int64, error) {
	const op = "store: copy raw"
	if len(results) == 0 {
		return 0, nil
	}
	b, err := s.prepare(ctx, agentID, results)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	n, err := s.withPartitions(ctx, b, func(ctx context.Context, b *batch) (int64, error) {
		return s.db.CopyFrom(ctx, pgx.Identifier{"results"}, resultColumns, &rowSource{b: b})
	})
	return n, s.translate(op, err)
}

// withPartitions runs write after making sure the batch's partitions exist;
// if a partition disappeared behind the store's back (dropped by retention),
// it forgets what it knew, creates them again and retries once.
func (s *Store) withPartitions(ctx context.Context, b *batch, write func(context.Context, *batch) (int64, error)) (int64, error) {
	if _, err := s.ensureDays(ctx, b.days); err != nil {
		return 0, err
	}
	n, err := write(ctx, b)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23514" && strings.Contains(pe.Message, "no partition") {
		s.mu.Lock()
		s.days = map[int64]bool{}
		s.mu.Unlock()
		if _, err := s.ensureDays(ctx, b.days); err != nil {
			return 0, err
		}
		n, err = write(ctx, b)
	}
	return n, err
}

func (s *Store) insert(ctx context.Context, b *batch) (int64, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	custom := c.Conn().PgConn().CustomData()
	if custom[stagingKey] == nil {
		if _, err := c.Exec(ctx, createStaging); err != nil {
			return 0, err
		}
		custom[stagingKey] = true
	}
	var accepted int64
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		// Locking the agent's row first serialises concurrent uploads of one
		// agent (a retry racing the original), so their inserts never
		// deadlock on each other's rows.
		tag, err := tx.Exec(ctx, `UPDATE agents SET last_seen = now(), last_seq = greatest(last_seq, $2) WHERE id = $1`, b.agentID, b.maxSeq)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("agent %d: %w", b.agentID, ErrNotFound)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"results_staging"}, resultColumns, &rowSource{b: b}); err != nil {
			return err
		}
		if tag, err = tx.Exec(ctx, insertFromStaging); err != nil {
			return err
		}
		accepted = tag.RowsAffected()
		return b.insertChildren(ctx, tx)
	})
	if err != nil {
		// Whatever failed, make sure of the staging table next time (a
		// pooler's DISCARD ALL drops it, for one).
		delete(custom, stagingKey)
	}
	return accepted, err
}

// ensureDays makes sure the partitions of the given UTC days, and of the day
// after each, exist, asking the database only about days it has not seen.
func (s *Store) ensureDays(ctx context.Context, days []int64) (int, error) {
	var missing []int64
	s.mu.Lock()
	for _, d := range days {
		for a := int64(0); a <= partitionAhead; a++ {
			if !s.days[d+a] {
				missing = append(missing, d+a)
			}
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return 0, nil
	}
	slices.Sort(missing)
	missing = slices.Compact(missing)
	created := 0
	for start := 0; start < len(missing); {
		end := start // missing[start..end] is a run of consecutive days
		for end+1 < len(missing) && missing[end+1] == missing[end]+1 && end+1-start < maxPartitionRun {
			end++
		}
		var n int
		err := s.db.QueryRow(ctx, `SELECT anyscope_ensure_partitions($1, $2)`, dayStart(missing[start]), dayStart(missing[end])).Scan(&n)
		if err != nil {
			return created, fmt.Errorf("create partitions %s..%s: %w",
				dayStart(missing[start]).Format(time.DateOnly), dayStart(missing[end]).Format(time.DateOnly), err)
		}
		created += n
		s.mu.Lock()
		for _, d := range missing[start : end+1] {
			s.days[d] = true
		}
		s.mu.Unlock()
		start = end + 1
	}
	return created, nil
}

// EnsurePartitions creates the daily partitions of results covering
// [from, to] (UTC days) that do not exist yet and returns how many it
// created. Ingest does this on its own; a collector may call it ahead of
// time, e.g. daily for the next week.
func (s *Store) EnsurePartitions(ctx context.Context, from, to time.Time) (int, error) {
	const op = "store: ensure partitions"
	if to.Before(from) {
		return 0, fmt.Errorf("%s: %w: %s is before %s", op, ErrInvalid, to, from)
	}
	if to.Sub(from) > 10*366*24*time.Hour {
		return 0, fmt.Errorf("%s: %w: range longer than ten years", op, ErrInvalid)
	}
	s.mu.Lock()
	for d := utcDay(from); d <= utcDay(to); d++ {
		delete(s.days, d) // ask again: the caller wants to be sure
	}
	s.mu.Unlock()
	var days []int64
	for d := utcDay(from); d <= utcDay(to); d++ {
		days = append(days, d)
	}
	n, err := s.ensureDays(ctx, days)
	return n, s.translate(op, err)
}

// AgentSeqStats returns how many results are stored for the agent and the
// highest sequence number among them: equal when nothing is missing (agents
// number results 1, 2, 3, …).
func (s *Store) AgentSeqStats(ctx context.Context, agentName string) (count, maxSeq int64, err error) {
	const op = "store: agent sequence stats"
	a, err := s.AgentByName(ctx, agentName)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", op, err)
	}
	err = s.db.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0) FROM results WHERE agent_id = $1`, a.ID).Scan(&count, &maxSeq)
	return count, maxSeq, s.translate(op, err)
}
