// Package shipper uploads spooled results to the collector and tells the
// spool to forget them only once the collector has acknowledged them; on any
// failure it keeps the data and retries with jittered exponential backoff.
// The gaps the spool recorded (results it lost) travel in the same batches,
// alone when no result is pending, and are forgotten the same way.
package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Spool is the queue the shipper drains.
type Spool interface {
	// Pending returns the oldest unacknowledged results in seq order.
	Pending(maxResults, maxBytes int) ([]api.Result, error)
	// Ack forgets every result up to and including upTo. Sequence numbers
	// below upTo that never arrive are in gaps.
	Ack(upTo uint64) error
	// PendingGaps returns at most max gaps (lost results) the collector
	// has not acknowledged.
	PendingGaps(max int) []api.Gap
	// AckGaps forgets gaps the collector acknowledged.
	AckGaps(gaps []api.Gap) error
}

// Defaults for Options.
const (
	DefaultMaxBatchBytes = 4 << 20
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultFinalFlush    = 5 * time.Second
	DefaultLinger        = 2 * time.Second
	// MaxRetryAfter caps how long a Retry-After header can silence the
	// shipper.
	MaxRetryAfter = 10 * time.Minute
	// idlePoll is how often an idle shipper looks at the spool without
	// being woken, in case a wake-up was missed.
	idlePoll = 30 * time.Second
)

// Options configure a Shipper. Zero values take the defaults.
type Options struct {
	// MaxBatchResults caps results per batch; at most api.MaxBatchResults.
	MaxBatchResults int
	// MaxBatchBytes caps the spooled size of a batch before compression.
	MaxBatchBytes int
	// MinBackoff and MaxBackoff bound the delay between failed attempts.
	MinBackoff, MaxBackoff time.Duration
	// FinalFlush bounds the best-effort upload when Run stops.
	FinalFlush time.Duration
	// Linger is how long Run lets results gather after being woken before
	// it uploads them, so that rounds finishing one after another travel in
	// one batch (and one acknowledgement) rather than one upload each.
	// Zero means DefaultLinger; negative uploads at once.
	Linger time.Duration
	Logger *slog.Logger
	// Registerer receives the shipper's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Shipper moves results from a spool to the collector.
type Shipper struct {
	sp       Spool
	c        *Client
	opts     Options
	log      *slog.Logger
	m        *metrics
	batchSeq uint64
	batchMax int // lowered when the collector finds batches too large
}

// New returns a shipper draining sp through c.
func New(sp Spool, c *Client, o Options) (*Shipper, error) {
	if sp == nil || c == nil {
		return nil, errors.New("shipper: nil spool or client")
	}
	if o.MaxBatchResults <= 0 || o.MaxBatchResults > api.MaxBatchResults {
		o.MaxBatchResults = api.MaxBatchResults
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		return nil, fmt.Errorf("shipper: max backoff %v below min backoff %v", o.MaxBackoff, o.MinBackoff)
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.FinalFlush <= 0 {
		o.FinalFlush = DefaultFinalFlush
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Shipper{sp: sp, c: c, opts: o, log: o.Logger, m: m, batchMax: o.MaxBatchResults}, nil
}

// Run ships whenever results are pending, waking up on wake (a channel the
// spool's writer signals after each append), until ctx ends. Then it makes
// one best-effort attempt, bounded by FinalFlush, to ship what is left.
// Results that cannot be shipped stay in the spool for the next run.
func (s *Shipper) Run(ctx context.Context, wake <-chan struct{}) error {
	// Uploads run on their own context, which outlives ctx by FinalFlush: an
	// upload in flight at shutdown completes (rather than being cut off and
	// re-sent later), and the final flush has a bounded time.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	defer scancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(s.opts.FinalFlush, scancel) })
	defer stop()

	bo := s.backoff()
	for ctx.Err() == nil {
		n, err := s.ShipOnce(sctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			sleep(ctx, s.delay(err, bo))
			continue
		}
		bo.Reset()
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-wake:
			if s.opts.Linger > 0 {
				sleep(ctx, s.opts.Linger)
			}
		case <-time.After(idlePoll):
		}
	}
	for {
		n, err := s.ShipOnce(sctx)
		if err != nil {
			s.log.Warn("shipper: final upload incomplete; results stay in the spool", "err", err)
			return nil
		}
		if n == 0 {
			return nil
		}
	}
}

// Flush ships until the spool is empty, retrying temporary failures with
// backoff. It returns an error if ctx ends first, or at once when the
// collector rejects the upload (a wrong token, say): waiting will not help.
// Unshipped results stay in the spool either way.
func (s *Shipper) Flush(ctx context.Context) error {
	bo := s.backoff()
	for {
		n, err := s.ShipOnce(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("shipper: flush interrupted with results still pending: %w", ctx.Err())
		}
		var se *StatusError
		if errors.As(err, &se) && !se.Temporary() && se.Code != http.StatusRequestEntityTooLarge {
			s.log.Error("shipper: COLLECTOR REJECTED UPLOAD; results are kept in the spool",
				"status", se.Code, "collector_says", se.Message)
			return fmt.Errorf("shipper: %w", err)
		}
		if err != nil {
			sleep(ctx, s.delay(err, bo))
			continue
		}
		bo.Reset()
		if n == 0 {
			return nil
		}
	}
}

// ShipOnce uploads one batch of pending results and gaps and acknowledges
// them in the spool once the collector acknowledged them. It returns how
// many results and gaps were shipped: zero with a nil error when nothing is
// pending.
//
// The spool's watermark moves to the batch's highest sequence number: the
// numbers below it that the batch lacks are in gaps, already delivered or
// kept until they are.
func (s *Shipper) ShipOnce(ctx context.Context) (int, error) {
	rs, err := s.sp.Pending(s.batchMax, s.opts.MaxBatchBytes)
	if err != nil {
		return 0, fmt.Errorf("shipper: reading spool: %w", err)
	}
	gs := s.sp.PendingGaps(api.MaxBatchGaps)
	if len(rs) == 0 && len(gs) == 0 {
		return 0, nil
	}
	if rs == nil {
		rs = []api.Result{}
	}
	s.batchSeq++
	b := &api.Batch{Agent: s.c.agent, BatchSeq: s.batchSeq, Results: rs, Gaps: gs}
	start := time.Now()
	ack, err := s.c.Upload(ctx, b)
	s.m.latency.Observe(time.Since(start).Seconds())
	s.m.uploads.WithLabelValues(outcome(err)).Inc()
	if err != nil {
		return 0, err
	}
	var upTo uint64
	for _, r := range rs {
		upTo = max(upTo, r.Seq)
	}
	if upTo > 0 {
		if err := s.sp.Ack(upTo); err != nil {
			return 0, fmt.Errorf("shipper: acknowledging up to seq %d in the spool: %w", upTo, err)
		}
	}
	if len(gs) > 0 {
		if err := s.sp.AckGaps(gs); err != nil {
			return 0, fmt.Errorf("shipper: acknowledging %d gaps in the spool: %w", len(gs), err)
		}
		var lost uint64
		for _, g := range gs {
			lost += g.Count
		}
		s.log.Warn("shipper: reported results lost at this agent to the collector", "gaps", len(gs), "results", lost,
			"first_seq", gs[0].FirstSeq, "last_seq", gs[len(gs)-1].LastSeq)
	}
	s.m.accepted.Add(float64(ack.Accepted))
	s.m.duplicates.Add(float64(ack.Duplicates))
	s.log.Debug("shipper: batch acknowledged", "batch_seq", b.BatchSeq, "results", len(rs), "gaps", len(gs),
		"up_to_seq", upTo, "duplicates", ack.Duplicates)
	return len(rs) + len(gs), nil
}

// delay decides how long to wait after a failed attempt, and says why.
func (s *Shipper) delay(err error, bo *Backoff) time.Duration {
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusRequestEntityTooLarge && s.batchMax > 1:
		s.batchMax = max(1, s.batchMax/2)
		s.log.Warn("shipper: collector finds batches too large; shrinking them", "max_results", s.batchMax)
		return 0
	case errors.As(err, &se) && se.RetryAfter > 0 && (se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable):
		d := min(se.RetryAfter, MaxRetryAfter)
		s.log.Warn("shipper: collector asks to retry later", "status", se.Code, "retry_after", d)
		return d
	case errors.As(err, &se) && se.Temporary():
		d := bo.Next()
		s.log.Warn("shipper: upload failed; retrying", "status", se.Code, "msg", se.Message, "retry_in", d)
		return d
	case errors.As(err, &se):
		// The collector refuses this agent or this data: a human must act.
		// Keep everything and retry rarely.
		d := bo.Max()
		s.log.Error("shipper: COLLECTOR REJECTED UPLOAD; results are kept in the spool",
			"status", se.Code, "collector_says", se.Message, "retry_in", d)
		return d
	case errors.Is(err, ErrBadAnswer):
		d := bo.Next()
		s.log.Error("shipper: collector's answer is not an acknowledgement; results are kept", "err", err, "retry_in", d)
		return d
	default:
		d := bo.Next()
		s.log.Warn("shipper: upload failed; retrying", "err", err, "retry_in", d)
		return d
	}
}

func (s *Shipper) backoff() *Backoff {
	return &Backoff{Min: s.opts.MinBackoff, Cap: s.opts.MaxBackoff}
}

// outcome labels an upload attempt for metrics.
func outcome(err error) string {
	var se *StatusError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se) && (se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable):
		return "throttled"
	case errors.As(err, &se) && se.Code >= 500:
		return "server_error"
	case errors.As(err, &se):
		return "rejected"
	case errors.Is(err, ErrBadAnswer):
		return "bad_answer"
	}
	return "network_error"
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Backoff yields exponentially growing delays with jitter: attempt n waits
// between half and all of min(Cap, Min·2ⁿ), so that agents that failed
// together do not retry together.
type Backoff struct {
	Min, Cap time.Duration
	cur      time.Duration
}

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	if b.cur <= 0 {
		b.cur = b.Min
	}
	d := min(b.cur, b.Cap)
	b.cur = min(2*d, b.Cap)
	return jitter(d)
}

// Max returns a delay at the cap, with jitter.
func (b *Backoff) Max() time.Duration { return jitter(b.Cap) }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.cur = 0 }

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
