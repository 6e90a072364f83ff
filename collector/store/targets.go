package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Target is an anycast service to measure, as declared by the operator.
type Target struct {
	Name      string
	Addresses []netip.Addr
	Probes    []string // probe kinds, e.g. "dns"
	Interval  time.Duration
	NSIDQName string // "" means "."
	Rules     []analysis.Rule
	Sites     []analysis.Site // this target's own sites
	// HTTP says how the http and session probes reach the target; nil when
	// it has none.
	HTTP *api.HTTPSpec
	// SessionLife is how long a long-lived session lasts before the agent
	// reconnects; 0 leaves it to the agent.
	SessionLife time.Duration
}

// ApplyResult names the targets an ApplyTargets changed, or not.
type ApplyResult struct {
	Created, Updated, Unchanged, Retired []string
}

// rule is the JSON form of an identity rule in targets.identity_rules.
type rule struct {
	Pattern string `json:"pattern"`
	Site    string `json:"site"`
}

func (t *Target) normalize() error {
	if !api.ValidName(t.Name) {
		return fmt.Errorf("%w: target name %q: want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit", ErrInvalid, api.Clip(t.Name))
	}
	if len(t.Addresses) == 0 {
		return fmt.Errorf("%w: target %s has no addresses", ErrInvalid, t.Name)
	}
	addrs := make([]netip.Addr, len(t.Addresses))
	for i, a := range t.Addresses {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("%w: target %s: address %d is not an IPv4 or IPv6 address", ErrInvalid, t.Name, i)
		}
		addrs[i] = a.Unmap()
	}
	t.Addresses = addrs
	if len(t.Probes) == 0 {
		return fmt.Errorf("%w: target %s has no probe kinds", ErrInvalid, t.Name)
	}
	if t.Interval <= 0 {
		return fmt.Errorf("%w: target %s: interval %s is not positive", ErrInvalid, t.Name, t.Interval)
	}
	if t.NSIDQName == "" {
		t.NSIDQName = "."
	}
	codes := map[string]bool{}
	for _, s := range t.Sites {
		if s.Code == "" {
			return fmt.Errorf("%w: target %s: a site has no code", ErrInvalid, t.Name)
		}
		if codes[s.Code] {
			return fmt.Errorf("%w: target %s: site %s listed twice", ErrInvalid, t.Name, s.Code)
		}
		codes[s.Code] = true
		if s.HasCoords && (math.IsNaN(s.Latitude) || math.IsNaN(s.Longitude) ||
			s.Latitude < -90 || s.Latitude > 90 || s.Longitude < -180 || s.Longitude > 180) {
			return fmt.Errorf("%w: target %s: site %s: coordinates %g,%g out of range", ErrInvalid, t.Name, s.Code, s.Latitude, s.Longitude)
		}
	}
	for _, r := range t.Rules {
		if r.Pattern == "" {
			return fmt.Errorf("%w: target %s: an identity rule has no pattern", ErrInvalid, t.Name)
		}
	}
	return nil
}

// same reports whether two normalized targets are declared alike.
func (t *Target) same(u *Target) bool {
	return t.Name == u.Name && slices.Equal(t.Addresses, u.Addresses) && slices.Equal(t.Probes, u.Probes) &&
		t.Interval.Seconds() == u.Interval.Seconds() && t.NSIDQName == u.NSIDQName &&
		slices.Equal(t.Rules, u.Rules) && slices.Equal(t.Sites, u.Sites) &&
		t.SessionLife == u.SessionLife && string(httpJSON(t.HTTP)) == string(httpJSON(u.HTTP))
}

// httpJSON is the stored form of an HTTP spec (NULL when nil).
func httpJSON(h *api.HTTPSpec) []byte {
	if h == nil {
		return nil
	}
	b, _ := json.Marshal(h) // strings and ints only: cannot fail
	return b
}

// storedTarget is a row of targets with its sites.
type storedTarget struct {
	Target
	id      int64
	retired *time.Time
}

// ApplyTargets makes the stored targets match ts, in one transaction: new
// names are created, changed ones updated (and un-retired), and targets
// missing from ts retired, never deleted, since results refer to them. Each
// target's sites are replaced by its declared ones. Concurrent applies are
// serialised.
func (s *Store) ApplyTargets(ctx context.Context, ts []Target) (ApplyResult, error) {
	const op = "store: apply targets"
	var res ApplyResult
	want := make([]Target, len(ts))
	seen := map[string]bool{}
	for i, t := range ts {
		t.Addresses, t.Probes, t.Rules, t.Sites = slices.Clone(t.Addresses), slices.Clone(t.Probes), slices.Clone(t.Rules), slices.Clone(t.Sites)
		if err := t.normalize(); err != nil {
			return res, fmt.Errorf("%s: %w", op, err)
		}
		if seen[t.Name] {
			return res, fmt.Errorf("%s: %w: target %s declared twice", op, ErrInvalid, t.Name)
		}
		seen[t.Name] = true
		want[i] = t
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE targets IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return err
		}
		have, err := loadTargets(ctx, tx, false)
		if err != nil {
			return err
		}
		byName := map[string]*storedTarget{}
		for i := range have {
			byName[have[i].Name] = &have[i]
		}
		for i := range want {
			t := &want[i]
			old := byName[t.Name]
			switch {
			case old == nil:
				if err := insertTarget(ctx, tx, t); err != nil {
					return err
				}
				res.Created = append(res.Created, t.Name)
			case old.retired == nil && old.same(t):
				res.Unchanged = append(res.Unchanged, t.Name)
			default:
				if err := updateTarget(ctx, tx, old, t); err != nil {
					return err
				}
				res.Updated = append(res.Updated, t.Name)
			}
		}
		for _, old := range have {
			if old.retired == nil && !seen[old.Name] {
				if _, err := tx.Exec(ctx, `UPDATE targets SET retired_at = now() WHERE id = $1`, old.id); err != nil {
					return err
				}
				res.Retired = append(res.Retired, old.Name)
			}
		}
		return nil
	})
	if err != nil {
		return ApplyResult{}, s.translate(op, err)
	}
	s.mu.Lock()
	s.targetIDs = map[string]int64{}
	s.mu.Unlock()
	return res, nil
}

func rulesJSON(rs []analysis.Rule) []byte {
	out := make([]rule, len(rs))
	for i, r := range rs {
		out[i] = rule(r)
	}
	b, _ := json.Marshal(out) // strings only: cannot fail
	return b
}

func insertTarget(ctx context.Context, tx pgx.Tx, t *Target) error {
	var id int64
	err := tx.QueryRow(ctx, `
		INSERT INTO targets (name, addresses, probes, interval_seconds, nsid_qname, identity_rules, http, session_life_seconds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
		t.Name, t.Addresses, t.Probes, t.Interval.Seconds(), t.NSIDQName, rulesJSON(t.Rules), httpJSON(t.HTTP), t.SessionLife.Seconds()).Scan(&id)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	return insertSites(ctx, tx, id, t)
}

func updateTarget(ctx context.Context, tx pgx.Tx, old *storedTarget, t *Target) error {
	_, err := tx.Exec(ctx, `
		UPDATE targets SET addresses = $2, probes = $3, interval_seconds = $4, nsid_qname = $5,
			identity_rules = $6, http = $7, session_life_seconds = $8, updated_at = now(), retired_at = NULL
		WHERE id = $1`,
		old.id, t.Addresses, t.Probes, t.Interval.Seconds(), t.NSIDQName, rulesJSON(t.Rules), httpJSON(t.HTTP), t.SessionLife.Seconds())
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	if slices.Equal(old.Sites, t.Sites) {
		return nil
	}
	if _, err := tx.Exec(ctx, `DELETE FROM sites WHERE target_id = $1`, old.id); err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	return insertSites(ctx, tx, old.id, t)
}

func insertSites(ctx context.Context, tx pgx.Tx, targetID int64, t *Target) error {
	if len(t.Sites) == 0 {
		return nil
	}
	codes := make([]string, len(t.Sites))
	names := make([]string, len(t.Sites))
	lats := make([]*float64, len(t.Sites))
	lons := make([]*float64, len(t.Sites))
	for i, s := range t.Sites {
		codes[i], names[i] = s.Code, s.Name
		if s.HasCoords {
			lats[i], lons[i] = &t.Sites[i].Latitude, &t.Sites[i].Longitude
		}
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO sites (target_id, code, name, latitude, longitude)
		SELECT $1, code, name, lat, lon
		FROM unnest($2::text[], $3::text[], $4::float8[], $5::float8[]) WITH ORDINALITY AS s(code, name, lat, lon, i)
		ORDER BY i`,
		targetID, codes, names, lats, lons)
	if err != nil {
		return fmt.Errorf("target %s: sites: %w", t.Name, err)
	}
	return nil
}

// loadTargets reads targets (only active ones if active) with their own
// sites, by name; global sites (target_id NULL) are not included.
func loadTargets(ctx context.Context, db DBTX, active bool) ([]storedTarget, error) {
	rows, err := db.Query(ctx, `
		SELECT id, name, addresses, probes, interval_seconds, nsid_qname, identity_rules, retired_at, http, session_life_seconds
		FROM targets WHERE NOT $1 OR retired_at IS NULL ORDER BY name`, active)
	if err != nil {
		return nil, err
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedTarget, error) {
		var (
			t     storedTarget
			secs  float64
			rules []rule
			life  float64
		)
		err := r.Scan(&t.id, &t.Name, &t.Addresses, &t.Probes, &secs, &t.NSIDQName, &rules, &t.retired, &t.HTTP, &life)
		t.Interval = time.Duration(math.Round(secs * float64(time.Second)))
		t.SessionLife = time.Duration(math.Round(life * float64(time.Second)))
		for _, ru := range rules {
			t.Rules = append(t.Rules, analysis.Rule(ru))
		}
		return t, err
	})
	if err != nil {
		return nil, err
	}
	byID := make(map[int64]*storedTarget, len(ts))
	for i := range ts {
		byID[ts[i].id] = &ts[i]
	}
	rows, err = db.Query(ctx, `SELECT target_id, code, name, latitude, longitude FROM sites WHERE target_id IS NOT NULL ORDER BY target_id, id`)
	if err != nil {
		return nil, err
	}
	var (
		tid      int64
		site     analysis.Site
		lat, lon *float64
	)
	_, err = pgx.ForEachRow(rows, []any{&tid, &site.Code, &site.Name, &lat, &lon}, func() error {
		t := byID[tid]
		if t == nil {
			return nil
		}
		s := site
		if lat != nil && lon != nil {
			s.Latitude, s.Longitude, s.HasCoords = *lat, *lon, true
		}
		t.Sites = append(t.Sites, s)
		return nil
	})
	return ts, err
}

// ActiveTargets returns the targets agents measure (not retired), by name.
func (s *Store) ActiveTargets(ctx context.Context) ([]Target, error) {
	st, err := loadTargets(ctx, s.db, true)
	if err != nil {
		return nil, s.translate("store: active targets", err)
	}
	out := make([]Target, len(st))
	for i := range st {
		out[i] = st[i].Target
	}
	return out, nil
}

// Targets returns every target, retired ones too (their results remain),
// with its identity rules and sites: its own, then the global sites whose
// codes it does not declare itself. It implements analysis.Source.
func (s *Store) Targets(ctx context.Context) ([]analysis.Target, error) {
	const op = "store: targets"
	st, err := loadTargets(ctx, s.db, false)
	if err != nil {
		return nil, s.translate(op, err)
	}
	rows, err := s.db.Query(ctx, `SELECT code, name, latitude, longitude FROM sites WHERE target_id IS NULL ORDER BY code`)
	if err != nil {
		return nil, s.translate(op, err)
	}
	global, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (analysis.Site, error) {
		var (
			s        analysis.Site
			lat, lon *float64
		)
		err := r.Scan(&s.Code, &s.Name, &lat, &lon)
		if lat != nil && lon != nil {
			s.Latitude, s.Longitude, s.HasCoords = *lat, *lon, true
		}
		return s, err
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	out := make([]analysis.Target, len(st))
	for i, t := range st {
		at := analysis.Target{Name: t.Name, Addresses: t.Addresses, Rules: t.Rules, Sites: t.Sites}
		for _, g := range global {
			if !slices.ContainsFunc(t.Sites, func(s analysis.Site) bool { return s.Code == g.Code }) {
				at.Sites = append(at.Sites, g)
			}
		}
		out[i] = at
	}
	return out, nil
}

// targetID returns the id of the named target (retired ones too), reloading
// the name → id map when the name is not in it.
func (s *Store) targetID(ctx context.Context, name string) (int64, error) {
	s.mu.Lock()
	id, ok := s.targetIDs[name]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	rows, err := s.db.Query(ctx, `SELECT name, id FROM targets`)
	if err != nil {
		return 0, s.translate("store: targets", err)
	}
	m := map[string]int64{}
	var (
		n string
		i int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&n, &i}, func() error { m[n] = i; return nil }); err != nil {
		return 0, s.translate("store: targets", err)
	}
	s.mu.Lock()
	s.targetIDs = m
	s.mu.Unlock()
	if id, ok := m[name]; ok {
		return id, nil
	}
	return 0, fmt.Errorf("target %q: %w", api.Clip(name), ErrUnknownTarget)
}
