package collector

import (
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	t.Run("refill and wait", func(t *testing.T) {
		t.Parallel()
		b := newBuckets(2, 4, 100) // 2/s, 4 at once
		for i := range 4 {
			if d := b.take(1, 1, 1, at(0)); d != 0 {
				t.Fatalf("take %d within the burst: wait %s", i+1, d)
			}
		}
		if d := b.take(1, 1, 1, at(0)); d != 500*time.Millisecond {
			t.Errorf("empty bucket: wait %s, want 500ms", d)
		}
		if d := b.take(1, 1, 1, at(250*time.Millisecond)); d != 250*time.Millisecond {
			t.Errorf("a quarter second later: wait %s, want 250ms", d)
		}
		if d := b.take(1, 1, 1, at(500*time.Millisecond)); d != 0 {
			t.Errorf("half a second later: wait %s, want none", d)
		}
		if d := b.take(2, 1, 1, at(500*time.Millisecond)); d != 0 {
			t.Errorf("another key: wait %s, want none", d)
		}
	})
	t.Run("debt", func(t *testing.T) {
		t.Parallel()
		b := newBuckets(100, 100, 100)
		if d := b.take(1, 0, 0, at(0)); d != 0 {
			t.Fatalf("fresh bucket: wait %s", d)
		}
		b.charge(1, 300, at(0)) // 100 in hand, 200 owed
		if d := b.take(1, 0, 0, at(0)); d != 2*time.Second {
			t.Errorf("in debt of 200 at 100/s: wait %s, want 2s", d)
		}
		if d := b.take(1, 0, 0, at(2*time.Second)); d != 0 {
			t.Errorf("debt repaid: wait %s, want none", d)
		}
	})
	t.Run("idle buckets forgotten", func(t *testing.T) {
		t.Parallel()
		b := newBuckets(1, 2, 1000)
		b.take(1, 1, 1, at(0))
		b.take(2, 1, 2, at(0))
		b.charge(3, 10, at(0)) // 12 s from full
		if n := b.len(); n != 3 {
			t.Fatalf("%d buckets, want 3", n)
		}
		// A sweep a minute on forgets those that refilled, and only those.
		b.take(4, 1, 1, at(sweepEvery))
		if n := b.len(); n != 1 {
			t.Errorf("after a minute: %d buckets, want 1 (the new one)", n)
		}
		b.charge(4, 100, at(sweepEvery))
		b.take(5, 1, 1, at(2*sweepEvery))
		if n := b.len(); n != 2 {
			t.Errorf("with one bucket 100 s from full: %d buckets, want 2", n)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		t.Parallel()
		b := newBuckets(1, 1, 10)
		for key := range uint64(1000) {
			b.take(key, 1, 1, at(0)) // forged tokens, each a new key
		}
		if n := b.len(); n > 10 {
			t.Errorf("%d buckets kept, want at most 10", n)
		}
		if d := b.take(999, 1, 1, at(0)); d == 0 {
			t.Error("the latest key's bucket was dropped rather than an older one")
		}
	})
}
