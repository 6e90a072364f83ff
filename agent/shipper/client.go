package shipper

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// DefaultTimeout bounds every request to the collector.
const DefaultTimeout = 30 * time.Second

// Caps on what is read from the collector.
const (
	maxAckBytes      = 64 << 10
	maxScheduleBytes = 8 << 20
)

// ErrBadAnswer means the collector answered 2xx with something unusable: too
// long, or not an acknowledgement of the batch sent (a proxy's page, or
// counts that do not add up). Nothing is acknowledged in the spool.
var ErrBadAnswer = errors.New("shipper: unusable answer from the collector")

// StatusError is a non-2xx answer from the collector.
type StatusError struct {
	Code int
	// Message is the collector's api.Error text, or the start of the body.
	Message string
	// RetryAfter is the delay the collector asked for, zero if none.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("collector answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Temporary reports whether the request may succeed later unchanged: server
// errors and throttling. Any other 4xx needs a human (a wrong token, an agent
// the collector does not know, a bug).
func (e *StatusError) Temporary() bool {
	return e.Code >= 500 || e.Code == http.StatusTooManyRequests || e.Code == http.StatusRequestTimeout
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// URL is the collector's base URL (http or https).
	URL string
	// Token is the agent's bearer token.
	Token string
	// Agent is the agent's name, sent in every batch.
	Agent string
	// Timeout bounds every request; DefaultTimeout when zero.
	Timeout time.Duration
	// HTTPClient is used when set (for its transport); Timeout still applies.
	HTTPClient *http.Client
}

// Client speaks the collector API (api.PathResults and api.PathSchedule).
type Client struct {
	hello             string
	results, schedule string
	token, agent      string
	timeout           time.Duration
	http              *http.Client
}

// NewClient validates o and returns a client.
func NewClient(o ClientOptions) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("shipper: collector url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("shipper: collector url %q: want http:// or https:// and a host", o.URL)
	}
	if o.Token == "" {
		return nil, errors.New("shipper: empty token")
	}
	if !api.ValidName(o.Agent) {
		return nil, fmt.Errorf("shipper: agent name %q is invalid", o.Agent)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: o.Timeout}
	}
	return &Client{
		hello:    u.JoinPath(api.PathHello).String(),
		results:  u.JoinPath(api.PathResults).String(),
		schedule: u.JoinPath(api.PathSchedule).String(),
		token:    o.Token,
		agent:    o.Agent,
		timeout:  o.Timeout,
		http:     hc,
	}, nil
}

// Upload posts b gzip-compressed and returns the collector's
// acknowledgement. An error of type *StatusError carries a non-2xx answer;
// ErrBadAnswer a 2xx answer that does not acknowledge b.
func (c *Client) Upload(ctx context.Context, b *api.Batch) (*api.Ack, error) {
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	if err := json.NewEncoder(zw).Encode(b); err != nil {
		return nil, fmt.Errorf("shipper: encoding batch: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("shipper: compressing batch: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.results, &body)
	if err != nil {
		return nil, fmt.Errorf("shipper: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	b2, err := c.do(req, maxAckBytes)
	if err != nil {
		return nil, err
	}
	var ack api.Ack
	if err := json.Unmarshal(b2, &ack); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAnswer, err)
	}
	if ack.BatchSeq != b.BatchSeq || ack.Accepted < 0 || ack.Duplicates < 0 || ack.Accepted+ack.Duplicates != len(b.Results) {
		return nil, fmt.Errorf("%w: batch %d with %d results answered by %+v", ErrBadAnswer, b.BatchSeq, len(b.Results), ack)
	}
	return &ack, nil
}

// Hello announces the agent (and its location, when loc is not nil) and
// returns the collector's welcome, which carries the highest sequence number
// stored for the agent.
func (c *Client) Hello(ctx context.Context, version string, loc *api.Location) (*api.Welcome, error) {
	body, err := json.Marshal(api.Hello{Agent: c.agent, Version: version, Location: loc})
	if err != nil {
		return nil, fmt.Errorf("shipper: encoding hello: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.hello, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("shipper: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	b, err := c.do(req, maxAckBytes)
	if err != nil {
		return nil, err
	}
	var w api.Welcome
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: decoding welcome: %w", ErrBadAnswer, err)
	}
	if w.Agent != c.agent || w.LastSeq >= 1<<62 {
		return nil, fmt.Errorf("%w: welcome %+v for agent %q", ErrBadAnswer, w, c.agent)
	}
	return &w, nil
}

// Schedule fetches the agent's schedule.
func (c *Client) Schedule(ctx context.Context) (*api.Schedule, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.schedule, nil)
	if err != nil {
		return nil, fmt.Errorf("shipper: %w", err)
	}
	b, err := c.do(req, maxScheduleBytes)
	if err != nil {
		return nil, err
	}
	var s api.Schedule
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: decoding schedule: %w", ErrBadAnswer, err)
	}
	return &s, nil
}

// do sends req with the agent's credentials and returns the body of a 2xx
// answer, read up to limit bytes.
func (c *Client) do(req *http.Request, limit int64) ([]byte, error) {
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "anyscope-agent")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("shipper: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("shipper: %s %s: reading answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{
			Code:       resp.StatusCode,
			Message:    message(body),
			RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: %s %s: answer longer than %d bytes", ErrBadAnswer, req.Method, req.URL.Path, limit)
	}
	return body, nil
}

// message extracts the collector's error text from a body, bounded and
// printable.
func message(body []byte) string {
	var e api.Error
	s := string(body)
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		s = e.Error
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "") + "…"
	}
	if s == "" {
		s = "(no message)"
	}
	return s
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		return time.Duration(min(max(n, 0), 86400)) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
