package deploy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyscope/anyscope/agent"
)

// testToken looks like a real token and appears nowhere else.
const testToken = "ast_42_Zm9yLXRlc3RzLW9ubHktbm90LWEtcmVhbC1zZWNyZXQtMzI"

func validCloudInit(t *testing.T) CloudInit {
	t.Helper()
	return CloudInit{
		Name:         "ams-vp1",
		Token:        testToken,
		Collector:    "https://collector.example.org:8740",
		Allow:        []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		Location:     &Location{Lat: 52.37, Lon: 4.9, Provider: `example "hosting"`, Region: "eu-west-1"},
		BinaryURL:    "https://downloads.example.org/anyscope-linux-amd64",
		BinarySHA256: strings.Repeat("AB", 32),
		PingGroup:    true,
	}
}

// cloudConfig is what the rendered user data holds; decoding is strict, so
// a key the test does not know fails it.
type cloudConfig struct {
	Users      []any       `yaml:"users"`
	WriteFiles []writeFile `yaml:"write_files"`
	Runcmd     [][]string  `yaml:"runcmd"`
}

type writeFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Defer       bool   `yaml:"defer"`
	Content     string `yaml:"content"`
}

func parseCloudConfig(t *testing.T, b []byte) cloudConfig {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("#cloud-config\n")) {
		t.Fatalf("user data does not start with #cloud-config:\n%s", b)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cc cloudConfig
	if err := dec.Decode(&cc); err != nil {
		t.Fatalf("user data is not the expected YAML: %v\n%s", err, b)
	}
	return cc
}

func (cc cloudConfig) file(t *testing.T, path string) writeFile {
	t.Helper()
	for _, f := range cc.WriteFiles {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("no write_files entry for %s", path)
	return writeFile{}
}

// testPKI is a CA made for the test and a client certificate it issued.
type testPKI struct {
	ca, cert, key []byte // PEM
}

// newPKI makes a CA and a client certificate for agent name carrying the
// given URIs and extended key usages.
func newPKI(t *testing.T, uris []string, usage []x509.ExtKeyUsage) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "anyscope test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{
		ca:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

var clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

func TestRender(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*CloudInit)
	}{
		{"full", func(c *CloudInit) {
			p := newPKI(t, []string{"anyscope://agent/ams-vp1"}, clientAuth)
			c.CA, c.ClientCert, c.ClientKey = p.ca, p.cert, append([]byte("key file comment\n"), p.key...)
		}},
		{"private CA", func(c *CloudInit) { c.CA = newPKI(t, nil, nil).ca }},
		{"minimal", func(c *CloudInit) { c.Location, c.PingGroup = nil, false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validCloudInit(t)
			tc.edit(&c)
			out, err := c.Render()
			if err != nil {
				t.Fatal(err)
			}
			cc := parseCloudConfig(t, out)

			t.Run("token only in the token file", func(t *testing.T) {
				if n := bytes.Count(out, []byte(testToken)); n != 1 {
					t.Errorf("token appears %d times in the user data, want once", n)
				}
				tok := cc.file(t, TokenPath)
				if tok.Content != testToken || tok.Owner != "anyscope:anyscope" || tok.Permissions != "0600" || !tok.Defer {
					t.Errorf("token file = %+v, want the token, owner anyscope:anyscope, 0600, deferred until the user exists", tok)
				}
				for _, f := range cc.WriteFiles {
					if f.Path != TokenPath && strings.Contains(f.Content, testToken) {
						t.Errorf("%s holds the token", f.Path)
					}
				}
			})

			t.Run("client key only in the key file", func(t *testing.T) {
				if len(c.ClientKey) == 0 {
					for _, f := range cc.WriteFiles {
						if f.Path == KeyPath || f.Path == CertPath {
							t.Errorf("%s written without a client certificate", f.Path)
						}
					}
					return
				}
				blk, _ := pem.Decode(bytes.TrimPrefix(c.ClientKey, []byte("key file comment\n")))
				secret := base64Line(t, blk)
				if n := bytes.Count(out, []byte(secret)); n != 1 {
					t.Errorf("the key's first line appears %d times in the user data, want once", n)
				}
				k := cc.file(t, KeyPath)
				if !strings.Contains(k.Content, secret) || k.Owner != "anyscope:anyscope" || k.Permissions != "0600" || !k.Defer {
					t.Errorf("key file = %+v, want the key, owner anyscope:anyscope, 0600, deferred", k)
				}
				if strings.Contains(k.Content, "comment") {
					t.Errorf("key file keeps text around the PEM block: %q", k.Content)
				}
				if cert := cc.file(t, CertPath); cert.Content != string(c.ClientCert) || cert.Permissions != "0644" {
					t.Errorf("certificate file = %+v", cert)
				}
			})

			t.Run("users", func(t *testing.T) {
				if len(cc.Users) != 2 || cc.Users[0] != "default" {
					t.Fatalf("users = %v, want the image's default user kept, then anyscope", cc.Users)
				}
				u, _ := cc.Users[1].(map[string]any)
				if u["name"] != "anyscope" || u["system"] != true || u["lock_passwd"] != true || u["shell"] != "/usr/sbin/nologin" {
					t.Errorf("agent user = %v, want a locked system user anyscope without a shell", u)
				}
			})

			t.Run("agent.yaml loads", func(t *testing.T) {
				// The real loader, on the file as written, with the VM's
				// directories moved under a temporary one.
				dir := t.TempDir()
				onVM := func(p string) string { return filepath.Join(dir, p) }
				conf := cc.file(t, ConfigPath).Content
				for _, p := range []string{TokenPath, CAPath, CertPath, KeyPath, SpoolDir} {
					conf = strings.ReplaceAll(conf, p, onVM(p))
				}
				for _, f := range cc.WriteFiles {
					if f.Path == TokenPath || f.Path == CAPath || f.Path == CertPath || f.Path == KeyPath {
						os.MkdirAll(filepath.Dir(onVM(f.Path)), 0o755)
						if err := os.WriteFile(onVM(f.Path), []byte(f.Content), 0o600); err != nil {
							t.Fatal(err)
						}
					}
				}
				path := filepath.Join(dir, "agent.yaml")
				if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
					t.Fatal(err)
				}
				cfg, err := agent.LoadConfig(path)
				if err != nil {
					t.Fatalf("%v\n%s", err, conf)
				}
				if cfg.Name != c.Name || cfg.Collector != c.Collector || cfg.TokenFile != onVM(TokenPath) || cfg.SpoolDir != onVM(SpoolDir) {
					t.Errorf("config = %+v", cfg)
				}
				if len(cfg.Allow) != len(c.Allow) {
					t.Errorf("allow = %v, want %v", cfg.Allow, c.Allow)
				}
				for _, p := range c.Allow {
					if !cfg.Allowed(p.Addr()) {
						t.Errorf("%s not allowed", p)
					}
				}
				switch l := cfg.Location; {
				case c.Location == nil && l != nil:
					t.Errorf("location = %+v, want none", l)
				case c.Location != nil && (l == nil || *l.Lat != c.Location.Lat || *l.Lon != c.Location.Lon || l.Provider != c.Location.Provider || l.Region != c.Location.Region):
					t.Errorf("location = %+v, want %+v", l, c.Location)
				}
				var want *agent.TLS
				if len(c.CA) > 0 {
					want = &agent.TLS{CAFile: onVM(CAPath)}
				}
				if len(c.ClientCert) > 0 {
					want.CertFile, want.KeyFile = onVM(CertPath), onVM(KeyPath)
				}
				if (cfg.TLS == nil) != (want == nil) || (want != nil && *cfg.TLS != *want) {
					t.Errorf("tls = %+v, want %+v", cfg.TLS, want)
				}
			})

			t.Run("unit", func(t *testing.T) {
				u := cc.file(t, UnitPath)
				if u.Content != unit || u.Owner != "root:root" || u.Permissions != "0644" {
					t.Errorf("unit file = %s %s, content equal to the embedded unit: %v", u.Owner, u.Permissions, u.Content == unit)
				}
			})

			t.Run("shell", func(t *testing.T) {
				s := cc.file(t, SetupPath)
				if s.Content != setup || s.Owner != "root:root" || s.Permissions != "0755" {
					t.Errorf("setup script = %s %s, content equal to the embedded script: %v", s.Owner, s.Permissions, s.Content == setup)
				}
				for _, f := range cc.WriteFiles {
					if strings.HasPrefix(f.Content, "#!/bin/sh\n") {
						shellSyntax(t, f.Path, f.Content)
					}
				}
				ping := "no-ping-group"
				if c.PingGroup {
					ping = "ping-group"
				}
				want := []string{SetupPath, c.BinaryURL, strings.ToLower(c.BinarySHA256), ping}
				if len(cc.Runcmd) != 1 || strings.Join(cc.Runcmd[0], " ") != strings.Join(want, " ") {
					t.Errorf("runcmd = %q, want [%q]", cc.Runcmd, want)
				}
			})

			t.Run("cloud-init schema", func(t *testing.T) {
				bin, err := exec.LookPath("cloud-init")
				if err != nil {
					t.Skip("cloud-init is not installed (Debian package cloud-init): its schema check is skipped")
				}
				path := filepath.Join(t.TempDir(), "user-data")
				if err := os.WriteFile(path, out, 0o600); err != nil {
					t.Fatal(err)
				}
				b, err := exec.Command(bin, "schema", "--config-file", path).CombinedOutput()
				if err != nil || !strings.Contains(string(b), "Valid cloud-config") {
					t.Errorf("cloud-init schema: %v\n%s", err, b)
				}
			})
		})
	}
}

// base64Line returns the first base64 line of blk as PEM encodes it.
func base64Line(t *testing.T, blk *pem.Block) string {
	t.Helper()
	if blk == nil {
		t.Fatal("no PEM block")
	}
	lines := strings.Split(string(pem.EncodeToMemory(blk)), "\n")
	return lines[1]
}

// shellSyntax checks a script with sh -n.
func shellSyntax(t *testing.T, name, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-n")
	cmd.Stdin = strings.NewReader(script)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", name, err, b)
	}
}

func TestRenderRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*CloudInit)
		want string
	}{
		{"bad name", func(c *CloudInit) { c.Name = "ams vp1" }, `agent name "ams vp1"`},
		{"no token", func(c *CloudInit) { c.Token = "" }, "no token"},
		{"token with a newline", func(c *CloudInit) { c.Token += "\nruncmd: [reboot]" }, "the token contains spaces"},
		{"collector not http", func(c *CloudInit) { c.Collector = "ftp://collector.example.org" }, `collector "ftp://collector.example.org"`},
		{"collector with a query", func(c *CloudInit) { c.Collector = "https://collector.example.org/?a=b" }, "want no query"},
		{"binary URL file", func(c *CloudInit) { c.BinaryURL = "file:///tmp/anyscope" }, `binary URL "file:///tmp/anyscope"`},
		{"binary URL with a newline", func(c *CloudInit) { c.BinaryURL = "https://downloads.example.org/a\nruncmd: [reboot]" }, "binary URL"},
		{"binary URL with a space", func(c *CloudInit) { c.BinaryURL = "https://downloads.example.org/a b" }, "outside printable ASCII"},
		{"short checksum", func(c *CloudInit) { c.BinarySHA256 = "abcd" }, `binary SHA-256 "abcd"`},
		{"checksum not hex", func(c *CloudInit) { c.BinarySHA256 = strings.Repeat("zz", 32) }, "want 64 hexadecimal digits"},
		{"no allow", func(c *CloudInit) { c.Allow = nil }, "at least one prefix"},
		{"host bits", func(c *CloudInit) { c.Allow = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")} }, "192.0.2.1/24 is not a prefix without host bits"},
		{"latitude", func(c *CloudInit) { c.Location.Lat = 91 }, "want latitude -90..90"},
		{"region control character", func(c *CloudInit) { c.Location.Region = "eu\x1bwest" }, "region"},
		{"CA not PEM", func(c *CloudInit) { c.CA = []byte("hello") }, "want one or more PEM certificates"},
		{"CA is a key", func(c *CloudInit) {
			c.CA = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})
		}, `is a "PRIVATE KEY", want a CERTIFICATE`},
		{"CA over http", func(c *CloudInit) {
			c.Collector, c.CA = "http://collector.example.org", newPKI(t, nil, nil).ca
		}, "TLS settings need an https:// collector"},
		{"client key missing", func(c *CloudInit) {
			c.ClientCert = newPKI(t, []string{"anyscope://agent/ams-vp1"}, clientAuth).cert
		}, "client certificate and key"},
		{"client key of another certificate", func(c *CloudInit) {
			c.ClientCert = newPKI(t, []string{"anyscope://agent/ams-vp1"}, clientAuth).cert
			c.ClientKey = newPKI(t, []string{"anyscope://agent/ams-vp1"}, clientAuth).key
		}, "client certificate and key"},
		{"client certificate of another agent", func(c *CloudInit) {
			p := newPKI(t, []string{"anyscope://agent/fra-vp1"}, clientAuth)
			c.ClientCert, c.ClientKey = p.cert, p.key
		}, "does not name agent ams-vp1"},
		{"server certificate as client", func(c *CloudInit) {
			p := newPKI(t, []string{"anyscope://agent/ams-vp1"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
			c.ClientCert, c.ClientKey = p.cert, p.key
		}, "does not allow client authentication"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validCloudInit(t)
			tc.edit(&c)
			out, err := c.Render()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Render() = %v, want an error containing %q\n%s", err, tc.want, out)
			}
		})
	}
}

// TestSetupScript runs the install script for real (real curl from a
// loopback HTTP server, real sha256sum) under a temporary root; only
// systemctl, sysctl and getent, which would change this machine, are
// stand-ins that record their arguments.
func TestSetupScript(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("curl"); err != nil {
		if _, err := exec.LookPath("wget"); err != nil {
			t.Skip("neither curl nor wget is installed")
		}
	}
	binary := []byte("\x7fELF not really, but bytes to install\n")
	sum := sha256.Sum256(binary)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/anyscope" {
			http.NotFound(w, r)
			return
		}
		w.Write(binary)
	}))
	srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	stubs := t.TempDir()
	for name, body := range map[string]string{
		"systemctl": `echo "systemctl $*" >>"$STUB_LOG"`,
		"sysctl":    `echo "sysctl $*" >>"$STUB_LOG"`,
		"getent":    `[ "$1 $2" = "group anyscope" ] && echo "anyscope:x:4242:"`,
	} {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(t.TempDir(), "anyscope-agent-setup")
	if err := os.WriteFile(script, []byte(setup), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, args ...string) (root string, log []string, stderr string, err error) {
		root = t.TempDir()
		logFile := filepath.Join(t.TempDir(), "stub.log")
		cmd := exec.Command(script, args...)
		cmd.Env = append(os.Environ(), "PATH="+stubs+":/usr/bin:/bin", "ANYSCOPE_SETUP_ROOT="+root, "STUB_LOG="+logFile)
		var eb bytes.Buffer
		cmd.Stderr = &eb
		err = cmd.Run()
		if f, ferr := os.Open(logFile); ferr == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				log = append(log, sc.Text())
			}
			f.Close()
		}
		return root, log, eb.String(), err
	}
	good, bad := hex.EncodeToString(sum[:]), strings.Repeat("0", 64)

	t.Run("installs and starts", func(t *testing.T) {
		t.Parallel()
		root, log, stderr, err := run(t, srv.URL+"/anyscope", good, "ping-group")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		installed := filepath.Join(root, "usr/local/bin/anyscope")
		b, err := os.ReadFile(installed)
		if err != nil || !bytes.Equal(b, binary) {
			t.Errorf("installed binary = %q, %v; want the served bytes", b, err)
		}
		if fi, err := os.Stat(installed); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("installed binary mode: %v, %v", fi, err)
		}
		conf := filepath.Join(root, "etc/sysctl.d/60-anyscope-ping.conf")
		if b, err := os.ReadFile(conf); err != nil || string(b) != "net.ipv4.ping_group_range = 4242 4242\n" {
			t.Errorf("sysctl file = %q, %v", b, err)
		}
		want := []string{"sysctl -q -p " + conf, "systemctl daemon-reload", "systemctl enable --now anyscope-agent.service"}
		if strings.Join(log, "\n") != strings.Join(want, "\n") {
			t.Errorf("commands run = %q, want %q", log, want)
		}
		leftovers, _ := filepath.Glob(filepath.Join(root, "usr/local/bin/.anyscope.*"))
		if len(leftovers) != 0 {
			t.Errorf("temporary files left: %v", leftovers)
		}
	})
	for _, tc := range []struct {
		name, url, sum, ping, want string
		status                     int
	}{
		{"wrong checksum", srv.URL + "/anyscope", bad, "no-ping-group", "does not have SHA-256 " + bad + "; nothing installed", 1},
		{"not found", srv.URL + "/missing", good, "no-ping-group", "", 0}, // curl or wget: their own status
		{"bad ping argument", srv.URL + "/anyscope", good, "maybe", "want ping-group or no-ping-group", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root, log, stderr, err := run(t, tc.url, tc.sum, tc.ping)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || (tc.status != 0 && ee.ExitCode() != tc.status) || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %v, stderr %q; want a failure (status %d, 0: any) saying %q", err, stderr, tc.status, tc.want)
			}
			if len(log) != 0 {
				t.Errorf("commands run: %q, want none", log)
			}
			entries, _ := os.ReadDir(filepath.Join(root, "usr/local/bin"))
			if len(entries) != 0 {
				t.Errorf("files left in /usr/local/bin: %v", entries)
			}
		})
	}
}

func TestUnit(t *testing.T) {
	t.Parallel()
	keys := map[string][]string{}
	for _, line := range strings.Split(unit, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	t.Run("settings", func(t *testing.T) {
		t.Parallel()
		for k, want := range map[string]string{
			"User":                    "anyscope",
			"Group":                   "anyscope",
			"StateDirectory":          "anyscope", // SpoolDir's parent
			"AmbientCapabilities":     "CAP_NET_RAW",
			"CapabilityBoundingSet":   "CAP_NET_RAW",
			"NoNewPrivileges":         "true",
			"ProtectSystem":           "strict",
			"ProtectHome":             "true",
			"PrivateTmp":              "true",
			"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
			"Restart":                 "on-failure",
			"RestartSec":              "10s",
			"LimitNOFILE":             "65536",
			"ExecStart":               BinaryPath + " agent --config " + ConfigPath + " --metrics 127.0.0.1:9741",
		} {
			if got := keys[k]; len(got) != 1 || got[0] != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if filepath.Dir(SpoolDir) != "/var/lib/"+keys["StateDirectory"][0] {
			t.Errorf("spool %s is not in the state directory %s", SpoolDir, keys["StateDirectory"])
		}
	})
	t.Run("systemd-analyze verify", func(t *testing.T) {
		t.Parallel()
		bin, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed (Debian package systemd): the unit is not verified")
		}
		// verify insists that ExecStart's binary exists: this test's own
		// executable stands in for the anyscope binary.
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		u := strings.Replace(unit, "ExecStart="+BinaryPath+" ", "ExecStart="+self+" ", 1)
		if u == unit {
			t.Fatal("no ExecStart with " + BinaryPath)
		}
		path := filepath.Join(t.TempDir(), "anyscope-agent.service")
		if err := os.WriteFile(path, []byte(u), 0o644); err != nil {
			t.Fatal(err)
		}
		// verify exits 0 after warnings such as unknown keys: any output fails.
		b, err := exec.Command(bin, "verify", path).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(b)) != 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, b)
		}
	})
}
