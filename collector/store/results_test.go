package store_test

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

func ingest(t *testing.T, st *store.Store, a store.Agent, rs []api.Result, wantAccepted, wantDup int) {
	t.Helper()
	acc, dup, err := st.Ingest(t.Context(), a, rs)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	if acc != wantAccepted || dup != wantDup {
		t.Fatalf("Ingest = %d accepted, %d duplicates; want %d, %d", acc, dup, wantAccepted, wantDup)
	}
}

func seqStats(t *testing.T, st *store.Store, agent string, wantCount, wantMax int64) {
	t.Helper()
	n, m, err := st.AgentSeqStats(t.Context(), agent)
	if err != nil {
		t.Fatal(err)
	}
	if n != wantCount || m != wantMax {
		t.Errorf("AgentSeqStats = %d results, max seq %d; want %d, %d", n, m, wantCount, wantMax)
	}
}

func TestIngestIsIdempotent(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	start := time.Now().UTC().Add(-time.Hour)
	rs := makeResults(1, 200, start)

	ingest(t, st, a, rs, 200, 0)
	ingest(t, st, a, rs, 0, 200)
	seqStats(t, st, "vp1", 200, 200)

	t.Run("half new", func(t *testing.T) {
		mixed := append(makeResults(101, 100, start.Add(100*time.Millisecond)), makeResults(201, 100, start.Add(200*time.Millisecond))...)
		ingest(t, st, a, mixed, 100, 100)
		seqStats(t, st, "vp1", 300, 300)
	})

	t.Run("duplicates within a batch", func(t *testing.T) {
		r := makeResults(301, 1, start.Add(300*time.Millisecond))
		ingest(t, st, a, []api.Result{r[0], r[0], r[0]}, 1, 2)
	})

	t.Run("agent bookkeeping", func(t *testing.T) {
		got, err := st.AgentByName(t.Context(), "vp1")
		if err != nil {
			t.Fatal(err)
		}
		if got.LastSeq != 301 || got.LastSeen == nil || time.Since(*got.LastSeen) > time.Minute {
			t.Errorf("agent after ingest: last_seq %d, last_seen %v; want 301 and just now", got.LastSeq, got.LastSeen)
		}
	})

	t.Run("concurrent re-delivery", func(t *testing.T) {
		rs := makeResults(1001, 500, start.Add(time.Second))
		var (
			wg            sync.WaitGroup
			mu            sync.Mutex
			accepted, dup int
		)
		for range 4 {
			wg.Go(func() {
				acc, d, err := st.Ingest(t.Context(), a, rs)
				if err != nil {
					t.Errorf("Ingest: %v", err)
				}
				mu.Lock()
				accepted, dup = accepted+acc, dup+d
				mu.Unlock()
			})
		}
		wg.Wait()
		if accepted != 500 || dup != 1500 {
			t.Errorf("4 concurrent deliveries: %d accepted, %d duplicates; want 500 and 1500", accepted, dup)
		}
	})
}

func TestIngestLargeBatch(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	rs := makeResults(1, api.MaxBatchResults, time.Now().UTC().Add(-2*time.Hour))
	ingest(t, st, a, rs, api.MaxBatchResults, 0)
	seqStats(t, st, "vp1", api.MaxBatchResults, api.MaxBatchResults)
}

func TestIngestUnknownTarget(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	a, _ := seed(t, st)
	rs := makeResults(1, 10, time.Now().UTC())
	rs[7].Target = "j-root"
	_, _, err := st.Ingest(t.Context(), a, rs)
	if !errors.Is(err, store.ErrUnknownTarget) || !strings.Contains(err.Error(), `"j-root"`) {
		t.Fatalf("err = %v, want ErrUnknownTarget naming j-root", err)
	}
	seqStats(t, st, "vp1", 0, 0)

	// Declared by another process (the CLI) after this store cached the names.
	j := kroot
	j.Name = "j-root"
	if _, err := openDSN(t, dsn).ApplyTargets(t.Context(), []store.Target{kroot, j}); err != nil {
		t.Fatal(err)
	}
	ingest(t, st, a, rs, 10, 0)
}

func TestIngestRetiredTarget(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	if _, err := st.ApplyTargets(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	// Results an agent spooled before the target was retired still count.
	ingest(t, st, a, makeResults(1, 3, time.Now().UTC()), 3, 0)
}

func TestIngestUnknownAgent(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	seed(t, st)
	_, _, err := st.Ingest(t.Context(), store.Agent{ID: 4242, Name: "ghost"}, makeResults(1, 3, time.Now().UTC()))
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestIngestColumns(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	a, _ := seed(t, st)
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	rs := []api.Result{
		{Seq: 1, Round: 1, MeasuredAt: at, Target: "k-root", Address: "2001:db8::53", Kind: api.KindDNS, Transport: api.TransportTCP,
			Query: api.QueryNSID, RTTMicros: 2345,
			DNS: &api.DNSValues{Rcode: "NOERROR", NSIDHex: "00ff6869", Identity: "00ff6869", Size: 120}},
		{Seq: 2, Round: 1, MeasuredAt: at, Target: "k-root", Address: "192.0.2.53", Kind: api.KindDNS, Transport: api.TransportUDP,
			Query: api.QueryIDServer, Failure: api.FailureTimeout},
		{Seq: 3, MeasuredAt: at, Target: "k-root", Address: "::ffff:192.0.2.53", Kind: api.KindDNS, Transport: api.TransportUDP,
			Query: api.QueryHostnameBind, Failure: api.FailureDNSRefused, RTTMicros: 800, DNS: &api.DNSValues{Rcode: "REFUSED"}},
	}
	ingest(t, st, a, rs, 3, 0)
	rows := sql(t, dsn, `
		SELECT seq, measured_at, host(address), kind, transport, query, failure,
		       coalesce(rtt_us::text, 'NULL'), coalesce(rcode, 'NULL'), coalesce(identity, 'NULL'),
		       coalesce(encode(nsid, 'hex'), 'NULL'), coalesce(detail::text, 'NULL'), coalesce(round, 0)
		FROM results ORDER BY seq`)
	type row struct {
		seq                                        int64
		at                                         time.Time
		addr, kind, transport, query, failure, rtt string
		rcode, identity, nsid, detail              string
		round                                      int64
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.at, &r.addr, &r.kind, &r.transport, &r.query, &r.failure, &r.rtt, &r.rcode, &r.identity, &r.nsid, &r.detail, &r.round); err != nil {
			t.Fatal(err)
		}
		r.at = r.at.UTC()
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	micro := at.Truncate(time.Microsecond)
	want := []row{
		{1, micro, "2001:db8::53", "dns", "tcp", "nsid", "", "2345", "NOERROR", "00ff6869", "00ff6869",
			`{"size": 120, "rcode": "NOERROR", "identity": "00ff6869", "nsid_hex": "00ff6869"}`, 1},
		{2, micro, "192.0.2.53", "dns", "udp", "id.server", "generic_timeout_error", "NULL", "NULL", "NULL", "NULL", "NULL", 1},
		{3, micro, "192.0.2.53", "dns", "udp", "hostname.bind", "dns_refused", "800", "REFUSED", "NULL", "NULL", `{"rcode": "REFUSED"}`, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// TestHostileStringsRoundTrip stores identities an attacker controls (they
// come from DNS answers) and reads them back byte for byte.
func TestHostileStringsRoundTrip(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	b, err := os.ReadFile("testdata/hostile-identities.json")
	if err != nil {
		t.Fatal(err)
	}
	var hostile []string
	if err := json.Unmarshal(b, &hostile); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs := makeResults(1, len(hostile), start)
	for i, h := range hostile {
		rs[i].Failure, rs[i].RTTMicros = "", 1500
		rs[i].DNS = &api.DNSValues{Rcode: "NOERROR", TXT: []string{h}, Identity: h}
		if err := rs[i].Validate(); err != nil {
			t.Fatalf("fixture %d does not validate: %v", i, err)
		}
	}
	ingest(t, st, a, rs, len(rs), 0)
	var got []analysis.Observation
	err = st.Observations(t.Context(), start, start.Add(time.Hour), "k-root", func(o analysis.Observation) error {
		got = append(got, o)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(hostile) {
		t.Fatalf("%d observations, want %d", len(got), len(hostile))
	}
	for i, h := range hostile {
		if got[i].Identity != h {
			t.Errorf("identity %d = %q, want %q", i, got[i].Identity, h)
		}
	}
}

func TestObservations(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	a, _ := seed(t, st)
	b, _, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp2"})
	if err != nil {
		t.Fatal(err)
	}
	f := kroot
	f.Name = "f-root"
	if _, err := st.ApplyTargets(ctx, []store.Target{kroot, f}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 1, 23, 59, 59, 0, time.UTC) // the batch crosses midnight
	ra := makeResults(1, 3, t0)
	rb := makeResults(1, 3, t0)
	rb[2].Target = "f-root"
	// Delivered out of order: vp2's results first, vp1's in reverse.
	ingest(t, st, b, rb, 3, 0)
	ingest(t, st, a, []api.Result{ra[2], ra[1], ra[0]}, 3, 0)

	collect := func(since, until time.Time, target string) []string {
		t.Helper()
		var out []string
		err := st.Observations(ctx, since, until, target, func(o analysis.Observation) error {
			out = append(out, o.VantagePoint+"/"+o.Target+"@"+o.At.Format("15:04:05.000"))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(strings.Join(out, " "))
	}
	check := func(name string, got []string, want string) {
		t.Helper()
		if strings.Join(got, " ") != want {
			t.Errorf("%s:\n got %v\nwant %v", name, got, want)
		}
	}
	check("all", collect(time.Time{}, time.Time{}, ""),
		"vp1/k-root@23:59:59.000 vp2/k-root@23:59:59.000 vp1/k-root@23:59:59.001 vp2/k-root@23:59:59.001 vp1/k-root@23:59:59.002 vp2/f-root@23:59:59.002")
	check("one target", collect(time.Time{}, time.Time{}, "f-root"), "vp2/f-root@23:59:59.002")
	check("since is inclusive, until exclusive", collect(t0.Add(time.Millisecond), t0.Add(2*time.Millisecond), ""),
		"vp1/k-root@23:59:59.001 vp2/k-root@23:59:59.001")

	t.Run("fields", func(t *testing.T) {
		var first analysis.Observation
		st.Observations(ctx, t0, t0.Add(time.Millisecond), "", func(o analysis.Observation) error {
			if first.VantagePoint == "" {
				first = o
			}
			return nil
		})
		want := analysis.Observation{
			VantagePoint: "vp1", Target: "k-root", Address: kroot.Addresses[0], Kind: api.KindDNS, Transport: api.TransportUDP,
			Query: api.QueryHostnameBind, At: t0, Identity: "ns1.fi-hel.k.example.net", RTT: 1001 * time.Microsecond,
		}
		if !reflect.DeepEqual(first, want) {
			t.Errorf("observation\n got %+v\nwant %+v", first, want)
		}
	})

	t.Run("fn error stops", func(t *testing.T) {
		stop := errors.New("enough")
		n := 0
		err := st.Observations(ctx, time.Time{}, time.Time{}, "", func(analysis.Observation) error { n++; return stop })
		if err != stop || n != 1 {
			t.Errorf("Observations = %v after %d calls, want the fn's error after 1", err, n)
		}
	})

	t.Run("unknown target", func(t *testing.T) {
		err := st.Observations(ctx, time.Time{}, time.Time{}, "x-root", func(analysis.Observation) error { return nil })
		if !errors.Is(err, store.ErrUnknownTarget) {
			t.Errorf("err = %v, want ErrUnknownTarget", err)
		}
	})
}

func partitionExists(t *testing.T, dsn string, day time.Time) bool {
	t.Helper()
	var ok bool
	sqlScan(t, dsn, `SELECT to_regclass('results_`+day.UTC().Format("20060102")+`') IS NOT NULL`, &ok)
	return ok
}

func TestPartitions(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	a, _ := seed(t, st)
	now := time.Now().UTC()

	t.Run("created ahead", func(t *testing.T) {
		ingest(t, st, a, makeResults(1, 1, now), 1, 0)
		for _, d := range []time.Time{now, now.AddDate(0, 0, 1)} {
			if !partitionExists(t, dsn, d) {
				t.Errorf("no partition for %s after ingesting a result of today", d.Format(time.DateOnly))
			}
		}
	})

	t.Run("far in the past", func(t *testing.T) {
		old := now.AddDate(0, 0, -20)
		if partitionExists(t, dsn, old) {
			t.Fatal("the partition of 20 days ago exists before any result needs it")
		}
		ingest(t, st, a, makeResults(2, 1, old), 1, 0)
		if !partitionExists(t, dsn, old) {
			t.Errorf("no partition for %s", old.Format(time.DateOnly))
		}
		if partitionExists(t, dsn, old.AddDate(0, 0, -1)) || partitionExists(t, dsn, old.AddDate(0, 0, 5)) {
			t.Error("partitions created for days no result needs")
		}
	})

	t.Run("dropped behind the store's back", func(t *testing.T) {
		old := now.AddDate(0, 0, -20)
		sql(t, dsn, `DROP TABLE results_`+old.Format("20060102")).Close()
		ingest(t, st, a, makeResults(3, 1, old), 1, 0)
		if !partitionExists(t, dsn, old) {
			t.Error("partition not re-created")
		}
	})

	t.Run("ensure ahead of time", func(t *testing.T) {
		from := now.AddDate(0, 0, 3)
		n, err := st.EnsurePartitions(t.Context(), from, from.AddDate(0, 0, 6))
		if err != nil || n != 8 { // 7 days and the one after
			t.Fatalf("EnsurePartitions = %d, %v; want 8 created", n, err)
		}
		n, err = st.EnsurePartitions(t.Context(), from, from.AddDate(0, 0, 6))
		if err != nil || n != 0 {
			t.Fatalf("again: %d, %v; want 0", n, err)
		}
	})
}

func TestCopyRaw(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	a, _ := seed(t, st)
	rs := makeResults(1, 1000, time.Now().UTC().Add(-time.Minute))
	n, err := st.CopyRaw(t.Context(), a.ID, rs)
	if err != nil || n != 1000 {
		t.Fatalf("CopyRaw = %d, %v; want 1000", n, err)
	}
	seqStats(t, st, "vp1", 1000, 1000)
	if _, err := st.CopyRaw(t.Context(), a.ID, rs[:1]); !errors.Is(err, store.ErrExists) {
		t.Errorf("CopyRaw of a stored result: %v, want ErrExists (COPY has no conflict handling)", err)
	}
	ingest(t, st, a, rs, 0, 1000)
}

// TestIngestTraceAndSession: trace hops land one row per probe (a star as a
// NULL hop) and a session as a record of its own; re-delivery adds nothing.
func TestIngestTraceAndSession(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	a, _ := seed(t, st)
	at := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	rs := []api.Result{
		{Seq: 1, MeasuredAt: at, Target: "k-root", Address: "192.0.2.53", Kind: api.KindTrace, Transport: api.TransportUDP,
			Query: api.QueryParis, RTTMicros: 900, Trace: &api.TraceValues{Flow: "udp sport=40000 dport=33435", Stop: "reached", Reached: true,
				Hops: []api.TraceHop{
					{TTL: 1, Addr: "198.18.0.1", RTTUS: 100, ICMPType: 11, ReplyTTL: 64},
					{TTL: 2, Addr: "::ffff:198.18.0.9", RTTUS: 300, ICMPType: 11, ReplyTTL: 63},
					{TTL: 2, Attempt: 1},
					{TTL: 3, Addr: "192.0.2.53", RTTUS: 900, ICMPType: 3, ICMPCode: 3, MPLS: []api.MPLS{{Label: 16, S: true, TTL: 1}}},
				}}},
		{Seq: 2, MeasuredAt: at.Add(time.Second), Target: "k-root", Address: "2001:db8::53", Kind: api.KindSession, Transport: api.TransportTCP,
			Query: api.QuerySessionDNS, RTTMicros: 1200, Session: &api.SessionValues{
				OpenedAt: at.Add(time.Second), ClosedAt: at.Add(time.Minute), Queries: 3, End: api.EndReset,
				Answers: []api.SessionAnswer{{At: at.Add(time.Second), Identity: "ams-1"}, {At: at.Add(6 * time.Second), Identity: "ams-1"}}}},
	}
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	ingest(t, st, a, rs, 2, 0)
	ingest(t, st, a, rs, 0, 2)
	var hops, stars, mpls, sessions int
	var end, first string
	sqlScan(t, dsn, `SELECT count(*), count(*) FILTER (WHERE hop IS NULL), count(mpls) FROM trace_hops`, &hops, &stars, &mpls)
	sqlScan(t, dsn, `SELECT count(*), min(end_reason), min(first_identity) FROM sessions`, &sessions, &end, &first)
	if hops != 4 || stars != 1 || mpls != 1 {
		t.Errorf("trace_hops: %d rows, %d stars, %d with MPLS; want 4, 1, 1", hops, stars, mpls)
	}
	var mapped string
	sqlScan(t, dsn, `SELECT host(hop) FROM trace_hops WHERE ttl = 2 AND hop IS NOT NULL`, &mapped)
	if mapped != "198.18.0.9" {
		t.Errorf("a hop sent as ::ffff:198.18.0.9 is stored as %s, want 198.18.0.9", mapped)
	}
	if sessions != 1 || end != api.EndReset || first != "ams-1" {
		t.Errorf("sessions: %d rows, end %q, first identity %q", sessions, end, first)
	}
	var identity string
	sqlScan(t, dsn, `SELECT identity FROM results WHERE kind = 'session'`, &identity)
	if identity != "ams-1" {
		t.Errorf("session result identity %q, want its first answer's", identity)
	}
}
