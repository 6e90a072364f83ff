package spool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// openCapped opens a spool with small segments and a cap.
func openCapped(t *testing.T, dir string, segBytes, maxBytes int64) (*Spool, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	s, err := Open(dir, Options{SegmentBytes: segBytes, MaxBytes: maxBytes, Logger: slog.New(slog.NewTextHandler(lb, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, lb
}

// segBytesOnDisk sums the sizes of the segment files.
func segBytesOnDisk(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, p := range segments(t, dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// gapFile reads the gap list as stored.
func gapFile(t *testing.T, dir string) []gapEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, gapsName))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var es []gapEntry
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatalf("gap file: %v", err)
	}
	return es
}

func readAcked(t *testing.T, dir string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ackName))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// measured is when results(prefix, n)[i] was measured.
func measured(i uint64) time.Time { return t0.Add(time.Duration(i) * time.Second) }

func TestSpoolFullDropsOldestFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const segBytes, maxBytes = 1024, 4096
	s, logs := openCapped(t, dir, segBytes, maxBytes)
	// One result per append, each measured a second after the previous.
	var all []api.Result
	for i := range 60 {
		r := results(fmt.Sprint(i), 1)
		r[0].MeasuredAt = measured(uint64(i))
		all = append(all, mustAppend(t, s, r)...)
		if got := segBytesOnDisk(t, dir); got > maxBytes {
			t.Fatalf("after %d appends the segments hold %d bytes, cap %d", i+1, got, maxBytes)
		}
	}
	p := seqs(pending(t, s))
	if len(p) == 0 || p[len(p)-1] != 60 {
		t.Fatalf("Pending = %v: want the newest results, up to 60", p)
	}
	kept := p[0]
	if kept <= 1 || !slices.Equal(p, seqRange(kept, 60)) {
		t.Fatalf("Pending = %v: want a contiguous run of the newest results", p)
	}
	want := []api.Gap{{FirstSeq: 1, LastSeq: kept - 1, Count: kept - 1,
		LostFrom: measured(0), LostTo: measured(kept - 2), Reason: api.GapSpoolFull}}
	if got := s.PendingGaps(100); !gapsEqual(got, want) {
		t.Errorf("PendingGaps = %+v, want %+v (drops of consecutive segments make one gap)", got, want)
	}
	losses, waiting := s.Losses()
	if l := losses[api.GapSpoolFull]; l.Results != kept-1 || l.Gaps != 1 || waiting != 1 {
		t.Errorf("Losses = %+v, %d waiting; want %d results in 1 gap", losses, waiting, kept-1)
	}
	if got := readAcked(t, dir); got != kept-1 {
		t.Errorf("watermark on disk %d, want %d (past the dropped segments)", got, kept-1)
	}
	if !strings.Contains(logs.String(), "spool: full; dropped its oldest results") {
		t.Errorf("drop not logged:\n%s", logs)
	}
	s.Close()

	// The gap is durable; the restart finds nothing else lost.
	s, logs = openCapped(t, dir, segBytes, maxBytes)
	if got := s.PendingGaps(100); !gapsEqual(got, want) {
		t.Errorf("after reopening PendingGaps = %+v, want %+v", got, want)
	}
	if got := seqs(pending(t, s)); !slices.Equal(got, p) || s.NextSeq() != 61 {
		t.Errorf("after reopening Pending = %v, NextSeq %d", got, s.NextSeq())
	}
	if strings.Contains(logs.String(), "lost") {
		t.Errorf("reopen found losses the drop had recorded:\n%s", logs)
	}
	// Delivered, it is forgotten: it lies below the watermark.
	if err := s.AckGaps(want); err != nil {
		t.Fatal(err)
	}
	if got := s.PendingGaps(100); len(got) != 0 {
		t.Errorf("PendingGaps after AckGaps = %+v", got)
	}
	if es := gapFile(t, dir); len(es) != 0 {
		t.Errorf("gap file after AckGaps holds %+v", es)
	}
	s.Close()
	s, _ = openCapped(t, dir, segBytes, maxBytes)
	if got := s.PendingGaps(100); len(got) != 0 {
		t.Errorf("after reopening PendingGaps = %+v", got)
	}
}

// Acknowledged results at the start of a dropped segment are not lost.
func TestSpoolFullAfterAck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := openCapped(t, dir, 1024, 2048)
	for i := range 3 {
		mustAppend(t, s, results(fmt.Sprint(i), 2))
	}
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustAppend(t, s, results(fmt.Sprint(i), 2))
	}
	gs := s.PendingGaps(100)
	if len(gs) != 1 || gs[0].FirstSeq != 3 || gs[0].Reason != api.GapSpoolFull {
		t.Fatalf("PendingGaps = %+v, want one gap from seq 3", gs)
	}
	if p := pending(t, s); len(p) == 0 || p[0].Seq != gs[0].LastSeq+1 {
		t.Errorf("Pending starts at %v, want right after the gap %+v", seqs(p), gs[0])
	}
}

// A gap that grows after PendingGaps handed it out is not forgotten when
// its smaller self is acknowledged.
func TestGapGrowsWhileInFlight(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := openCapped(t, dir, 1024, 2048)
	fill := func(n int) {
		for i := range n {
			r := results(fmt.Sprint(i), 1)
			r[0].MeasuredAt = measured(s.NextSeq())
			mustAppend(t, s, r)
		}
	}
	fill(20)
	sent := s.PendingGaps(100)
	if len(sent) != 1 {
		t.Fatalf("PendingGaps = %+v", sent)
	}
	fill(20)
	if err := s.AckGaps(sent); err != nil {
		t.Fatal(err)
	}
	got := s.PendingGaps(100)
	if len(got) != 1 || got[0].FirstSeq != sent[0].FirstSeq || got[0].LastSeq <= sent[0].LastSeq ||
		got[0].Count != got[0].LastSeq-got[0].FirstSeq+1 || !got[0].LostTo.After(sent[0].LostTo) {
		t.Errorf("after acknowledging %+v, PendingGaps = %+v: want the grown gap", sent, got)
	}
	// Once that is delivered, a later drop starts a gap of its own.
	if err := s.AckGaps(got); err != nil {
		t.Fatal(err)
	}
	fill(20)
	later := s.PendingGaps(100)
	if len(later) != 1 || later[0].FirstSeq != got[0].LastSeq+1 {
		t.Errorf("PendingGaps = %+v, want a new gap after %+v", later, got[0])
	}
}

// fillSegments appends 3 results at a time until there are at least n
// segments of 1 KiB, and closes the spool. It returns the segment paths.
func fillSegments(t *testing.T, dir string, n int, ack uint64) []string {
	t.Helper()
	s, _ := open(t, dir, 1024)
	for i := 0; len(segments(t, dir)) < n; i++ {
		rs := results(fmt.Sprint(i), 3)
		for k := range rs {
			rs[k].MeasuredAt = measured(s.NextSeq() + uint64(k))
		}
		mustAppend(t, s, rs)
	}
	if ack > 0 {
		if err := s.Ack(ack); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	return segments(t, dir)
}

func firstOf(t *testing.T, path string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), segSuffix), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOpenFindsLostSegments(t *testing.T) {
	t.Parallel()
	t.Run("missing from the middle", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		segs := fillSegments(t, dir, 5, 0)
		from, to := firstOf(t, segs[2]), firstOf(t, segs[3])-1
		if err := os.Remove(segs[2]); err != nil {
			t.Fatal(err)
		}
		s, logs := open(t, dir, 1024)
		want := []api.Gap{{FirstSeq: from, LastSeq: to, Count: to - from + 1,
			LostFrom: measured(from - 1), LostTo: measured(to + 1), Reason: api.GapSegmentLost}}
		if got := s.PendingGaps(100); !gapsEqual(got, want) {
			t.Errorf("PendingGaps = %+v, want %+v", got, want)
		}
		if !strings.Contains(logs.String(), "results lost between segments") {
			t.Errorf("not logged:\n%s", logs)
		}
		next := s.NextSeq()
		var wantSeqs []uint64
		for _, q := range seqRange(1, next-1) {
			if q < from || q > to {
				wantSeqs = append(wantSeqs, q)
			}
		}
		if got := seqs(pending(t, s)); !slices.Equal(got, wantSeqs) {
			t.Errorf("Pending = %v, want %v", got, wantSeqs)
		}
		// The spool works on.
		if out := mustAppend(t, s, results("after", 2)); out[0].Seq != next {
			t.Errorf("next append numbered %d, want %d", out[0].Seq, next)
		}
		s.Close()

		// Found again on the next Open, the hole is not recorded twice,
		// neither while the gap waits nor once it was delivered.
		s, _ = open(t, dir, 1024)
		if got := s.PendingGaps(100); !gapsEqual(got, want) {
			t.Errorf("after reopening PendingGaps = %+v, want %+v", got, want)
		}
		if err := s.AckGaps(want); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s, _ = open(t, dir, 1024)
		if got := s.PendingGaps(100); len(got) != 0 {
			t.Errorf("a delivered gap was found again: %+v", got)
		}
		if l, _ := s.Losses(); l[api.GapSegmentLost].Results != 0 {
			t.Errorf("Losses counted a known hole again: %+v", l)
		}
		// Once the watermark passes it, it is forgotten.
		if err := s.Ack(s.NextSeq() - 1); err != nil {
			t.Fatal(err)
		}
		if es := gapFile(t, dir); len(es) != 0 {
			t.Errorf("gap file after the watermark passed: %+v", es)
		}
	})
	t.Run("unreadable from its start", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		segs := fillSegments(t, dir, 4, 0)
		from, to := firstOf(t, segs[1]), firstOf(t, segs[2])-1
		if err := os.WriteFile(segs[1], bytes.Repeat([]byte{0xff}, 700), 0o600); err != nil {
			t.Fatal(err)
		}
		s, _ := open(t, dir, 1024)
		gs := s.PendingGaps(100)
		if len(gs) != 1 || gs[0].FirstSeq != from || gs[0].LastSeq != to || gs[0].Reason != api.GapSegmentLost {
			t.Errorf("PendingGaps = %+v, want seq %d..%d segment_lost", gs, from, to)
		}
		if l, _ := s.Losses(); l[api.GapSegmentLost] != (Loss{Results: to - from + 1, Gaps: 1}) {
			t.Errorf("Losses = %+v", l)
		}
	})
	t.Run("missing before the first", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		segs := fillSegments(t, dir, 4, 2)
		to := firstOf(t, segs[2]) - 1
		for _, p := range segs[:2] {
			os.Remove(p)
		}
		s, logs := open(t, dir, 1024)
		want := []api.Gap{{FirstSeq: 3, LastSeq: to, Count: to - 2, LostTo: measured(to + 1), Reason: api.GapSegmentLost}}
		if got := s.PendingGaps(100); !gapsEqual(got, want) {
			t.Errorf("PendingGaps = %+v, want %+v (measured before %s, from unknown)", got, want, measured(to+1))
		}
		if !strings.Contains(logs.String(), "results lost before the first segment") {
			t.Errorf("not logged:\n%s", logs)
		}
		if p := pending(t, s); len(p) == 0 || p[0].Seq != to+1 {
			t.Errorf("Pending starts at %v, want %d", seqs(p), to+1)
		}
	})
	t.Run("every segment and the watermark", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		segs := fillSegments(t, dir, 3, 0)
		s, _ := openCapped(t, dir, 1024, 2048)
		mustAppend(t, s, results("x", 10)) // drops, and records a gap
		next := s.NextSeq()
		s.Close()
		for _, p := range segments(t, dir) {
			os.Remove(p)
		}
		os.Remove(filepath.Join(dir, ackName))
		// The gaps still say how far numbering went.
		s, _ = open(t, dir, 1024)
		if got := s.NextSeq(); got <= firstOf(t, segs[1]) || got > next {
			t.Errorf("NextSeq = %d, want after the recorded gap and at most %d", got, next)
		}
		if s.Fresh() {
			t.Error("a spool with gaps counts as fresh")
		}
	})
}

// A drop interrupted after the gap was written and before the segment was
// deleted is finished by Open: the segment's results are not shipped as
// well, and the hole is not a second gap.
func TestOpenFinishesInterruptedDrop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	segs := fillSegments(t, dir, 4, 0)
	last := firstOf(t, segs[1]) - 1
	b, err := json.Marshal([]gapEntry{{Gap: api.Gap{FirstSeq: 1, LastSeq: last, Count: last,
		LostFrom: measured(1), LostTo: measured(last), Reason: api.GapSpoolFull}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, gapsName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := open(t, dir, 1024)
	if p := pending(t, s); len(p) == 0 || p[0].Seq != last+1 {
		t.Errorf("Pending starts at %v, want %d", seqs(p), last+1)
	}
	if gs := s.PendingGaps(100); len(gs) != 1 || gs[0].Reason != api.GapSpoolFull {
		t.Errorf("PendingGaps = %+v, want only the drop's gap", gs)
	}
	if _, err := os.Stat(segs[0]); !os.IsNotExist(err) {
		t.Errorf("dropped segment still there: %v", err)
	}
	if got := readAcked(t, dir); got != last {
		t.Errorf("watermark %d, want %d", got, last)
	}
	if !strings.Contains(logs.String(), "finishing the drop") {
		t.Errorf("not logged:\n%s", logs)
	}
}

func TestPendingRecordsCorruptRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, logs := open(t, dir, 1024)
	for i := range 6 {
		mustAppend(t, s, results(fmt.Sprint(i), 3))
	}
	// Damage the second record of the first segment behind the spool's
	// back (bit rot after Open indexed it).
	seg := segments(t, dir)[0]
	s.mu.Lock()
	off := s.segs[0].offs[1]
	s.mu.Unlock()
	flip(t, seg, off+headerBytes+5)

	got := seqs(pending(t, s))
	if want := slices.Delete(seqRange(1, 18), 1, 2); !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v (only seq 2 skipped)", got, want)
	}
	want := []api.Gap{{FirstSeq: 2, LastSeq: 2, Count: 1, LostFrom: t0.Add(time.Second), LostTo: t0.Add(time.Second), Reason: api.GapRecordCorrupt}}
	if gs := s.PendingGaps(100); !gapsEqual(gs, want) {
		t.Errorf("PendingGaps = %+v, want %+v", gs, want)
	}
	if !strings.Contains(logs.String(), "record unreadable; it is lost") {
		t.Errorf("not logged:\n%s", logs)
	}
	// Read again, the record is not a second gap.
	pending(t, s)
	if l, _ := s.Losses(); l[api.GapRecordCorrupt] != (Loss{Results: 1, Gaps: 1}) {
		t.Errorf("Losses = %+v", l)
	}
	if err := s.AckGaps(want); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(18); err != nil {
		t.Fatal(err)
	}
	if es := gapFile(t, dir); len(es) != 0 {
		t.Errorf("gap file after delivery and Ack: %+v", es)
	}
}

func TestGapsCompacted(t *testing.T) {
	t.Parallel()
	s, _ := open(t, t.TempDir(), 0)
	s.maxGaps = 2
	for i := range uint64(4) {
		s.addGap(api.GapRecordCorrupt, 10*i+1, 10*i+1, measured(10*i+1), measured(10*i+1))
	}
	want := []api.Gap{
		{FirstSeq: 1, LastSeq: 21, Count: 3, LostFrom: measured(1), LostTo: measured(21), Reason: api.GapRecordCorrupt},
		{FirstSeq: 31, LastSeq: 31, Count: 1, LostFrom: measured(31), LostTo: measured(31), Reason: api.GapRecordCorrupt},
	}
	if got := s.PendingGaps(100); !gapsEqual(got, want) {
		t.Errorf("PendingGaps = %+v, want %+v", got, want)
	}
	for _, g := range s.PendingGaps(100) {
		if err := g.Validate(); err != nil {
			t.Errorf("compacted gap %+v: %v", g, err)
		}
	}
	if got := s.PendingGaps(1); len(got) != 1 || got[0].FirstSeq != 1 {
		t.Errorf("PendingGaps(1) = %+v", got)
	}
}

func TestUnreadableGapFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fillSegments(t, dir, 2, 0)
	if err := os.WriteFile(filepath.Join(dir, gapsName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := open(t, dir, 1024)
	if len(pending(t, s)) == 0 || !strings.Contains(logs.String(), "gap list is unreadable") {
		t.Errorf("log:\n%s", logs)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, gapsName+".*.corrupt")); len(m) != 1 {
		t.Errorf("unreadable gap list not moved aside: %v", m)
	}
}

func TestOpenRejectsSmallCap(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{{SegmentBytes: 1024, MaxBytes: 2047}, {MaxBytes: -1}, {MaxBytes: DefaultSegmentBytes}} {
		if _, err := Open(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "max bytes") {
			t.Errorf("Open(%+v) = %v", o, err)
		}
	}
}

// Appenders and a shipper-like reader race under a small cap: every
// sequence number ends up either read and acknowledged or in a gap, and
// the files stay under the cap.
func TestSpoolFullConcurrent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const maxBytes = 4096
	s, _ := openCapped(t, dir, 1024, maxBytes)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				if _, err := s.Append(results(fmt.Sprintf("w%d-%d", w, i), 1+i%3)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	seen := map[uint64]bool{}
	var gaps []api.Gap
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	drain := func() {
		p, err := s.Pending(3, 1<<20)
		if err != nil {
			t.Errorf("Pending: %v", err)
			return
		}
		gs := s.PendingGaps(100)
		for _, r := range p {
			seen[r.Seq] = true
		}
		if len(p) > 0 {
			if err := s.Ack(p[len(p)-1].Seq); err != nil {
				t.Errorf("Ack: %v", err)
			}
		}
		if err := s.AckGaps(gs); err != nil {
			t.Errorf("AckGaps: %v", err)
		}
		gaps = append(gaps, gs...)
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			drain()
			time.Sleep(time.Millisecond) // fall behind, so that the cap bites
		}
	}
	for range 100 {
		drain()
	}
	next := s.NextSeq()
	for q := uint64(1); q < next; q++ {
		in := slices.ContainsFunc(gaps, func(g api.Gap) bool { return g.FirstSeq <= q && q <= g.LastSeq })
		if !seen[q] && !in {
			t.Fatalf("seq %d neither shipped nor in a gap (gaps %+v)", q, gaps)
		}
	}
	if got := segBytesOnDisk(t, dir); got > maxBytes {
		t.Errorf("segments hold %d bytes, cap %d", got, maxBytes)
	}
	t.Logf("%d results: %d read, %d gaps", next-1, len(seen), len(gaps))
}

func gapsEqual(a, b []api.Gap) bool {
	return slices.EqualFunc(a, b, sameGap)
}

// A gap merged over results still in the spool (compactLocked) is not taken
// for an interrupted drop: those results stay.
func TestOpenKeepsSegmentsUnderMergedGap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	segs := fillSegments(t, dir, 4, 0)
	last := firstOf(t, segs[2]) - 1
	b, err := json.Marshal([]gapEntry{{Gap: api.Gap{FirstSeq: 1, LastSeq: last, Count: 2, Reason: api.GapSpoolFull}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, gapsName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := open(t, dir, 1024)
	if p := pending(t, s); len(p) == 0 || p[0].Seq != 1 {
		t.Errorf("Pending starts at %v, want 1", seqs(p))
	}
}
