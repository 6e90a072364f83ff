package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// The full-spool kill test: a child appends to a capped spool that nobody
// drains, so nearly every append drops a segment, and is killed with
// SIGKILL at random moments, mid-drop included. After each death the spool
// must open, and every number handed out must be pending exactly once or
// in a gap, never both.
const (
	fullChildEnv   = "ANYSCOPE_SPOOL_FULL_KILL_DIR"
	fullKillRounds = 8
	fullSegBytes   = 1024
	fullMaxBytes   = 4 * fullSegBytes
)

func fullKillChild(dir string) {
	s, err := Open(dir, Options{SegmentBytes: fullSegBytes, MaxBytes: fullMaxBytes})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		out, err := s.Append(results(fmt.Sprintf("f%d", i), 1+rand.IntN(3)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		fmt.Printf("durable %d\n", out[len(out)-1].Seq)
	}
}

func TestKill9SpoolFull(t *testing.T) {
	if dir := os.Getenv(fullChildEnv); dir != "" {
		fullKillChild(dir)
		return
	}
	t.Parallel()
	dir := t.TempDir()
	for round := range fullKillRounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9SpoolFull$", "-test.count=1")
		cmd.Env = append(os.Environ(), fullChildEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var durable uint64
		lines := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var q uint64
				if _, err := fmt.Sscanf(sc.Text(), "durable %d", &q); err == nil {
					durable = q
					select {
					case lines <- struct{}{}:
					default:
					}
				}
			}
		}()
		// Let it run long enough to fill the spool, then kill it at a
		// random moment.
		select {
		case <-lines:
		case <-done:
		case <-time.After(30 * time.Second):
		}
		time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("round %d: kill: %v", round, err)
		}
		<-done
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child did not die by the signal: %v\n%s", round, err, stderr.String())
		}

		s, err := Open(dir, Options{SegmentBytes: fullSegBytes, MaxBytes: fullMaxBytes})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		p, err := s.Pending(1<<30, 1<<30)
		if err != nil {
			t.Fatalf("round %d: Pending: %v", round, err)
		}
		gaps := s.PendingGaps(1 << 20)
		next := s.NextSeq()
		s.Close()
		if durable >= next {
			t.Fatalf("round %d: seq %d was durable, but numbering continues at %d", round, durable, next)
		}
		inGap := func(q uint64) bool {
			return slices.ContainsFunc(gaps, func(g api.Gap) bool { return g.FirstSeq <= q && q <= g.LastSeq })
		}
		pend := map[uint64]bool{}
		for _, r := range p {
			pend[r.Seq] = true
			if inGap(r.Seq) {
				t.Fatalf("round %d: seq %d is pending and in a gap %+v", round, r.Seq, gaps)
			}
		}
		for q := uint64(1); q < next; q++ {
			if !pend[q] && !inGap(q) {
				t.Fatalf("round %d: seq %d (of %d) neither pending nor in a gap; gaps %+v", round, q, next-1, gaps)
			}
		}
		if got := segBytesOnDisk(t, dir); got > fullMaxBytes+fullSegBytes {
			t.Errorf("round %d: segments hold %d bytes, cap %d", round, got, fullMaxBytes)
		}
		t.Logf("round %d: next seq %d, %d pending, %d gaps", round, next, len(p), len(gaps))
	}
}
