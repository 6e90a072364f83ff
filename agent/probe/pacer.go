package probe

import (
	"context"
	"sync"
	"time"
)

// Pacer is a Limiter that spaces packets evenly so that its user never
// sends more than perSecond, however many probes are due at once.
type Pacer struct {
	mu   sync.Mutex
	gap  time.Duration
	next time.Time
}

// NewPacer returns a Pacer allowing perSecond packets per second.
func NewPacer(perSecond float64) *Pacer {
	return &Pacer{gap: time.Duration(float64(time.Second) / perSecond)}
}

// Wait blocks until the caller's slot.
func (p *Pacer) Wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if slot.Before(now) {
		slot = now
	}
	p.next = slot.Add(p.gap)
	p.mu.Unlock()
	if d := slot.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
