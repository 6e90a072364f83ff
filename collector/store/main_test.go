package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open returns a store on a fresh migrated database, and that database's DSN.
func open(t testing.TB) (*store.Store, string) {
	t.Helper()
	dsn := pgtest.DB(t)
	return openDSN(t, dsn), dsn
}

func openDSN(t testing.TB, dsn string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// sql runs a statement directly, for checks the store's API does not offer.
func sql(t testing.TB, dsn, query string, args ...any) pgx.Rows {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	rows, err := conn.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return rows
}

func sqlScan(t testing.TB, dsn, query string, dest ...any) {
	t.Helper()
	rows := sql(t, dsn, query)
	if !rows.Next() {
		t.Fatalf("%s: no row (%v)", query, rows.Err())
	}
	if err := rows.Scan(dest...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	rows.Close()
}

var kroot = store.Target{
	Name:      "k-root",
	Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")},
	Probes:    []string{"dns"},
	Interval:  30 * time.Second,
	Rules:     []analysis.Rule{{Pattern: `^ns\d\.(?P<site>[a-z]{2}-[a-z]{3})\.k\.example\.net$`, Site: "${site}"}},
	Sites: []analysis.Site{
		{Code: "FI-HEL", Name: "Helsinki", Latitude: 60.17, Longitude: 24.94, HasCoords: true},
		{Code: "NL-AMS", Name: "Amsterdam"},
	},
}

// seed registers agent vp1 and target k-root.
func seed(t testing.TB, st *store.Store) (store.Agent, string) {
	t.Helper()
	a, token, err := st.AddAgent(context.Background(), store.AgentSpec{Name: "vp1", Provider: "example", Region: "eu"})
	if err != nil {
		t.Fatalf("AddAgent: %v", err)
	}
	if _, err := st.ApplyTargets(context.Background(), []store.Target{kroot}); err != nil {
		t.Fatalf("ApplyTargets: %v", err)
	}
	return a, token
}

// makeResults returns n valid results with sequence numbers first,
// first+1, …, one millisecond apart from start.
func makeResults(first uint64, n int, start time.Time) []api.Result {
	rs := make([]api.Result, n)
	for i := range rs {
		seq := first + uint64(i)
		r := api.Result{
			Seq: seq, MeasuredAt: start.Add(time.Duration(i) * time.Millisecond),
			Target: "k-root", Address: "192.0.2.53",
			Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			RTTMicros: 1000 + int64(seq%5000),
			DNS: &api.DNSValues{
				Rcode: "NOERROR", TXT: []string{fmt.Sprintf("ns%d.fi-hel.k.example.net", seq%3)},
				Identity: fmt.Sprintf("ns%d.fi-hel.k.example.net", seq%3), Size: 90,
			},
		}
		if seq%7 == 0 {
			r.Transport, r.Query = api.TransportTCP, api.QueryNSID
			r.DNS.TXT, r.DNS.NSIDHex, r.DNS.NSIDText, r.DNS.Identity = nil, "6869", "hi", "hi"
		}
		if seq%11 == 0 {
			r.RTTMicros, r.Failure, r.DNS = 0, api.FailureTimeout, nil
		}
		if err := r.Validate(); err != nil {
			panic(err)
		}
		rs[i] = r
	}
	return rs
}
