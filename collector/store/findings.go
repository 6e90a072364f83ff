package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Findings are the analyzer's outputs for one window, as stored.
type Findings struct {
	// Since and Until bound the window the findings cover. Catchment rows
	// are stored under window_start = Since.
	Since, Until time.Time
	// Replace deletes what an earlier analysis stored for the window first
	// (catchments of this window_start, switches at and incidents started
	// in [Since, Until)): a one-shot recomputation. Without it, rows are
	// upserted: an incremental run updates what it saw change.
	Replace    bool
	Catchments []CatchmentRow
	Switches   []SwitchRow
	Incidents  []analysis.Incident
	// DeleteIncidents are keys (IncidentKey) of incidents stored earlier
	// that analysis no longer finds: an incident whose start moved as late
	// results arrived, or that merged into another.
	DeleteIncidents []string
	// Analyzer and ReceivedThrough, when both set, record in the same
	// transaction how far the named incremental analyzer has read.
	Analyzer        string
	ReceivedThrough time.Time
	// MeasuredThrough is the newest measurement time the analyzer has seen
	// (kept when zero or older than what is stored).
	MeasuredThrough time.Time
}

// CatchmentRow is the site one stream of a vantage point named over a
// window.
type CatchmentRow struct {
	VantagePoint, Target string
	Address              netip.Addr
	Kind                 api.Kind
	Transport            api.Transport
	Query                string
	Site                 string
	Observations         int
	Confidence           float64
	// WindowStart and WindowEnd default to Findings.Since and Until.
	WindowStart, WindowEnd time.Time
}

// SwitchRow is one PoP switch and its cause.
type SwitchRow struct {
	VantagePoint, Target string
	Address              netip.Addr
	Kind                 api.Kind
	Transport            api.Transport
	Query                string
	At, LastFrom         time.Time
	From, To             string
	Cause                analysis.Cause
	CauseDetail          string
	TCPBroke             bool
	Failures             int
}

// SaveStats counts what SaveFindings wrote.
type SaveStats struct {
	Catchments, Switches, Incidents int
	// Unknown counts rows skipped because their vantage point or target is
	// not in the database.
	Unknown int
}

// IncidentKey is the stable identity of an incident across re-analysis.
func IncidentKey(in analysis.Incident) string {
	who := in.Site
	if in.Kind == analysis.IncidentVantagePoint && len(in.VantagePoints) > 0 {
		who = in.VantagePoints[0]
	}
	addr := ""
	if in.Address.IsValid() {
		addr = in.Address.String()
	}
	return strings.Join([]string{string(in.Kind), in.Target, addr, who, in.Start.UTC().Format(time.RFC3339Nano)}, "|")
}

// SaveFindings writes f in one transaction.
func (s *Store) SaveFindings(ctx context.Context, f Findings) (SaveStats, error) {
	const op = "store: save findings"
	var st SaveStats
	names, err := s.names(ctx)
	if err != nil {
		return st, fmt.Errorf("%s: %w", op, err)
	}
	agentID, targetID := invert(names.agents), invert(names.targets)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return st, s.translate(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	since, until := f.Since.UTC(), f.Until.UTC()
	if f.Replace {
		for _, q := range []string{
			`DELETE FROM catchments WHERE window_start = $1`,
			`DELETE FROM switches WHERE at >= $1 AND at < $2`,
			`DELETE FROM incidents WHERE started_at >= $1 AND started_at < $2`,
		} {
			args := []any{since}
			if strings.Contains(q, "$2") {
				args = append(args, until)
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return st, s.translate(op, err)
			}
		}
	}

	if len(f.Catchments) > 0 {
		rows := make([][]any, 0, len(f.Catchments))
		for _, c := range f.Catchments {
			a, ok1 := agentID[c.VantagePoint]
			t, ok2 := targetID[c.Target]
			if !ok1 || !ok2 || c.Site == "" {
				st.Unknown += b2i(!ok1 || !ok2)
				continue
			}
			ws, we := since, until
			if !c.WindowStart.IsZero() {
				ws, we = c.WindowStart.UTC(), c.WindowEnd.UTC()
			}
			rows = append(rows, []any{a, t, c.Address, string(c.Kind), string(c.Transport), c.Query, ws, we, c.Site, c.Observations, min(max(c.Confidence, 0), 1)})
		}
		if err := upsert(ctx, tx, "catchments", []string{"agent_id", "target_id", "address", "kind", "transport", "query", "window_start", "window_end", "site", "observations", "confidence"},
			"agent_id, window_start, target_id, address, kind, transport, query",
			"window_end = EXCLUDED.window_end, site = EXCLUDED.site, observations = EXCLUDED.observations, confidence = EXCLUDED.confidence, computed_at = now()", rows); err != nil {
			return st, s.translate(op, err)
		}
		st.Catchments = len(rows)
	}

	if len(f.Switches) > 0 {
		rows := make([][]any, 0, len(f.Switches))
		for _, w := range f.Switches {
			a, ok1 := agentID[w.VantagePoint]
			t, ok2 := targetID[w.Target]
			if !ok1 || !ok2 {
				st.Unknown++
				continue
			}
			cause := w.Cause
			if cause == "" {
				cause = analysis.CauseUnknown
			}
			rows = append(rows, []any{a, t, w.Address, string(w.Kind), string(w.Transport), w.Query, w.At.UTC(), w.From, w.To, w.LastFrom.UTC(), string(cause), w.TCPBroke, w.Failures, w.CauseDetail})
		}
		if err := upsert(ctx, tx, "switches", []string{"agent_id", "target_id", "address", "kind", "transport", "query", "at", "from_site", "to_site", "last_from", "cause", "tcp_broke", "failures", "cause_detail"},
			"agent_id, at, target_id, address, kind, transport, query",
			"from_site = EXCLUDED.from_site, to_site = EXCLUDED.to_site, last_from = EXCLUDED.last_from, cause = EXCLUDED.cause, tcp_broke = EXCLUDED.tcp_broke, failures = EXCLUDED.failures, cause_detail = EXCLUDED.cause_detail", rows); err != nil {
			return st, s.translate(op, err)
		}
		st.Switches = len(rows)
	}

	if len(f.DeleteIncidents) > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM incidents WHERE key = ANY($1)`, f.DeleteIncidents); err != nil {
			return st, s.translate(op, err)
		}
	}
	for _, in := range f.Incidents {
		var tid *int64
		if in.Target != "" {
			t, ok := targetID[in.Target]
			if !ok {
				st.Unknown++
				continue
			}
			tid = &t
		}
		var addr *netip.Addr
		if in.Address.IsValid() {
			a := in.Address
			addr = &a
		}
		var end *time.Time
		if !in.End.IsZero() {
			e := in.End.UTC()
			end = &e
		}
		ids := make([]int64, 0, len(in.VantagePoints))
		for _, vp := range in.VantagePoints {
			if id, ok := agentID[vp]; ok {
				ids = append(ids, id)
			}
		}
		ev, err := json.Marshal(in.Evidence)
		if err != nil {
			return st, fmt.Errorf("%s: evidence: %w", op, err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO incidents (key, kind, target_id, address, site, started_at, ended_at, agent_ids, vantage_points, evidence)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (key, started_at) DO UPDATE SET ended_at = EXCLUDED.ended_at, agent_ids = EXCLUDED.agent_ids,
				vantage_points = EXCLUDED.vantage_points, evidence = EXCLUDED.evidence, updated_at = now()`,
			IncidentKey(in), string(in.Kind), tid, addr, in.Site, in.Start.UTC(), end, ids, in.VantagePoints, ev); err != nil {
			return st, s.translate(op, err)
		}
		st.Incidents++
	}

	if f.Analyzer != "" && !f.ReceivedThrough.IsZero() {
		var measured *time.Time
		if !f.MeasuredThrough.IsZero() {
			m := f.MeasuredThrough.UTC()
			measured = &m
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO analysis_state (name, received_through, measured_through) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET received_through = EXCLUDED.received_through,
				measured_through = GREATEST(analysis_state.measured_through, EXCLUDED.measured_through), updated_at = now()`,
			f.Analyzer, f.ReceivedThrough.UTC(), measured); err != nil {
			return st, s.translate(op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return st, s.translate(op, err)
	}
	return st, nil
}

// upsert copies rows into a temporary table shaped like table, then inserts
// them, updating the rows whose key exists.
func upsert(ctx context.Context, tx pgx.Tx, table string, cols []string, key, set string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	stage := "stage_" + table
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s INCLUDING DEFAULTS) ON COMMIT DROP`, stage, table)); err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, cols, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	c := strings.Join(cols, ", ")
	// The same key twice in one batch would make ON CONFLICT fail: keep one.
	_, err := tx.Exec(ctx, fmt.Sprintf(`
		INSERT INTO %s (%s) SELECT DISTINCT ON (%s) %s FROM %s ORDER BY %s
		ON CONFLICT (%s) DO UPDATE SET %s`, table, c, key, c, stage, key, key, set))
	return err
}

// AnalyzerState returns how far the named incremental analyzer has read
// (by receive time) and the newest measurement time it saw; zero times
// when it never ran.
func (s *Store) AnalyzerState(ctx context.Context, name string) (received, measured time.Time, err error) {
	var m *time.Time
	err = s.db.QueryRow(ctx, `SELECT received_through, measured_through FROM analysis_state WHERE name = $1`, name).Scan(&received, &m)
	if err == pgx.ErrNoRows {
		return time.Time{}, time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, time.Time{}, s.translate("store: analyzer state", err)
	}
	if m != nil {
		measured = m.UTC()
	}
	return received.UTC(), measured, nil
}

// StoredIncidents returns the incidents stored for target ("" for all)
// that overlap [since, until), oldest first.
func (s *Store) StoredIncidents(ctx context.Context, target string, since, until time.Time) ([]analysis.Incident, error) {
	const op = "store: incidents"
	rows, err := s.db.Query(ctx, `
		SELECT i.kind, coalesce(t.name, ''), i.address, i.site, i.started_at, i.ended_at, i.vantage_points, i.evidence
		FROM incidents i LEFT JOIN targets t ON t.id = i.target_id
		WHERE ($1 = '' OR t.name = $1) AND i.started_at < $3 AND (i.ended_at IS NULL OR i.ended_at >= $2)
		ORDER BY i.started_at, i.kind, t.name, i.site`, target, since.UTC(), until.UTC())
	if err != nil {
		return nil, s.translate(op, err)
	}
	defer rows.Close()
	var out []analysis.Incident
	for rows.Next() {
		var (
			in   analysis.Incident
			kind string
			addr *netip.Addr
			end  *time.Time
			ev   []byte
		)
		if err := rows.Scan(&kind, &in.Target, &addr, &in.Site, &in.Start, &end, &in.VantagePoints, &ev); err != nil {
			return nil, s.translate(op, err)
		}
		in.Kind, in.Start = analysis.IncidentKind(kind), in.Start.UTC()
		if addr != nil {
			in.Address = *addr
		}
		if end != nil {
			in.End = end.UTC()
		}
		if err := json.Unmarshal(ev, &in.Evidence); err != nil {
			return nil, fmt.Errorf("%s: evidence: %w", op, err)
		}
		slices.Sort(in.VantagePoints)
		out = append(out, in)
	}
	return out, s.translate(op, rows.Err())
}

func invert(m map[int64]string) map[string]int64 {
	out := make(map[string]int64, len(m))
	for id, name := range m {
		out[name] = id
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
