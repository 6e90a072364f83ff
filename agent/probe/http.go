package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults for HTTPOptions.
const (
	DefaultHTTPTimeout = 5 * time.Second
	// DefaultMaxBody is how much of a body the body pattern sees.
	DefaultMaxBody   = 64 << 10
	DefaultUserAgent = "anyscope (+https://example.org/anyscope)"
	// MaxHeaderBytes caps the response header block; a larger one fails
	// the probe (unknown_failure) instead of filling memory.
	MaxHeaderBytes = 64 << 10
)

// HTTPOptions configure an HTTP identity prober. Zero values take the
// defaults.
type HTTPOptions struct {
	// Timeout bounds one probe: connect, TLS handshake, request, headers
	// and the part of the body read (default 5s).
	Timeout time.Duration
	// Limiter, when set, is waited on before every request.
	Limiter Limiter
	// MaxBody is the most bytes of a body read for the body pattern
	// (default 64 KiB, at most 16 MiB).
	MaxBody int
	// UserAgent is sent with every request; it should name the operator.
	UserAgent string
	// RootCAs verifies servers' certificates instead of the system pool
	// (tests and labs with their own CA).
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts any certificate. Only for labs and tests:
	// an agent measuring real services verifies against the Host.
	InsecureSkipVerify bool
}

// HTTP asks an anycast web service which site served it: one request (GET
// or HEAD) on one fresh connection dialled straight to the anycast address,
// with the target's Host header and TLS server name, and the site's name
// read from a response header or the body (see api.HTTPSpec). The name is
// stored as found, apart from the CF-Ray convention (the IATA suffix after
// the last dash); analysis maps names to sites.
//
// A response whose headers and body carry no identity is still a success
// (FailureNone, empty Identity): the service answered, with the status
// recorded, and analysis reports the site as unresolved. So is any status,
// including 5xx and redirects, which are never followed.
type HTTP struct {
	opts HTTPOptions
}

// NewHTTP validates o, applies defaults and returns a prober.
func NewHTTP(o HTTPOptions) (*HTTP, error) {
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultHTTPTimeout
	case o.Timeout < 0 || o.Timeout > api.MaxRTT:
		return nil, fmt.Errorf("probe: http timeout %v out of range (0, %v]", o.Timeout, api.MaxRTT)
	}
	switch {
	case o.MaxBody == 0:
		o.MaxBody = DefaultMaxBody
	case o.MaxBody < 0 || o.MaxBody > 16<<20:
		return nil, fmt.Errorf("probe: http max body %d out of range (0, %d]", o.MaxBody, 16<<20)
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if err := api.CheckText("user agent", o.UserAgent, api.MaxStringLen); err != nil {
		return nil, fmt.Errorf("probe: http %w", err)
	}
	return &HTTP{opts: o}, nil
}

// ErrHTTPSpec is wrapped by every error about an unusable api.HTTPSpec.
var ErrHTTPSpec = errors.New("probe: http spec")

// httpRequest is a checked api.HTTPSpec.
type httpRequest struct {
	scheme, method, host, path string
	port                       uint16
	headers                    []string
	body                       *regexp.Regexp
}

// CheckHTTPSpec reports whether s can be probed, with the reason when not.
func CheckHTTPSpec(s *api.HTTPSpec) error {
	_, err := checkHTTPSpec(s)
	return err
}

func checkHTTPSpec(s *api.HTTPSpec) (httpRequest, error) {
	var r httpRequest
	if s == nil {
		return r, fmt.Errorf("%w: target has no http spec", ErrHTTPSpec)
	}
	r.scheme = s.Scheme
	switch s.Scheme {
	case "http":
		r.port = 80
	case "https":
		r.port = 443
	default:
		return r, fmt.Errorf("%w: scheme %q: want http or https", ErrHTTPSpec, api.Clip(s.Scheme))
	}
	switch {
	case s.Port == 0:
	case s.Port < 0 || s.Port > 65535:
		return r, fmt.Errorf("%w: port %d", ErrHTTPSpec, s.Port)
	default:
		r.port = uint16(s.Port)
	}
	r.method = s.Method
	switch s.Method {
	case "":
		r.method = api.QueryGet
	case api.QueryGet, api.QueryHead:
	default:
		return r, fmt.Errorf("%w: method %q: want GET or HEAD", ErrHTTPSpec, api.Clip(s.Method))
	}
	r.host = s.Host
	if r.host != "" {
		if err := api.CheckText("host", r.host, api.MaxStringLen); err != nil || strings.ContainsAny(r.host, " /?#@[]:\\") {
			return r, fmt.Errorf("%w: host %q is not a host name", ErrHTTPSpec, api.Clip(s.Host))
		}
	}
	r.path = s.Path
	if r.path == "" {
		r.path = "/"
	}
	if !strings.HasPrefix(r.path, "/") || api.CheckText("path", r.path, 1024) != nil || strings.ContainsAny(r.path, " #") {
		return r, fmt.Errorf("%w: path %q: want an absolute path", ErrHTTPSpec, api.Clip(s.Path))
	}
	for _, h := range s.Headers {
		if h == "" || strings.ContainsAny(h, " :\t\r\n") || api.CheckText("header", h, 64) != nil {
			return r, fmt.Errorf("%w: header name %q", ErrHTTPSpec, api.Clip(h))
		}
	}
	r.headers = s.Headers
	if s.BodyPattern != "" {
		re, err := regexp.Compile(s.BodyPattern)
		if err != nil {
			return r, fmt.Errorf("%w: body pattern: %w", ErrHTTPSpec, err)
		}
		if re.NumSubexp() != 1 {
			return r, fmt.Errorf("%w: body pattern %q has %d groups, want 1", ErrHTTPSpec, api.Clip(s.BodyPattern), re.NumSubexp())
		}
		r.body = re
	}
	if len(r.headers) == 0 && r.body == nil {
		return r, fmt.Errorf("%w: neither headers nor a body pattern name the site", ErrHTTPSpec)
	}
	return r, nil
}

// Probe sends one request as t.HTTP says to addr (never to what the Host
// name resolves to) and returns one result (Kind http, Transport tcp, Query
// the method) with Seq left zero for the spool to assign. RTTMicros is the
// TCP handshake time. Transport errors are classified (timeout, refused,
// reset, closed); a TLS failure without such a cause is unknown_failure; an
// unusable spec (see CheckHTTPSpec) is unknown_failure without values. It
// returns no result when ctx ends before the request is sent.
func (p *HTTP) Probe(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, transport api.Transport) []api.Result {
	addr = addr.Unmap().WithZone("")
	res, start, ok := begin(ctx, p.opts.Limiter, t, addr, api.KindHTTP, api.TransportTCP, api.QueryGet)
	if !ok {
		return nil
	}
	req, err := checkHTTPSpec(t.HTTP)
	if req.method == api.QueryHead {
		res.Query = api.QueryHead
	}
	if err != nil || transport != api.TransportTCP {
		// Not a measurement of the service: the schedule asked for
		// something the agent cannot send.
		res.Failure = api.FailureUnknown
		return []api.Result{res}
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	v, rtt, err := p.exchange(ctx, start, req, netip.AddrPortFrom(addr, req.port))
	res.HTTP = v
	res.RTTMicros = httpMicros(rtt)
	if err != nil {
		res.Failure = Classify(ctxErr(ctx, err))
	}
	return []api.Result{res}
}

// exchange runs the request and extracts the identity. The returned values
// are set as far as the exchange got, also when err is not nil.
func (p *HTTP) exchange(ctx context.Context, start time.Time, r httpRequest, dst netip.AddrPort) (*api.HTTPValues, time.Duration, error) {
	v := &api.HTTPValues{Scheme: r.scheme, Host: clean(r.host, api.MaxStringLen)}
	var (
		connectStart time.Time
		rtt          time.Duration
	)
	since := func() int64 { return httpMicros(time.Since(start)) }
	trace := &httptrace.ClientTrace{
		ConnectStart: func(string, string) { connectStart = time.Now() },
		ConnectDone: func(_, _ string, err error) {
			if err == nil {
				rtt = time.Since(connectStart)
				v.ConnectUS = since()
			}
		},
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err == nil {
				v.TLSUS = since()
			}
		},
		GotFirstResponseByte: func() { v.FirstByteUS = since() },
	}
	client := p.client(r, dst)
	defer client.CloseIdleConnections()

	urlHost := r.host
	if urlHost == "" {
		urlHost = dst.Addr().String()
		if dst.Addr().Is6() {
			urlHost = "[" + urlHost + "]"
		}
	}
	if (r.scheme == "http" && r.port != 80) || (r.scheme == "https" && r.port != 443) {
		urlHost = net.JoinHostPort(strings.Trim(urlHost, "[]"), strconv.Itoa(int(r.port)))
	}
	u, err := url.Parse(r.scheme + "://" + urlHost + r.path)
	if err != nil {
		return v, 0, fmt.Errorf("%w: %w", ErrHTTPSpec, err)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), r.method, u.String(), nil)
	if err != nil {
		return v, 0, err
	}
	req.Header.Set("User-Agent", p.opts.UserAgent)
	req.Header.Set("Accept", "*/*")
	req.Close = true

	resp, err := client.Do(req)
	if err != nil {
		return v, rtt, err
	}
	defer resp.Body.Close()
	v.Status = min(max(resp.StatusCode, 0), 999)
	for _, h := range r.headers {
		if id := headerIdentity(h, resp.Header.Values(h)); id != "" {
			v.Identity, v.Source = id, clean("header:"+h, api.MaxStringLen)
			return v, rtt, nil
		}
	}
	if r.body == nil || r.method == api.QueryHead {
		return v, rtt, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(p.opts.MaxBody)))
	if m := r.body.FindSubmatch(body); m != nil {
		if id := clean(string(bytes.TrimSpace(m[1])), api.MaxStringLen); id != "" {
			v.Identity, v.Source = id, "body"
			return v, rtt, nil
		}
	}
	// The body could not be read to its end or the limit (the server
	// stalled or broke the connection) and what came names no site.
	return v, rtt, err
}

// client builds a one-request client that dials dst whatever the URL says,
// uses no proxy, follows no redirect and keeps no connection.
func (p *HTTP) client(r httpRequest, dst netip.AddrPort) *http.Client {
	d := &net.Dialer{}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		},
		TLSClientConfig: &tls.Config{
			ServerName:         r.host,
			RootCAs:            p.opts.RootCAs,
			InsecureSkipVerify: p.opts.InsecureSkipVerify,
			MinVersion:         tls.VersionTLS12,
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: MaxHeaderBytes,
		MaxIdleConns:           1,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// headerIdentity takes the first non-empty value of a header and applies
// the known convention of its name: CF-Ray "<ray id>-<IATA>" names the colo
// in its suffix; X-Served-By (Fastly "cache-<iata><n>-…") and X-Amz-Cf-Pop
// (CloudFront "<IATA><n>-…") are kept as they are for analysis to resolve.
// Control characters and bytes outside printable ASCII are escaped; the
// result is at most api.MaxStringLen bytes.
func headerIdentity(name string, values []string) string {
	for _, s := range values {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.EqualFold(name, "CF-Ray") {
			if i := strings.LastIndexByte(s, '-'); i >= 0 && i < len(s)-1 {
				s = s[i+1:]
			}
		}
		return clean(s, api.MaxStringLen)
	}
	return ""
}

func httpMicros(d time.Duration) int64 {
	return max(0, min(d.Microseconds(), api.MaxRTT.Microseconds()))
}
