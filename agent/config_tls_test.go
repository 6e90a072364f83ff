package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsFixture writes a CA and client certificates into a directory.
type tlsFixture struct {
	dir string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{dir: t.TempDir()}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	f.write(t, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	f.write(t, "garbage.pem", []byte("not PEM\n"))
	issue := func(name string, serial int64, uri string, dns []string, eku x509.ExtKeyUsage) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "vp-ams-1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku}, DNSNames: dns,
		}
		if uri != "" {
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = []*url.URL{u}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		f.write(t, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		f.write(t, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	}
	issue("agent", 2, "anyscope://agent/vp-ams-1", nil, x509.ExtKeyUsageClientAuth)
	issue("agent-dns", 3, "", []string{"vp-ams-1"}, x509.ExtKeyUsageClientAuth)
	issue("other", 4, "anyscope://agent/vp-fra-1", nil, x509.ExtKeyUsageClientAuth)
	issue("server", 5, "anyscope://agent/vp-ams-1", nil, x509.ExtKeyUsageServerAuth)
	return f
}

func (f *tlsFixture) write(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// config writes an agent configuration with collector and the tls block
// (indented YAML lines) and returns its path.
func (f *tlsFixture) config(t *testing.T, name, collector string, tls ...string) string {
	t.Helper()
	y := "collector: " + collector + "\ntoken: s3cret\nname: vp-ams-1\nspool_dir: spool\nallow: [192.0.2.0/24]\ntls:\n"
	for _, l := range tls {
		y += "  " + l + "\n"
	}
	p := filepath.Join(f.dir, name+".yml")
	f.write(t, name+".yml", []byte(y))
	return p
}

func TestLoadConfigTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	const https = "https://collector.example.org:8740"

	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		for name, lines := range map[string][]string{
			"uri san":   {"ca_file: ca.pem", "cert_file: agent.pem", "key_file: agent-key.pem", "server_name: collector.example.org"},
			"dns san":   {"cert_file: agent-dns.pem", "key_file: agent-dns-key.pem"},
			"ca only":   {"ca_file: " + filepath.Join(f.dir, "ca.pem")},
			"server ip": {"ca_file: ca.pem", "server_name: 2001:db8::1"},
		} {
			c, err := LoadConfig(f.config(t, strings.ReplaceAll(name, " ", "-"), https, lines...))
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			o := c.TLS.shipper()
			for _, p := range []string{o.CAFile, o.CertFile, o.KeyFile} {
				if p != "" && filepath.Dir(p) != f.dir {
					t.Errorf("%s: path %s not resolved against the configuration's directory %s", name, p, f.dir)
				}
			}
		}
	})

	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		d := f.dir
		// Each rule with the exact message an operator sees.
		tests := map[string]struct {
			collector string
			lines     []string
			want      string
		}{
			"http": {"http://collector.example.org:8740", []string{"cert_file: agent.pem", "key_file: agent-key.pem"},
				"line 7: tls: collector http://collector.example.org:8740 is not https://; a CA or client certificate needs an https:// collector"},
			"ca missing": {https, []string{"ca_file: nope.pem"},
				"line 7: tls.ca_file: open " + d + "/nope.pem: no such file or directory"},
			"ca garbage": {https, []string{"ca_file: garbage.pem"},
				"line 7: tls.ca_file " + d + "/garbage.pem: no PEM certificate in it"},
			"cert without key": {https, []string{"cert_file: agent.pem"},
				"line 7: tls: cert_file and key_file go together: set both or neither"},
			"cert missing": {https, []string{"cert_file: nope.pem", "key_file: agent-key.pem"},
				"line 7: tls.cert_file: open " + d + "/nope.pem: no such file or directory"},
			"key missing": {https, []string{"cert_file: agent.pem", "key_file: nope.pem"},
				"line 8: tls.key_file: open " + d + "/nope.pem: no such file or directory"},
			"key mismatch": {https, []string{"cert_file: agent.pem", "key_file: other-key.pem"},
				"line 8: tls: cert_file " + d + "/agent.pem with key_file " + d + "/other-key.pem: tls: private key does not match public key"},
			"server certificate": {https, []string{"cert_file: server.pem", "key_file: server-key.pem"},
				"line 7: tls.cert_file " + d + "/server.pem: the certificate's extended key usage does not allow client authentication"},
			"another agent": {https, []string{"cert_file: other.pem", "key_file: other-key.pem"},
				"line 7: tls.cert_file " + d + `/other.pem does not name agent "vp-ams-1": want a URI SAN anyscope://agent/vp-ams-1 or a DNS SAN vp-ams-1`},
			"server name": {https, []string{"server_name: https://collector.example.org"},
				`line 7: tls.server_name "https://collector.example.org": want a host name or an IP address`},
			"unknown field": {https, []string{"cafile: ca.pem"},
				"line 7: field cafile not found in type agent.TLS"},
		}
		for name, tt := range tests {
			p := f.config(t, strings.ReplaceAll(name, " ", "-"), tt.collector, tt.lines...)
			_, err := LoadConfig(p)
			if err == nil {
				t.Errorf("%s: LoadConfig succeeded", name)
				continue
			}
			if got, want := err.Error(), p+": "+tt.want; got != want {
				t.Errorf("%s: error\n got  %s\n want %s", name, got, want)
			}
		}
	})
}
