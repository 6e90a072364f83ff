package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Scan bounds and tuning.
const (
	// DefaultScanChunk is the first chunk of measured_at a scan reads; later
	// chunks grow or shrink to hold about scanChunkRows results.
	DefaultScanChunk = 10 * time.Minute
	scanChunkRows    = 50_000
	minScanChunk     = time.Minute
	maxScanChunk     = 7 * 24 * time.Hour
	// maxEmptyScanChunk bounds the growth after an empty chunk (a 15-minute
	// chunk at RIPE Atlas scale is about 600,000 results).
	maxEmptyScanChunk = 15 * time.Minute
	// maxInterned bounds the strings a scan shares between rows (identities,
	// queries…); beyond it each row gets its own copy.
	maxInterned = 1 << 16
)

// ScanOptions select the results a scan reads.
type ScanOptions struct {
	// Since and Until bound measured_at to [Since, Until); a zero bound is
	// open on that side (the first and last partitions bound it then).
	Since, Until time.Time
	// ReceivedAfter and ReceivedThrough, when set, keep only the results
	// received in (ReceivedAfter, ReceivedThrough]: what arrived since an
	// incremental analyzer's previous run.
	ReceivedAfter, ReceivedThrough time.Time
	// Target restricts the scan to one target; "" reads all.
	Target string
}

// ScanStats describes a scan.
type ScanStats struct {
	Rows   int
	Chunks int
	// LastReceived is the latest received_at among the rows read (zero
	// when none).
	LastReceived time.Time
}

// Scan calls fn for every stored result opts selects, in order of
// measured_at, then agent, then sequence — the order Observations promises.
// It reads the results table in chunks of measured_at (BRIN-indexed), each
// sorted by the database, with binary-format rows decoded without
// reflection: it is the path a full analysis of millions of results takes.
// Trace observations carry their last responding hops (PathEnd) and session
// observations their end (Session). An error from fn stops the scan and is
// returned as is.
func (s *Store) Scan(ctx context.Context, opts ScanOptions, fn func(analysis.Observation) error) (ScanStats, error) {
	const op = "store: scan"
	var stats ScanStats
	names, err := s.names(ctx)
	if err != nil {
		return stats, fmt.Errorf("%s: %w", op, err)
	}
	var tid int64
	if opts.Target != "" {
		if tid, err = s.targetID(ctx, opts.Target); err != nil {
			return stats, fmt.Errorf("%s: %w", op, err)
		}
	}
	since, until := opts.Since.UTC(), opts.Until.UTC()
	if since.IsZero() || until.IsZero() {
		first, last, ok, err := s.partitionSpan(ctx)
		if err != nil {
			return stats, fmt.Errorf("%s: %w", op, err)
		}
		if !ok {
			return stats, nil
		}
		if since.IsZero() || since.Before(first) {
			since = first
		}
		if until.IsZero() || until.After(last) {
			until = last
		}
	}
	if !since.Before(until) {
		return stats, nil
	}

	// Chunks follow measured_at; a scan of what arrived in a receive
	// window follows received_at instead (that is what the BRIN index on it
	// is for), and each of its chunks is still put in measured_at order.
	chunkCol, lo, hi := "measured_at", since, until
	cond := []string{}
	var extra [][]byte
	if receipts := !opts.ReceivedAfter.IsZero() || !opts.ReceivedThrough.IsZero(); receipts {
		chunkCol = "received_at"
		lo, hi = opts.ReceivedAfter.UTC(), opts.ReceivedThrough.UTC()
		if lo.IsZero() {
			lo = since.Add(-maxScanChunk) // received before measured is impossible; allow clock skew
		}
		if hi.IsZero() {
			hi = time.Now().UTC().Add(time.Minute)
		}
		if !lo.Before(hi) {
			return stats, nil
		}
		extra = append(extra, pgTime(since), pgTime(until))
		cond = append(cond, "r.measured_at >= $3::timestamptz", "r.measured_at < $4::timestamptz")
	}
	// The chunk's bounds: half-open on measured_at, (lo, hi] on received_at
	// (ReceivedAfter is exclusive, ReceivedThrough inclusive).
	if chunkCol == "measured_at" {
		cond = append([]string{"r.measured_at >= $1::timestamptz", "r.measured_at < $2::timestamptz"}, cond...)
	} else {
		cond = append([]string{"r.received_at > $1::timestamptz", "r.received_at <= $2::timestamptz"}, cond...)
	}
	if tid != 0 {
		extra = append(extra, []byte(fmt.Sprint(tid)))
		cond = append(cond, fmt.Sprintf("r.target_id = $%d::bigint", 2+len(extra)))
	}
	// No ORDER BY: each chunk is sorted here, which costs less than the
	// server's tuple sort and lets the next chunk be read meanwhile.
	sql := `SELECT r.agent_id, r.target_id, r.address, r.kind, r.transport, r.query, r.measured_at,
	               r.failure, r.identity, r.rtt_us, r.round, r.received_at, r.seq,
	               CASE WHEN r.kind IN ('trace', 'session') THEN r.detail::text END
	        FROM results r
	        WHERE ` + strings.Join(cond, " AND ")

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return stats, s.translate(op, err)
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()

	// The reader fetches, decodes and orders chunk k+1 while fn consumes
	// chunk k; two buffers go back and forth, so a scan's memory is two
	// chunks whatever its length.
	type chunkRows struct {
		rows  []scanRow
		order []scanKey
		err   error
	}
	chunks := make(chan *chunkRows, 1)
	free := make(chan *chunkRows, 2)
	free <- &chunkRows{}
	free <- &chunkRows{}
	done := make(chan struct{})
	defer func() {
		close(done)
		for range chunks { // let the reader finish
		}
	}()
	go func() {
		defer close(chunks)
		d := decoder{names: names, strs: make(map[string]string)}
		chunk := DefaultScanChunk
		for from := lo; from.Before(hi); {
			var c *chunkRows
			select {
			case c = <-free:
			case <-done:
				return
			}
			to := from.Add(chunk)
			if to.After(hi) {
				to = hi
			}
			params := append([][]byte{pgTime(from), pgTime(to)}, extra...)
			rr := pc.ExecParams(ctx, sql, params, nil, nil, scanFormats)
			c.rows, c.order = c.rows[:0], c.order[:0]
			var derr error
			for rr.NextRow() {
				c.rows = append(c.rows, scanRow{})
				r := &c.rows[len(c.rows)-1]
				var agent, seq int64
				if r.o, r.recv, agent, seq, derr = d.decode(rr.Values()); derr != nil {
					break
				}
				c.order = append(c.order, scanKey{at: r.o.At.UnixNano(), agent: agent, seq: seq, i: int32(len(c.rows) - 1)})
			}
			_, c.err = rr.Close()
			if derr != nil {
				c.err = derr
			} else if c.err != nil {
				c.err = s.translate(op, c.err)
			}
			// Keys are sorted, not rows: rows are large and mostly in order.
			if !slices.IsSortedFunc(c.order, compareScanKey) {
				slices.SortFunc(c.order, compareScanKey)
			}
			n := len(c.rows)
			select {
			case chunks <- c:
			case <-done:
				return
			}
			if c.err != nil {
				return
			}
			from = to
			// Aim the next chunk at scanChunkRows rows.
			if n == 0 {
				// Nothing here says how dense the data ahead is: grow,
				// but not so far that a dense stretch lands in one chunk.
				chunk = min(chunk*2, maxEmptyScanChunk)
			} else {
				chunk = time.Duration(float64(chunk) * scanChunkRows / float64(n))
			}
			chunk = min(max(chunk, minScanChunk), maxScanChunk)
		}
	}()
	for c := range chunks {
		if c.err != nil {
			return stats, fmt.Errorf("%s: %w", op, c.err)
		}
		stats.Chunks++
		for _, k := range c.order {
			r := &c.rows[k.i]
			stats.Rows++
			if r.recv.After(stats.LastReceived) {
				stats.LastReceived = r.recv
			}
			if err := fn(r.o); err != nil {
				return stats, err
			}
		}
		clear(c.rows) // drop references before the buffer is refilled
		free <- c
	}
	return stats, ctx.Err()
}

// scanKey orders the rows of a chunk: measured_at, agent, sequence.
type scanKey struct {
	at, agent, seq int64
	i              int32
}

func compareScanKey(x, y scanKey) int {
	return cmp.Or(cmp.Compare(x.at, y.at), cmp.Compare(x.agent, y.agent), cmp.Compare(x.seq, y.seq))
}

// scanRow is one decoded row.
type scanRow struct {
	o    analysis.Observation
	recv time.Time
}

// scanFormats asks for every column in binary but the detail JSON.
var scanFormats = []int16{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}

// partitionSpan returns the time span the results partitions cover.
func (s *Store) partitionSpan(ctx context.Context) (first, last time.Time, ok bool, err error) {
	rows, err := s.db.Query(ctx, `
		SELECT c.relname FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		JOIN pg_class p ON p.oid = i.inhparent
		WHERE p.relname = 'results'`)
	if err != nil {
		return first, last, false, s.translate("store: partitions", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return first, last, false, s.translate("store: partitions", err)
		}
		day, err := time.Parse("20060102", strings.TrimPrefix(name, "results_"))
		if err != nil {
			continue // not one of ours
		}
		if !ok || day.Before(first) {
			first = day
		}
		if end := day.AddDate(0, 0, 1); !ok || end.After(last) {
			last = end
		}
		ok = true
	}
	return first, last, ok, s.translate("store: partitions", rows.Err())
}

// names maps agent and target ids to names.
type names struct {
	agents, targets map[int64]string
}

func (s *Store) names(ctx context.Context) (names, error) {
	n := names{agents: map[int64]string{}, targets: map[int64]string{}}
	for _, q := range []struct {
		sql string
		m   map[int64]string
	}{{`SELECT id, name FROM agents`, n.agents}, {`SELECT id, name FROM targets`, n.targets}} {
		rows, err := s.db.Query(ctx, q.sql)
		if err != nil {
			return n, s.translate("store: names", err)
		}
		for rows.Next() {
			var (
				id   int64
				name string
			)
			if err := rows.Scan(&id, &name); err != nil {
				rows.Close()
				return n, s.translate("store: names", err)
			}
			q.m[id] = name
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, s.translate("store: names", err)
		}
	}
	return n, nil
}

// decoder turns binary-format rows into observations, sharing repeated
// strings between rows.
type decoder struct {
	names names
	strs  map[string]string
}

// pgEpoch is where PostgreSQL's binary timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(t time.Time) []byte { return []byte(t.UTC().Format(time.RFC3339Nano)) }

func (d *decoder) str(b []byte) string {
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.strs) < maxInterned {
		d.strs[s] = s
	}
	return s
}

func i64(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("int8 of %d bytes", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func ts(b []byte) (time.Time, error) {
	us, err := i64(b)
	if err != nil {
		return time.Time{}, err
	}
	return pgEpoch.Add(time.Duration(us) * time.Microsecond), nil
}

// inet decodes PostgreSQL's binary inet: family (2 IPv4, 3 IPv6), bits,
// is_cidr, length, address.
func inet(b []byte) (netip.Addr, error) {
	if len(b) < 4 || int(b[3]) != len(b)-4 {
		return netip.Addr{}, fmt.Errorf("inet of %d bytes", len(b))
	}
	a, ok := netip.AddrFromSlice(b[4:])
	if !ok {
		return netip.Addr{}, fmt.Errorf("inet of %d address bytes", len(b)-4)
	}
	return a, nil
}

func (d *decoder) decode(v [][]byte) (o analysis.Observation, recv time.Time, agent, seq int64, err error) {
	var id int64
	if len(v) != 14 {
		return o, recv, 0, 0, fmt.Errorf("row of %d columns", len(v))
	}
	if agent, err = i64(v[0]); err != nil {
		return
	}
	o.VantagePoint = d.names.agents[agent]
	if id, err = i64(v[1]); err != nil {
		return
	}
	o.Target = d.names.targets[id]
	if o.Address, err = inet(v[2]); err != nil {
		return
	}
	o.Kind = api.Kind(d.str(v[3]))
	o.Transport = api.Transport(d.str(v[4]))
	o.Query = d.str(v[5])
	if o.At, err = ts(v[6]); err != nil {
		return
	}
	o.Failure = api.Failure(d.str(v[7]))
	if v[8] != nil {
		o.Identity = d.str(v[8])
	}
	if v[9] != nil {
		var us int64
		if us, err = i64(v[9]); err != nil {
			return
		}
		o.RTT = time.Duration(us) * time.Microsecond
	}
	if v[10] != nil {
		var r int64
		if r, err = i64(v[10]); err != nil {
			return
		}
		o.Round = uint64(r)
	}
	if recv, err = ts(v[11]); err != nil {
		return
	}
	if seq, err = i64(v[12]); err != nil {
		return
	}
	if v[13] != nil {
		detail(&o, v[13])
	}
	return o, recv, agent, seq, nil
}

// detail fills PathEnd (traces) and Session (sessions) from a result's
// stored values. Values the agent sent malformed are ignored: they were
// validated at ingest, and analysis only loses this evidence.
func detail(o *analysis.Observation, raw []byte) {
	switch o.Kind {
	case api.KindTrace:
		var tv api.TraceValues
		if json.Unmarshal(raw, &tv) != nil {
			return
		}
		o.PathEnd = PathEnd(o.Address, tv.Hops)
	case api.KindSession:
		var sv api.SessionValues
		if json.Unmarshal(raw, &sv) != nil {
			return
		}
		ss := &analysis.Session{ClosedAt: sv.ClosedAt.UTC(), End: sv.End}
		if n := len(sv.Answers); n > 0 {
			ss.LastIdentity = sv.Answers[n-1].Identity
		}
		o.Session = ss
	}
}

// PathEnd returns the addresses of the last responding hops before dst, at
// most analysis.MaxPathEnd, nearest dst last, one per TTL.
func PathEnd(dst netip.Addr, hops []api.TraceHop) []netip.Addr {
	var out []netip.Addr
	lastTTL := -1
	for i := len(hops) - 1; i >= 0 && len(out) < analysis.MaxPathEnd; i-- {
		h := hops[i]
		if h.Addr == "" || h.TTL == lastTTL {
			continue
		}
		a, err := netip.ParseAddr(h.Addr)
		if err != nil || a.Unmap() == dst.Unmap() {
			continue
		}
		lastTTL = h.TTL
		out = append(out, a.Unmap())
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
