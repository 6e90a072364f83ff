package probe

// A session keeps one TCP connection open to an anycast address and asks
// "who are you?" on it at a fixed interval. Routing decides the site of each
// packet, not of the connection: when a route change sends the connection's
// packets to another site, that site has no state for it and answers with a
// RST, or the packets vanish and the answers stop. Servers also close long or
// idle connections on their own with an orderly FIN, which is not a switch.
// A session records its life (opened, each answer with its identity and RTT,
// closed) and classifies its end, so that analysis can tell the two apart.
//
// How the end is told in Go: one goroutine reads the connection all the time,
// also while no query is outstanding, so that the server's FIN is seen as it
// arrives, before the next query is written into a half-closed connection
// (which would draw a RST and hide the FIN). A read returning io.EOF at a
// message boundary is a FIN (recv returned 0); one failing with ECONNRESET
// (or a write failing with ECONNRESET or EPIPE) is a RST; a missing answer is
// measured by the session's own timer, never by a socket deadline, so a
// silent black hole ends as a timeout after exactly Timeout.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults for SessionOptions.
const (
	DefaultSessionInterval = 5 * time.Second
	DefaultSessionLife     = 10 * time.Minute
)

// Reconnection backoff of Loop after a failed connect.
const (
	sessionBackoffMin = 200 * time.Millisecond
	sessionBackoffMax = 30 * time.Second
)

// SessionOptions configure a session prober. Zero values take the defaults.
type SessionOptions struct {
	// Interval is the time between two identity queries on the connection
	// (default 5s).
	Interval time.Duration
	// Life is how long a session is kept open before the agent closes it
	// (default 10 minutes); a target's SessionLifeSeconds overrides it.
	Life time.Duration
	// Timeout bounds the connect and the wait for each answer (default:
	// Interval). An answer missing for this long ends the session with
	// api.EndTimeout.
	Timeout time.Duration
	// Port is the DNS servers' port (default 53); only tests and labs change
	// it. HTTP sessions take theirs from the target's HTTP spec.
	Port uint16
	// TLS configures https sessions (nil: the system roots); ServerName
	// defaults to the target's Host.
	TLS *tls.Config
	// Limiter, when set, is waited on before the connect and before every
	// query.
	Limiter Limiter
}

// Session runs long-lived identity sessions (api.KindSession): DNS over TCP
// (RFC 7766) or HTTP/1.1 keep-alive.
type Session struct {
	opts SessionOptions
}

// NewSession validates o, applies defaults and returns a prober.
func NewSession(o SessionOptions) (*Session, error) {
	switch {
	case o.Interval == 0:
		o.Interval = DefaultSessionInterval
	case o.Interval < 0:
		return nil, fmt.Errorf("probe: session interval %v is negative", o.Interval)
	}
	switch {
	case o.Life == 0:
		o.Life = DefaultSessionLife
	case o.Life < 0:
		return nil, fmt.Errorf("probe: session life %v is negative", o.Life)
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = min(o.Interval, api.MaxRTT)
	case o.Timeout < 0 || o.Timeout > api.MaxRTT:
		return nil, fmt.Errorf("probe: session timeout %v out of range (0, %v]", o.Timeout, api.MaxRTT)
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	return &Session{opts: o}, nil
}

// life is the session life for t.
func (s *Session) life(t api.ScheduleTarget) time.Duration {
	if t.SessionLifeSeconds > 0 {
		return time.Duration(t.SessionLifeSeconds * float64(time.Second))
	}
	return s.opts.Life
}

// sessionProto speaks one protocol on a session's connection.
type sessionProto interface {
	// dial opens the connection (and TLS when asked).
	dial(ctx context.Context, d *net.Dialer) (net.Conn, error)
	// send writes the next identity query; the main loop calls it.
	send(w io.Writer) error
	// read blocks until the next answer has arrived whole and returns it
	// unchecked; the reader goroutine calls it, and nothing else of the
	// protocol, so the two never share state. An error wrapping ErrBogus
	// means garbage arrived.
	read() (any, error)
	// check matches an answer to the last query sent and returns the
	// identity it names ("" when none), and whether the server announced
	// that it will close the connection.
	check(answer any) (identity string, closing bool, err error)
}

// Run opens one connection to addr and keeps it for the target's session
// life, sending an identity query every Interval (query is
// api.QuerySessionDNS or api.QuerySessionHTTP), and returns one result when
// the session ends, with Seq left zero for the spool to assign:
//
//   - api.EndServerClose: the server closed it with a FIN. Failure is none
//     after a complete answer, connection_closed when a query was waiting.
//   - api.EndReset: a RST (connection_reset).
//   - api.EndTimeout: an answer missing for Timeout (generic_timeout_error).
//   - api.EndIdentityChanged: an answer named another server than the one
//     before (answers without identity are not compared); it is recorded.
//   - api.EndLifeEnded: the life elapsed, the answer cap was reached, or ctx
//     ended (agent shutdown: the result holds what was measured so far and
//     the caller decides whether to keep it).
//   - api.EndConnectFailed: no connection (or TLS handshake); Failure says
//     why.
//   - api.EndError: a malformed answer (dns_bogus_answer), or another error.
//
// MeasuredAt and OpenedAt are when the connection was established (when the
// connect began, for api.EndConnectFailed); RTTMicros is the first answer's.
// A query is sent at once and then at every Interval tick, except while the
// previous one is still unanswered (a tick is skipped, not queued).
func (s *Session) Run(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, query string) api.Result {
	addr = addr.Unmap().WithZone("")
	res := api.Result{
		Target:    t.Name,
		Address:   addr.String(),
		Kind:      api.KindSession,
		Transport: api.TransportTCP,
		Query:     query,
	}
	start := time.Now()
	fail := func(end string, f api.Failure) api.Result {
		now := time.Now()
		res.MeasuredAt = start.UTC()
		res.Failure = f
		res.Session = &api.SessionValues{OpenedAt: res.MeasuredAt, ClosedAt: res.MeasuredAt.Add(now.Sub(start)), End: end}
		return res
	}
	var proto sessionProto
	switch query {
	case api.QuerySessionDNS:
		proto = newSessionDNS(netip.AddrPortFrom(addr, s.opts.Port))
	case api.QuerySessionHTTP:
		p, err := newSessionHTTP(t.HTTP, addr, s.opts.TLS)
		if err != nil {
			// Not a measurement of the server: the schedule asked for
			// something the agent cannot send.
			return fail(api.EndError, api.FailureUnknown)
		}
		proto = p
	default:
		return fail(api.EndError, api.FailureUnknown)
	}
	if s.opts.Limiter != nil {
		if err := s.opts.Limiter.Wait(ctx); err != nil {
			return fail(api.EndConnectFailed, Classify(ctxErr(ctx, err)))
		}
		start = time.Now()
	}
	dctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	conn, err := proto.dial(dctx, &net.Dialer{})
	if err != nil {
		err = ctxErr(dctx, err)
	}
	cancel()
	if err != nil {
		return fail(api.EndConnectFailed, Classify(err))
	}
	return s.converse(ctx, conn, proto, res, s.life(t))
}

// sessionEvent is what the reader goroutine saw: an answer and when it arrived
// whole, or the error that ended reading.
type sessionEvent struct {
	answer any
	at     time.Time
	err    error
}

// converse runs an open session to its end.
func (s *Session) converse(ctx context.Context, conn net.Conn, proto sessionProto, res api.Result, life time.Duration) api.Result {
	opened := time.Now()
	events := make(chan sessionEvent, 1)
	done := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			a, err := proto.read()
			ev := sessionEvent{answer: a, at: time.Now(), err: err}
			select {
			case events <- ev:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	var (
		v           = &api.SessionValues{End: api.EndLifeEnded}
		failure     api.Failure
		sentAt      time.Time
		outstanding bool
		identity    string // the last non-empty identity
		ended       bool
	)
	wall := opened.UTC()
	at := func(t time.Time) time.Time { return wall.Add(t.Sub(opened)) } // monotonic, so closed ≥ opened
	end := func(e string, f api.Failure) {
		if !ended {
			ended, v.End, failure = true, e, f
		}
	}
	// endRead classifies the error that ended reading.
	endRead := func(err error) {
		switch {
		case errors.Is(err, io.EOF) && !outstanding:
			end(api.EndServerClose, api.FailureNone)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			end(api.EndServerClose, api.FailureConnectionClosed)
		case sessionIsReset(err):
			end(api.EndReset, api.FailureConnectionReset)
		case errors.Is(err, ErrBogus):
			end(api.EndError, api.FailureDNSBogus)
		case Classify(err) == api.FailureTimeout:
			// The kernel gave up retransmitting (ETIMEDOUT).
			end(api.EndTimeout, api.FailureTimeout)
		default:
			end(api.EndError, Classify(err))
		}
	}
	handle := func(ev sessionEvent) {
		if ev.err != nil {
			endRead(ev.err)
			return
		}
		if !outstanding {
			end(api.EndError, api.FailureDNSBogus) // an answer to no query
			return
		}
		id, closing, err := proto.check(ev.answer)
		if err != nil {
			end(api.EndError, Classify(err))
			return
		}
		outstanding = false
		rtt := min(ev.at.Sub(sentAt), api.MaxRTT)
		v.Answers = append(v.Answers, api.SessionAnswer{At: at(ev.at), Identity: id, RTTUS: rtt.Microseconds()})
		if len(v.Answers) == 1 {
			res.RTTMicros = rtt.Microseconds()
		}
		switch {
		case id != "" && identity != "" && id != identity:
			end(api.EndIdentityChanged, api.FailureNone)
		case closing:
			end(api.EndServerClose, api.FailureNone)
		}
		if id != "" {
			identity = id
		}
	}
	// drain handles what the reader has already delivered, so that a timer
	// firing at the same moment never hides it.
	drain := func() {
		for !ended {
			select {
			case ev := <-events:
				handle(ev)
			default:
				return
			}
		}
	}
	timeout := time.NewTimer(time.Hour)
	timeout.Stop()
	defer timeout.Stop()
	send := func() {
		if v.Queries >= api.MaxSessionAnswers {
			end(api.EndLifeEnded, api.FailureNone)
			return
		}
		if s.opts.Limiter != nil {
			if err := s.opts.Limiter.Wait(ctx); err != nil {
				end(api.EndLifeEnded, api.FailureNone)
				return
			}
		}
		_ = conn.SetWriteDeadline(time.Now().Add(s.opts.Timeout))
		sentAt = time.Now()
		v.Queries++
		outstanding = true
		timeout.Reset(s.opts.Timeout)
		if err := proto.send(conn); err != nil {
			// The reader usually knows better why the connection broke
			// (a FIN seen before the write drew a RST): give it a moment.
			wait := time.NewTimer(min(s.opts.Timeout, 100*time.Millisecond))
			defer wait.Stop()
			select {
			case ev := <-events:
				if ev.err != nil {
					endRead(ev.err)
					return
				}
				handle(ev)
			case <-wait.C:
			}
			endRead(err)
		}
	}

	lifeEnd := opened.Add(life)
	lifeTimer := time.NewTimer(life)
	defer lifeTimer.Stop()
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	send()
	for !ended {
		select {
		case <-ctx.Done():
			drain()
			end(api.EndLifeEnded, api.FailureNone)
		case <-lifeTimer.C:
			drain()
			end(api.EndLifeEnded, api.FailureNone)
		case ev := <-events:
			handle(ev)
		case <-timeout.C:
			drain()
			if outstanding {
				end(api.EndTimeout, api.FailureTimeout)
			}
		case now := <-tick.C:
			drain()
			switch {
			case ended:
			case !now.Before(lifeEnd):
				end(api.EndLifeEnded, api.FailureNone)
			case !outstanding:
				send()
			}
		}
	}
	closed := time.Now()
	close(done)
	conn.Close()
	<-readerDone

	res.MeasuredAt = wall
	res.Failure = failure
	v.OpenedAt, v.ClosedAt = wall, at(closed)
	res.Session = v
	return res
}

// sessionIsReset reports whether err means the peer reset the connection.
func sessionIsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// Loop runs sessions to addr back to back until ctx ends, passing each
// result to emit (from the calling goroutine). A new session starts as soon
// as the previous one ended, but never sooner than Interval after the
// previous one started; after a failed connect it waits a growing, jittered
// backoff (200ms doubling up to 30s). A connect cut short by ctx is not
// emitted; a session cut short by ctx is (with api.EndLifeEnded).
func (s *Session) Loop(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, query string, emit func(api.Result)) {
	var backoff time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		r := s.Run(ctx, t, addr, query)
		failed := r.Session != nil && r.Session.End == api.EndConnectFailed
		if failed && ctx.Err() != nil {
			return
		}
		emit(r)
		wait := s.opts.Interval - time.Since(start)
		if failed {
			backoff = min(max(2*backoff, sessionBackoffMin), sessionBackoffMax)
			wait = backoff/2 + rand.N(backoff/2+1)
		} else {
			backoff = 0
		}
		if wait > 0 {
			if err := sleepCtx(ctx, wait); err != nil {
				return
			}
		}
	}
}
