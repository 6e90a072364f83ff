package spool

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// commitSeams replaces a spool's fsync and its wait for the commit window:
// fsyncs are counted (and fail while fail is set), and a wait blocks until
// the test releases it.
type commitSeams struct {
	mu      sync.Mutex
	syncs   int
	fail    error
	waiting chan time.Duration // receives each wait as it begins
	release chan struct{}      // ends one wait
}

func withSeams(s *Spool) *commitSeams {
	c := &commitSeams{waiting: make(chan time.Duration), release: make(chan struct{})}
	s.syncFile = func(f *os.File) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.syncs++
		if c.fail != nil {
			return c.fail
		}
		return f.Sync()
	}
	s.sleep = func(d time.Duration) {
		c.waiting <- d
		<-c.release
	}
	return c
}

// waited returns the next wait for the commit window as it begins.
func (c *commitSeams) waited(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waiting:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("no append waits for the commit window")
		return 0
	}
}

func (c *commitSeams) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncs
}

// appendResult is what an Append run in the background returned.
type appendResult struct {
	out []api.Result
	err error
}

func appendAsync(s *Spool, rs []api.Result) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		out, err := s.Append(rs)
		ch <- appendResult{out, err}
	}()
	return ch
}

// waitWritten waits until the spool has numbered results up to next-1:
// the appends running in the background have written them.
func waitWritten(t *testing.T, s *Spool, next uint64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); s.NextSeq() != next; {
		if time.Now().After(deadline) {
			t.Fatalf("appends wrote up to seq %d, want %d", s.NextSeq()-1, next-1)
		}
		time.Sleep(time.Millisecond)
	}
}

func openWindow(t *testing.T, dir string, window time.Duration) (*Spool, *commitSeams) {
	t.Helper()
	s, err := Open(dir, Options{CommitWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, withSeams(s)
}

// checkNumbered fails unless rs are numbered from first on, as one round.
func checkNumbered(t *testing.T, rs []api.Result, first uint64) {
	t.Helper()
	for i, r := range rs {
		if r.Seq != first+uint64(i) || r.Round != first {
			t.Errorf("result %d: seq %d round %d, want seq %d round %d", i, r.Seq, r.Round, first+uint64(i), first)
		}
	}
}

// TestGroupCommitSharesFsync: appends made during the commit window wait,
// invisible, for one fsync that covers them all.
func TestGroupCommitSharesFsync(t *testing.T) {
	t.Parallel()
	s, c := openWindow(t, t.TempDir(), time.Hour)
	first := mustAppend(t, s, results("a", 2))
	checkNumbered(t, first, 1)
	if n := c.count(); n != 1 {
		t.Fatalf("first append: %d fsyncs, want 1 (no wait after none)", n)
	}

	b := appendAsync(s, results("b", 1))
	if d := c.waited(t); d <= 0 || d > time.Hour {
		t.Errorf("the second append waits %v, want the rest of the window", d)
	}
	cc := appendAsync(s, results("c", 3))
	waitWritten(t, s, 7)
	d := appendAsync(s, results("d", 2))
	waitWritten(t, s, 9)
	if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(1, 2)) {
		t.Errorf("before the fsync Pending shows %v, want only 1..2", got)
	}
	if n, _, _ := s.Stats(); n != 2 {
		t.Errorf("before the fsync Stats counts %d pending, want 2", n)
	}

	c.release <- struct{}{}
	for name, ch := range map[string]<-chan appendResult{"b": b, "c": cc, "d": d} {
		r := <-ch
		if r.err != nil {
			t.Fatalf("append %s: %v", name, r.err)
		}
		checkNumbered(t, r.out, r.out[0].Seq)
	}
	if n := c.count(); n != 2 {
		t.Errorf("%d fsyncs for four appends, want 2", n)
	}
	if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(1, 8)) {
		t.Errorf("after the fsync Pending shows %v, want 1..8", got)
	}
}

// TestGroupCommitClose: Close fsyncs the appends still waiting, and they
// return durable.
func TestGroupCommitClose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, c := openWindow(t, dir, time.Hour)
	mustAppend(t, s, results("a", 1))
	b := appendAsync(s, results("b", 2))
	c.waited(t)
	cc := appendAsync(s, results("c", 1))
	waitWritten(t, s, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-cc; r.err != nil {
		t.Errorf("append waiting at Close: %v", r.err)
	}
	c.release <- struct{}{}
	if r := <-b; r.err != nil {
		t.Errorf("append waiting for the window at Close: %v", r.err)
	}
	if _, err := s.Append(results("late", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("append after Close: %v, want ErrClosed", err)
	}
	s2, _ := open(t, dir, 0)
	if got := seqs(pending(t, s2)); !slices.Equal(got, seqRange(1, 4)) {
		t.Errorf("reopened spool holds %v, want 1..4", got)
	}
}

// TestGroupCommitFsyncFails: a failed fsync fails every append it covered
// and breaks the spool; what was durable before stays.
func TestGroupCommitFsyncFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, c := openWindow(t, dir, time.Hour)
	mustAppend(t, s, results("a", 2))
	b := appendAsync(s, results("b", 1))
	c.waited(t)
	cc := appendAsync(s, results("c", 2))
	waitWritten(t, s, 6)
	c.mu.Lock()
	c.fail = syscall.EIO
	c.mu.Unlock()
	c.release <- struct{}{}
	for name, ch := range map[string]<-chan appendResult{"b": b, "c": cc} {
		if r := <-ch; !errors.Is(r.err, ErrBroken) || !errors.Is(r.err, syscall.EIO) {
			t.Errorf("append %s: %v, want ErrBroken wrapping EIO", name, r.err)
		}
	}
	if _, err := s.Append(results("after", 1)); !errors.Is(err, ErrBroken) {
		t.Errorf("append after the failed fsync: %v, want ErrBroken", err)
	}
	if got := seqs(pending(t, s)); !slices.Equal(got, seqRange(1, 2)) {
		t.Errorf("Pending shows %v, want 1..2", got)
	}
	s.Close()
	s2, _ := open(t, dir, 0)
	if got, next := seqs(pending(t, s2)), s2.NextSeq(); !slices.Equal(got, seqRange(1, 2)) || next != 3 {
		t.Errorf("reopened spool holds %v and numbers on from %d, want 1..2 and 3", got, next)
	}
}

// TestGroupCommitConcurrent: many goroutines appending through a short
// window, across segment rotations, while a reader acknowledges: every
// append gets contiguous numbers of its own, all are read back once, in
// order, each as written.
func TestGroupCommitConcurrent(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Options{SegmentBytes: 4096, CommitWindow: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const writers, appends = 8, 40
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		written = map[uint64]string{} // identity by seq, as Append numbered it
	)
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				out, err := s.Append(results(fmt.Sprintf("w%d-%d", w, i), 1+(w+i)%4))
				if err != nil {
					t.Error(err)
					return
				}
				checkNumbered(t, out, out[0].Seq)
				mu.Lock()
				for _, r := range out {
					written[r.Seq] = r.DNS.Identity
				}
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var seen []api.Result
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		rs, err := s.Pending(50, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 0 {
			seen = append(seen, rs...)
			if err := s.Ack(rs[len(rs)-1].Seq); err != nil {
				t.Fatal(err)
			}
			finished = false
		} else if !finished {
			time.Sleep(time.Millisecond)
		}
	}
	if !slices.Equal(seqs(seen), seqRange(1, uint64(len(written)))) {
		t.Fatalf("reader saw %d results out of order or twice; %d were written", len(seen), len(written))
	}
	for _, r := range seen {
		if written[r.Seq] != r.DNS.Identity {
			t.Errorf("seq %d read back as %q, appended as %q", r.Seq, r.DNS.Identity, written[r.Seq])
		}
	}
}

func TestOpenRejectsNegativeWindow(t *testing.T) {
	t.Parallel()
	if _, err := Open(t.TempDir(), Options{CommitWindow: -time.Second}); err == nil {
		t.Error("Open accepted a negative commit window")
	}
}
