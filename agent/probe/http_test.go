package probe

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// httpTestHost is the Host every test asks for; it resolves nowhere, so a probe
// that answers at all dialled the address it was given.
const httpTestHost = "cdn.example.org"

// httpTestCert returns a certificate for httpTestHost and a pool holding its CA.
func httpTestCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, leafKey := key(), key()
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "anyscope test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: httpTestHost}, DNSNames: []string{httpTestHost},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}, pool
}

// httpSeen records what a test server saw.
type httpSeen struct {
	mu          sync.Mutex
	hosts       []string
	paths       []string
	methods     []string
	sni         []string
	connections int
	close       []bool
}

func (s *httpSeen) handler(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hosts = append(s.hosts, r.Host)
		s.paths = append(s.paths, r.URL.RequestURI())
		s.methods = append(s.methods, r.Method)
		s.close = append(s.close, r.Close)
		s.mu.Unlock()
		h(w, r)
	}
}

// serve starts an HTTP (or HTTPS, with cert) server on 127.0.0.1.
func serveHTTPTest(t *testing.T, h http.HandlerFunc, cert *tls.Certificate) (*httpSeen, netip.AddrPort) {
	t.Helper()
	s := &httpSeen{}
	srv := httptest.NewUnstartedServer(s.handler(h))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.connections++
			s.mu.Unlock()
		}
	}
	if cert != nil {
		srv.TLS = &tls.Config{
			Certificates: []tls.Certificate{*cert},
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				s.mu.Lock()
				s.sni = append(s.sni, hello.ServerName)
				s.mu.Unlock()
				return nil, nil
			},
		}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return s, netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// httpRawServer accepts connections on 127.0.0.1 and hands each to f after the
// request head was read.
func httpRawServer(t *testing.T, f func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				stop := context.AfterFunc(httpDoneCtx(done), func() { c.Close() })
				defer stop()
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if l == "\r\n" {
						break
					}
				}
				f(c)
			})
		}
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// httpDoneCtx is a context that ends when done is closed.
func httpDoneCtx(done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	return ctx
}

// probeHTTP runs one probe of spec at ap with o and checks the result is
// valid.
func probeHTTP(t *testing.T, o HTTPOptions, ap netip.AddrPort, spec api.HTTPSpec) api.Result {
	t.Helper()
	p, err := NewHTTP(o)
	if err != nil {
		t.Fatal(err)
	}
	spec.Port = int(ap.Port())
	rs := p.Probe(context.Background(), api.ScheduleTarget{Name: "cdn", HTTP: &spec}, ap.Addr(), api.TransportTCP)
	if len(rs) != 1 {
		t.Fatalf("%d results", len(rs))
	}
	r := rs[0]
	r.Seq = 1
	if err := r.Validate(); err != nil {
		t.Errorf("invalid result %+v %+v: %v", r, r.HTTP, err)
	}
	if r.Kind != api.KindHTTP || r.Transport != api.TransportTCP || r.Target != "cdn" || r.Address != ap.Addr().String() {
		t.Errorf("result %+v", r)
	}
	return r
}

func TestHTTPIdentity(t *testing.T) {
	t.Parallel()
	trace := "fl=123f45\nh=cdn.example.org\nip=192.0.2.7\nts=1700000000.1\nvisit_scheme=http\ncolo=LHR\nhttp=http/1.1\nloc=GB\n"
	for _, tc := range []struct {
		name             string
		h                http.HandlerFunc
		spec             api.HTTPSpec
		status           int
		identity, source string
	}{
		{
			name:   "X-Served-By as is",
			h:      func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Served-By", "cache-fra19127-FRA") },
			spec:   api.HTTPSpec{Headers: []string{"X-Served-By"}},
			status: 200, identity: "cache-fra19127-FRA", source: "header:X-Served-By",
		},
		{
			name:   "CF-Ray suffix",
			h:      func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Cf-Ray", "8f1b2c3d4e5f6a7b-AMS") },
			spec:   api.HTTPSpec{Headers: []string{"CF-Ray"}},
			status: 200, identity: "AMS", source: "header:CF-Ray",
		},
		{
			name: "headers in order, X-Amz-Cf-Pop as is",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Amz-Cf-Pop", "FRA56-P1")
				w.Header().Set("X-Served-By", "cache-ams1")
			},
			spec:   api.HTTPSpec{Headers: []string{"X-Missing", "X-Amz-Cf-Pop", "X-Served-By"}},
			status: 200, identity: "FRA56-P1", source: "header:X-Amz-Cf-Pop",
		},
		{
			name: "cdn-cgi trace body",
			h: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/cdn-cgi/trace" {
					http.NotFound(w, r)
					return
				}
				io.WriteString(w, trace)
			},
			spec:   api.HTTPSpec{Path: "/cdn-cgi/trace", Headers: []string{"CF-Ray"}, BodyPattern: `(?m)^colo=(\w+)$`},
			status: 200, identity: "LHR", source: "body",
		},
		{
			name: "HEAD",
			h: func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodHead {
					w.Header().Set("X-Served-By", "head-ok")
				}
			},
			spec:   api.HTTPSpec{Method: "HEAD", Headers: []string{"X-Served-By"}, BodyPattern: "(x)"},
			status: 200, identity: "head-ok", source: "header:X-Served-By",
		},
		{
			name: "status recorded",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Served-By", "cache-lhr1")
				w.WriteHeader(http.StatusServiceUnavailable)
			},
			spec:   api.HTTPSpec{Headers: []string{"X-Served-By"}},
			status: 503, identity: "cache-lhr1", source: "header:X-Served-By",
		},
		{
			name: "redirect not followed",
			h: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					w.Header().Set("X-Served-By", "followed")
					return
				}
				w.Header().Set("X-Served-By", "first")
				http.Redirect(w, r, "/elsewhere", http.StatusFound)
			},
			spec:   api.HTTPSpec{Headers: []string{"X-Served-By"}},
			status: 302, identity: "first", source: "header:X-Served-By",
		},
		{
			name:   "answer without identity is no failure",
			h:      func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") },
			spec:   api.HTTPSpec{Headers: []string{"X-Served-By"}, BodyPattern: `(?m)^colo=(\w+)$`},
			status: 200,
		},
		{
			name:   "identity truncated",
			h:      func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Served-By", strings.Repeat("a", 2000)) },
			spec:   api.HTTPSpec{Headers: []string{"X-Served-By"}},
			status: 200, identity: strings.Repeat("a", api.MaxStringLen), source: "header:X-Served-By",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, ap := serveHTTPTest(t, tc.h, nil)
			tc.spec.Scheme, tc.spec.Host = "http", httpTestHost
			r := probeHTTP(t, HTTPOptions{Timeout: 2 * time.Second}, ap, tc.spec)
			v := r.HTTP
			if r.Failure != api.FailureNone || v == nil {
				t.Fatalf("failure %q values %+v", r.Failure, v)
			}
			if v.Status != tc.status || v.Identity != tc.identity || v.Source != tc.source || v.Scheme != "http" || v.Host != httpTestHost {
				t.Errorf("got %+v, want status %d identity %q source %q", v, tc.status, tc.identity, tc.source)
			}
			if v.ConnectUS <= 0 || v.FirstByteUS < v.ConnectUS || v.TLSUS != 0 || r.RTTMicros <= 0 {
				t.Errorf("timings %+v rtt %d", v, r.RTTMicros)
			}
			want := "GET"
			if tc.spec.Method == "HEAD" {
				want = "HEAD"
			}
			if r.Query != want {
				t.Errorf("query %q, want %q", r.Query, want)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			path := tc.spec.Path
			if path == "" {
				path = "/"
			}
			if s.connections != 1 || !slices.Equal(s.hosts, []string{httpTestHost + ":" + fmt.Sprint(ap.Port())}) ||
				!slices.Equal(s.paths, []string{path}) || !slices.Equal(s.methods, []string{want}) || !slices.Equal(s.close, []bool{true}) {
				t.Errorf("server saw %d connections, hosts %q, paths %q, methods %q, close %v", s.connections, s.hosts, s.paths, s.methods, s.close)
			}
		})
	}
}

func TestHTTPSVerifiesAgainstHost(t *testing.T) {
	t.Parallel()
	cert, pool := httpTestCert(t)
	h := func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Served-By", "cache-ams1") }
	spec := api.HTTPSpec{Scheme: "https", Host: httpTestHost, Headers: []string{"X-Served-By"}}

	t.Run("valid certificate", func(t *testing.T) {
		t.Parallel()
		s, ap := serveHTTPTest(t, h, &cert)
		r := probeHTTP(t, HTTPOptions{RootCAs: pool}, ap, spec)
		v := r.HTTP
		if r.Failure != api.FailureNone || v.Identity != "cache-ams1" || v.Scheme != "https" || v.Status != 200 {
			t.Fatalf("%q %+v", r.Failure, v)
		}
		if !(0 < v.ConnectUS && v.ConnectUS < v.TLSUS && v.TLSUS <= v.FirstByteUS) {
			t.Errorf("timings connect %d tls %d first byte %d", v.ConnectUS, v.TLSUS, v.FirstByteUS)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !slices.Equal(s.sni, []string{httpTestHost}) {
			t.Errorf("SNI %q", s.sni)
		}
	})
	t.Run("certificate for another name", func(t *testing.T) {
		t.Parallel()
		_, ap := serveHTTPTest(t, h, &cert)
		other := spec
		other.Host = "other.example.org"
		r := probeHTTP(t, HTTPOptions{RootCAs: pool}, ap, other)
		if r.Failure != api.FailureUnknown || r.HTTP.Status != 0 || r.HTTP.Identity != "" || r.HTTP.ConnectUS <= 0 || r.HTTP.TLSUS != 0 {
			t.Errorf("%q %+v", r.Failure, r.HTTP)
		}
	})
	t.Run("untrusted CA", func(t *testing.T) {
		t.Parallel()
		_, ap := serveHTTPTest(t, h, &cert)
		r := probeHTTP(t, HTTPOptions{}, ap, spec)
		if r.Failure != api.FailureUnknown || r.HTTP.Identity != "" {
			t.Errorf("%q %+v", r.Failure, r.HTTP)
		}
	})
	t.Run("skip verification in labs", func(t *testing.T) {
		t.Parallel()
		_, ap := serveHTTPTest(t, h, &cert)
		other := spec
		other.Host = "other.example.org"
		r := probeHTTP(t, HTTPOptions{InsecureSkipVerify: true}, ap, other)
		if r.Failure != api.FailureNone || r.HTTP.Identity != "cache-ams1" {
			t.Errorf("%q %+v", r.Failure, r.HTTP)
		}
	})
}

// httpHeadOK is a response head announcing a body of unknown length.
const httpHeadOK = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Served-By: cache-hel1\r\n"

func TestHTTPHostileServers(t *testing.T) {
	t.Parallel()
	const timeout = 700 * time.Millisecond
	hdr := api.HTTPSpec{Scheme: "http", Host: httpTestHost, Headers: []string{"X-Served-By"}}
	body := api.HTTPSpec{Scheme: "http", Host: httpTestHost, Headers: []string{"X-Nope"}, BodyPattern: `(?m)^colo=(\w+)$`}
	block := func(c net.Conn) { io.Copy(io.Discard, c) } // until the client goes
	for _, tc := range []struct {
		name     string
		serve    func(net.Conn)
		spec     api.HTTPSpec
		failure  api.Failure
		status   int
		identity string
		slow     bool // ends at the timeout
	}{
		{
			name: "10 MB of headers",
			serve: func(c net.Conn) {
				io.WriteString(c, httpHeadOK+"X-Big: ")
				io.Copy(c, io.LimitReader(httpZeros{'a'}, 10<<20))
				io.WriteString(c, "\r\n\r\n")
			},
			spec: hdr, failure: api.FailureUnknown,
		},
		{
			name: "10 MB body, identity beyond MaxBody",
			serve: func(c net.Conn) {
				io.WriteString(c, httpHeadOK+"Content-Length: 10485770\r\n\r\n")
				io.Copy(c, io.LimitReader(httpZeros{'x'}, 10<<20))
				io.WriteString(c, "\ncolo=ZZZ\n")
			},
			spec: body, status: 200,
		},
		{
			name: "never-ending body, identity first",
			serve: func(c net.Conn) {
				io.WriteString(c, httpHeadOK+"\r\ncolo=AMS\n")
				io.Copy(c, httpZeros{'\n'})
			},
			spec: body, status: 200, identity: "AMS",
		},
		{
			name:  "never-ending body, no identity",
			serve: func(c net.Conn) { io.WriteString(c, httpHeadOK+"\r\n"); io.Copy(c, httpZeros{'y'}) },
			spec:  body, status: 200,
		},
		{
			name:  "hangs after headers, identity in a header",
			serve: func(c net.Conn) { io.WriteString(c, httpHeadOK+"\r\n"); block(c) },
			spec:  hdr, status: 200, identity: "cache-hel1",
		},
		{
			name:  "hangs after headers, identity in the body",
			serve: func(c net.Conn) { io.WriteString(c, httpHeadOK+"\r\npartial"); block(c) },
			spec:  body, status: 200, failure: api.FailureTimeout, slow: true,
		},
		{
			name:  "hangs in the body after the identity",
			serve: func(c net.Conn) { io.WriteString(c, httpHeadOK+"\r\ncolo=FRA\n"); block(c) },
			spec:  body, status: 200, identity: "FRA", slow: true,
		},
		{
			name: "slowloris head",
			serve: func(c net.Conn) {
				for _, b := range []byte(httpHeadOK + "\r\n") {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			},
			spec: hdr, failure: api.FailureTimeout, slow: true,
		},
		{
			name:  "silent server",
			serve: block,
			spec:  hdr, failure: api.FailureTimeout, slow: true,
		},
		{
			name:  "closes without answer",
			serve: func(c net.Conn) {},
			spec:  hdr, failure: api.FailureConnectionClosed,
		},
		{
			name: "resets without answer",
			serve: func(c net.Conn) {
				c.(*net.TCPConn).SetLinger(0)
			},
			spec: hdr, failure: api.FailureConnectionReset,
		},
		{
			// Go refuses a response head with control characters: the
			// answer is malformed, and nothing of it is stored.
			name: "control characters in a header",
			serve: func(c net.Conn) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Served-By: a\x01b\x1b[31m\r\nContent-Length: 0\r\n\r\n")
			},
			spec:    hdr,
			failure: api.FailureUnknown,
		},
		{
			name: "tab, high bytes and invalid UTF-8 in a header",
			serve: func(c net.Conn) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Served-By: a\tb\xff\xfe\xc3\xa9\r\nContent-Length: 0\r\n\r\n")
			},
			spec:     hdr,
			status:   200,
			identity: `a\009b\255\254\195\169`,
		},
		{
			name: "control characters in the body",
			serve: func(c net.Conn) {
				io.WriteString(c, httpHeadOK+"Content-Length: 16\r\n\r\ncolo=\x00\x01ab\x80\xc3\n\n")
			},
			spec: api.HTTPSpec{Scheme: "http", Host: httpTestHost, BodyPattern: `(?m)^colo=(.+)$`}, status: 200, identity: `\000\001ab\128\195`,
		},
		{
			name: "CF-Ray with invalid UTF-8",
			serve: func(c net.Conn) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nCF-Ray: 8f1b-\xffAMS\r\nContent-Length: 0\r\n\r\n")
			},
			spec: api.HTTPSpec{Scheme: "http", Host: httpTestHost, Headers: []string{"CF-Ray"}}, status: 200, identity: `\255AMS`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ap := httpRawServer(t, tc.serve)
			start := time.Now()
			r := probeHTTP(t, HTTPOptions{Timeout: timeout}, ap, tc.spec)
			took := time.Since(start)
			if r.Failure != tc.failure || r.HTTP == nil || r.HTTP.Status != tc.status || r.HTTP.Identity != tc.identity {
				t.Errorf("got %q %+v, want %q status %d identity %q", r.Failure, r.HTTP, tc.failure, tc.status, tc.identity)
			}
			if tc.slow && (took < timeout || took > timeout+time.Second) || !tc.slow && took > timeout {
				t.Errorf("took %s with timeout %s", took, timeout)
			}
		})
	}
}

// httpZeros is an endless reader of one byte.
type httpZeros [1]byte

func (z httpZeros) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = z[0]
	}
	return len(b), nil
}

func TestHTTPRefusedAndBadSpecs(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	r := probeHTTP(t, HTTPOptions{}, ap, api.HTTPSpec{Scheme: "http", Host: httpTestHost, Headers: []string{"X-Served-By"}})
	if r.Failure != api.FailureConnectionRefused || r.HTTP == nil || r.HTTP.ConnectUS != 0 || r.RTTMicros != 0 {
		t.Errorf("refused: %q %+v", r.Failure, r.HTTP)
	}

	for _, tc := range []struct {
		name string
		spec *api.HTTPSpec
		want string
	}{
		{"no spec", nil, "target has no http spec"},
		{"scheme", &api.HTTPSpec{Scheme: "ftp", Headers: []string{"A"}}, `scheme "ftp"`},
		{"method", &api.HTTPSpec{Scheme: "http", Method: "POST", Headers: []string{"A"}}, `method "POST"`},
		{"port", &api.HTTPSpec{Scheme: "http", Port: 70000, Headers: []string{"A"}}, "port 70000"},
		{"host", &api.HTTPSpec{Scheme: "http", Host: "a b", Headers: []string{"A"}}, `host "a b"`},
		{"path", &api.HTTPSpec{Scheme: "http", Path: "x", Headers: []string{"A"}}, `path "x"`},
		{"header", &api.HTTPSpec{Scheme: "http", Headers: []string{"X:Y"}}, `header name "X:Y"`},
		{"pattern", &api.HTTPSpec{Scheme: "http", BodyPattern: "("}, "body pattern: error parsing regexp"},
		{"pattern groups", &api.HTTPSpec{Scheme: "http", BodyPattern: "a"}, "has 0 groups, want 1"},
		{"no rule", &api.HTTPSpec{Scheme: "http"}, "neither headers nor a body pattern"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckHTTPSpec(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckHTTPSpec: %v, want %q", err, tc.want)
			}
			p, _ := NewHTTP(HTTPOptions{})
			rs := p.Probe(context.Background(), api.ScheduleTarget{Name: "cdn", HTTP: tc.spec}, ap.Addr(), api.TransportTCP)
			if len(rs) != 1 || rs[0].Failure != api.FailureUnknown || rs[0].HTTP != nil {
				t.Fatalf("%+v", rs)
			}
			rs[0].Seq = 1
			if err := rs[0].Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNewHTTPRejects(t *testing.T) {
	for _, o := range []HTTPOptions{{Timeout: -1}, {MaxBody: -1}, {MaxBody: 17 << 20}, {UserAgent: "a\nb"}} {
		if _, err := NewHTTP(o); err == nil {
			t.Errorf("NewHTTP(%+v) accepted", o)
		}
	}
	p, err := NewHTTP(HTTPOptions{})
	if err != nil || p.opts.Timeout != 5*time.Second || p.opts.MaxBody != 64<<10 || p.opts.UserAgent != DefaultUserAgent {
		t.Errorf("defaults %+v %v", p.opts, err)
	}
}

// httpJob is a helper run in a lab vantage point.
type httpJob struct {
	Addrs []string     `json:"addrs"`
	Spec  api.HTTPSpec `json:"spec"`
}

func pingHTTPHelperHTTP() int {
	var j httpJob
	if err := json.Unmarshal([]byte(os.Getenv(pingHTTPHelperArg)), &j); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	p, err := NewHTTP(HTTPOptions{Timeout: 3 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var out []api.Result
	for _, a := range j.Addrs {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		out = append(out, p.Probe(context.Background(), api.ScheduleTarget{Name: "lab", HTTP: &j.Spec}, addr, api.TransportTCP)...)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

// pingHTTPHelperHTTPD is the lab's HTTP identity responder (see lab.Options.HTTPD).
func pingHTTPHelperHTTPD(args []string) int {
	fs := flag.NewFlagSet("httpd", flag.ContinueOnError)
	site := fs.String("site", "", "")
	var listen []string
	fs.Func("listen", "", func(s string) error { listen = append(listen, s); return nil })
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := lab.ServeHTTP(ctx, *site, listen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestHTTPAndPingLab probes the anycast addresses of the default lab from
// every vantage point: the HTTP identity must name a site ground truth
// allows (any of them for vantage points behind equal-cost paths), and
// ping must be answered from a few hops away.
func TestHTTPAndPingLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces, bird2, nsd)")
	}
	if testing.Short() {
		t.Skip("the lab takes seconds to come up")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel) // after the parallel subtests
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(lab.Options{StateDir: t.TempDir(), Prefix: "ph-", HTTPD: []string{"env", pingHTTPHelperEnv + "=httpd", self}})
	if err != nil {
		t.Fatal(err)
	}
	// No management veth on the host: another lab may hold its address.
	src := strings.Replace(string(lab.DefaultTopologyYAML()), ", host: 198.19.0.1", "", 1)
	start := time.Now()
	if err := l.Up(ctx, "default-probe-test", []byte(src)); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if _, err := l.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	tr, err := l.Truth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	topo := lab.DefaultTopology()
	addrs := []string{topo.Anycast[0].Address.String(), topo.Anycast[1].Address.String()}
	truth := map[[2]string][]string{}
	for _, e := range tr.VantagePoints {
		truth[[2]string{e.VantagePoint, e.Address}] = e.Sites
	}

	for _, vp := range topo.VantagePoints {
		t.Run(vp.Name, func(t *testing.T) {
			t.Parallel()
			cmd, err := l.Command(ctx, vp.Name, self)
			if err != nil {
				t.Fatal(err)
			}
			var rs []api.Result
			runPingHTTPHelper(t, cmd, "http", httpJob{Addrs: addrs, Spec: api.HTTPSpec{Scheme: "http", Host: httpTestHost, Headers: []string{"X-Served-By"}}}, &rs)
			if len(rs) != len(addrs) {
				t.Fatalf("%d http results", len(rs))
			}
			for _, r := range rs {
				r.Seq = 1
				if err := r.Validate(); err != nil {
					t.Error(err)
				}
				want := truth[[2]string{vp.Name, r.Address}]
				if r.Failure != api.FailureNone || r.HTTP == nil || !slices.Contains(want, r.HTTP.Identity) || r.HTTP.Source != "header:X-Served-By" {
					t.Errorf("http %s: %q %+v, truth says %v", r.Address, r.Failure, r.HTTP, want)
				}
			}

			cmd, err = l.Command(ctx, vp.Name, self)
			if err != nil {
				t.Fatal(err)
			}
			var out []pingOutcome
			runPingHTTPHelper(t, cmd, "ping", pingJob{Addrs: addrs, Interval: "50ms", Concurrent: true}, &out)
			for _, r := range checkPing(t, out, len(addrs)) {
				if r.Failure != api.FailureNone || r.Ping.Received != 3 || !r.Ping.Privileged {
					t.Errorf("ping %s: %q %+v", r.Address, r.Failure, r.Ping)
				}
				// Sites are two to five routers away; Linux starts at 64.
				if ttl := r.Ping.ReplyTTL; ttl < 58 || ttl > 63 {
					t.Errorf("ping %s: reply ttl %d", r.Address, ttl)
				}
			}
		})
	}
}
