package synth

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Observations calls fn with every observation of the world in time order,
// generating them round by round: nothing is stored, so a world of ten
// million observations costs no more memory than one of ten. Each
// vantage point probes every target at its own offset into each interval;
// a round gives one DNS observation per query over UDP (and a ping when
// Config.Ping), all at the same instant, with Round set to a number unique
// per vantage point, target and round. Observations with the same instant
// come in vantage point, target, query order. fn returning an error stops
// the generation and that error is returned.
func (w *World) Observations(fn func(analysis.Observation) error) error {
	return w.generate(context.Background(), w.start, w.end, -1, fn)
}

// checkEvery is how many vantage points are generated between context
// checks.
const checkEvery = 1024

// generate yields the observations in [since, until) (Unix ns) of one
// target (only ≥ 0) or of all.
func (w *World) generate(ctx context.Context, since, until int64, only int, fn func(analysis.Observation) error) error {
	seed, nt, nq := w.cfg.Seed, len(w.targets), len(w.queries)
	until = min(until, w.end)
	since = max(since, w.start)
	t0, t1 := 0, nt
	if only >= 0 {
		t0, t1 = only, only+1
	}
	// Round r's instants lie in [start + r·interval, start + (r+1)·interval).
	r0 := int((since - w.start) / w.interval)
	var obs analysis.Observation
	for r := r0; r < w.rounds; r++ {
		base := w.start + int64(r)*w.interval
		if base >= until {
			break
		}
		for k, v32 := range w.order {
			if k%checkEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			v := int(v32)
			at := base + w.vps[v].offset
			if at >= until {
				break // w.order is by ascending offset
			}
			if at < since || len(w.byVP[v]) > 0 && w.gapped(v, at) {
				continue
			}
			obs.VantagePoint = w.vps[v].Name
			obs.At = time.Unix(0, at).UTC()
			for t := t0; t < t1; t++ {
				tg := &w.targets[t]
				obs.Target = tg.name
				obs.Address = tg.addr4
				obs.Round = uint64(r*nt + t + 1)
				s, ok := w.serve(v, t, r, at)
				var rtt float64
				var ids []string
				if ok {
					rtt = w.rttMs(v, t, s)
					ids = tg.identities[s]
				}
				obs.Kind, obs.Transport = api.KindDNS, api.TransportUDP
				for q := 0; q <= nq; q++ {
					if q == nq {
						if !w.cfg.Ping {
							break
						}
						obs.Kind, obs.Transport, obs.Query = api.KindPing, api.TransportICMP, api.QueryEcho
					} else {
						obs.Query = w.queries[q]
					}
					key := uint64(r*(nq+1) + q)
					if ok {
						noise := w.cfg.JitterMs * unit(hash(seed, drawNoise, uint64(v), uint64(t), key, 0))
						obs.RTT = time.Duration(math.Ceil((rtt + noise) * float64(time.Millisecond)))
						obs.Failure = api.FailureNone
						obs.Identity = ""
						if q < nq {
							obs.Identity = ids[0]
							if len(ids) > 1 {
								obs.Identity = ids[intn(hash(seed, drawServer, uint64(v), uint64(t), key, 0), len(ids))]
							}
						}
					} else {
						obs.RTT, obs.Failure, obs.Identity = 0, api.FailureTimeout, ""
					}
					if err := fn(obs); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// Source returns the world as an analysis.Source (and a
// VantagePointSource), so analysis code runs on it as on the store.
func (w *World) Source() interface {
	analysis.Source
	analysis.VantagePointSource
} {
	return source{w}
}

type source struct{ w *World }

func (s source) Targets(ctx context.Context) ([]analysis.Target, error) {
	return s.w.Targets(), ctx.Err()
}

func (s source) VantagePoints(ctx context.Context) ([]analysis.VantagePoint, error) {
	return s.w.VantagePoints(), ctx.Err()
}

// Observations yields the target's observations in [since, until); a zero
// bound leaves that side open, and an empty target means every target.
func (s source) Observations(ctx context.Context, since, until time.Time, target string, fn func(analysis.Observation) error) error {
	only := -1
	if target != "" {
		t, ok := s.w.targetByName[target]
		if !ok {
			return fmt.Errorf("synth: no target %q", api.Clip(target))
		}
		only = t
	}
	lo, hi := s.w.start, s.w.end
	if !since.IsZero() {
		lo = max(lo, since.UnixNano())
	}
	if !until.IsZero() {
		hi = min(hi, until.UnixNano())
	}
	return s.w.generate(ctx, lo, hi, only, fn)
}
