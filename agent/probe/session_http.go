package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Limits on what an HTTP session reads of each answer.
const (
	sessionBodyPeek = 64 << 10 // searched by the body pattern
	sessionBodyMax  = 1 << 20  // read and discarded at most; more ends the session
)

// sessionDefaultHeader names the site when the target's spec names no header.
const sessionDefaultHeader = "X-Served-By"

// sessionHTTP sends the same HTTP/1.1 request over one keep-alive
// connection and reads the identity from the configured headers, or else
// from the body pattern.
type sessionHTTP struct {
	addr    netip.AddrPort
	tls     *tls.Config // nil for http
	request []byte      // the request on the wire
	head    bool
	headers []string
	pattern *regexp.Regexp
	br      *bufio.Reader // the reader's
}

// sessionHTTPAnswer is one response read from the connection.
type sessionHTTPAnswer struct {
	header http.Header
	body   []byte // the first sessionBodyPeek bytes
	close  bool
}

func newSessionHTTP(spec *api.HTTPSpec, addr netip.Addr, tlsConf *tls.Config) (*sessionHTTP, error) {
	var sp api.HTTPSpec
	if spec != nil {
		sp = *spec
	}
	if sp.Scheme == "" {
		sp.Scheme = "http"
	}
	port := sp.Port
	switch {
	case sp.Scheme != "http" && sp.Scheme != "https":
		return nil, fmt.Errorf("probe: http scheme %q", sp.Scheme)
	case port < 0 || port > 65535:
		return nil, fmt.Errorf("probe: http port %d", port)
	case port == 0 && sp.Scheme == "https":
		port = 443
	case port == 0:
		port = 80
	}
	p := &sessionHTTP{addr: netip.AddrPortFrom(addr, uint16(port)), headers: sp.Headers}
	if len(p.headers) == 0 {
		p.headers = []string{sessionDefaultHeader}
	}
	if sp.BodyPattern != "" {
		re, err := regexp.Compile(sp.BodyPattern)
		if err != nil || re.NumSubexp() < 1 {
			return nil, fmt.Errorf("probe: http body pattern %q: want a regexp with one group", sp.BodyPattern)
		}
		p.pattern = re
	}
	host := sp.Host
	if host == "" {
		host = net.JoinHostPort(addr.String(), strconv.Itoa(port))
		if sp.Scheme == "http" && port == 80 || sp.Scheme == "https" && port == 443 {
			host = strings.TrimSuffix(host, ":"+strconv.Itoa(port)) // the default port goes unsaid
		}
	}
	method := sp.Method
	switch method {
	case "", http.MethodGet:
		method = http.MethodGet
	case http.MethodHead:
		p.head = true
	default:
		return nil, fmt.Errorf("probe: http method %q", sp.Method)
	}
	path := sp.Path
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequest(method, sp.Scheme+"://"+host+path, nil)
	if err != nil {
		return nil, fmt.Errorf("probe: http request: %w", err)
	}
	req.Host = host
	req.Header.Set("User-Agent", "anyscope-session/1")
	req.Header.Set("Cache-Control", "no-cache")
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		return nil, fmt.Errorf("probe: http request: %w", err)
	}
	p.request = b.Bytes()
	if sp.Scheme == "https" {
		p.tls = &tls.Config{}
		if tlsConf != nil {
			p.tls = tlsConf.Clone()
		}
		if p.tls.ServerName == "" {
			h, _, err := net.SplitHostPort(host)
			if err != nil {
				h = host
			}
			p.tls.ServerName = h
		}
		p.tls.NextProtos = []string{"http/1.1"}
	}
	return p, nil
}

func (p *sessionHTTP) dial(ctx context.Context, d *net.Dialer) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", p.addr.String())
	if err != nil {
		return nil, err
	}
	if p.tls != nil {
		tc := tls.Client(c, p.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	p.br = bufio.NewReader(c)
	return c, nil
}

func (p *sessionHTTP) send(w io.Writer) error {
	_, err := w.Write(p.request)
	return err
}

// read reads one response and its body. Bytes that are not HTTP wrap
// ErrBogus; a close or a reset of the connection is passed on as it is.
func (p *sessionHTTP) read() (any, error) {
	var req *http.Request
	if p.head {
		req = &http.Request{Method: http.MethodHead}
	}
	// A close between answers is io.EOF (ReadResponse would make it
	// io.ErrUnexpectedEOF).
	if _, err := p.br.Peek(1); err != nil {
		return nil, sessionHTTPErr(err)
	}
	resp, err := http.ReadResponse(p.br, req)
	if err != nil {
		return nil, sessionHTTPErr(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, sessionBodyPeek))
	if err != nil {
		return nil, sessionHTTPErr(err)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, sessionBodyMax))
	if err != nil {
		return nil, sessionHTTPErr(err)
	}
	if n == sessionBodyMax {
		return nil, fmt.Errorf("probe: http answer body over %d bytes", sessionBodyMax)
	}
	return sessionHTTPAnswer{header: resp.Header, body: body, close: resp.Close}, nil
}

// sessionHTTPErr tells a broken connection from a malformed answer.
func sessionHTTPErr(err error) error {
	var nerr net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &nerr) || sessionIsReset(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrBogus, err)
}

// check names the server: the first configured header present, else the
// body pattern's group.
func (p *sessionHTTP) check(answer any) (string, bool, error) {
	a, ok := answer.(sessionHTTPAnswer)
	if !ok {
		return "", false, fmt.Errorf("%w: an answer to no query", ErrBogus)
	}
	for _, h := range p.headers {
		if v := a.header.Get(h); v != "" {
			return clean(v, 4*api.MaxStringLen), a.close, nil
		}
	}
	if p.pattern != nil {
		if m := p.pattern.FindSubmatch(a.body); len(m) > 1 && len(m[1]) > 0 {
			return clean(string(m[1]), 4*api.MaxStringLen), a.close, nil
		}
	}
	return "", a.close, nil
}
