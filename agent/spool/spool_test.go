package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// result returns a valid result whose identity is tag, so tests can tell
// results apart after a round trip.
func result(tag string) api.Result {
	return api.Result{
		MeasuredAt: t0,
		Target:     "k-root",
		Address:    "192.0.2.53",
		Kind:       api.KindDNS,
		Transport:  api.TransportUDP,
		Query:      api.QueryHostnameBind,
		RTTMicros:  1234,
		DNS:        &api.DNSValues{Rcode: "NOERROR", TXT: []string{tag}, Identity: tag, Size: 80},
	}
}

func results(prefix string, n int) []api.Result {
	rs := make([]api.Result, n)
	for i := range rs {
		rs[i] = result(fmt.Sprintf("%s-%d", prefix, i))
		rs[i].MeasuredAt = t0.Add(time.Duration(i) * time.Second)
	}
	return rs
}

// logBuffer is a logger whose output tests can read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func open(t *testing.T, dir string, segBytes int64) (*Spool, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	s, err := Open(dir, Options{SegmentBytes: segBytes, Logger: slog.New(slog.NewTextHandler(lb, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, lb
}

func mustAppend(t *testing.T, s *Spool, rs []api.Result) []api.Result {
	t.Helper()
	out, err := s.Append(rs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return out
}

func pending(t *testing.T, s *Spool) []api.Result {
	t.Helper()
	rs, err := s.Pending(1<<30, 1<<30)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return rs
}

func seqs(rs []api.Result) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Seq)
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := open(t, t.TempDir(), 0)
	if got := s.NextSeq(); got != 1 {
		t.Fatalf("NextSeq of a new spool = %d, want 1", got)
	}
	in := results("a", 5)
	out := mustAppend(t, s, in)
	mustAppend(t, s, results("b", 3))
	for i, r := range out {
		if r.Seq != uint64(i+1) {
			t.Errorf("out[%d].Seq = %d", i, r.Seq)
		}
		if in[i].Seq != 0 {
			t.Error("Append modified its argument")
		}
	}
	got := pending(t, s)
	if !slices.Equal(seqs(got), seqRange(1, 8)) {
		t.Fatalf("Pending seqs %v", seqs(got))
	}
	if got[0].DNS.Identity != "a-0" || got[5].DNS.Identity != "b-0" || !got[1].MeasuredAt.Equal(t0.Add(time.Second)) {
		t.Errorf("contents changed in the round trip: %+v", got[0])
	}
	// Results appended together form one round, numbered by its first seq.
	for i, r := range got {
		if want := map[bool]uint64{true: 1, false: 6}[i < 5]; r.Round != want {
			t.Errorf("result %d: round %d, want %d", r.Seq, r.Round, want)
		}
	}
	n, b, oldest := s.Stats()
	if n != 8 || b <= 0 || !oldest.Equal(t0) {
		t.Errorf("Stats = %d, %d, %v", n, b, oldest)
	}

	if rs, _ := s.Pending(3, 1<<30); !slices.Equal(seqs(rs), []uint64{1, 2, 3}) {
		t.Errorf("Pending(3) = %v", seqs(rs))
	}
	if rs, _ := s.Pending(100, 1); !slices.Equal(seqs(rs), []uint64{1}) {
		t.Errorf("Pending with a tiny byte budget = %v, want just the first", seqs(rs))
	}
	if rs, _ := s.Pending(100, int(b/2)); len(rs) == 0 || len(rs) >= 8 {
		t.Errorf("Pending with half the bytes returned %d results", len(rs))
	}

	if err := s.Ack(6); err != nil {
		t.Fatal(err)
	}
	if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{7, 8}) {
		t.Errorf("after Ack(6) Pending = %v", got)
	}
	if n, _, oldest := s.Stats(); n != 2 || !oldest.Equal(t0.Add(time.Second)) {
		t.Errorf("after Ack(6) Stats = %d, %v", n, oldest)
	}
	if err := s.Ack(3); err != nil {
		t.Errorf("Ack below the watermark: %v", err)
	}
	if err := s.Ack(9); err == nil {
		t.Error("Ack beyond the last appended result succeeded")
	}
	if err := s.Ack(8); err != nil {
		t.Fatal(err)
	}
	if n, b, oldest := s.Stats(); n != 0 || b != 0 || !oldest.IsZero() {
		t.Errorf("empty spool Stats = %d, %d, %v", n, b, oldest)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(results("c", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
}

func TestAppendRejectsInvalid(t *testing.T) {
	t.Parallel()
	s, _ := open(t, t.TempDir(), 0)
	bad := results("x", 3)
	bad[1].DNS.Identity = "nul\x00byte"
	if _, err := s.Append(bad); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("Append of an invalid result: %v", err)
	}
	if s.NextSeq() != 1 || len(pending(t, s)) != 0 {
		t.Error("a rejected Append left something behind")
	}
}

func TestRestartContinuesNumbering(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := open(t, dir, 0)
	mustAppend(t, s, results("a", 4))
	s.Close()

	s, _ = open(t, dir, 0)
	if got := s.NextSeq(); got != 5 {
		t.Fatalf("NextSeq after restart = %d, want 5", got)
	}
	mustAppend(t, s, results("b", 2))
	if err := s.Ack(6); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Everything acknowledged: the segment is deleted, the watermark alone
	// carries the numbering.
	s, _ = open(t, dir, 0)
	if got := s.NextSeq(); got != 7 {
		t.Fatalf("NextSeq after restart with everything acknowledged = %d, want 7", got)
	}
	if len(segments(t, dir)) != 0 {
		t.Errorf("acknowledged segments left: %v", segments(t, dir))
	}
	if out := mustAppend(t, s, results("c", 1)); out[0].Seq != 7 {
		t.Errorf("seq %d, want 7", out[0].Seq)
	}
}

func TestAckDeletesSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := open(t, dir, 1024)
	for i := range 20 {
		mustAppend(t, s, results(fmt.Sprint(i), 3))
	}
	segs := segments(t, dir)
	if len(segs) < 5 {
		t.Fatalf("only %d segments after 60 results of ~300 bytes in 1 KiB segments", len(segs))
	}
	if err := s.Ack(30); err != nil {
		t.Fatal(err)
	}
	for _, p := range segments(t, dir) {
		var first uint64
		fmt.Sscanf(filepath.Base(p), "%d.seg", &first)
		if first > 30 {
			continue
		}
		// A remaining segment at or below the watermark must still hold
		// unacknowledged results.
		if next := nextFirst(segments(t, dir), p); next != 0 && next <= 31 {
			t.Errorf("segment %s holds only acknowledged results but was kept", filepath.Base(p))
		}
	}
	if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(31, 60)) {
		t.Errorf("Pending after Ack(30) = %v", got)
	}
	if err := s.Ack(60); err != nil {
		t.Fatal(err)
	}
	if got := segments(t, dir); len(got) != 1 {
		t.Errorf("after acknowledging everything %d segments remain, want only the one being written", len(got))
	}
	mustAppend(t, s, results("more", 40)) // rotates, and deletes the old acknowledged one
	if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(61, 100)) {
		t.Errorf("Pending = %v", got)
	}
	for _, p := range segments(t, dir) {
		if strings.HasSuffix(p, fmt.Sprintf("%020d.seg", 1)) {
			t.Error("the first segment survived")
		}
	}
}

// nextFirst returns the first seq of the segment after p in segs, or 0.
func nextFirst(segs []string, p string) uint64 {
	i := slices.Index(segs, p)
	if i < 0 || i+1 >= len(segs) {
		return 0
	}
	var first uint64
	fmt.Sscanf(filepath.Base(segs[i+1]), "%d.seg", &first)
	return first
}

// frameRecord frames payload as the spool does.
func frameRecord(payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

func TestTornTail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		keep   uint64 // results that survive
	}{
		{"cut mid-record", func(t *testing.T, path string, size int64) { os.Truncate(path, size-17) }, 9},
		{"cut mid-header", func(t *testing.T, path string, size int64) { appendBytes(t, path, []byte{7, 0, 0}) }, 10},
		{"flipped byte", func(t *testing.T, path string, size int64) { flip(t, path, size-5) }, 9},
		{"flipped length", func(t *testing.T, path string, size int64) { flip(t, path, lastRecord(t, path)+3) }, 9},
		{"garbage appended", func(t *testing.T, path string, size int64) { appendBytes(t, path, bytes.Repeat([]byte{0xab}, 100)) }, 10},
		{"zeros appended", func(t *testing.T, path string, size int64) { appendBytes(t, path, make([]byte, 4096)) }, 10},
		{"bad json with a good checksum", func(t *testing.T, path string, size int64) { appendBytes(t, path, frameRecord([]byte(`{"seq":11,`))) }, 10},
		{"record out of sequence", func(t *testing.T, path string, size int64) {
			r := result("dup")
			r.Seq = 3
			b, _ := json.Marshal(r)
			appendBytes(t, path, frameRecord(b))
		}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, _ := open(t, dir, 0)
			mustAppend(t, s, results("a", 10))
			s.Close()
			path := segments(t, dir)[0]
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, path, fi.Size())

			s, logs := open(t, dir, 0)
			if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(1, tt.keep)) {
				t.Errorf("Pending after recovery = %v", got)
			}
			if got := s.NextSeq(); got != tt.keep+1 {
				t.Errorf("NextSeq = %d, want %d", got, tt.keep+1)
			}
			if !strings.Contains(logs.String(), "cutting a torn or corrupt tail") {
				t.Errorf("recovery not logged:\n%s", logs)
			}
			if out := mustAppend(t, s, results("b", 2)); out[0].Seq != tt.keep+1 {
				t.Errorf("first seq after recovery %d", out[0].Seq)
			}
			s.Close()
			s, logs = open(t, dir, 0)
			if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(1, tt.keep+2)) {
				t.Errorf("Pending after a clean restart = %v", got)
			}
			if logs.String() != "" {
				t.Errorf("a clean restart logged:\n%s", logs)
			}
		})
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// lastRecord returns the offset of the last record in a segment.
func lastRecord(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var off, last int64
	for off < int64(len(b)) {
		_, n, why := parse(b[off:])
		if why != "" {
			t.Fatalf("segment unreadable at %d: %s", off, why)
		}
		last = off
		off += n
	}
	return last
}

func TestCorruptSegmentMovedAside(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := open(t, dir, 1024)
	for i := range 10 {
		mustAppend(t, s, results(fmt.Sprint(i), 3))
	}
	s.Close()
	segs := segments(t, dir)
	victim := segs[1]
	if err := os.WriteFile(victim, bytes.Repeat([]byte("garbage!"), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty segment (a crash right after creating it) is simply removed.
	empty := filepath.Join(dir, fmt.Sprintf("%020d.seg", 31))
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	s, logs := open(t, dir, 1024)
	corrupt, _ := filepath.Glob(victim + ".*.corrupt")
	if len(corrupt) != 1 {
		t.Errorf("corrupt segment not moved aside: %v", corrupt)
	}
	if _, err := os.Stat(empty); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty segment kept: %v", err)
	}
	got := seqs(pending(t, s))
	var lostFirst uint64
	fmt.Sscanf(filepath.Base(victim), "%d.seg", &lostFirst)
	lostLast := nextFirst(segs, victim) - 1
	var want []uint64
	for _, q := range seqRange(1, 30) {
		if q < lostFirst || q > lostLast {
			want = append(want, q)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v", got, want)
	}
	if s.NextSeq() != 31 {
		t.Errorf("NextSeq = %d, want 31", s.NextSeq())
	}
	for _, msg := range []string{"moved corrupt file aside", "results lost between segments"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, logs)
		}
	}
}

func TestMissingFiles(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) string {
		dir := t.TempDir()
		s, _ := open(t, dir, 1024)
		for i := range 10 {
			mustAppend(t, s, results(fmt.Sprint(i), 3))
		}
		if err := s.Ack(12); err != nil {
			t.Fatal(err)
		}
		s.Close()
		return dir
	}
	t.Run("watermark", func(t *testing.T) {
		t.Parallel()
		dir := setup(t)
		first := segments(t, dir)[0]
		os.Remove(filepath.Join(dir, ackName))
		s, logs := open(t, dir, 1024)
		var want uint64
		fmt.Sscanf(filepath.Base(first), "%d.seg", &want)
		if got := seqs(pending(t, s)); got[0] != want || got[len(got)-1] != 30 {
			t.Errorf("Pending = %v, want %d..30", got, want)
		}
		if s.NextSeq() != 31 || !strings.Contains(logs.String(), "watermark missing") {
			t.Errorf("NextSeq %d; log:\n%s", s.NextSeq(), logs)
		}
	})
	t.Run("unreadable watermark", func(t *testing.T) {
		t.Parallel()
		dir := setup(t)
		os.WriteFile(filepath.Join(dir, ackName), []byte("\x00\x00"), 0o600)
		s, logs := open(t, dir, 1024)
		if s.NextSeq() != 31 || !strings.Contains(logs.String(), "watermark is unreadable") {
			t.Errorf("NextSeq %d; log:\n%s", s.NextSeq(), logs)
		}
	})
	t.Run("last segment", func(t *testing.T) {
		t.Parallel()
		dir := setup(t)
		segs := segments(t, dir)
		var first uint64
		fmt.Sscanf(filepath.Base(segs[len(segs)-1]), "%d.seg", &first)
		os.Remove(segs[len(segs)-1])
		s, _ := open(t, dir, 1024)
		// Numbers are reused only for results that are gone for good.
		if s.NextSeq() != first {
			t.Errorf("NextSeq = %d, want %d", s.NextSeq(), first)
		}
	})
	t.Run("every segment", func(t *testing.T) {
		t.Parallel()
		dir := setup(t)
		for _, p := range segments(t, dir) {
			os.Remove(p)
		}
		s, _ := open(t, dir, 1024)
		if s.NextSeq() != 13 || len(pending(t, s)) != 0 {
			t.Errorf("NextSeq = %d, want 13 (after the watermark)", s.NextSeq())
		}
	})
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		s, _ := open(t, filepath.Join(t.TempDir(), "a", "b"), 0)
		if s.NextSeq() != 1 {
			t.Errorf("NextSeq = %d", s.NextSeq())
		}
	})
}

func TestLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := open(t, dir, 0)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestConcurrentWriterAndReader(t *testing.T) {
	t.Parallel()
	s, _ := open(t, t.TempDir(), 4096)
	const total = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < total; {
			n := min(1+i%7, total-i)
			if _, err := s.Append(results(fmt.Sprint(i), n)); err != nil {
				t.Error(err)
				return
			}
			i += n
		}
	}()
	var seen []uint64
	for len(seen) < total {
		rs, err := s.Pending(50, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			select {
			case <-done:
				if n, _, _ := s.Stats(); n == 0 {
					t.Fatalf("writer finished but only %d results seen", len(seen))
				}
			default:
			}
			time.Sleep(time.Millisecond)
			continue
		}
		seen = append(seen, seqs(rs)...)
		if err := s.Ack(rs[len(rs)-1].Seq); err != nil {
			t.Fatal(err)
		}
		s.Stats()
	}
	<-done
	if !slices.Equal(seen, seqRange(1, total)) {
		t.Errorf("reader saw %d results, not 1..%d in order", len(seen), total)
	}
}

// TestReseed: a spool that lost its directory continues after the highest
// sequence number the collector holds, durably, and only when fresh.
func TestReseed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := open(t, dir, 0)
	if !s.Fresh() {
		t.Fatal("a new spool is not fresh")
	}
	if err := s.Reseed(41); err != nil {
		t.Fatal(err)
	}
	if s.Fresh() || s.NextSeq() != 42 {
		t.Fatalf("after Reseed(41): fresh %v, next %d", s.Fresh(), s.NextSeq())
	}
	out := mustAppend(t, s, results("a", 2))
	if out[0].Seq != 42 || out[1].Seq != 43 {
		t.Fatalf("seqs %d, %d; want 42, 43", out[0].Seq, out[1].Seq)
	}
	if err := s.Reseed(100); err == nil {
		t.Error("Reseed of a spool that holds results succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := open(t, dir, 0)
	if got := s2.NextSeq(); got != 44 {
		t.Errorf("after reopening, next seq %d, want 44", got)
	}
	if rs := pending(t, s2); !slices.Equal(seqs(rs), []uint64{42, 43}) {
		t.Errorf("pending %v, want [42 43]", seqs(rs))
	}
}
