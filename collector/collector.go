// Package collector is the HTTP service agents upload results to and fetch
// their schedule from. It authenticates every request with the agent's bearer
// token, validates every field, and acknowledges a batch only after the store
// committed it; re-delivered results are answered with success, so agents can
// simply re-send whatever they have not seen acknowledged. It serves HTTPS,
// optionally requiring client certificates that name the agent (TLSOptions),
// and protects itself with per-agent rate limits (429) and a cap on ingest
// requests in flight (503), both answered with Retry-After.
package collector

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

// Store is what the collector needs from the database.
type Store interface {
	Authenticate(ctx context.Context, token string) (store.Agent, error)
	Hello(ctx context.Context, agentID int64, loc *api.Location) (store.Agent, error)
	Ingest(ctx context.Context, agent store.Agent, results []api.Result) (accepted, duplicates int, err error)
	IngestGaps(ctx context.Context, agent store.Agent, gaps []api.Gap) (accepted, duplicates int, err error)
	ActiveTargets(ctx context.Context) ([]store.Target, error)
	Ping(ctx context.Context) error
}

// Options tune the collector. Zero values take the defaults (for the
// per-agent rates: no limit).
type Options struct {
	// MaxBodyBytes caps a request body, compressed and decompressed alike.
	MaxBodyBytes int64
	// MaxAge and MaxFuture bound measured_at relative to the collector's clock.
	MaxAge    time.Duration
	MaxFuture time.Duration
	// ScheduleCache is how long the target list is reused between requests.
	ScheduleCache time.Duration
	Logger        *slog.Logger
	// Registry receives the collector's metrics; nil means a private registry.
	Registry *prometheus.Registry
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// RequestRate limits each bearer token to this many requests per second
	// on average (hello, schedule and results alike), RequestBurst at once
	// (twice the rate when zero). Beyond it: 429 with Retry-After. Zero
	// RequestRate means no limit; `anyscope collector` sets
	// DefaultRequestRate.
	RequestRate, RequestBurst float64
	// ResultRate limits the results each agent delivers per second on
	// average, ResultBurst at once (twice the rate when zero). A batch is
	// charged once decoded and stored even if that overdraws the agent's
	// bucket; the agent's next batch gets 429 with Retry-After until the
	// debt is repaid. Zero ResultRate means no limit; `anyscope collector`
	// sets DefaultResultRate.
	ResultRate, ResultBurst float64
	// MaxIngest caps the results requests being decoded and stored at once
	// (DefaultMaxIngest when zero); one more waits up to IngestWait
	// (DefaultIngestWait when zero) for a slot, then gets 503 with a small,
	// jittered Retry-After.
	MaxIngest  int
	IngestWait time.Duration
	// LimiterKeys caps the token buckets kept per kind (DefaultLimiterKeys
	// when zero).
	LimiterKeys int
	// TLS, when set, is the collector's certificate and, for mutual TLS,
	// its client CA; serve with TLSConfig.
	TLS *TLSOptions
}

// Defaults.
const (
	DefaultMaxAge        = 30 * 24 * time.Hour
	DefaultMaxFuture     = 5 * time.Minute
	DefaultScheduleCache = 5 * time.Second
)

// Server serves the collector API.
type Server struct {
	st      Store
	opts    Options
	log     *slog.Logger
	metrics *metrics
	reg     *prometheus.Registry
	lim     limits
	tls     *tlsFiles // nil: plain HTTP

	mu          sync.Mutex
	targets     []store.Target
	targetsTime time.Time
}

// New returns a collector serving st.
func New(st Store, opts Options) (*Server, error) {
	if st == nil {
		return nil, errors.New("collector: nil store")
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = api.MaxBodyBytes
	}
	if opts.MaxBodyBytes < 1024 {
		return nil, fmt.Errorf("collector: max body %d bytes is too small", opts.MaxBodyBytes)
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxFuture == 0 {
		opts.MaxFuture = DefaultMaxFuture
	}
	if opts.ScheduleCache == 0 {
		opts.ScheduleCache = DefaultScheduleCache
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := limitDefaults(&opts); err != nil {
		return nil, err
	}
	s := &Server{st: st, opts: opts, log: opts.Logger, reg: opts.Registry, lim: limits{
		seed:  maphash.MakeSeed(),
		slots: make(chan struct{}, opts.MaxIngest),
		wait:  opts.IngestWait,
	}}
	if opts.RequestRate > 0 {
		s.lim.requests = newBuckets(opts.RequestRate, opts.RequestBurst, opts.LimiterKeys)
	}
	if opts.ResultRate > 0 {
		s.lim.results = newBuckets(opts.ResultRate, opts.ResultBurst, opts.LimiterKeys)
	}
	m, err := newMetrics(opts.Registry, s.lim.requests, s.lim.results)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if opts.TLS != nil {
		if s.tls, err = newTLSFiles(*opts.TLS, opts.Logger, m, opts.Now); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// limitDefaults validates the limits in o and fills in their defaults.
func limitDefaults(o *Options) error {
	for _, v := range []struct {
		name string
		val  float64
	}{{"request rate", o.RequestRate}, {"request burst", o.RequestBurst}, {"result rate", o.ResultRate}, {"result burst", o.ResultBurst}} {
		if v.val < 0 || math.IsNaN(v.val) || math.IsInf(v.val, 0) {
			return fmt.Errorf("collector: %s %v: want zero or a positive number", v.name, v.val)
		}
	}
	if o.RequestBurst == 0 {
		o.RequestBurst = max(1, 2*o.RequestRate)
	}
	if o.ResultBurst == 0 {
		o.ResultBurst = max(1, 2*o.ResultRate)
	}
	if o.RequestRate > 0 && o.RequestBurst < 1 {
		return fmt.Errorf("collector: request burst %v: want at least 1 (one request)", o.RequestBurst)
	}
	switch {
	case o.MaxIngest == 0:
		o.MaxIngest = DefaultMaxIngest
	case o.MaxIngest < 0:
		return fmt.Errorf("collector: max ingest %d: want a positive number of requests", o.MaxIngest)
	}
	switch {
	case o.IngestWait == 0:
		o.IngestWait = DefaultIngestWait
	case o.IngestWait < 0:
		return fmt.Errorf("collector: ingest wait %s: want a positive duration", o.IngestWait)
	}
	switch {
	case o.LimiterKeys == 0:
		o.LimiterKeys = DefaultLimiterKeys
	case o.LimiterKeys < 0:
		return fmt.Errorf("collector: limiter keys %d: want a positive number", o.LimiterKeys)
	}
	return nil
}

// Handler returns the collector's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+api.PathHello, s.admit(s.postHello, false))
	mux.Handle("POST "+api.PathResults, s.admit(s.postResults, true))
	mux.Handle("GET "+api.PathSchedule, s.admit(s.getSchedule, false))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	return s.recoverer(mux)
}

// httpError is an answer to a request that cannot be served.
type httpError struct {
	code   int
	reason string // metric label
	msg    string
	retry  time.Duration
}

func (e *httpError) Error() string { return e.msg }

func fail(code int, reason, format string, args ...any) *httpError {
	return &httpError{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

func (s *Server) writeError(w http.ResponseWriter, e *httpError) {
	s.metrics.rejected.WithLabelValues(e.reason).Inc()
	if e.code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="anyscope"`)
	}
	if e.retry > 0 {
		// Whole seconds, rounded up: never earlier than asked.
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.retry+time.Second-1)/time.Second), 10))
	}
	writeJSON(w, e.code, api.Error{Error: e.msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic while serving request", "path", r.URL.Path, "panic", v)
				s.writeError(w, fail(http.StatusInternalServerError, "panic", "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// bearer returns the request's bearer token.
func bearer(r *http.Request) (string, *httpError) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if h == "" {
		return "", fail(http.StatusUnauthorized, "no_token", "missing Authorization: Bearer token")
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || len(token) > 512 {
		return "", fail(http.StatusUnauthorized, "bad_token", "malformed Authorization header: want \"Bearer <token>\"")
	}
	return strings.TrimSpace(token), nil
}

// authenticate finds the agent behind the request's bearer token and, with
// mutual TLS, checks the client certificate names it. A request admit let
// through was authenticated there already.
func (s *Server) authenticate(r *http.Request) (store.Agent, *httpError) {
	if a, ok := authenticated(r.Context()); ok {
		return a, nil
	}
	token, herr := bearer(r)
	if herr != nil {
		return store.Agent{}, herr
	}
	a, err := s.st.Authenticate(r.Context(), token)
	switch {
	case err == nil:
		if herr := s.checkClientCert(r, a.Name); herr != nil {
			return store.Agent{}, herr
		}
		return a, nil
	case errors.Is(err, store.ErrUnauthorized):
		return store.Agent{}, fail(http.StatusUnauthorized, "bad_token", "unknown, revoked or expired token")
	default:
		return store.Agent{}, s.storeError(err)
	}
}

// storeError maps an infrastructure error to an answer the agent retries.
func (s *Server) storeError(err error) *httpError {
	if errors.Is(err, store.ErrUnavailable) {
		s.log.Warn("database unavailable", "err", err)
		e := fail(http.StatusServiceUnavailable, "db_unavailable", "database unavailable, retry later")
		e.retry = 5 * time.Second
		return e
	}
	if errors.Is(err, context.Canceled) {
		return fail(http.StatusServiceUnavailable, "canceled", "request canceled")
	}
	s.log.Error("store error", "err", err)
	e := fail(http.StatusInternalServerError, "db_error", "internal error while storing, retry later")
	e.retry = 5 * time.Second
	return e
}

func (s *Server) postResults(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	agent, herr := s.authenticate(r)
	if herr != nil {
		s.writeError(w, herr)
		return
	}
	b, herr := s.decodeBatch(w, r)
	if herr != nil {
		s.writeError(w, herr)
		return
	}
	if b.Agent != agent.Name {
		s.writeError(w, fail(http.StatusForbidden, "wrong_agent", "batch names agent %q but the token belongs to %q", api.Clip(b.Agent), agent.Name))
		return
	}
	now := s.opts.Now()
	for i := range b.Results {
		t := b.Results[i].MeasuredAt
		if t.Before(now.Add(-s.opts.MaxAge)) || t.After(now.Add(s.opts.MaxFuture)) {
			s.writeError(w, fail(http.StatusUnprocessableEntity, "bad_time",
				"results[%d]: measured_at %s is outside the accepted window (%s back, %s ahead of the collector's clock)",
				i, t.UTC().Format(time.RFC3339), s.opts.MaxAge, s.opts.MaxFuture))
			return
		}
	}
	// A gap may describe results of any age (they are lost, not stored),
	// but not of the future.
	for i, g := range b.Gaps {
		if t := latestTime(g.LostFrom, g.LostTo); t.After(now.Add(s.opts.MaxFuture)) {
			s.writeError(w, fail(http.StatusUnprocessableEntity, "bad_time",
				"gaps[%d]: lost results measured at %s, more than %s ahead of the collector's clock",
				i, t.UTC().Format(time.RFC3339), s.opts.MaxFuture))
			return
		}
	}
	if len(b.Gaps) > 0 {
		gapsNew, _, err := s.st.IngestGaps(r.Context(), agent, b.Gaps)
		if err != nil {
			if errors.Is(err, store.ErrInvalid) {
				s.writeError(w, fail(http.StatusUnprocessableEntity, "invalid", "%s", err.Error()))
				return
			}
			s.writeError(w, s.storeError(err))
			return
		}
		s.metrics.gaps.Add(float64(gapsNew))
		if gapsNew > 0 {
			for _, g := range b.Gaps {
				s.log.Warn("agent lost results before upload", "agent", agent.Name, "first_seq", g.FirstSeq, "last_seq", g.LastSeq,
					"results", g.Count, "reason", g.Reason, "measured_from", g.LostFrom, "measured_to", g.LostTo)
			}
		}
	}
	ingestStart := time.Now()
	accepted, dups, err := s.st.Ingest(r.Context(), agent, b.Results)
	s.metrics.ingestSeconds.Observe(time.Since(ingestStart).Seconds())
	if err != nil {
		if errors.Is(err, store.ErrUnknownTarget) || errors.Is(err, store.ErrInvalid) {
			s.writeError(w, fail(http.StatusUnprocessableEntity, "unknown_target", "%s", err.Error()))
			return
		}
		s.writeError(w, s.storeError(err))
		return
	}
	s.metrics.ingested.Add(float64(accepted))
	s.metrics.duplicates.Add(float64(dups))
	s.metrics.batches.Inc()
	s.metrics.lastSeen.WithLabelValues(agent.Name).Set(float64(now.Unix()))
	s.log.Debug("batch stored", "agent", agent.Name, "batch_seq", b.BatchSeq,
		"accepted", accepted, "duplicates", dups, "took", time.Since(start))
	writeJSON(w, http.StatusOK, api.Ack{BatchSeq: b.BatchSeq, Accepted: accepted, Duplicates: dups, Gaps: len(b.Gaps)})
}

// latestTime is the later of two times, zero ones ignored.
func latestTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// maxHelloBytes caps a hello's body.
const maxHelloBytes = 16 << 10

// postHello records an agent's start (and location) and tells it the highest
// sequence number stored for it.
func (s *Server) postHello(w http.ResponseWriter, r *http.Request) {
	agent, herr := s.authenticate(r)
	if herr != nil {
		s.writeError(w, herr)
		return
	}
	var h api.Hello
	if herr := s.decodeJSON(w, r, maxHelloBytes, &h); herr != nil {
		s.writeError(w, herr)
		return
	}
	if err := h.Validate(); err != nil {
		s.writeError(w, fail(http.StatusUnprocessableEntity, "invalid", "%s", err.Error()))
		return
	}
	if h.Agent != agent.Name {
		s.writeError(w, fail(http.StatusForbidden, "wrong_agent", "hello names agent %q but the token belongs to %q", api.Clip(h.Agent), agent.Name))
		return
	}
	a, err := s.st.Hello(r.Context(), agent.ID, h.Location)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			s.writeError(w, fail(http.StatusUnprocessableEntity, "invalid", "%s", err.Error()))
			return
		}
		s.writeError(w, s.storeError(err))
		return
	}
	s.log.Info("agent said hello", "agent", a.Name, "version", h.Version, "last_seq", a.LastSeq)
	writeJSON(w, http.StatusOK, api.Welcome{Agent: a.Name, LastSeq: uint64(a.LastSeq)})
}

// decodeBatch reads, decompresses and validates a batch, with every size cap
// applied before the bytes are used.
func (s *Server) decodeBatch(w http.ResponseWriter, r *http.Request) (*api.Batch, *httpError) {
	var b api.Batch
	if herr := s.decodeJSON(w, r, s.opts.MaxBodyBytes, &b); herr != nil {
		return nil, herr
	}
	if err := b.Validate(); err != nil {
		reason := "invalid"
		code := http.StatusUnprocessableEntity
		if len(b.Results) > api.MaxBatchResults {
			reason, code = "too_many_results", http.StatusRequestEntityTooLarge
		}
		return nil, fail(code, reason, "%s", err.Error())
	}
	s.chargeResults(r, len(b.Results))
	return &b, nil
}

// decodeJSON reads one JSON value into v, optionally gzip-compressed, with
// the size cap applied to the body before and after decompression. Unknown
// fields and trailing data are errors.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, v any) *httpError {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fail(http.StatusUnsupportedMediaType, "content_type", "Content-Type %q: want application/json", api.Clip(ct))
	}
	if r.ContentLength > maxBytes {
		return fail(http.StatusRequestEntityTooLarge, "too_large", "body of %d bytes exceeds %d", r.ContentLength, maxBytes)
	}
	body := http.MaxBytesReader(w, r.Body, maxBytes)
	var in io.Reader = body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return s.readError(err, "gzip", maxBytes)
		}
		defer zr.Close()
		in = zr
	default:
		return fail(http.StatusUnsupportedMediaType, "content_encoding", "Content-Encoding %q: want gzip or none", api.Clip(enc))
	}
	// One byte over the cap tells a body that is too large after
	// decompression from one that is exactly at the cap.
	lr := &io.LimitedReader{R: in, N: maxBytes + 1}
	tooLarge := fail(http.StatusRequestEntityTooLarge, "too_large", "decompressed body exceeds %d bytes", maxBytes)
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if lr.N <= 0 {
			return tooLarge
		}
		return s.readError(err, "json", maxBytes)
	}
	if _, err := dec.Token(); err != io.EOF {
		if lr.N <= 0 {
			return tooLarge
		}
		return fail(http.StatusBadRequest, "json", "malformed JSON: unexpected data after the value")
	}
	return nil
}

// readError classifies a failure to read or decode a body.
func (s *Server) readError(err error, what string, maxBytes int64) *httpError {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fail(http.StatusRequestEntityTooLarge, "too_large", "body exceeds %d bytes", maxBytes)
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fail(http.StatusBadRequest, "json", "malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.As(err, &te):
		return fail(http.StatusBadRequest, "json", "wrong JSON type for field %q: got %s, want %s", api.Clip(te.Field), te.Value, te.Type)
	case what == "gzip" || errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum):
		return fail(http.StatusBadRequest, "gzip", "bad gzip body: %s", api.Clip(err.Error()))
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fail(http.StatusBadRequest, "json", "malformed JSON: body ended early")
	}
	return fail(http.StatusBadRequest, "json", "malformed JSON: %s", api.Clip(err.Error()))
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) {
	agent, herr := s.authenticate(r)
	if herr != nil {
		s.writeError(w, herr)
		return
	}
	ts, err := s.activeTargets(r.Context())
	if err != nil {
		s.writeError(w, s.storeError(err))
		return
	}
	sch := api.Schedule{Agent: agent.Name, GeneratedAt: s.opts.Now().UTC(), Targets: []api.ScheduleTarget{}}
	for _, t := range ts {
		st := api.ScheduleTarget{Name: t.Name, IntervalSeconds: t.Interval.Seconds(), NSIDQName: t.NSIDQName,
			HTTP: t.HTTP, SessionLifeSeconds: t.SessionLife.Seconds()}
		for _, a := range t.Addresses {
			st.Addresses = append(st.Addresses, a.String())
		}
		for _, p := range t.Probes {
			st.Probes = append(st.Probes, api.Kind(p))
		}
		sch.Targets = append(sch.Targets, st)
	}
	s.metrics.schedules.Inc()
	writeJSON(w, http.StatusOK, sch)
}

func (s *Server) activeTargets(ctx context.Context) ([]store.Target, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.targets != nil && time.Since(s.targetsTime) < s.opts.ScheduleCache {
		return s.targets, nil
	}
	ts, err := s.st.ActiveTargets(ctx)
	if err != nil {
		return nil, err
	}
	s.targets, s.targetsTime = ts, time.Now()
	return ts, nil
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.st.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, api.Error{Error: "database unavailable"})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ready\n")
}
