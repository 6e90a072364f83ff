package shipper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// fullSpool returns a spool capped at two 1 KiB segments into which n
// results were appended one at a time, with nobody draining it: it dropped
// its oldest results and recorded them as one gap.
func fullSpool(t *testing.T, dir string, n int) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 1024, MaxBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	start := time.Now().UTC().Add(-time.Hour)
	for i := range n {
		r := result(i)
		r.MeasuredAt = start.Add(time.Duration(i) * time.Second)
		if _, err := sp.Append([]api.Result{r}); err != nil {
			t.Fatal(err)
		}
	}
	if gs := sp.PendingGaps(10); len(gs) != 1 || gs[0].FirstSeq != 1 {
		t.Fatalf("spool of %d results capped at 2 KiB has gaps %+v, want one from seq 1", n, gs)
	}
	return sp
}

func TestShipGaps(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t, "500", "nogaps")
	sp := fullSpool(t, t.TempDir(), 30)
	gap := sp.PendingGaps(10)[0]
	s, logs, _ := newShipper(t, sp, srv.URL, Options{})

	// Failed uploads, or an answer that does not acknowledge the gaps,
	// keep them.
	for range 2 {
		if _, err := s.ShipOnce(context.Background()); err == nil {
			t.Fatal("ShipOnce succeeded against a failing collector")
		}
		if gs := sp.PendingGaps(10); len(gs) != 1 {
			t.Fatalf("gaps after a failed upload: %+v", gs)
		}
	}
	flush(t, s)
	if gs := sp.PendingGaps(10); len(gs) != 0 {
		t.Errorf("gaps after the collector acknowledged them: %+v", gs)
	}
	if pendingCount(sp) != 0 {
		t.Errorf("%d results pending", pendingCount(sp))
	}
	col.mu.Lock()
	got, ok := col.gaps[1]
	col.mu.Unlock()
	if !ok || got.LastSeq != gap.LastSeq || got.Count != gap.Count || got.Reason != api.GapSpoolFull {
		t.Errorf("collector holds gap %+v, want %+v", got, gap)
	}
	// Everything the spool numbered is accounted for.
	stored := col.storedSeqs()
	if want := seqRange(gap.LastSeq+1, 30); !slices.Equal(stored, want) {
		t.Errorf("collector stored %v, want %v", stored, want)
	}
	if !strings.Contains(logs.String(), "reported results lost at this agent") {
		t.Errorf("delivery of the gap not logged:\n%s", logs)
	}
}

// A gap is shipped when no result is pending.
func TestShipGapAlone(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t)
	sp := fullSpool(t, t.TempDir(), 30)
	if err := sp.Ack(30); err != nil {
		t.Fatal(err)
	}
	s, _, _ := newShipper(t, sp, srv.URL, Options{})
	n, err := s.ShipOnce(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("ShipOnce = %d, %v; want one gap shipped", n, err)
	}
	if b := col.batches[0]; len(b.Results) != 0 || b.Results == nil || len(b.Gaps) != 1 {
		t.Errorf("batch %+v: want no results ([]) and the gap", b)
	}
	if n, err := s.ShipOnce(context.Background()); n != 0 || err != nil {
		t.Errorf("second ShipOnce = %d, %v; want nothing left", n, err)
	}
}

// An upload whose acknowledgement is lost is sent again, gaps included, and
// the gaps are forgotten only after an acknowledgement arrives; they
// survive a restart of the agent meanwhile.
func TestGapsSurviveRestartUntilAcknowledged(t *testing.T) {
	t.Parallel()
	col, srv := newCollector(t, "hangup")
	dir := t.TempDir()
	sp := fullSpool(t, dir, 30)
	gap := sp.PendingGaps(10)[0]
	s, _, _ := newShipper(t, sp, srv.URL, Options{})
	if _, err := s.ShipOnce(context.Background()); err == nil {
		t.Fatal("ShipOnce succeeded although the connection was cut")
	}
	sp.Close()

	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 1024, MaxBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	if gs := sp.PendingGaps(10); len(gs) != 1 || gs[0] != gap {
		t.Fatalf("after a restart the spool has gaps %+v, want %+v", gs, gap)
	}
	s, _, _ = newShipper(t, sp, srv.URL, Options{})
	flush(t, s)
	if gs := sp.PendingGaps(10); len(gs) != 0 {
		t.Errorf("gaps after delivery: %+v", gs)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.gaps) != 1 {
		t.Errorf("collector holds %d gaps", len(col.gaps))
	}
}

// gapSpool is a Spool whose AckGaps fails, as on a broken disk.
type gapSpool struct {
	*spool.Spool
	err error
}

func (g gapSpool) AckGaps([]api.Gap) error { return g.err }

func TestAckGapsFailure(t *testing.T) {
	t.Parallel()
	_, srv := newCollector(t)
	sp := fullSpool(t, t.TempDir(), 30)
	boom := errors.New("disk on fire")
	s, _, _ := newShipper(t, gapSpool{sp, boom}, srv.URL, Options{})
	_, err := s.ShipOnce(context.Background())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), fmt.Sprintf("acknowledging %d gaps", 1)) {
		t.Errorf("ShipOnce = %v", err)
	}
}
