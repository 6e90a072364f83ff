package probe

import (
	"context"
	"math"
	"sync"
	"time"
)

// Pacer is a Limiter that holds its user to at most perSecond packets in
// any one second (at most one per 1/perSecond when that is slower), however
// many probes are due at once. Within that ceiling packets may leave back
// to back, but no more than a tenth of it (at least one) per tenth of a
// second. Letting a probe's few packets leave together costs the agent one
// wake-up instead of one per packet, which was most of what evenly spaced
// pacing cost it.
//
// Time is cut into ticks of a tenth of the window (a second, or
// 1/perSecond). A tick takes at most burst packets, and any 11 consecutive
// ticks at most limit: a window spans at most 11 ticks, so no window ever
// holds more than limit, and the long-run rate is 10/11 of it. Counts are
// kept per tick into the future: a ping series books its later requests
// ahead, and they hold back only the packets that would crowd their ticks.
type Pacer struct {
	mu sync.Mutex
	// tick is a tenth of the window.
	tick time.Duration
	// burst is the most packets in one tick, limit in ticksPerWindow+1.
	burst, limit int
	// epoch is the start of tick 0: the first moment the pacer was asked.
	epoch time.Time
	// booked counts packets per tick, from a window ago on.
	booked map[int64]int
	// floor is the first tick that may still take a packet: every one
	// before it was found full, and bookings only fill ticks.
	floor int64
}

// ticksPerWindow is how many ticks a window is cut into.
const ticksPerWindow = 10

// NewPacer returns a Pacer allowing perSecond packets per second.
func NewPacer(perSecond float64) *Pacer {
	span, limit := time.Second, int(perSecond)
	if perSecond < 1 {
		span, limit = time.Duration(math.Ceil(float64(time.Second)/perSecond)), 1
	}
	return &Pacer{
		tick:   span / ticksPerWindow,
		burst:  max(1, limit/ticksPerWindow),
		limit:  limit,
		booked: map[int64]int{},
	}
}

// Burst is how many packets may leave back to back.
func (p *Pacer) Burst() int { return p.burst }

// Wait blocks until the caller may send one packet.
func (p *Pacer) Wait(ctx context.Context) error {
	_, err := WaitPacers(ctx, 1, 0, p)
	return err
}

// WaitSeries books n packets sent every apart and blocks until the first
// may leave (see WaitPacers).
func (p *Pacer) WaitSeries(ctx context.Context, n int, every time.Duration) (time.Duration, error) {
	return WaitPacers(ctx, n, every, p)
}

// WaitPacers books a series of n packets on every pacer at once and blocks
// until the first may leave; the others are then within every budget at
// their times (a ping series sends its requests on its own clock). It
// returns the spacing the series must keep: every, or more when n packets
// every apart would outrun a pacer's burst. Callers that combine pacers
// always pass them in the same order.
func WaitPacers(ctx context.Context, n int, every time.Duration, pacers ...*Pacer) (time.Duration, error) {
	now := time.Now()
	start, every := reserve(now, max(n, 1), every, pacers)
	return every, sleepCtx(ctx, start.Sub(now))
}

// reserve books n packets every apart (or wider: the returned spacing) on
// all pacers, from now or the earliest moment after it that fits them all,
// which it returns.
func reserve(now time.Time, n int, every time.Duration, pacers []*Pacer) (time.Time, time.Duration) {
	for _, p := range pacers {
		p.mu.Lock()
		every = max(every, p.spacing(n))
	}
	start := now
	for _, p := range pacers {
		start = later(start, p.earliest(start, n, every))
	}
	for _, p := range pacers {
		p.book(start, n, every)
		p.mu.Unlock()
	}
	return start, every
}

// spacing is the closest n packets can follow one another and still fit
// the ticks' limits. The caller holds mu.
func (p *Pacer) spacing(n int) time.Duration {
	var d time.Duration
	if n > p.burst {
		d = p.tick / time.Duration(p.burst)
	}
	if n > p.limit {
		d = max(d, (ticksPerWindow+1)*p.tick/time.Duration(p.limit))
	}
	if d > 0 {
		d++ // rounding
	}
	return d
}

// earliest is the first moment from from at which n packets every apart
// (at least spacing(n)) all fit, with what is booked. The caller holds mu.
func (p *Pacer) earliest(from time.Time, n int, every time.Duration) time.Time {
	if p.epoch.IsZero() {
		p.epoch = from
	}
	p.forget(from)
	start := later(from, p.epoch.Add(time.Duration(p.floor)*p.tick))
	own := map[int64]int{}
next:
	for {
		clear(own)
		for k := range n {
			at := start.Add(time.Duration(k) * every)
			i := p.tickOf(at)
			if !p.fits(i, own) {
				if k == 0 {
					p.floor = max(p.floor, i+1)
				}
				// Packet k goes no earlier than the next tick: start the
				// series so that it goes then. Past the last booked tick
				// every series fits.
				start = p.epoch.Add(time.Duration(i+1) * p.tick).Add(-time.Duration(k) * every)
				continue next
			}
			own[i]++
		}
		return start
	}
}

// fits reports whether tick i takes one more packet, counting what is
// booked and own (the series' earlier packets).
func (p *Pacer) fits(i int64, own map[int64]int) bool {
	count := func(j int64) int { return p.booked[j] + own[j] }
	if count(i)+1 > p.burst {
		return false
	}
	// Every run of ticksPerWindow+1 ticks holding tick i.
	sum := 0
	for j := i - ticksPerWindow; j <= i+ticksPerWindow; j++ {
		sum += count(j)
		if j >= i {
			if sum+1 > p.limit {
				return false
			}
			sum -= count(j - ticksPerWindow)
		}
	}
	return true
}

// tickOf is the tick holding t.
func (p *Pacer) tickOf(t time.Time) int64 {
	return int64(t.Sub(p.epoch) / p.tick)
}

// book records n packets every apart from start. The caller holds mu.
func (p *Pacer) book(start time.Time, n int, every time.Duration) {
	for k := range n {
		p.booked[p.tickOf(start.Add(time.Duration(k)*every))]++
	}
}

// forget drops the ticks that can no longer share a window with now.
func (p *Pacer) forget(now time.Time) {
	old := p.tickOf(now) - ticksPerWindow
	for i := range p.booked {
		if i < old {
			delete(p.booked, i)
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
