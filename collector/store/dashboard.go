package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// The dashboard's reads are bounded: each returns at most these many rows
// (and says when it stopped there), so one page never reads a table whole.
const (
	// MaxCatchmentEntries bounds a catchment snapshot (vantage point ×
	// address pairs).
	MaxCatchmentEntries = 100_000
	// MaxSwitches bounds one read of switches.
	MaxSwitches = 50_000
	// MaxIncidents bounds one read of incidents.
	MaxIncidents = 5_000
	// MaxAgentsHealth bounds one read of agents' health.
	MaxAgentsHealth = 10_000
	// MaxRecentResults bounds a vantage point's recent results.
	MaxRecentResults = 1_000
	// LagSample is how many of an agent's results received in the last hour
	// (the most recently measured) its upload lag is computed from.
	LagSample = 2_000
	// maxStreams bounds a vantage point's current catchment per stream.
	maxStreams = 1_000
)

// HealthHorizon is how far back AgentsHealth looks for an agent's newest
// measurement, and VantagePointCatchments, RecentResults and LastTrace for
// what a vantage point measured: older data is history, not health.
const HealthHorizon = 7 * 24 * time.Hour

// CatchmentEntry is the site that served one vantage point on one address
// of a target in a catchment window: the site most of the pair's streams
// (kind, transport, query) named, ties going to the one with most
// observations.
type CatchmentEntry struct {
	VantagePoint        string
	Latitude, Longitude *float64 // the vantage point's location; nil when unknown
	Address             netip.Addr
	Site                string
	// Streams and Observations are behind Site; TotalStreams and
	// TotalObservations count every stream of the pair in the window.
	Streams, TotalStreams           int
	Observations, TotalObservations int
	// Confidence is the analysis' confidence in Site, averaged over the
	// streams that named it, weighted by their observations.
	Confidence             float64
	WindowStart, WindowEnd time.Time
}

// CatchmentSnapshot is a target's catchment as of a time.
type CatchmentSnapshot struct {
	Target string
	At     time.Time
	// WindowStart and WindowEnd are those of the latest window that starts
	// at or before At (zero when the target has none).
	WindowStart, WindowEnd time.Time
	// Entries, by vantage point then address.
	Entries []CatchmentEntry
	// Truncated: more than MaxCatchmentEntries pairs; the rest are missing.
	Truncated bool
}

// catchmentWindows finds the latest catchment window of a target that
// starts at or before $2, and the one before it: two probes of the
// (target_id, window_start) index.
const catchmentWindows = `
SELECT w1.ws, (SELECT max(window_start) FROM catchments WHERE target_id = $1 AND window_start < w1.ws)
FROM (SELECT max(window_start) AS ws FROM catchments WHERE target_id = $1 AND window_start <= $2) w1`

// catchmentAt picks, for every (vantage point, address) pair of a target,
// the rows of the latest window ($3) and its majority site over the pair's
// streams. The latest window may have just begun (the incremental analyzer
// fills hourly windows as results arrive), so a pair missing from it keeps
// its row of the window before, if that one reaches the latest ($2 holds
// both; as parameters they are index conditions).
const catchmentAt = `
WITH picked AS (
	SELECT c.agent_id, c.address, c.site, c.observations, c.confidence, c.window_start, c.window_end,
	       max(c.window_start) OVER (PARTITION BY c.agent_id, c.address) AS newest
	FROM catchments c
	WHERE c.target_id = $1 AND c.window_start = ANY ($2::timestamptz[]) AND (c.window_start = $3 OR c.window_end >= $3)
), votes AS (
	SELECT agent_id, address, site, window_start, max(window_end) AS window_end,
	       count(*) AS streams, sum(observations)::bigint AS obs,
	       coalesce(sum(confidence * observations) / nullif(sum(observations), 0), 0)::float8 AS conf
	FROM picked WHERE window_start = newest
	GROUP BY agent_id, address, site, window_start
)
SELECT DISTINCT ON (v.agent_id, v.address)
	a.name, a.latitude, a.longitude, v.address, v.site,
	v.streams, (sum(v.streams) OVER w)::bigint, v.obs, (sum(v.obs) OVER w)::bigint, v.conf,
	v.window_start, v.window_end
FROM votes v JOIN agents a ON a.id = v.agent_id
WINDOW w AS (PARTITION BY v.agent_id, v.address)
ORDER BY v.agent_id, v.address, v.streams DESC, v.obs DESC, v.site
LIMIT $4`

// CatchmentAt returns the target's catchment as of at: per vantage point
// and address, the site of the latest catchment window that starts at or
// before at, with the vantage points' locations. ErrNotFound when the
// target does not exist.
func (s *Store) CatchmentAt(ctx context.Context, target string, at time.Time) (CatchmentSnapshot, error) {
	const op = "store: catchment"
	snap := CatchmentSnapshot{Target: target, At: at.UTC()}
	tid, err := s.dashboardTarget(ctx, target)
	if err != nil {
		return snap, fmt.Errorf("%s: %w", op, err)
	}
	var latest, before *time.Time
	if err := s.db.QueryRow(ctx, catchmentWindows, tid, at.UTC()).Scan(&latest, &before); err != nil {
		return snap, s.translate(op, err)
	}
	if latest == nil {
		return snap, nil // no window yet
	}
	windows := []time.Time{*latest}
	if before != nil {
		windows = append(windows, *before)
	}
	rows, err := s.db.Query(ctx, catchmentAt, tid, windows, *latest, MaxCatchmentEntries+1)
	if err != nil {
		return snap, s.translate(op, err)
	}
	var e CatchmentEntry
	var streams, totalStreams, obs, totalObs int64
	_, err = pgx.ForEachRow(rows, []any{&e.VantagePoint, &e.Latitude, &e.Longitude, &e.Address, &e.Site,
		&streams, &totalStreams, &obs, &totalObs, &e.Confidence, &e.WindowStart, &e.WindowEnd}, func() error {
		c := e
		c.Streams, c.TotalStreams, c.Observations, c.TotalObservations = int(streams), int(totalStreams), int(obs), int(totalObs)
		c.WindowStart, c.WindowEnd = c.WindowStart.UTC(), c.WindowEnd.UTC()
		if c.Latitude != nil {
			lat := *c.Latitude
			c.Latitude = &lat
		}
		if c.Longitude != nil {
			lon := *c.Longitude
			c.Longitude = &lon
		}
		snap.Entries = append(snap.Entries, c)
		if c.WindowStart.After(snap.WindowStart) {
			snap.WindowStart, snap.WindowEnd = c.WindowStart, c.WindowEnd
		}
		return nil
	})
	if err != nil {
		return snap, s.translate(op, err)
	}
	if len(snap.Entries) > MaxCatchmentEntries {
		snap.Entries, snap.Truncated = snap.Entries[:MaxCatchmentEntries], true
	}
	slices.SortFunc(snap.Entries, func(x, y CatchmentEntry) int {
		if c := strings.Compare(x.VantagePoint, y.VantagePoint); c != 0 {
			return c
		}
		return x.Address.Compare(y.Address)
	})
	return snap, nil
}

// SwitchQuery selects switches.
type SwitchQuery struct {
	// Target and VantagePoint restrict the switches to one target or one
	// vantage point; "" for all. ErrNotFound when a name does not exist.
	Target, VantagePoint string
	// Since and Until bound the switch time to [Since, Until).
	Since, Until time.Time
	// Limit caps the rows (0 or more than MaxSwitches: MaxSwitches).
	Limit int
	// Newest returns the latest switches first (else the oldest first).
	Newest bool
}

// Switches returns the switches q selects, in time order (newest first
// with q.Newest), and whether more matched than q.Limit.
func (s *Store) Switches(ctx context.Context, q SwitchQuery) ([]SwitchRow, bool, error) {
	const op = "store: switches"
	limit := q.Limit
	if limit <= 0 || limit > MaxSwitches {
		limit = MaxSwitches
	}
	cond := []string{"s.at >= $1", "s.at < $2"}
	args := []any{q.Since.UTC(), q.Until.UTC()}
	if q.Target != "" {
		tid, err := s.dashboardTarget(ctx, q.Target)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		args = append(args, tid)
		cond = append(cond, fmt.Sprintf("s.target_id = $%d", len(args)))
	}
	if q.VantagePoint != "" {
		a, err := s.AgentByName(ctx, q.VantagePoint)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		args = append(args, a.ID)
		cond = append(cond, fmt.Sprintf("s.agent_id = $%d", len(args)))
	}
	order := "s.at, a.name, s.address, s.kind, s.transport, s.query"
	if q.Newest {
		order = "s.at DESC, a.name, s.address, s.kind, s.transport, s.query"
	}
	args = append(args, limit+1)
	rows, err := s.db.Query(ctx, `
		SELECT a.name, t.name, s.address, s.kind, s.transport, s.query, s.at, s.last_from,
		       s.from_site, s.to_site, s.cause, s.cause_detail, s.tcp_broke, s.failures
		FROM switches s JOIN agents a ON a.id = s.agent_id JOIN targets t ON t.id = s.target_id
		WHERE `+strings.Join(cond, " AND ")+`
		ORDER BY `+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, false, s.translate(op, err)
	}
	var (
		out                    []SwitchRow
		w                      SwitchRow
		kind, transport, cause string
		failures               int32
	)
	_, err = pgx.ForEachRow(rows, []any{&w.VantagePoint, &w.Target, &w.Address, &kind, &transport, &w.Query, &w.At, &w.LastFrom,
		&w.From, &w.To, &cause, &w.CauseDetail, &w.TCPBroke, &failures}, func() error {
		r := w
		r.Kind, r.Transport, r.Cause, r.Failures = api.Kind(kind), api.Transport(transport), analysis.Cause(cause), int(failures)
		r.At, r.LastFrom = r.At.UTC(), r.LastFrom.UTC()
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, false, s.translate(op, err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// IncidentQuery selects incidents.
type IncidentQuery struct {
	// Target restricts the incidents to one target ("" for all, including
	// vantage-point incidents, which belong to none). ErrNotFound when it
	// does not exist.
	Target string
	// Since and Until: incidents that overlap [Since, Until).
	Since, Until time.Time
	// Open keeps only the incidents that have not ended.
	Open bool
	// Limit caps the rows (0 or more than MaxIncidents: MaxIncidents).
	Limit int
}

// StoredIncident is an incident as stored, with its key (IncidentKey) and
// when analysis last updated it.
type StoredIncident struct {
	Key string
	analysis.Incident
	UpdatedAt time.Time
}

// Incidents returns the incidents q selects, the latest started first, and
// whether more matched than q.Limit.
func (s *Store) Incidents(ctx context.Context, q IncidentQuery) ([]StoredIncident, bool, error) {
	const op = "store: incidents"
	limit := q.Limit
	if limit <= 0 || limit > MaxIncidents {
		limit = MaxIncidents
	}
	cond := []string{"i.started_at < $1", "(i.ended_at IS NULL OR i.ended_at >= $2)"}
	args := []any{q.Until.UTC(), q.Since.UTC()}
	if q.Open {
		cond = append(cond, "i.ended_at IS NULL")
	}
	if q.Target != "" {
		tid, err := s.dashboardTarget(ctx, q.Target)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", op, err)
		}
		args = append(args, tid)
		cond = append(cond, fmt.Sprintf("i.target_id = $%d", len(args)))
	}
	args = append(args, limit+1)
	rows, err := s.db.Query(ctx, `
		SELECT i.key, i.kind, coalesce(t.name, ''), i.address, i.site, i.started_at, i.ended_at,
		       i.vantage_points, i.evidence, i.updated_at
		FROM incidents i LEFT JOIN targets t ON t.id = i.target_id
		WHERE `+strings.Join(cond, " AND ")+`
		ORDER BY i.started_at DESC, i.key`+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, false, s.translate(op, err)
	}
	defer rows.Close()
	var out []StoredIncident
	for rows.Next() {
		var (
			in   StoredIncident
			kind string
			addr *netip.Addr
			end  *time.Time
			ev   []byte
		)
		if err := rows.Scan(&in.Key, &kind, &in.Target, &addr, &in.Site, &in.Start, &end, &in.VantagePoints, &ev, &in.UpdatedAt); err != nil {
			return nil, false, s.translate(op, err)
		}
		in.Kind, in.Start, in.UpdatedAt = analysis.IncidentKind(kind), in.Start.UTC(), in.UpdatedAt.UTC()
		if addr != nil {
			in.Address = *addr
		}
		if end != nil {
			in.End = end.UTC()
		}
		if err := json.Unmarshal(ev, &in.Evidence); err != nil {
			return nil, false, fmt.Errorf("%s: incident %s: evidence: %w", op, api.Clip(in.Key), err)
		}
		slices.Sort(in.VantagePoints)
		out = append(out, in)
	}
	if err := rows.Err(); err != nil {
		return nil, false, s.translate(op, err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// AgentHealth is how an agent is doing: when it last uploaded, what it
// measured last, and how late its results arrive. A growing upload lag
// means results wait in its spool (a backlog: the collector was
// unreachable, or the uplink is too slow for what it measures).
type AgentHealth struct {
	Name                string
	Latitude, Longitude *float64
	Provider, Region    string
	LastSeen            *time.Time // last upload; nil: never
	LastSeq             int64
	// NewestMeasured is the latest measurement time stored for the agent
	// within HealthHorizon; nil when there is none.
	NewestMeasured *time.Time
	// Received counts the results received in the hour before the read
	// (at most LagSample of them, the most recently measured); LagMedian and
	// LagMax are their upload lag, received − measured.
	Received          int
	LagMedian, LagMax time.Duration
}

// AgentsHealth returns the health of the agents as of now, by name, at most
// limit of them (0 or more than MaxAgentsHealth: MaxAgentsHealth), and how
// many agents there are.
func (s *Store) AgentsHealth(ctx context.Context, now time.Time, limit int) ([]AgentHealth, int, error) {
	const op = "store: agents health"
	if limit <= 0 || limit > MaxAgentsHealth {
		limit = MaxAgentsHealth
	}
	var total int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM agents`).Scan(&total); err != nil {
		return nil, 0, s.translate(op, err)
	}
	now = now.UTC()
	rows, err := s.db.Query(ctx, `
		SELECT a.name, a.latitude, a.longitude, a.provider, a.region, a.last_seen, a.last_seq,
		       n.newest, coalesce(l.received, 0), coalesce(l.median, 0), coalesce(l.max, 0)
		FROM agents a
		LEFT JOIN LATERAL (
			SELECT max(r.measured_at) AS newest FROM results r
			WHERE r.agent_id = a.id AND r.measured_at >= $1
		) n ON true
		LEFT JOIN LATERAL (
			SELECT count(*) AS received,
			       percentile_cont(0.5) WITHIN GROUP (ORDER BY x.lag) AS median,
			       max(x.lag) AS max
			FROM (SELECT extract(epoch FROM r.received_at - r.measured_at)::float8 AS lag
			      FROM results r
			      WHERE r.agent_id = a.id AND r.measured_at >= $1 AND r.received_at >= $2
			      ORDER BY r.measured_at DESC LIMIT $3) x
		) l ON true
		ORDER BY a.name
		LIMIT $4`, now.Add(-HealthHorizon), now.Add(-time.Hour), LagSample, limit)
	if err != nil {
		return nil, 0, s.translate(op, err)
	}
	var (
		out        []AgentHealth
		h          AgentHealth
		received   int64
		median, mx float64
	)
	_, err = pgx.ForEachRow(rows, []any{&h.Name, &h.Latitude, &h.Longitude, &h.Provider, &h.Region, &h.LastSeen, &h.LastSeq,
		&h.NewestMeasured, &received, &median, &mx}, func() error {
		a := h
		a.Latitude, a.Longitude = clonePtr(h.Latitude), clonePtr(h.Longitude)
		a.LastSeen, a.NewestMeasured = utcPtr(h.LastSeen), utcPtr(h.NewestMeasured)
		a.Received = int(received)
		a.LagMedian, a.LagMax = seconds(median), seconds(mx)
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, 0, s.translate(op, err)
	}
	return out, total, nil
}

// RecentResult is one stored observation of a vantage point.
type RecentResult struct {
	Target     string
	Address    netip.Addr
	Kind       api.Kind
	Transport  api.Transport
	Query      string
	Seq        int64
	MeasuredAt time.Time
	ReceivedAt time.Time
	Failure    api.Failure
	Rcode      string
	// Identity is the string that named the server (untrusted text).
	Identity string
	// RTT is zero when the probe failed before an answer.
	RTT time.Duration
}

// RecentResults returns the vantage point's latest results measured within
// HealthHorizon before now, newest first, at most limit (0 or more than
// MaxRecentResults: MaxRecentResults). ErrNotFound when it does not exist.
func (s *Store) RecentResults(ctx context.Context, vantagePoint string, now time.Time, limit int) ([]RecentResult, error) {
	const op = "store: recent results"
	if limit <= 0 || limit > MaxRecentResults {
		limit = MaxRecentResults
	}
	a, err := s.AgentByName(ctx, vantagePoint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rows, err := s.db.Query(ctx, `
		SELECT t.name, r.address, r.kind, r.transport, r.query, r.seq, r.measured_at, r.received_at,
		       r.failure, coalesce(r.rcode, ''), coalesce(r.identity, ''), coalesce(r.rtt_us, 0)
		FROM results r JOIN targets t ON t.id = r.target_id
		WHERE r.agent_id = $1 AND r.measured_at >= $2
		ORDER BY r.measured_at DESC, r.seq DESC
		LIMIT $3`, a.ID, now.UTC().Add(-HealthHorizon), limit)
	if err != nil {
		return nil, s.translate(op, err)
	}
	var (
		out                      []RecentResult
		r                        RecentResult
		kind, transport, failure string
		rtt                      int64
	)
	_, err = pgx.ForEachRow(rows, []any{&r.Target, &r.Address, &kind, &transport, &r.Query, &r.Seq, &r.MeasuredAt, &r.ReceivedAt,
		&failure, &r.Rcode, &r.Identity, &rtt}, func() error {
		x := r
		x.Kind, x.Transport, x.Failure = api.Kind(kind), api.Transport(transport), api.Failure(failure)
		x.MeasuredAt, x.ReceivedAt, x.RTT = x.MeasuredAt.UTC(), x.ReceivedAt.UTC(), time.Duration(rtt)*time.Microsecond
		out = append(out, x)
		return nil
	})
	return out, s.translate(op, err)
}

// Trace is one stored Paris traceroute with its hops.
type Trace struct {
	Target     string
	Address    netip.Addr
	Transport  api.Transport
	Seq        int64
	MeasuredAt time.Time
	Failure    api.Failure
	// Flow, Stop and Reached as the agent reported them (api.TraceValues).
	Flow, Stop string
	Reached    bool
	Hops       []TraceHop
}

// TraceHop is one probe of a traceroute; Addr is invalid for a star.
type TraceHop struct {
	TTL, Attempt int
	Addr         netip.Addr
	RTT          time.Duration
	ICMPType     int
	ICMPCode     int
	ReplyTTL     int
}

// maxTraceHops bounds the hops read of one trace (255 TTLs, a few
// attempts each).
const maxTraceHops = 2_000

// LastTrace returns the vantage point's latest traceroute measured within
// HealthHorizon before now; false when there is none. ErrNotFound when the
// vantage point does not exist.
func (s *Store) LastTrace(ctx context.Context, vantagePoint string, now time.Time) (Trace, bool, error) {
	const op = "store: last trace"
	var tr Trace
	a, err := s.AgentByName(ctx, vantagePoint)
	if err != nil {
		return tr, false, fmt.Errorf("%s: %w", op, err)
	}
	// The hops table is keyed by (agent, time, seq): its index finds the
	// latest trace without reading the agent's other results.
	err = s.db.QueryRow(ctx, `
		SELECT measured_at, seq FROM trace_hops
		WHERE agent_id = $1 AND measured_at >= $2
		ORDER BY measured_at DESC, seq DESC LIMIT 1`, a.ID, now.UTC().Add(-HealthHorizon)).Scan(&tr.MeasuredAt, &tr.Seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return tr, false, nil
	}
	if err != nil {
		return tr, false, s.translate(op, err)
	}
	var transport, failure string
	err = s.db.QueryRow(ctx, `
		SELECT t.name, r.address, r.transport, r.failure, coalesce(r.detail->>'flow', ''), coalesce(r.detail->>'stop', ''),
		       coalesce((r.detail->>'reached')::boolean, false)
		FROM results r JOIN targets t ON t.id = r.target_id
		WHERE r.agent_id = $1 AND r.measured_at = $2 AND r.seq = $3`, a.ID, tr.MeasuredAt, tr.Seq).
		Scan(&tr.Target, &tr.Address, &transport, &failure, &tr.Flow, &tr.Stop, &tr.Reached)
	if errors.Is(err, pgx.ErrNoRows) {
		// Hops without their result: not written by Ingest, which stores both
		// in one transaction. Show the hops anyway.
		err = nil
	}
	if err != nil {
		return tr, false, s.translate(op, err)
	}
	tr.Transport, tr.Failure, tr.MeasuredAt = api.Transport(transport), api.Failure(failure), tr.MeasuredAt.UTC()
	rows, err := s.db.Query(ctx, `
		SELECT ttl, attempt, hop, coalesce(rtt_us, 0), coalesce(icmp_type, 0), coalesce(icmp_code, 0), coalesce(reply_ttl, 0)
		FROM trace_hops WHERE agent_id = $1 AND measured_at = $2 AND seq = $3
		ORDER BY ttl, attempt LIMIT $4`, a.ID, tr.MeasuredAt, tr.Seq, maxTraceHops)
	if err != nil {
		return tr, false, s.translate(op, err)
	}
	var (
		ttl, attempt, it, ic, rttl int32
		hop                        *netip.Addr
		rtt                        int64
	)
	_, err = pgx.ForEachRow(rows, []any{&ttl, &attempt, &hop, &rtt, &it, &ic, &rttl}, func() error {
		h := TraceHop{TTL: int(ttl), Attempt: int(attempt), RTT: time.Duration(rtt) * time.Microsecond,
			ICMPType: int(it), ICMPCode: int(ic), ReplyTTL: int(rttl)}
		if hop != nil {
			h.Addr = *hop
		}
		tr.Hops = append(tr.Hops, h)
		return nil
	})
	if err != nil {
		return tr, false, s.translate(op, err)
	}
	return tr, true, nil
}

// StreamCatchment is the site one stream of a vantage point named in its
// latest catchment window.
type StreamCatchment struct {
	Target                 string
	Address                netip.Addr
	Kind                   api.Kind
	Transport              api.Transport
	Query                  string
	Site                   string
	Observations           int
	Confidence             float64
	WindowStart, WindowEnd time.Time
}

// VantagePointCatchments returns, for every stream of the vantage point,
// the site of its latest catchment window that starts at or before at and
// within HealthHorizon of it, by target, address and stream. ErrNotFound
// when the vantage point does not exist.
func (s *Store) VantagePointCatchments(ctx context.Context, vantagePoint string, at time.Time) ([]StreamCatchment, error) {
	const op = "store: vantage point catchments"
	a, err := s.AgentByName(ctx, vantagePoint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rows, err := s.db.Query(ctx, `
		SELECT t.name, x.address, x.kind, x.transport, x.query, x.site, x.observations, x.confidence, x.window_start, x.window_end
		FROM (
			SELECT DISTINCT ON (c.target_id, c.address, c.kind, c.transport, c.query) c.*
			FROM catchments c
			WHERE c.agent_id = $1 AND c.window_start <= $2 AND c.window_start >= $3
			ORDER BY c.target_id, c.address, c.kind, c.transport, c.query, c.window_start DESC
		) x JOIN targets t ON t.id = x.target_id
		ORDER BY t.name, x.address, x.kind, x.transport, x.query
		LIMIT $4`, a.ID, at.UTC(), at.UTC().Add(-HealthHorizon), maxStreams)
	if err != nil {
		return nil, s.translate(op, err)
	}
	var (
		out             []StreamCatchment
		c               StreamCatchment
		kind, transport string
		obs             int32
	)
	_, err = pgx.ForEachRow(rows, []any{&c.Target, &c.Address, &kind, &transport, &c.Query, &c.Site, &obs, &c.Confidence,
		&c.WindowStart, &c.WindowEnd}, func() error {
		x := c
		x.Kind, x.Transport, x.Observations = api.Kind(kind), api.Transport(transport), int(obs)
		x.WindowStart, x.WindowEnd = x.WindowStart.UTC(), x.WindowEnd.UTC()
		out = append(out, x)
		return nil
	})
	return out, s.translate(op, err)
}

// dashboardTarget resolves a target name for a read; an unknown name is
// ErrNotFound (and ErrUnknownTarget).
func (s *Store) dashboardTarget(ctx context.Context, name string) (int64, error) {
	id, err := s.targetID(ctx, name)
	if errors.Is(err, ErrUnknownTarget) {
		return 0, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return id, err
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// seconds converts a number of seconds to a duration, rounded to the
// microsecond (what timestamptz holds).
func seconds(f float64) time.Duration {
	return time.Duration(f*1e6) * time.Microsecond
}
