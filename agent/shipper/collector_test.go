package shipper

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/spool"
	realcollector "github.com/anyscope/anyscope/collector"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// loseFirstAnswer serves the results endpoint with next but, the first
// time, cuts the connection after the collector committed the batch and
// before the agent reads the acknowledgement.
type loseFirstAnswer struct {
	next http.Handler
	once sync.Once
}

func (l *loseFirstAnswer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lose := false
	if r.URL.Path == api.PathResults {
		l.once.Do(func() { lose = true })
	}
	if !lose {
		l.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	l.next.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		panic("the batch was not stored: " + rec.Body.String())
	}
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

// Against the real collector and PostgreSQL: a spool that dropped its
// oldest results ships the gap with what it kept; the first acknowledgement
// is lost after the commit, so everything is sent again; in the end every
// sequence number is a stored result or inside the stored gap, once, and
// the spool forgot the gap.
func TestShipGapsToCollector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	_, tok, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp-test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyTargets(ctx, []store.Target{{Name: "k-root", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Probes: []string{"dns"}, Interval: 30 * time.Second, NSIDQName: "."}}); err != nil {
		t.Fatal(err)
	}
	col, err := realcollector.New(st, realcollector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&loseFirstAnswer{next: col.Handler()})
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	sp := fullSpool(t, dir, 30)
	gap := sp.PendingGaps(10)[0]
	c, err := NewClient(ClientOptions{URL: srv.URL, Token: tok, Agent: "vp-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(sp, c, Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	if gs := sp.PendingGaps(10); len(gs) != 0 || pendingCount(sp) != 0 {
		t.Errorf("after the flush: gaps %+v, %d results pending", gs, pendingCount(sp))
	}
	if got := counter(t, reg, "anyscope_shipper_uploads_total", "network_error"); got != 1 {
		t.Errorf("%v uploads lost their answer, want 1", got)
	}
	if got, want := plainCounter(t, reg, "anyscope_shipper_results_duplicate_total"), float64(30-gap.LastSeq); got != want {
		t.Errorf("%v results acknowledged as duplicates, want %v (the batch whose answer was lost, sent again)", got, want)
	}
	sp.Close()
	sp, err = spool.Open(dir, spool.Options{SegmentBytes: 1024, MaxBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if gs := sp.PendingGaps(10); len(gs) != 0 {
		t.Errorf("after a restart the spool still has gaps %+v", gs)
	}

	acc, err := st.SeqAccounting(ctx, "vp-test")
	if err != nil {
		t.Fatal(err)
	}
	want := store.SeqAccount{Highest: 30, Stored: int64(30 - gap.LastSeq), Rows: int64(30 - gap.LastSeq),
		InGaps: int64(gap.Count), Gaps: 1, Lost: int64(gap.Count)}
	if acc != want {
		t.Errorf("SeqAccounting = %+v\n            want %+v", acc, want)
	}
	gs, err := st.Gaps(ctx, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].FirstSeq != gap.FirstSeq || gs[0].LastSeq != gap.LastSeq || gs[0].Reason != api.GapSpoolFull ||
		!gs[0].LostFrom.Equal(gap.LostFrom.Truncate(time.Microsecond)) {
		t.Errorf("stored gaps %+v, want %+v", gs, gap)
	}
}

// plainCounter reads a counter without labels from reg.
func plainCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
