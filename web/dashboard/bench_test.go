package dashboard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis/synth"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/web/dashboard"
)

// BenchmarkCatchmentPage measures the catchment page (and its JSON twin,
// what the replay slider fetches) of a target with 12,000 vantage points
// and 50 sites: two hourly catchment windows of three streams each, 72,000
// rows, read from PostgreSQL, the map drawn, the page rendered. The
// dashboard must answer it in at most 2 s; compare ns/op.
func BenchmarkCatchmentPage(b *testing.B) {
	const vps, sites = 12_000, 50
	ctx := context.Background()
	dsn := pgtest.DB(b)
	st, err := store.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	h1 := now.Truncate(time.Hour).Add(-time.Hour)
	h0 := h1.Add(-time.Hour)
	w, err := synth.New(synth.Config{Seed: 1, Sites: sites, VantagePoints: vps, Targets: 1, Start: h0, Duration: 2 * time.Hour, Interval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	target := w.Targets()[0]

	// 12,000 agents in one statement (AddAgent would mint a token each).
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	var names []string
	var lats, lons []float64
	for _, v := range w.VantagePoints() {
		names, lats, lons = append(names, v.Name), append(lats, v.Latitude), append(lons, v.Longitude)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO agents (name, latitude, longitude) SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[])`,
		names, lats, lons); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)
	if _, err := st.ApplyTargets(ctx, []store.Target{{Name: target.Name, Addresses: target.Addresses, Probes: []string{"dns"},
		Interval: 30 * time.Second, Sites: target.Sites}}); err != nil {
		b.Fatal(err)
	}
	var rows []store.CatchmentRow
	for _, ws := range []time.Time{h0, h1} {
		for _, v := range w.VantagePoints() {
			site, ok := w.Truth(target.Name, v.Name, ws.Add(30*time.Minute))
			if !ok {
				continue
			}
			for _, q := range []string{api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID} {
				rows = append(rows, store.CatchmentRow{VantagePoint: v.Name, Target: target.Name, Address: target.Addresses[0],
					Kind: api.KindDNS, Transport: api.TransportUDP, Query: q, Site: site, Observations: 120, Confidence: 1,
					WindowStart: ws, WindowEnd: ws.Add(time.Hour)})
			}
		}
	}
	if saved, err := st.SaveFindings(ctx, store.Findings{Catchments: rows}); err != nil || saved.Catchments != len(rows) {
		b.Fatalf("SaveFindings: %+v, %v", saved, err)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)

	d, err := dashboard.New(st, dashboard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	h := d.Handler()
	for _, bc := range []struct{ name, path string }{
		{"page", "/targets/" + target.Name},
		{"json", "/data/targets/" + target.Name + "/catchment"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequestWithContext(b.Context(), http.MethodGet, bc.path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/page")
		})
	}
}
