// Package deploy puts an anyscope agent on a VM: the systemd unit it runs
// under (anyscope-agent.service: its own user, a state directory for the
// spool, CAP_NET_RAW and nothing else) and the cloud-init user data that
// installs it on first boot.
//
// The user data creates the user, writes /etc/anyscope/agent.yaml and the
// token file (0600, owned by the agent's user, the only place the token is
// written), downloads the anyscope binary from a URL the operator gives and
// installs it only if its SHA-256 is the one they give, optionally lets the
// agent's group open ICMP datagram sockets (net.ipv4.ping_group_range), and
// enables and starts the unit. `anyscope agents add NAME --cloud-init FILE`
// renders it.
package deploy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/template"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Paths on the VM, as the unit and the user data use them.
const (
	ConfigPath = "/etc/anyscope/agent.yaml"
	TokenPath  = "/etc/anyscope/token"
	CAPath     = "/etc/anyscope/collector-ca.pem"
	CertPath   = "/etc/anyscope/agent.pem"
	KeyPath    = "/etc/anyscope/agent-key.pem"
	UnitPath   = "/etc/systemd/system/anyscope-agent.service"
	SetupPath  = "/usr/local/sbin/anyscope-agent-setup"
	BinaryPath = "/usr/local/bin/anyscope"
	SpoolDir   = "/var/lib/anyscope/spool"
)

//go:embed anyscope-agent.service
var unit string

//go:embed anyscope-agent-setup.sh
var setup string

//go:embed cloud-init.yaml.tmpl
var cloudInitText string

var cloudInit = template.Must(template.New("cloud-init").Funcs(template.FuncMap{
	"q":      strconv.Quote, // a YAML double-quoted scalar
	"num":    func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) },
	"indent": indent,
}).Option("missingkey=error").Parse(cloudInitText))

// Unit returns the systemd unit (anyscope-agent.service) the user data
// installs.
func Unit() string { return unit }

// Location is where the vantage point is, as its agent.yaml states it.
type Location struct {
	Lat, Lon         float64
	Provider, Region string
}

// CloudInit describes one agent VM.
type CloudInit struct {
	// Name is the agent's name, as registered with the collector.
	Name string
	// Token is the agent's bearer token; it is written to TokenPath only.
	Token string
	// Collector is the collector's base URL (https:// in production).
	Collector string
	// Allow lists the only prefixes the agent may probe.
	Allow []netip.Prefix
	// Location, when not nil, is written to agent.yaml (the agent reports
	// it to the collector when it starts).
	Location *Location
	// CA, when not empty, holds PEM certificates the agent trusts for the
	// collector's TLS instead of the system's (a private CA).
	CA []byte
	// ClientCert and ClientKey, when not empty, are the PEM client
	// certificate (naming the agent: a URI SAN anyscope://agent/<name> or a
	// DNS SAN <name>) and its key, for a collector that requires mutual TLS.
	// The key, like the token, is written to one file only (KeyPath, 0600).
	ClientCert, ClientKey []byte
	// BinaryURL is where the VM downloads the anyscope binary (Linux, the
	// VM's architecture); BinarySHA256 is its SHA-256 in hex, checked before
	// it is installed.
	BinaryURL, BinarySHA256 string
	// PingGroup sets net.ipv4.ping_group_range to the agent's group, so
	// ping needs no raw socket.
	PingGroup bool
}

// Render validates c and returns the #cloud-config user data.
func (c CloudInit) Render() ([]byte, error) {
	if err := c.checkToken(); err != nil {
		return nil, fmt.Errorf("deploy: cloud-init: %w", err)
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	data := struct {
		CloudInit
		CA, ClientCert, ClientKey string
		BinarySHA256              string
		Unit, Setup               string
	}{CloudInit: c, BinarySHA256: strings.ToLower(c.BinarySHA256), Unit: unit, Setup: setup}
	if len(c.CA) > 0 {
		data.CA, _ = certificates(c.CA) // checked by Check
	}
	if len(c.ClientCert) > 0 {
		data.ClientCert, _ = certificates(c.ClientCert)
		data.ClientKey = privateKey(c.ClientKey)
	}
	var b bytes.Buffer
	if err := cloudInit.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("deploy: cloud-init: %w", err)
	}
	return b.Bytes(), nil
}

// Check validates everything but the token, so a caller can refuse bad
// settings before it issues one. Render checks the token too.
func (c CloudInit) Check() error {
	if err := c.check(); err != nil {
		return fmt.Errorf("deploy: cloud-init: %w", err)
	}
	return nil
}

func (c CloudInit) checkToken() error {
	if c.Token == "" {
		return errors.New("no token")
	}
	for _, r := range c.Token {
		if r <= ' ' || r >= 0x7f {
			return errors.New("the token contains spaces or characters outside printable ASCII")
		}
	}
	return nil
}

func (c CloudInit) check() error {
	if !api.ValidName(c.Name) {
		return fmt.Errorf("agent name %q: want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit", api.Clip(c.Name))
	}
	if err := checkURL("collector", c.Collector); err != nil {
		return err
	}
	if err := checkURL("binary URL", c.BinaryURL); err != nil {
		return err
	}
	if s, err := hex.DecodeString(c.BinarySHA256); err != nil || len(s) != 32 {
		return fmt.Errorf("binary SHA-256 %q: want 64 hexadecimal digits", api.Clip(c.BinarySHA256))
	}
	if len(c.Allow) == 0 {
		return errors.New("allow: at least one prefix is required (the agent probes only addresses inside them)")
	}
	for _, p := range c.Allow {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Masked() != p {
			return fmt.Errorf("allow: %s is not a prefix without host bits", p)
		}
	}
	if l := c.Location; l != nil {
		if math.IsNaN(l.Lat) || l.Lat < -90 || l.Lat > 90 || math.IsNaN(l.Lon) || l.Lon < -180 || l.Lon > 180 {
			return fmt.Errorf("location %v, %v: want latitude -90..90 and longitude -180..180", l.Lat, l.Lon)
		}
		if err := api.CheckText("provider", l.Provider, api.MaxStringLen); err != nil {
			return err
		}
		if err := api.CheckText("region", l.Region, api.MaxStringLen); err != nil {
			return err
		}
	}
	if (len(c.CA) > 0 || len(c.ClientCert) > 0) && !strings.HasPrefix(c.Collector, "https://") {
		return fmt.Errorf("collector %q: TLS settings need an https:// collector", api.Clip(c.Collector))
	}
	if len(c.CA) > 0 {
		if _, err := certificates(c.CA); err != nil {
			return fmt.Errorf("CA: %w", err)
		}
	}
	if len(c.ClientCert) > 0 || len(c.ClientKey) > 0 {
		return c.checkClient()
	}
	return nil
}

// checkClient checks the client certificate as the agent and the collector
// will: a key pair that may authenticate a client and names the agent.
func (c CloudInit) checkClient() error {
	if _, err := certificates(c.ClientCert); err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(c.ClientCert, c.ClientKey)
	if err != nil {
		return fmt.Errorf("client certificate and key: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return errors.New("client certificate: its extended key usage does not allow client authentication")
	}
	if !slices.Contains(leaf.DNSNames, c.Name) && !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == "anyscope://agent/"+c.Name }) {
		return fmt.Errorf("client certificate does not name agent %s: want a URI SAN anyscope://agent/%s or a DNS SAN %s", c.Name, c.Name, c.Name)
	}
	return nil
}

func checkURL(what, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%s %q: want an http:// or https:// URL with a host and no user or fragment", what, api.Clip(s))
	}
	if what == "collector" && u.RawQuery != "" {
		return fmt.Errorf("%s %q: want no query", what, api.Clip(s))
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("%s %q: spaces or characters outside printable ASCII", what, api.Clip(s))
		}
	}
	return nil
}

// certificates returns the certificates in b, re-encoded as PEM, or an
// error if b holds anything else or none.
func certificates(b []byte) (string, error) {
	var out bytes.Buffer
	for n := 1; ; n++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			if len(bytes.TrimSpace(b)) != 0 || n == 1 {
				return "", errors.New("want one or more PEM certificates and nothing else")
			}
			return out.String(), nil
		}
		if blk.Type != "CERTIFICATE" {
			return "", fmt.Errorf("PEM block %d is a %q, want a CERTIFICATE", n, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return "", fmt.Errorf("certificate %d: %w", n, err)
		}
		pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})
	}
}

// privateKey returns the first PEM private key block in b, alone (the
// key pair was checked).
func privateKey(b []byte) string {
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return ""
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			return string(pem.EncodeToMemory(blk))
		}
	}
}

// indent prefixes every line of s but empty ones with n spaces, for a YAML
// literal block; the final newline is dropped (the template has its own).
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}
