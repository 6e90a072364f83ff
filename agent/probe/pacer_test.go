package probe

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// bookAt reserves a series at a given moment and returns its send times.
func bookAt(pacers []*Pacer, now time.Time, n int, every time.Duration) []time.Time {
	start, every := reserve(now, n, every, pacers)
	out := make([]time.Time, n)
	for k := range out {
		out[k] = start.Add(time.Duration(k) * every)
	}
	return out
}

// maxPerSecond is the most send times in any half-open one-second window.
func maxPerSecond(ts []time.Time) int { return maxPer(ts, time.Second) }

// maxPer is the most send times in any half-open span-long window.
func maxPer(ts []time.Time, span time.Duration) int {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	most, lo := 0, 0
	for hi := range ts {
		for !ts[hi].Before(ts[lo].Add(span)) {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	return most
}

// TestPacerCeiling: whatever the demand (single packets and series, at
// random moments, often far more than the rate), no one-second window ever
// holds more packets than the rate, nor a tenth of a second more than two
// bursts; bursts go out back to back; a series
// keeps its spacing (or the wider one the budget needs); and nothing is
// sent before it was asked for.
func TestPacerCeiling(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{0.5, 1, 5, 20, 50, 100, 1000} {
		// Below one a second, the window is 1/rate long and takes one.
		span, limit := time.Second, int(rate)
		if rate < 1 {
			span, limit = time.Duration(float64(time.Second)/rate), 1
		}
		p := NewPacer(rate)
		wantBurst := max(1, int(rate/10))
		if p.Burst() != wantBurst {
			t.Errorf("rate %v: burst %d, want %d", rate, p.Burst(), wantBurst)
		}
		rng := rand.New(rand.NewPCG(1, uint64(rate)))
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		now := t0
		var sent []time.Time
		for range 3000 {
			// Demand: bursts of requests at the same moment, then gaps.
			if rng.IntN(4) == 0 {
				now = now.Add(time.Duration(rng.ExpFloat64() * float64(time.Second) / rate))
			}
			n, every := 1, time.Duration(0)
			if rng.IntN(5) == 0 {
				n, every = 1+rng.IntN(5), time.Duration(rng.IntN(300))*time.Millisecond
			}
			ts := bookAt([]*Pacer{p}, now, n, every)
			if ts[0].Before(now) {
				t.Fatalf("rate %v: a packet asked for at %v was sent at %v", rate, now, ts[0])
			}
			for k := 1; k < n; k++ {
				if ts[k].Sub(ts[k-1]) < every {
					t.Fatalf("rate %v: series spaced %v, asked %v", rate, ts[k].Sub(ts[k-1]), every)
				}
			}
			sent = append(sent, ts...)
		}
		if got := maxPer(sent, span); got > limit {
			t.Errorf("rate %v: %d packets in %v", rate, got, span)
		}
		// A tenth of a second straddles at most two ticks of burst each.
		if got := maxPer(sent, span/10); got > 2*wantBurst {
			t.Errorf("rate %v: %d packets in a tenth of a second, bursts of %d", rate, got, wantBurst)
		}
		// Demand ran far above the rate: the pacer still used most of it.
		if span := sent[len(sent)-1].Sub(t0).Seconds(); float64(len(sent))/span < 0.85*rate {
			t.Errorf("rate %v: only %.1f packets/s under saturating demand", rate, float64(len(sent))/span)
		}
		// From a full budget, a burst leaves at once.
		q := NewPacer(rate)
		ts := bookAt([]*Pacer{q}, t0, wantBurst, 0)
		if !ts[wantBurst-1].Equal(t0) {
			t.Errorf("rate %v: a burst of %d from a full budget ends at +%v", rate, wantBurst, ts[wantBurst-1].Sub(t0))
		}
	}
}

// TestPacersTogether: a series booked on a target's pacer and the agent's
// fits both, and a second target is held back only by the agent's budget.
func TestPacersTogether(t *testing.T) {
	t.Parallel()
	all, a, b := NewPacer(20), NewPacer(5), NewPacer(5)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var toA, toB, total []time.Time
	for i := range 400 {
		now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		ta := bookAt([]*Pacer{a, all}, now, 3, 50*time.Millisecond)
		tb := bookAt([]*Pacer{b, all}, now, 1, 0)
		toA, toB = append(toA, ta...), append(toB, tb...)
		total = append(total, append(ta, tb...)...)
	}
	if got := maxPerSecond(toA); got > 5 {
		t.Errorf("target a: %d packets in one second, ceiling 5", got)
	}
	if got := maxPerSecond(toB); got > 5 {
		t.Errorf("target b: %d packets in one second, ceiling 5", got)
	}
	if got := maxPerSecond(total); got > 20 {
		t.Errorf("agent: %d packets in one second, ceiling 20", got)
	}
	// A series faster than a 5/s target allows (one packet per tenth of a
	// second) is spread to its spacing.
	if d := toA[1].Sub(toA[0]); d < 100*time.Millisecond {
		t.Errorf("target a's series spaced %v at 5/s without burst", d)
	}
}
