package collector

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// AgentURIPrefix starts the URI SAN that names an agent in a client
// certificate: anyscope://agent/<name>.
const AgentURIPrefix = "anyscope://agent/"

// DefaultTLSReloadCheck is the least time between two looks at the
// certificate files for a renewal.
const DefaultTLSReloadCheck = 5 * time.Second

// TLSOptions make the collector serve HTTPS (TLS 1.2 or newer) and, with
// ClientCAFile, require a client certificate from every agent (mutual TLS).
//
// The files are read again when they change, so a renewed certificate is
// served without a restart: the first handshake after ReloadCheck has passed
// compares their contents with what is loaded. A file that does not load (a
// renewal half written, a key that does not match) is logged and counted,
// and the previous certificate stays in use.
//
// With mutual TLS the certificate must name the agent whose bearer token
// comes with the request: one of its subject alternative names must be the
// URI anyscope://agent/<name> or the DNS name <name>, exactly (the subject's
// common name is never used). A valid token with another agent's
// certificate is refused with 403. Tokens stay required: the certificate
// proves the machine, the token (rotated on its own schedule) the agent.
type TLSOptions struct {
	// CertFile and KeyFile hold the collector's certificate chain and its
	// private key, PEM-encoded.
	CertFile, KeyFile string
	// ClientCAFile, when set, holds the PEM certificates of the CAs that
	// issue agents' client certificates, and makes them required.
	ClientCAFile string
	// ReloadCheck is the least time between two looks at the files;
	// DefaultTLSReloadCheck when zero.
	ReloadCheck time.Duration
}

// tlsFiles keeps the TLS configuration loaded from TLSOptions' files and
// loads it again when they change.
type tlsFiles struct {
	o   TLSOptions
	log *slog.Logger
	m   *metrics
	now func() time.Time

	mu    sync.Mutex
	next  time.Time // when to look at the files again
	cur   [3][]byte // contents of cert, key and CA file in use
	bad   [3][]byte // contents that last failed to load
	cfg   atomic.Pointer[tls.Config]
	shown atomic.Pointer[tls.Certificate]
}

// newTLSFiles loads the files; any problem is an error.
func newTLSFiles(o TLSOptions, log *slog.Logger, m *metrics, now func() time.Time) (*tlsFiles, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("collector: tls: a certificate file and a key file are both required")
	}
	if o.ReloadCheck == 0 {
		o.ReloadCheck = DefaultTLSReloadCheck
	}
	if o.ReloadCheck < 0 {
		return nil, fmt.Errorf("collector: tls: reload check %s: want a positive interval", o.ReloadCheck)
	}
	f := &tlsFiles{o: o, log: log, m: m, now: now}
	files, err := f.read()
	if err == nil {
		err = f.install(files)
	}
	if err != nil {
		return nil, fmt.Errorf("collector: tls: %w", err)
	}
	f.next = now().Add(o.ReloadCheck)
	return f, nil
}

// mutual reports whether client certificates are required.
func (f *tlsFiles) mutual() bool { return f.o.ClientCAFile != "" }

// read returns the contents of the certificate, key and CA files.
func (f *tlsFiles) read() ([3][]byte, error) {
	var files [3][]byte
	for i, p := range []string{f.o.CertFile, f.o.KeyFile, f.o.ClientCAFile} {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return files, err
		}
		files[i] = b
	}
	return files, nil
}

// install builds the configuration served from the files' contents.
func (f *tlsFiles) install(files [3][]byte) error {
	cert, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return fmt.Errorf("%s, %s: %w", f.o.CertFile, f.o.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("%s: %w", f.o.CertFile, err)
		}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
		Certificates: []tls.Certificate{cert},
	}
	if f.mutual() {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(files[2]) {
			return fmt.Errorf("%s: no PEM certificate in it", f.o.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if now := f.now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		f.log.Warn("TLS certificate is not valid now", "file", f.o.CertFile,
			"not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
	f.cfg.Store(cfg)
	f.shown.Store(&cfg.Certificates[0])
	f.cur, f.bad = files, [3][]byte{}
	f.m.tlsNotAfter.Set(float64(leaf.NotAfter.Unix()))
	return nil
}

// config returns the configuration to serve a handshake with, looking at
// the files first when ReloadCheck has passed.
func (f *tlsFiles) config() *tls.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); !now.Before(f.next) {
		f.next = now.Add(f.o.ReloadCheck)
		f.reload()
	}
	return f.cfg.Load()
}

// reload loads the files again if their contents changed; callers hold
// f.mu. Contents that failed once are not tried (nor logged) again.
func (f *tlsFiles) reload() {
	files, err := f.read()
	if err != nil {
		f.m.tlsReloads.WithLabelValues("error").Inc()
		f.log.Warn("cannot read TLS files; serving the previous certificate", "err", err)
		return
	}
	if same(files, f.cur) || same(files, f.bad) {
		return
	}
	if err := f.install(files); err != nil {
		f.bad = files
		f.m.tlsReloads.WithLabelValues("error").Inc()
		f.log.Error("renewed TLS files do not load; serving the previous certificate", "err", err)
		return
	}
	f.m.tlsReloads.WithLabelValues("ok").Inc()
	f.log.Info("TLS certificate reloaded", "file", f.o.CertFile)
}

func same(a, b [3][]byte) bool {
	return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) && bytes.Equal(a[2], b[2])
}

// TLSConfig returns the configuration to serve the collector's HTTPS with
// (for http.Server.TLSConfig or tls.NewListener), or nil when Options.TLS
// was not set. Each handshake uses the certificate files' current contents.
func (s *Server) TLSConfig() *tls.Config {
	f := s.tls
	if f == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.config(), nil
		},
		// Never used while GetConfigForClient answers; it tells
		// http.Server.ServeTLS that the configuration has a certificate.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return f.shown.Load(), nil
		},
	}
}

// checkClientCert refuses a request whose verified client certificate does
// not name agent, when client certificates are required.
func (s *Server) checkClientCert(r *http.Request, agent string) *httpError {
	if s.tls == nil || !s.tls.mutual() {
		return nil
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return fail(http.StatusForbidden, "no_client_cert", "a verified client certificate is required")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if !CertNamesAgent(leaf, agent) {
		return fail(http.StatusForbidden, "cert_mismatch",
			"the client certificate does not name agent %q (want the URI SAN %s%s or the DNS SAN %s)", agent, AgentURIPrefix, agent, agent)
	}
	return nil
}

// CertNamesAgent reports whether cert names agent: one of its subject
// alternative names is the URI anyscope://agent/<agent> or the DNS name
// <agent>, exactly. The common name is not considered.
func CertNamesAgent(cert *x509.Certificate, agent string) bool {
	if agent == "" {
		return false
	}
	for _, u := range cert.URIs {
		if u.String() == AgentURIPrefix+agent {
			return true
		}
	}
	for _, d := range cert.DNSNames {
		if d == agent {
			return true
		}
	}
	return false
}
