package store

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ImportedInterval is the interval recorded for targets created by an
// import (the period of RIPE Atlas's built-in measurements): the schema
// needs one, nothing schedules by it.
const ImportedInterval = 240 // seconds

// EnsureVantagePoint makes sure an imported vantage point (e.g. a RIPE
// Atlas probe, "atlas-<prb_id>") exists as an agent, without a token: it
// cannot upload, it only owns imported results. When the agent exists, the
// location, AS and country given replace the stored ones; those not given
// (nil coordinates, asn 0, country "") are left as they are.
//
// The agents table has no AS or country column: the AS is kept in provider
// as "AS<n>" and the country (ISO 3166 alpha-2) in region, where an agent's
// own configuration puts its hosting provider and region.
func (s *Store) EnsureVantagePoint(ctx context.Context, name string, lat, lon *float64, asn int, country string) (Agent, error) {
	const op = "store: ensure vantage point"
	spec := AgentSpec{Name: name, Latitude: lat, Longitude: lon, Region: country}
	if asn < 0 || int64(asn) > 1<<32-1 {
		return Agent{}, fmt.Errorf("%s: %w: AS number %d out of range", op, ErrInvalid, asn)
	}
	if asn > 0 {
		spec.Provider = fmt.Sprintf("AS%d", asn)
	}
	if err := spec.validate(); err != nil {
		return Agent{}, fmt.Errorf("%s: %w", op, err)
	}
	a, err := scanAgent(s.db.QueryRow(ctx, `
		INSERT INTO agents AS a (name, latitude, longitude, provider, region)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (name) DO UPDATE SET
			latitude  = coalesce(EXCLUDED.latitude, a.latitude),
			longitude = coalesce(EXCLUDED.longitude, a.longitude),
			provider  = CASE WHEN EXCLUDED.provider <> '' THEN EXCLUDED.provider ELSE a.provider END,
			region    = CASE WHEN EXCLUDED.region <> '' THEN EXCLUDED.region ELSE a.region END
		RETURNING `+agentColumns,
		spec.Name, spec.Latitude, spec.Longitude, spec.Provider, spec.Region))
	if err != nil {
		return Agent{}, s.translate(op, err)
	}
	return a, nil
}

// EnsureTarget makes sure a target of imported results exists: when the
// name is new it creates it with addrs and probes (probe kinds; "dns" when
// none are given) and the ImportedInterval, and when it exists it adds the
// addresses and probe kinds it lacks. Unlike ApplyTargets it never retires
// or otherwise changes another target.
//
// A target it creates is created retired: imported results belong to it,
// but the collector does not put it in any agent's schedule (every active
// target is in every schedule). `anyscope targets apply` with a file that
// declares the name adopts it like any other target. Addresses added to an
// existing active target do enter the schedules (agents still probe only
// what their allow-lists permit).
func (s *Store) EnsureTarget(ctx context.Context, name string, addrs []netip.Addr, probes ...string) error {
	const op = "store: ensure target"
	if !api.ValidName(name) {
		return fmt.Errorf("%s: %w: target name %q: want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit", op, ErrInvalid, api.Clip(name))
	}
	as := []netip.Addr{}
	for i, a := range addrs {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("%s: %w: target %s: address %d is not an IPv4 or IPv6 address", op, ErrInvalid, name, i)
		}
		if a = a.Unmap(); !slices.Contains(as, a) {
			as = append(as, a)
		}
	}
	ps := []string{}
	for _, p := range probes {
		if !slices.Contains(api.Kinds, api.Kind(p)) {
			return fmt.Errorf("%s: %w: target %s: probe kind %q", op, ErrInvalid, name, api.Clip(p))
		}
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		ps = []string{string(api.KindDNS)}
	}
	if len(as) == 0 {
		// Nothing to add; a target cannot be created without an address.
		var exists bool
		if err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM targets WHERE name = $1)`, name).Scan(&exists); err != nil {
			return s.translate(op, err)
		}
		if !exists {
			return fmt.Errorf("%s: %w: target %s has no addresses", op, ErrInvalid, name)
		}
	}
	tag, err := s.db.Exec(ctx, `
		INSERT INTO targets (name, addresses, probes, interval_seconds, retired_at)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (name) DO NOTHING`,
		name, as, ps, float64(ImportedInterval))
	if err != nil {
		return s.translate(op, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// It exists: append what it lacks, under the row's lock, keeping the
	// order of what it has.
	_, err = s.db.Exec(ctx, `
		UPDATE targets t SET
			addresses  = t.addresses || ARRAY(SELECT a FROM unnest($2::inet[]) WITH ORDINALITY AS u(a, i) WHERE NOT a = ANY (t.addresses) ORDER BY i),
			probes     = t.probes || ARRAY(SELECT p FROM unnest($3::text[]) WITH ORDINALITY AS u(p, i) WHERE NOT p = ANY (t.probes) ORDER BY i),
			updated_at = now()
		WHERE t.name = $1 AND NOT (t.addresses @> $2::inet[] AND t.probes @> $3::text[])`,
		name, as, ps)
	return s.translate(op, err)
}
