package shipper

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// It excludes TLS.
	HTTPClient *http.Client
	// TLS configures HTTPS towards the collector; nil uses the system's
	// roots and no client certificate.
	TLS *TLSOptions
	// Logger tells when a renewed client certificate does not load.
	Logger *slog.Logger
}

// DefaultTLSReloadCheck is the least time between two looks at the client
// certificate files for a renewal.
const DefaultTLSReloadCheck = 5 * time.Second

// TLSOptions configure the client's TLS. Only an https:// collector takes
// them.
type TLSOptions struct {
	// CAFile, when set, holds the PEM certificates of the CAs the
	// collector's certificate must chain to, instead of the system's roots
	// (a private collector CA then is the only one trusted).
	CAFile string
	// CertFile and KeyFile hold the agent's client certificate chain and
	// private key (PEM) for a collector that requires mutual TLS. They are
	// read again when they change, looked at most every ReloadCheck
	// (DefaultTLSReloadCheck when zero), so a renewal needs no restart; a
	// renewal that does not load is logged and the previous certificate
	// stays in use.
	CertFile, KeyFile string
	ReloadCheck       time.Duration
	// ServerName is the name the collector's certificate must carry (and
	// the SNI sent); empty means the URL's host.
	ServerName string
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	hc := o.HTTPClient
	switch {
	case o.TLS != nil && hc != nil:
		return nil, errors.New("shipper: HTTPClient and TLS are mutually exclusive")
	case o.TLS != nil && u.Scheme != "https":
		return nil, fmt.Errorf("shipper: collector url %q: TLS settings need an https:// URL", o.URL)
	case o.TLS != nil:
		cfg, err := clientTLS(*o.TLS, o.Logger)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg
		hc = &http.Client{Timeout: o.Timeout, Transport: tr}
	case hc == nil:
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
	if ack.BatchSeq != b.BatchSeq || ack.Accepted < 0 || ack.Duplicates < 0 || ack.Accepted+ack.Duplicates != len(b.Results) || ack.Gaps != len(b.Gaps) {
		return nil, fmt.Errorf("%w: batch %d with %d results and %d gaps answered by %+v", ErrBadAnswer, b.BatchSeq, len(b.Results), len(b.Gaps), ack)
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

// clientTLS builds the TLS configuration o describes, loading its files now.
func clientTLS(o TLSOptions, log *slog.Logger) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("shipper: tls: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("shipper: tls: CA file %s: no PEM certificate in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		kp, err := newKeyPair(o, log)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = kp.get
	case o.CertFile != "" || o.KeyFile != "":
		return nil, errors.New("shipper: tls: a client certificate needs both its certificate and its key file")
	}
	return cfg, nil
}

// keyPair is a client certificate read again from its files when they
// change.
type keyPair struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger

	mu        sync.Mutex
	next      time.Time // when to look at the files again
	cert, key []byte    // contents in use
	bad       []byte    // cert and key contents that last failed
	cur       *tls.Certificate
}

func newKeyPair(o TLSOptions, log *slog.Logger) (*keyPair, error) {
	if o.ReloadCheck == 0 {
		o.ReloadCheck = DefaultTLSReloadCheck
	}
	if o.ReloadCheck < 0 {
		return nil, fmt.Errorf("shipper: tls: reload check %s: want a positive interval", o.ReloadCheck)
	}
	k := &keyPair{certFile: o.CertFile, keyFile: o.KeyFile, every: o.ReloadCheck, log: log}
	cert, key, err := k.read()
	if err == nil {
		err = k.install(cert, key)
	}
	if err != nil {
		return nil, fmt.Errorf("shipper: tls: client certificate: %w", err)
	}
	k.next = time.Now().Add(k.every)
	return k, nil
}

func (k *keyPair) read() (cert, key []byte, err error) {
	if cert, err = os.ReadFile(k.certFile); err == nil {
		key, err = os.ReadFile(k.keyFile)
	}
	return cert, key, err
}

func (k *keyPair) install(cert, key []byte) error {
	c, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return fmt.Errorf("%s, %s: %w", k.certFile, k.keyFile, err)
	}
	k.cur, k.cert, k.key, k.bad = &c, cert, key, nil
	return nil
}

// get is tls.Config.GetClientCertificate: the current certificate, after a
// look at the files when ReloadCheck has passed.
func (k *keyPair) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := time.Now(); !now.Before(k.next) {
		k.next = now.Add(k.every)
		cert, key, err := k.read()
		switch {
		case err != nil:
			k.log.Warn("shipper: cannot read the client certificate; using the previous one", "err", err)
		case bytes.Equal(cert, k.cert) && bytes.Equal(key, k.key), bytes.Equal(slices.Concat(cert, key), k.bad):
		default:
			if err := k.install(cert, key); err != nil {
				k.bad = slices.Concat(cert, key)
				k.log.Error("shipper: renewed client certificate does not load; using the previous one", "err", err)
			} else {
				k.log.Info("shipper: client certificate reloaded", "file", k.certFile)
			}
		}
	}
	return k.cur, nil
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
