package collector

import (
	"context"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/anyscope/anyscope/collector/store"
)

// Defaults of the limits. The per-agent rates are off in Options unless set;
// `anyscope collector` sets them to these values.
const (
	// DefaultRequestRate and DefaultRequestBurst limit the requests of one
	// bearer token: an agent makes a request every few seconds, and about
	// one a second when it catches up with large batches.
	DefaultRequestRate  = 10
	DefaultRequestBurst = 20
	// DefaultResultRate and DefaultResultBurst limit the results one agent
	// delivers: 5,000 a second is 250 times what an agent at its default
	// packet ceiling measures, so eight hours offline are caught up in
	// about two minutes, and a few per cent of what one collector stores,
	// so one agent catching up cannot starve the others.
	DefaultResultRate  = 5000
	DefaultResultBurst = 10000
	// DefaultMaxIngest is the number of results requests decoded and
	// stored at once when Options.MaxIngest is zero; `anyscope collector`
	// ties it to the database pool instead.
	DefaultMaxIngest = 4
	// DefaultIngestWait is how long a results request waits for a free
	// ingest slot before it is answered 503.
	DefaultIngestWait = 2 * time.Second
	// DefaultLimiterKeys caps the token buckets kept per kind.
	DefaultLimiterKeys = 100_000
)

// Retry-After of a 503 when every ingest slot stays busy: small, and spread
// so that the agents turned away together do not come back together.
const (
	overloadRetryMin    = time.Second
	overloadRetryJitter = 2 // extra whole seconds, at most
)

// sweepEvery is how often a bucket set forgets its full buckets.
const sweepEvery = time.Minute

// buckets is a set of token buckets, one per key, each holding up to burst
// tokens and refilling at rate per second. A key's bucket is created full on
// first use and forgotten once it is full again (a full bucket is the same
// as none), so memory follows the keys active in the last burst/rate
// seconds, and never exceeds maxKeys: beyond it an arbitrary bucket is
// dropped, which at worst grants its key a fresh burst.
type buckets struct {
	rate, burst float64
	maxKeys     int

	mu    sync.Mutex
	m     map[uint64]*bucket
	swept time.Time
}

type bucket struct {
	level float64   // tokens at t; negative while in debt
	t     time.Time // last update
}

func newBuckets(rate, burst float64, maxKeys int) *buckets {
	return &buckets{rate: rate, burst: burst, maxKeys: maxKeys, m: map[uint64]*bucket{}}
}

// get returns key's bucket refilled up to now; callers hold b.mu.
func (b *buckets) get(key uint64, now time.Time) *bucket {
	if now.Sub(b.swept) >= sweepEvery {
		b.sweep(now)
	}
	k, ok := b.m[key]
	if !ok {
		if len(b.m) >= b.maxKeys {
			for victim := range b.m {
				delete(b.m, victim)
				break
			}
		}
		k = &bucket{level: b.burst, t: now}
		b.m[key] = k
		return k
	}
	if dt := now.Sub(k.t).Seconds(); dt > 0 {
		k.level = min(b.burst, k.level+dt*b.rate)
		k.t = now
	}
	return k
}

// sweep forgets every bucket that has refilled completely.
func (b *buckets) sweep(now time.Time) {
	b.swept = now
	for key, k := range b.m {
		if k.level+now.Sub(k.t).Seconds()*b.rate >= b.burst {
			delete(b.m, key)
		}
	}
}

// take removes cost tokens from key's bucket if it holds at least need, and
// otherwise returns how long until it will (the bucket is left as it was).
func (b *buckets) take(key uint64, need, cost float64, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.get(key, now)
	if k.level < need {
		return time.Duration(math.Ceil((need - k.level) / b.rate * float64(time.Second)))
	}
	k.level -= cost
	return 0
}

// charge removes cost tokens from key's bucket, into debt if need be.
func (b *buckets) charge(key uint64, cost float64, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(key, now).level -= cost
}

// len returns the number of buckets kept.
func (b *buckets) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// limits are the collector's admission controls: per-token request buckets,
// per-agent result buckets, and the slots of concurrent ingest.
type limits struct {
	seed     maphash.Seed
	requests *buckets // by bearer token; nil: no limit
	results  *buckets // by agent; nil: no limit
	slots    chan struct{}
	wait     time.Duration
}

// agentKey carries the agent admit authenticated to the handler.
type agentKey struct{}

// authenticated returns the agent admit stored in ctx.
func authenticated(ctx context.Context) (store.Agent, bool) {
	a, ok := ctx.Value(agentKey{}).(store.Agent)
	return a, ok
}

// admit wraps an agent endpoint with the admission controls, cheapest
// first: the token's request bucket (no database lookup, so a flood with one
// token costs nothing), authentication (including the client certificate),
// and for ingest, the agent's result bucket and an ingest slot, waited for
// at most the configured time. Health, metrics and the schedule never wait
// for ingest slots.
func (s *Server) admit(next http.HandlerFunc, ingest bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := s.opts.Now()
		if s.lim.requests != nil {
			if token, herr := bearer(r); herr == nil {
				key := maphash.String(s.lim.seed, token)
				if d := s.lim.requests.take(key, 1, 1, now); d > 0 {
					s.writeError(w, s.rateLimited("requests", d))
					return
				}
			}
		}
		agent, herr := s.authenticate(r)
		if herr != nil {
			s.writeError(w, herr)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), agentKey{}, agent))
		if !ingest {
			next(w, r)
			return
		}
		// Results are charged once a batch is decoded (see chargeResults);
		// an agent in debt waits here, before its next body is read.
		if s.lim.results != nil {
			if d := s.lim.results.take(uint64(agent.ID), 0, 0, now); d > 0 {
				s.writeError(w, s.rateLimited("results", d))
				return
			}
		}
		release, herr := s.ingestSlot(r.Context())
		if herr != nil {
			s.writeError(w, herr)
			return
		}
		defer release()
		next(w, r)
	})
}

// chargeResults charges n decoded results to the agent that sent them. The
// batch is stored even if that puts the agent in debt (its decoding is
// already paid for); the agent's next batch waits until the debt is repaid.
func (s *Server) chargeResults(r *http.Request, n int) {
	if s.lim.results == nil {
		return
	}
	if a, ok := authenticated(r.Context()); ok {
		s.lim.results.charge(uint64(a.ID), float64(n), s.opts.Now())
	}
}

func (s *Server) rateLimited(bucket string, d time.Duration) *httpError {
	s.metrics.rateLimited.WithLabelValues(bucket).Inc()
	e := fail(http.StatusTooManyRequests, "rate_limited", "too many %s from this agent; retry in %s", bucket, d.Round(time.Millisecond))
	e.retry = d
	return e
}

// ingestSlot waits up to the configured time for one of the ingest slots
// and returns the function that frees it.
func (s *Server) ingestSlot(ctx context.Context) (release func(), herr *httpError) {
	release = func() {
		<-s.lim.slots
		s.metrics.ingestInFlight.Dec()
	}
	select {
	case s.lim.slots <- struct{}{}:
		s.metrics.ingestInFlight.Inc()
		return release, nil
	default:
	}
	start := time.Now()
	t := time.NewTimer(s.lim.wait)
	defer t.Stop()
	s.metrics.ingestWaiting.Inc()
	outcome := "admitted"
	defer func() {
		s.metrics.ingestWaiting.Dec()
		s.metrics.ingestQueued.WithLabelValues(outcome).Inc()
		s.metrics.ingestWait.Observe(time.Since(start).Seconds())
	}()
	select {
	case s.lim.slots <- struct{}{}:
		s.metrics.ingestInFlight.Inc()
		return release, nil
	case <-t.C:
		outcome = "overloaded"
		e := fail(http.StatusServiceUnavailable, "overloaded", "collector busy: every ingest slot stayed taken for %s; retry later", s.lim.wait)
		e.retry = overloadRetryMin + time.Duration(rand.IntN(overloadRetryJitter+1))*time.Second
		return nil, e
	case <-ctx.Done():
		outcome = "canceled"
		return nil, fail(http.StatusServiceUnavailable, "canceled", "request canceled")
	}
}
