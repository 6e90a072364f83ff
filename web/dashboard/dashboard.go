// Package dashboard is anyscope's web dashboard: server-rendered pages over
// what analysis stored — which site serves each vantage point (the
// catchment, as a map that can be replayed over time), who moved between
// two times, a timeline of PoP switches with the TCP sessions they broke,
// black holes and outages with their evidence, each vantage point's recent
// answers and last traceroute, how late agents upload and what they lost.
//
// Everything a page shows about the measured service came from the network:
// identity strings, site codes read from them, traceroute hops. The pages
// treat it as untrusted text: html/template escapes it in HTML, SVG and
// attributes, and a Content-Security-Policy allows only the dashboard's own
// script and style sheet (embedded, so the dashboard works offline), so
// even a string that slipped through could not run.
//
// The dashboard is read-only: it answers GET and HEAD, nothing else. Each
// page has a JSON twin with the same data under /data (the page's path
// prefixed with /data; the overview's is /data/).
package dashboard

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/collector/store"
)

// Source is what the dashboard reads: the store's analysis outputs.
// *store.Store implements it.
type Source interface {
	Targets(ctx context.Context) ([]analysis.Target, error)
	CatchmentAt(ctx context.Context, target string, at time.Time) (store.CatchmentSnapshot, error)
	Switches(ctx context.Context, q store.SwitchQuery) ([]store.SwitchRow, bool, error)
	Incidents(ctx context.Context, q store.IncidentQuery) ([]store.StoredIncident, bool, error)
	AgentsHealth(ctx context.Context, now time.Time, limit int) ([]store.AgentHealth, int, error)
	AgentByName(ctx context.Context, name string) (store.Agent, error)
	RecentResults(ctx context.Context, vantagePoint string, now time.Time, limit int) ([]store.RecentResult, error)
	LastTrace(ctx context.Context, vantagePoint string, now time.Time) (store.Trace, bool, error)
	VantagePointCatchments(ctx context.Context, vantagePoint string, at time.Time) ([]store.StreamCatchment, error)
	Gaps(ctx context.Context, since, until time.Time) ([]analysis.Gap, error)
}

var _ Source = (*store.Store)(nil)

// DefaultTimeout bounds the work of one request.
const DefaultTimeout = 15 * time.Second

// ContentSecurityPolicy is sent with every response: only the dashboard's
// own script, style sheet and images, no inline script or style, no
// framing, forms only to itself.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// maxQuery bounds the query string of a request (bytes).
const maxQuery = 1024

// Options configure a dashboard.
type Options struct {
	// Logger receives request errors; nil discards them.
	Logger *slog.Logger
	// Timeout bounds each request's reads and rendering; 0 is
	// DefaultTimeout.
	Timeout time.Duration
	// Now is the clock ("now" for pages without a time); nil is time.Now.
	Now func() time.Time
}

// Dashboard serves the pages. It is safe for concurrent use.
type Dashboard struct {
	src     Source
	log     *slog.Logger
	timeout time.Duration
	now     func() time.Time
	pages   map[string]*template.Template
	mux     *http.ServeMux
}

// New returns a dashboard reading src.
func New(src Source, opts Options) (*Dashboard, error) {
	if src == nil {
		return nil, errors.New("dashboard: no source")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("dashboard: timeout %s is negative", opts.Timeout)
	}
	d := &Dashboard{src: src, log: opts.Logger, timeout: opts.Timeout, now: opts.Now}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.timeout == 0 {
		d.timeout = DefaultTimeout
	}
	if d.now == nil {
		d.now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	d.pages = pages
	d.routes()
	return d, nil
}

// A view computes what a page shows (and its JSON twin returns) and names
// the template that renders it; html says a page will be rendered (maps and
// timelines are drawn only then).
type view func(ctx context.Context, r *http.Request, html bool) (page string, data any, err error)

func (d *Dashboard) routes() {
	m := http.NewServeMux()
	pages := []struct {
		path string
		v    view
	}{
		{"/{$}", d.overview},
		{"/targets/{name}", d.catchment},
		{"/targets/{name}/diff", d.diff},
		{"/targets/{name}/timeline", d.timeline},
		{"/incidents", d.incidents},
		{"/vantage-points/{name}", d.vantagePoint},
		{"/agents", d.agents},
	}
	for _, p := range pages {
		m.Handle("GET "+p.path, d.html(p.v))
		m.Handle("GET /data"+p.path, d.json(p.v))
	}
	// The time slider's source, named after what it returns.
	m.Handle("GET /data/targets/{name}/catchment", d.json(d.catchment))
	m.HandleFunc("GET /static/{file}", serveStatic)
	m.Handle("/", d.html(func(context.Context, *http.Request, bool) (string, any, error) {
		return "", nil, errNotFound("no such page")
	}))
	d.mux = m
}

// Handler returns the dashboard's HTTP handler: security headers on every
// response, GET and HEAD only, bounded query strings, per-request
// timeouts.
func (d *Dashboard) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			d.fail(w, r, false, &httpError{http.StatusMethodNotAllowed, "the dashboard is read-only: GET and HEAD only"})
			return
		}
		if len(r.URL.RawQuery) > maxQuery {
			d.fail(w, r, false, errBadRequest("query string longer than %d bytes", maxQuery))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d.timeout)
		defer cancel()
		d.mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

// httpError is an error with the status it answers and a message safe to
// show (it is escaped like any text).
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errBadRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func errNotFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// status maps an error to what the client is told.
func status(err error) (int, string) {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "the page took too long to compute; try a shorter window"
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "the database is unavailable; try again shortly"
	default:
		return http.StatusInternalServerError, "internal error (logged)"
	}
}

// html serves a view as a page: rendered whole into a buffer first, so a
// failure half-way answers an error page, not half a page.
func (d *Dashboard) html(v view) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, data, err := v(r.Context(), r, true)
		if err != nil {
			d.fail(w, r, false, err)
			return
		}
		var buf bytes.Buffer
		if err := d.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
			d.fail(w, r, false, fmt.Errorf("render %s: %w", page, err))
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		write(w, r, buf.Bytes())
	})
}

// json serves a view's data as JSON.
func (d *Dashboard) json(v view) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, data, err := v(r.Context(), r, false)
		if err != nil {
			d.fail(w, r, true, err)
			return
		}
		b, err := json.Marshal(data)
		if err != nil {
			d.fail(w, r, true, fmt.Errorf("encode: %w", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		write(w, r, b)
	})
}

// compressAbove is the size from which a body is gzipped for clients that
// accept it (a catchment of thousands of vantage points is megabytes of
// repetitive text).
const compressAbove = 1 << 10

// write sends a complete body, gzipped when it is large and the client
// accepts gzip.
func write(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header().Add("Vary", "Accept-Encoding")
	if len(body) < compressAbove || !acceptsGzip(r) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // a valid level: cannot fail
	zw.Write(body)
	zw.Close()
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(params), "=")
		if !ok || strings.TrimSpace(k) != "q" {
			return true
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return err == nil && q > 0
	}
	return false
}

// errorPage is what an error page shows.
type errorPage struct {
	Status  int
	Title   string
	Message string
}

// fail answers err as an escaped page (or JSON), logging what the client is
// not told.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, asJSON bool, err error) {
	code, msg := status(err)
	if code >= 500 {
		d.log.Error("dashboard request failed", "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Cache-Control", "no-store")
	if asJSON {
		b, _ := json.Marshal(map[string]string{"error": msg})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write(b)
		return
	}
	var buf bytes.Buffer
	if err := d.pages["error"].ExecuteTemplate(&buf, "layout", errorPage{code, http.StatusText(code), msg}); err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintln(w, http.StatusText(code))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}
