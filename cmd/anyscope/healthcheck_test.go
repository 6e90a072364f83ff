package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
)

// hcPKI is a CA and a certificate it issued, for the health check's TLS tests.
type hcPKI struct {
	caFile string
	pool   *x509.CertPool
	cert   tls.Certificate
	// certFile and keyFile hold cert as PEM.
	certFile, keyFile string
}

// newHCPKI makes a CA in dir and a certificate for dnsName with the given
// extended key usage.
func newHCPKI(t *testing.T, dir, prefix, dnsName string, usage x509.ExtKeyUsage) hcPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: prefix + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	p := hcPKI{
		caFile: filepath.Join(dir, prefix+"-ca.pem"), pool: x509.NewCertPool(),
		certFile: filepath.Join(dir, prefix+".pem"), keyFile: filepath.Join(dir, prefix+"-key.pem"),
	}
	p.pool.AddCert(ca)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for path, b := range map[string][]byte{
		p.caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), p.certFile: certPEM, p.keyFile: keyPEM,
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if p.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

// healthcheck runs `anyscope healthcheck` with args and extra environment.
func healthcheck(t *testing.T, env []string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"healthcheck"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), status
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok\n") })
	mux.HandleFunc("/down", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/hostile", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "\x1b[2Jcleared\r\nscreen\x00")
	})
	mux.HandleFunc("/hang", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := httptest.NewServer(mux) // on 127.0.0.1
	t.Cleanup(srv.Close)
	closed := freeLoopbackAddr(t)

	for _, tc := range []struct {
		name       string
		env        []string
		args       []string
		status     int
		out, inErr string
	}{
		{"healthy", nil, []string{srv.URL + "/ok"}, 0, "200 OK: ok\n", ""},
		{"URL from the environment", []string{"ANYSCOPE_HEALTHCHECK_URL=" + srv.URL + "/ok"}, nil, 0, "200 OK: ok\n", ""},
		{"unhealthy", nil, []string{srv.URL + "/down"}, 1, "", "unhealthy: 503 Service Unavailable: database unavailable"},
		{"redirect not followed", nil, []string{srv.URL + "/moved"}, 1, "", "302 Found: redirect to /ok (health checks do not follow redirects)"},
		{"control characters", nil, []string{srv.URL + "/hostile"}, 1, "", "500 Internal Server Error: [2Jcleared screen\n"},
		{"no answer", nil, []string{"--timeout", "300ms", srv.URL + "/hang"}, 1, "", "no answer within 300ms"},
		{"connection refused", nil, []string{"http://" + closed + "/healthz"}, 1, "", "connection refused"},
		{"file URL", nil, []string{"file:///etc/passwd"}, 1, "", `"file:///etc/passwd": want an http:// or https:// URL with a host`},
		{"no scheme", nil, []string{"127.0.0.1:8740/healthz"}, 1, "", "want an http:// or https:// URL"},
		{"no URL", nil, nil, -1, "", "expected \"<url>\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, status := healthcheck(t, tc.env, tc.args...)
			if tc.status == -1 && status != 0 { // a usage error: kong's own status, usage on stdout
				status, out = -1, ""
			}
			if status != tc.status || out != tc.out || !strings.Contains(errOut, tc.inErr) {
				t.Errorf("status %d, stdout %q, stderr %q; want %d, %q, stderr with %q", status, out, errOut, tc.status, tc.out, tc.inErr)
			}
		})
	}
}

func TestHealthcheckTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	server := newHCPKI(t, dir, "server", "collector.example.org", x509.ExtKeyUsageServerAuth)
	client := newHCPKI(t, dir, "client", "health.example.org", x509.ExtKeyUsageClientAuth)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok\n") })
	start := func(mutual bool) string {
		srv := httptest.NewUnstartedServer(ok)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{server.cert}, MinVersion: tls.VersionTLS12}
		if mutual {
			srv.TLS.ClientCAs, srv.TLS.ClientAuth = client.pool, tls.RequireAndVerifyClientCert
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL + "/healthz"
	}
	plain, mutual := start(false), start(true)
	trust := []string{"--ca-file", server.caFile, "--server-name", "collector.example.org"}
	withCert := append([]string{"--cert-file", client.certFile, "--key-file", client.keyFile}, trust...)

	for _, tc := range []struct {
		name  string
		args  []string
		ok    bool
		inErr string
	}{
		{"verified", append(trust, plain), true, ""},
		{"unknown CA", []string{"--server-name", "collector.example.org", plain}, false, "certificate signed by unknown authority"},
		{"wrong name", []string{"--ca-file", server.caFile, plain}, false, "cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
		{"mutual TLS", append(withCert, mutual), true, ""},
		{"mutual TLS without a certificate", append(trust, mutual), false, "healthcheck:"},
		{"certificate without key", append([]string{"--cert-file", client.certFile}, append(trust, mutual)...), false, "--cert-file and --key-file go together"},
		{"CA file not PEM", []string{"--ca-file", client.keyFile, plain}, false, "no PEM certificate in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, status := healthcheck(t, nil, tc.args...)
			if (status == 0) != tc.ok || !strings.Contains(errOut, tc.inErr) || (tc.ok && out != "200 OK: ok\n") {
				t.Errorf("status %d, stdout %q, stderr %q; want ok %v, stderr with %q", status, out, errOut, tc.ok, tc.inErr)
			}
		})
	}
}

// freeLoopbackAddr returns a loopback address nothing listened on a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestPassHealth(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC)
	now := t0
	h := newPassHealth(30*time.Second, func() time.Time { return now })
	boom := errors.New("store: scan: database unavailable")
	for _, step := range []struct {
		name    string
		advance time.Duration
		pass    *error // nil: no pass ends
		ok      bool
		want    string
	}{
		{"before the first pass", 10 * time.Second, nil, false, "no analysis pass has finished yet"},
		{"first pass failed", 5 * time.Second, &boom, false, "no analysis pass has finished yet; 1 pass(es) failed since, the latest: store: scan: database unavailable"},
		{"a pass", 30 * time.Second, new(error), true, "the last analysis pass finished 0s ago"},
		{"still fresh", 90 * time.Second, nil, true, "the last analysis pass finished 1m30s ago"},
		{"stale", time.Second, nil, false, "the last analysis pass finished 1m31s ago (more than 1m30s)"},
		{"failing since", 0, &boom, false, "the last analysis pass finished 1m31s ago (more than 1m30s); 1 pass(es) failed since"},
		{"recovered", 30 * time.Second, new(error), true, "the last analysis pass finished 0s ago"},
	} {
		now = now.Add(step.advance)
		if step.pass != nil {
			h.record(*step.pass)
		}
		ok, msg := h.check()
		if ok != step.ok || !strings.HasPrefix(msg, step.want) {
			t.Errorf("%s: check() = %v, %q; want %v, %q…", step.name, ok, msg, step.ok, step.want)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if wantCode := map[bool]int{true: 200, false: 503}[step.ok]; rec.Code != wantCode || rec.Body.String() != msg+"\n" {
			t.Errorf("%s: /healthz = %d %q, want %d %q", step.name, rec.Code, rec.Body.String(), wantCode, msg+"\n")
		}
	}
	if got := newPassHealth(5*time.Second, time.Now).staleAfter; got != time.Minute {
		t.Errorf("staleAfter for 5s passes = %v, want the one-minute floor", got)
	}
	var none *passHealth
	none.record(boom) // analyze without --health-listen
}

// TestHealthEndpoints starts `analyze --every` with --health-listen and
// `web`, and asks both with `anyscope healthcheck`, as the containers do.
func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.DB(t)
	dir := t.TempDir()
	start := func(args ...string) *syncBuffer {
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.Env = append(os.Environ(), "ANYSCOPE_DB="+dsn)
		log := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return log
	}
	// waitHealthy polls the URL until it answers 2xx, for a minute at most
	// (a wait, not a timing assertion).
	waitHealthy := func(url string) string {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			out, errOut, status := healthcheck(t, nil, url)
			if status == 0 {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never became healthy; last answer: %s", url, errOut)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	analyzeAddr := freeLoopbackAddr(t)
	analyzeLog := start("analyze", "--every", "1s", "--health-listen", analyzeAddr)
	webReady := filepath.Join(dir, "web.addr")
	webLog := start("web", "--listen", "127.0.0.1:0", "--ready-file", webReady)

	if out := waitHealthy("http://" + analyzeAddr + "/healthz"); !strings.HasPrefix(out, "200 OK: the last analysis pass finished") {
		t.Errorf("analyze health: %q\n%s", out, analyzeLog.String())
	}
	var webAddr string
	deadline := time.Now().Add(time.Minute)
	for webAddr == "" {
		if b, err := os.ReadFile(webReady); err == nil && strings.HasSuffix(string(b), "\n") {
			webAddr = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatalf("web did not start:\n%s", webLog.String())
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if out := waitHealthy("http://" + webAddr + "/healthz"); out != "200 OK: ok\n" {
		t.Errorf("web health: %q", out)
	}
	// The dashboard itself is still served around /healthz.
	if _, errOut, status := healthcheck(t, nil, "http://"+webAddr+"/no-such-page"); status != 1 || !strings.Contains(errOut, "404 Not Found") {
		t.Errorf("dashboard 404 page: %d %s", status, errOut)
	}

	cmd := exec.Command(binary, "analyze", "--health-listen", freeLoopbackAddr(t))
	cmd.Env = append(os.Environ(), "ANYSCOPE_DB="+dsn)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "--health-listen serves the health of the incremental analyzer: give --every too") {
		t.Errorf("analyze --health-listen without --every: %v\n%s", err, b)
	}
}
