package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kill -9 test re-executes the test binary as a child that appends to
// the spool in a loop and reports every Append that returned; the parent
// kills it at random moments and checks the spool after each death.
const (
	childDirEnv   = "ANYSCOPE_SPOOL_KILL_DIR"
	childRoundEnv = "ANYSCOPE_SPOOL_KILL_ROUND"
	killRounds    = 10
)

// killChild appends until it is killed. After each Append it prints
// "durable <first> <last>"; now and then it acknowledges part of what is
// pending and prints "acked <seq>".
func killChild(dir, round string) {
	opts := Options{SegmentBytes: 2048}
	if n, _ := strconv.Atoi(round); n%4 >= 2 {
		// Every other pair of rounds spaces its fsyncs.
		opts.CommitWindow = 2 * time.Millisecond
	}
	s, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		n := 1 + rand.IntN(20)
		out, err := s.Append(results(fmt.Sprintf("r%s-%d", round, i), n))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		fmt.Printf("durable %d %d\n", out[0].Seq, out[n-1].Seq)
		if i%5 == 4 {
			p, err := s.Pending(30, 1<<20)
			if err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				os.Exit(2)
			}
			if len(p) > 0 {
				upTo := p[len(p)/2].Seq
				if err := s.Ack(upTo); err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				fmt.Printf("acked %d\n", upTo)
			}
		}
	}
}

type childReport struct {
	durable [][2]uint64 // Append calls that returned, in order
	acked   uint64      // highest acknowledged watermark reported
}

// runChild starts a child, kills it with SIGKILL after a random delay, and
// returns what it reported.
func runChild(t *testing.T, dir string, round int) childReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, fmt.Sprintf("%s=%d", childRoundEnv, round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var rep childReport
	first := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var a, b uint64
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "durable "):
				if _, err := fmt.Sscanf(line, "durable %d %d", &a, &b); err != nil {
					continue // cut by the kill
				}
				if len(rep.durable) == 0 {
					close(first)
				}
				rep.durable = append(rep.durable, [2]uint64{a, b})
			case strings.HasPrefix(line, "acked "):
				if _, err := fmt.Sscanf(line, "acked %d", &a); err == nil {
					rep.acked = a
				}
			}
		}
	}()
	if round%2 == 1 {
		// Sometimes kill it while it is still opening (recovering) the spool.
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
	} else {
		select {
		case <-first:
		case <-done:
		case <-time.After(30 * time.Second):
		}
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("round %d: kill: %v", round, err)
	}
	<-done
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("round %d: child did not die by the signal: %v\n%s", round, err, stderr.String())
	}
	return rep
}

func TestKill9(t *testing.T) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		killChild(dir, os.Getenv(childRoundEnv))
		return
	}
	t.Parallel()
	dir := t.TempDir()
	var (
		next    uint64 = 1                   // NextSeq after the last reopen
		content        = map[uint64]string{} // identity of every result ever read back
		durable        = map[uint64]bool{}   // every seq a child reported durable
		acked   uint64                       // highest watermark any child reported
	)
	for round := range killRounds {
		rep := runChild(t, dir, round)
		// Within a round, numbers are contiguous; across rounds, a child
		// never hands out a number that was already durable.
		for i, r := range rep.durable {
			if i == 0 && r[0] != next {
				t.Fatalf("round %d: child started at seq %d, want %d (reuse or skip)", round, r[0], next)
			}
			if i > 0 && r[0] != rep.durable[i-1][1]+1 {
				t.Fatalf("round %d: gap or overlap between %v and %v", round, rep.durable[i-1], r)
			}
			for q := r[0]; q <= r[1]; q++ {
				durable[q] = true
			}
		}

		acked = max(acked, rep.acked)
		s, err := Open(dir, Options{SegmentBytes: 2048})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		p, err := s.Pending(1<<30, 1<<30)
		if err != nil {
			t.Fatalf("round %d: Pending: %v", round, err)
		}
		newNext := s.NextSeq()
		s.Close()
		if n := len(rep.durable); n > 0 && rep.durable[n-1][1] >= newNext {
			t.Fatalf("round %d: child reported seq %d durable, but the spool continues at %d", round, rep.durable[n-1][1], newNext)
		}
		if len(p) > 0 {
			if p[0].Seq <= acked {
				t.Errorf("round %d: seq %d pending although %d was acknowledged", round, p[0].Seq, acked)
			}
			if p[len(p)-1].Seq != newNext-1 {
				t.Errorf("round %d: last pending %d, next %d", round, p[len(p)-1].Seq, newNext)
			}
		}
		for i, r := range p {
			if i > 0 && r.Seq != p[i-1].Seq+1 {
				t.Fatalf("round %d: pending seqs jump from %d to %d", round, p[i-1].Seq, r.Seq)
			}
			if old, ok := content[r.Seq]; ok && old != r.DNS.Identity {
				t.Fatalf("round %d: seq %d was %q and is now %q", round, r.Seq, old, r.DNS.Identity)
			}
			content[r.Seq] = r.DNS.Identity
		}
		next = newNext
		t.Logf("round %d: %d appends reported, acked %d, %d pending, next seq %d", round, len(rep.durable), rep.acked, len(p), next)
	}
	// Every number below the next one was handed out exactly once and was
	// either reported durable or read back after a kill.
	for q := uint64(1); q < next; q++ {
		if !durable[q] && content[q] == "" {
			t.Errorf("seq %d neither reported durable nor found in the spool", q)
		}
	}
	if next < 50 {
		t.Errorf("only %d results appended over %d rounds; the children hardly ran", next-1, killRounds)
	}
}
