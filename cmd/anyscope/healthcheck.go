package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/anyscope/anyscope/collector/store"
)

// HealthcheckCmd asks a health endpoint whether the process behind it is
// well. It is what container health checks run on images without curl
// (the Dockerfile's HEALTHCHECK, docker-compose.yml).
type HealthcheckCmd struct {
	URL        string        `arg:"" env:"ANYSCOPE_HEALTHCHECK_URL" help:"http:// or https:// URL to GET, e.g. http://127.0.0.1:8740/readyz." placeholder:"URL"`
	Timeout    time.Duration `help:"Give up after this long." default:"3s"`
	CAFile     string        `name:"ca-file" help:"https: trust the CA certificates in this PEM file instead of the system's." placeholder:"FILE"`
	ServerName string        `help:"https: the name the server's certificate must hold, when the URL names another (e.g. 127.0.0.1)." placeholder:"NAME"`
	CertFile   string        `name:"cert-file" help:"https: present this PEM client certificate (a collector run with --client-ca asks every client for one)." placeholder:"FILE"`
	KeyFile    string        `name:"key-file" help:"https: the PEM private key of --cert-file." placeholder:"FILE"`
}

// maxHealthBody is how much of a health answer is read and shown.
const maxHealthBody = 512

// Run GETs the URL once: nil (exit status 0) on a 2xx answer, an error
// saying what went wrong (exit status 1) otherwise. Redirects are not
// followed and proxies are not used: a health check asks the process it
// names, directly.
func (c *HealthcheckCmd) Run(ctx context.Context) error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("healthcheck: %q: want an http:// or https:// URL with a host: %w", c.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("healthcheck: %q: want an http:// or https:// URL with a host", c.URL)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("healthcheck: --timeout %s: want a positive duration", c.Timeout)
	}
	tlsConf := &tls.Config{ServerName: c.ServerName, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("healthcheck: --ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("healthcheck: --ca-file %s: no PEM certificate in it", c.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return fmt.Errorf("healthcheck: client certificate: %w", err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	case c.CertFile != "" || c.KeyFile != "":
		return errors.New("healthcheck: --cert-file and --key-file go together")
	}
	client := &http.Client{
		Timeout: c.Timeout,
		Transport: &http.Transport{
			Proxy:             nil,
			TLSClientConfig:   tlsConf,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	req.Header.Set("User-Agent", "anyscope-healthcheck")
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("healthcheck: %s: no answer within %s", u.Redacted(), c.Timeout)
		}
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	text := healthText(body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if loc := resp.Header.Get("Location"); loc != "" {
			text = "redirect to " + healthText([]byte(loc)) + " (health checks do not follow redirects)"
		}
		return fmt.Errorf("healthcheck: %s: unhealthy: %s: %s", u.Redacted(), resp.Status, text)
	}
	fmt.Printf("%s: %s\n", resp.Status, text)
	return nil
}

// healthText makes an answer's body one printable line: control
// characters become spaces, runs of space one, and it is clipped.
func healthText(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '\uFFFD' {
			return ' '
		}
		return r
	}, string(b))
	s = strings.Join(strings.Fields(s), " ")
	if len(b) >= maxHealthBody {
		s += " …"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// passHealth is what `analyze --every --listen` answers on /healthz: healthy
// while the last successful pass finished recently, unhealthy before the
// first one and when passes keep failing or take too long.
type passHealth struct {
	staleAfter time.Duration
	now        func() time.Time

	mu      sync.Mutex
	last    time.Time // when the last successful pass ended; zero before
	lastErr error     // the latest pass's error, nil if it succeeded
	failed  int       // failed passes since the last success
}

// newPassHealth judges passes run every interval: the last success may be
// three intervals old, and at least a minute.
func newPassHealth(every time.Duration, now func() time.Time) *passHealth {
	return &passHealth{staleAfter: max(3*every, time.Minute), now: now}
}

// record notes the end of a pass. It does nothing on a nil receiver, so
// the analyzer can call it whether health is served or not.
func (h *passHealth) record(err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastErr = err
	if err != nil {
		h.failed++
		return
	}
	h.last, h.failed = h.now(), 0
}

// check says whether the analyzer is healthy, and why.
func (h *passHealth) check() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var why string
	if h.lastErr != nil {
		why = fmt.Sprintf("; %d pass(es) failed since, the latest: %v", h.failed, h.lastErr)
	}
	if h.last.IsZero() {
		return false, "no analysis pass has finished yet" + why
	}
	age := h.now().Sub(h.last).Round(time.Second)
	if age > h.staleAfter {
		return false, fmt.Sprintf("the last analysis pass finished %s ago (more than %s)%s", age, h.staleAfter, why)
	}
	return true, fmt.Sprintf("the last analysis pass finished %s ago%s", age, why)
}

func (h *passHealth) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ok, msg := h.check()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, msg+"\n")
}

// dbHealth answers /healthz for a process whose work is reading the
// database (the dashboard): healthy while the database answers.
func dbHealth(st *store.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if err := st.Ping(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "database unavailable\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// serveHealth serves h as GET /healthz on listen until stop is called.
// It returns once listening, so a busy port fails the command at once.
func serveHealth(listen string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("health endpoint: listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", h)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("health endpoint listening", "url", "http://"+ln.Addr().String()+"/healthz")
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", "err", err)
		}
	}()
	return func() { hs.Close() }, nil
}
