package dashboard

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Bounds on what a request may ask for.
const (
	// MaxSpan is the longest window a timeline, an incident list or a
	// replay covers.
	MaxSpan = 31 * 24 * time.Hour
	// maxParam bounds one query parameter (bytes).
	maxParam = 64
)

// earliest is the first time a request may name: nothing was measured
// before.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// name returns the path value key as a vantage point or target name.
func name(r *http.Request, key string) (string, error) {
	s := r.PathValue(key)
	if !api.ValidName(s) {
		return "", errBadRequest("%s %q is not a valid name (1-63 characters of A-Z a-z 0-9 . _ -)", key, api.Clip(s))
	}
	return s, nil
}

// param returns the query parameter key, bounded in length.
func param(r *http.Request, key string) (string, error) {
	v := r.URL.Query()[key]
	if len(v) > 1 {
		return "", errBadRequest("parameter %s given %d times", key, len(v))
	}
	if len(v) == 0 {
		return "", nil
	}
	s := strings.TrimSpace(v[0])
	if len(s) > maxParam {
		return "", errBadRequest("parameter %s is longer than %d bytes", key, maxParam)
	}
	return s, nil
}

// timeParam reads a time: RFC 3339 (2026-05-02T10:00:00Z), a date and
// minute as an HTML datetime-local input sends it (2026-05-02T10:00, UTC),
// a date (UTC midnight), "now", or a duration back from now (24h). Empty:
// def.
func timeParam(r *http.Request, key string, now, def time.Time) (time.Time, error) {
	s, err := param(r, key)
	if err != nil || s == "" {
		return def, err
	}
	t, ok := parseTime(s, now)
	if !ok {
		return time.Time{}, errBadRequest("parameter %s %q: want an RFC 3339 time (2026-05-02T10:00:00Z), a date, \"now\" or a duration back from now (24h)", key, s)
	}
	if t.Before(earliest) || t.After(now.Add(366*24*time.Hour)) {
		return time.Time{}, errBadRequest("parameter %s %q is out of range", key, s)
	}
	return t.UTC(), nil
}

func parseTime(s string, now time.Time) (time.Time, bool) {
	if s == "now" {
		return now, true
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), true
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), true // Unix seconds
	}
	return time.Time{}, false
}

// window reads since and until (defaults: the span before now), and checks
// since < until and the span is at most MaxSpan.
func window(r *http.Request, now time.Time, span time.Duration) (since, until time.Time, err error) {
	until, err = timeParam(r, "until", now, now)
	if err != nil {
		return
	}
	since, err = timeParam(r, "since", now, until.Add(-span))
	if err != nil {
		return
	}
	if !since.Before(until) {
		return since, until, errBadRequest("since %s is not before until %s", stamp(since), stamp(until))
	}
	if until.Sub(since) > MaxSpan {
		return since, until, errBadRequest("the window %s … %s is longer than %d days", stamp(since), stamp(until), MaxSpan/(24*time.Hour))
	}
	return since, until, nil
}

// addressParam reads an optional anycast address.
func addressParam(r *http.Request) (netip.Addr, error) {
	s, err := param(r, "address")
	if err != nil || s == "" {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, errBadRequest("parameter address %q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// intParam reads an integer in [lo, hi]; empty: def.
func intParam(r *http.Request, key string, def, lo, hi int) (int, error) {
	s, err := param(r, key)
	if err != nil || s == "" {
		return def, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, errBadRequest("parameter %s %q: want a number from %d to %d", key, s, lo, hi)
	}
	return n, nil
}

// stamp formats a time for pages and parameters (UTC, seconds).
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}
