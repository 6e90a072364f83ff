package collector_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/shipper"
	"github.com/anyscope/anyscope/collector"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

var serial atomic.Int64

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf describes a certificate to issue.
type leaf struct {
	cn     string
	ips    []net.IP
	dns    []string
	uris   []string
	client bool // for TLS clients, else for servers
}

// issue signs a certificate for l and returns it and its key, PEM-encoded,
// and its serial number.
func (ca *testCA) issue(t *testing.T, l leaf) (certPEM, keyPEM []byte, sn int64) {
	t.Helper()
	key := newKey(t)
	sn = serial.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		Subject:      pkix.Name{CommonName: l.cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  l.ips,
		DNSNames:     l.dns,
	}
	if l.client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, s := range l.uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), sn
}

// writeFile writes b to dir/name the way renewal tools do (a new file
// renamed over the old one) and returns its path.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// pkiFiles are a CA and a server certificate for 127.0.0.1 on disk.
type pkiFiles struct {
	dir                 string
	ca                  *testCA
	caFile              string
	certFile, keyFile   string
	serverSerial        int64
	clientCA            *testCA
	clientCAFile        string
	clientCerts         map[string][2]string // name → cert file, key file
	foreignCertFile     string
	foreignKeyFile      string
	collectorServerName string
}

func newPKI(t *testing.T) *pkiFiles {
	t.Helper()
	p := &pkiFiles{dir: t.TempDir(), ca: newCA(t, "anyscope test collector CA"), clientCerts: map[string][2]string{},
		collectorServerName: "collector.example.org"}
	p.caFile = writeFile(t, p.dir, "ca.pem", p.ca.pem)
	c, k, sn := p.ca.issue(t, leaf{cn: "collector", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, dns: []string{p.collectorServerName}})
	p.certFile, p.keyFile, p.serverSerial = writeFile(t, p.dir, "server.pem", c), writeFile(t, p.dir, "server-key.pem", k), sn

	p.clientCA = newCA(t, "anyscope test agent CA")
	p.clientCAFile = writeFile(t, p.dir, "client-ca.pem", p.clientCA.pem)
	// vp1 is named by a URI SAN, vp2 by a DNS SAN; the common names say
	// the opposite, and must not count.
	for name, l := range map[string]leaf{
		"vp1": {cn: "vp2", uris: []string{collector.AgentURIPrefix + "vp1"}, client: true},
		"vp2": {cn: "vp1", dns: []string{"vp2"}, client: true},
	} {
		c, k, _ := p.clientCA.issue(t, l)
		p.clientCerts[name] = [2]string{writeFile(t, p.dir, name+".pem", c), writeFile(t, p.dir, name+"-key.pem", k)}
	}
	c, k, _ = newCA(t, "someone else's CA").issue(t, leaf{cn: "vp1", uris: []string{collector.AgentURIPrefix + "vp1"}, client: true})
	p.foreignCertFile, p.foreignKeyFile = writeFile(t, p.dir, "foreign.pem", c), writeFile(t, p.dir, "foreign-key.pem", k)
	return p
}

// serveTLS serves c over HTTPS on loopback and returns its base URL.
func serveTLS(t *testing.T, c *collector.Server, keepAlives bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		Handler:   c.Handler(),
		TLSConfig: c.TLSConfig(),
		// Refused handshakes are what some tests are about.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	hs.SetKeepAlivesEnabled(keepAlives)
	done := make(chan error, 1)
	go func() { done <- hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

// client returns the real shipper client of agent with o.
func client(t *testing.T, base, token, agent string, o *shipper.TLSOptions) *shipper.Client {
	t.Helper()
	c, err := shipper.NewClient(shipper.ClientOptions{URL: base, Token: token, Agent: agent, Timeout: 20 * time.Second, TLS: o})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// metric returns the value of the sample line starting with name (labels
// included) on reg, or -1 when there is none.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			id := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, l := range m.GetLabel() {
					ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
				}
				id += "{" + strings.Join(ls, ",") + "}"
			}
			if id != name {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

func upload(t *testing.T, c *shipper.Client, agent string, firstSeq uint64, n int) (*api.Ack, error) {
	t.Helper()
	return c.Upload(context.Background(), &api.Batch{Agent: agent, BatchSeq: firstSeq, Results: results(n, firstSeq, time.Now().Add(-time.Minute))})
}

func TestHTTPS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newPKI(t)
	c, err := collector.New(e.st, collector.Options{TLS: &collector.TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	base := serveTLS(t, c, true)

	t.Run("trusted", func(t *testing.T) {
		cl := client(t, base, e.tokens["vp1"], "vp1", &shipper.TLSOptions{CAFile: p.caFile})
		if _, err := cl.Hello(context.Background(), "test", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Schedule(context.Background()); err != nil {
			t.Fatal(err)
		}
		ack, err := upload(t, cl, "vp1", 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Accepted != 3 {
			t.Errorf("ack %+v: want 3 accepted", ack)
		}
	})
	t.Run("server name", func(t *testing.T) {
		cl := client(t, base, e.tokens["vp1"], "vp1", &shipper.TLSOptions{CAFile: p.caFile, ServerName: p.collectorServerName})
		if _, err := upload(t, cl, "vp1", 4, 1); err != nil {
			t.Fatal(err)
		}
		cl = client(t, base, e.tokens["vp1"], "vp1", &shipper.TLSOptions{CAFile: p.caFile, ServerName: "other.example.org"})
		var herr x509.HostnameError
		if _, err := upload(t, cl, "vp1", 4, 1); !errors.As(err, &herr) {
			t.Fatalf("upload to a collector whose certificate does not name other.example.org: %v; want a hostname error", err)
		}
	})
	t.Run("system roots", func(t *testing.T) {
		cl := client(t, base, e.tokens["vp1"], "vp1", nil)
		var uerr x509.UnknownAuthorityError
		if _, err := upload(t, cl, "vp1", 5, 1); !errors.As(err, &uerr) {
			t.Fatalf("upload trusting only the system's roots: %v; want an unknown authority error", err)
		}
	})
	t.Run("TLS 1.1", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(p.ca.pem)
		conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newPKI(t)
	reg := prometheus.NewRegistry()
	c, err := collector.New(e.st, collector.Options{Registry: reg,
		TLS: &collector.TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.clientCAFile}})
	if err != nil {
		t.Fatal(err)
	}
	base := serveTLS(t, c, true)
	as := func(agent string) *shipper.TLSOptions {
		return &shipper.TLSOptions{CAFile: p.caFile, CertFile: p.clientCerts[agent][0], KeyFile: p.clientCerts[agent][1]}
	}
	status := func(err error) int {
		var se *shipper.StatusError
		if errors.As(err, &se) {
			return se.Code
		}
		return 0
	}

	t.Run("own certificate", func(t *testing.T) {
		for i, agent := range []string{"vp1", "vp2"} { // URI SAN, DNS SAN
			cl := client(t, base, e.tokens[agent], agent, as(agent))
			if _, err := cl.Hello(context.Background(), "test", nil); err != nil {
				t.Fatalf("%s: %v", agent, err)
			}
			if _, err := upload(t, cl, agent, uint64(10*i+1), 2); err != nil {
				t.Fatalf("%s: %v", agent, err)
			}
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		cl := client(t, base, e.tokens["vp1"], "vp1", &shipper.TLSOptions{CAFile: p.caFile})
		_, err := upload(t, cl, "vp1", 100, 1)
		if err == nil || status(err) != 0 || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("upload without a client certificate: %v; want the handshake refused", err)
		}
	})
	t.Run("other agent's certificate", func(t *testing.T) {
		before := metric(t, reg, `anyscope_collector_requests_rejected_total{reason="cert_mismatch"}`)
		cl := client(t, base, e.tokens["vp1"], "vp1", as("vp2"))
		_, err := upload(t, cl, "vp1", 100, 1)
		if status(err) != http.StatusForbidden {
			t.Fatalf("vp1's token with vp2's certificate: %v; want 403", err)
		}
		if _, err := cl.Schedule(context.Background()); status(err) != http.StatusForbidden {
			t.Fatalf("schedule with vp2's certificate: %v; want 403", err)
		}
		if got := metric(t, reg, `anyscope_collector_requests_rejected_total{reason="cert_mismatch"}`); got != before+2 {
			t.Errorf("cert_mismatch rejections %v, want %v", got, before+2)
		}
	})
	t.Run("untrusted CA", func(t *testing.T) {
		cl := client(t, base, e.tokens["vp1"], "vp1",
			&shipper.TLSOptions{CAFile: p.caFile, CertFile: p.foreignCertFile, KeyFile: p.foreignKeyFile})
		_, err := upload(t, cl, "vp1", 100, 1)
		if err == nil || status(err) != 0 || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("upload with a certificate from another CA: %v; want the handshake refused", err)
		}
	})
	t.Run("token still required", func(t *testing.T) {
		cl := client(t, base, "ast_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "vp1", as("vp1"))
		if _, err := upload(t, cl, "vp1", 100, 1); status(err) != http.StatusUnauthorized {
			t.Fatalf("vp1's certificate with a forged token: %v; want 401", err)
		}
	})
	stored, maxSeq, err := e.st.AgentSeqStats(context.Background(), "vp1")
	if err != nil {
		t.Fatal(err)
	}
	if stored != 2 || maxSeq != 2 {
		t.Errorf("vp1 has %d results up to seq %d stored; want 2 up to 2 (only its own certificate's upload)", stored, maxSeq)
	}
}

// A renewed server certificate is served without a restart; renewed files
// that do not load leave the previous one in use. A renewed client
// certificate is presented without a restart.
func TestTLSRenewal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newPKI(t)
	reg := prometheus.NewRegistry()
	c, err := collector.New(e.st, collector.Options{Registry: reg, TLS: &collector.TLSOptions{
		CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.clientCAFile,
		ReloadCheck: time.Nanosecond, // every handshake looks at the files
	}})
	if err != nil {
		t.Fatal(err)
	}
	// No keep-alive: every request is a new handshake.
	base := serveTLS(t, c, false)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.ca.pem)
	vp1, err := tls.LoadX509KeyPair(p.clientCerts["vp1"][0], p.clientCerts["vp1"][1])
	if err != nil {
		t.Fatal(err)
	}
	served := func() int64 {
		t.Helper()
		conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{vp1}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	reloads := func(result string) float64 {
		return metric(t, reg, `anyscope_collector_tls_reloads_total{result="`+result+`"}`)
	}

	if got := served(); got != p.serverSerial {
		t.Fatalf("serves certificate %d, want %d", got, p.serverSerial)
	}
	cert2, key2, sn2 := p.ca.issue(t, leaf{cn: "collector", ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
	writeFile(t, p.dir, "server-key.pem", key2)
	writeFile(t, p.dir, "server.pem", cert2)
	if got := served(); got != sn2 {
		t.Fatalf("after renewal serves certificate %d, want %d", got, sn2)
	}
	if reloads("ok") != 1 {
		t.Errorf("ok reloads %v, want 1", reloads("ok"))
	}

	// A half-written renewal (a new certificate, the old key), then a
	// garbled file: the renewed certificate stays.
	cert3, key3, sn3 := p.ca.issue(t, leaf{cn: "collector", ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
	writeFile(t, p.dir, "server.pem", cert3)
	if got := served(); got != sn2 {
		t.Fatalf("with a certificate that does not match its key serves %d, want %d", got, sn2)
	}
	served() // the same bad files are not counted twice
	writeFile(t, p.dir, "server-key.pem", []byte("-----BEGIN PRIVATE KEY-----\ngarbage\n"))
	if got := served(); got != sn2 {
		t.Fatalf("with a garbled key serves %d, want %d", got, sn2)
	}
	if reloads("error") != 2 {
		t.Errorf("failed reloads %v, want 2", reloads("error"))
	}
	writeFile(t, p.dir, "server-key.pem", key3)
	if got := served(); got != sn3 {
		t.Fatalf("after the renewal completed serves %d, want %d", got, sn3)
	}

	// The agent's certificate files now hold vp2's certificate: the
	// client presents it on its next connection and is refused; renewed
	// again with its own, it is accepted.
	dir := t.TempDir()
	certFile := writeFile(t, dir, "agent.pem", mustRead(t, p.clientCerts["vp1"][0]))
	keyFile := writeFile(t, dir, "agent-key.pem", mustRead(t, p.clientCerts["vp1"][1]))
	cl := client(t, base, e.tokens["vp1"], "vp1",
		&shipper.TLSOptions{CAFile: p.caFile, CertFile: certFile, KeyFile: keyFile, ReloadCheck: time.Nanosecond})
	if _, err := upload(t, cl, "vp1", 1, 1); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "agent-key.pem", mustRead(t, p.clientCerts["vp2"][1]))
	writeFile(t, dir, "agent.pem", mustRead(t, p.clientCerts["vp2"][0]))
	var se *shipper.StatusError
	if _, err := upload(t, cl, "vp1", 2, 1); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("upload after the client's files changed to vp2's certificate: %v; want 403", err)
	}
	writeFile(t, dir, "agent-key.pem", mustRead(t, p.clientCerts["vp1"][1]))
	writeFile(t, dir, "agent.pem", mustRead(t, p.clientCerts["vp1"][0]))
	if _, err := upload(t, cl, "vp1", 2, 1); err != nil {
		t.Fatalf("upload after the client's own certificate came back: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTLSOptionsInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := newPKI(t)
	garbage := writeFile(t, t.TempDir(), "garbage.pem", []byte("not a certificate\n"))
	for name, o := range map[string]collector.TLSOptions{
		"no key":              {CertFile: p.certFile},
		"missing file":        {CertFile: filepath.Join(p.dir, "nope.pem"), KeyFile: p.keyFile},
		"key of another cert": {CertFile: p.certFile, KeyFile: p.clientCerts["vp1"][1]},
		"client CA garbage":   {CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: garbage},
	} {
		if _, err := collector.New(e.st, collector.Options{TLS: &o}); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}
