package store

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
)

// Observations calls fn for every stored result measured in [since, until)
// (a zero time leaves that end open), of the named target or of all targets
// when target is "", in order of measured_at, then agent, then sequence. Rows
// stream from the database; nothing is collected in memory. An error from
// fn stops the iteration and is returned as is. It implements
// analysis.Source.
func (s *Store) Observations(ctx context.Context, since, until time.Time, target string, fn func(analysis.Observation) error) error {
	_, err := s.Scan(ctx, ScanOptions{Since: since, Until: until, Target: target}, fn)
	return err
}

// VantagePoints lists every agent with its location. Imported probes keep
// their ASN in the provider column ("AS64496") and their country in region;
// both are read back from there. It implements analysis.VantagePointSource.
func (s *Store) VantagePoints(ctx context.Context) ([]analysis.VantagePoint, error) {
	const op = "store: vantage points"
	rows, err := s.db.Query(ctx, `SELECT name, latitude, longitude, provider, region FROM agents ORDER BY name`)
	if err != nil {
		return nil, s.translate(op, err)
	}
	defer rows.Close()
	var out []analysis.VantagePoint
	for rows.Next() {
		var (
			vp               analysis.VantagePoint
			lat, lon         *float64
			provider, region string
		)
		if err := rows.Scan(&vp.Name, &lat, &lon, &provider, &region); err != nil {
			return nil, s.translate(op, err)
		}
		if lat != nil && lon != nil {
			vp.Latitude, vp.Longitude, vp.HasCoords = *lat, *lon, true
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(provider, "AS")); err == nil && strings.HasPrefix(provider, "AS") && n > 0 {
			vp.ASN = n
		}
		if len(region) == 2 && strings.ToUpper(region) == region {
			vp.Country = region
		}
		out = append(out, vp)
	}
	return out, s.translate(op, rows.Err())
}
