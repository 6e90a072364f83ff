package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyscope/anyscope/agent/shipper"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults applied by LoadConfig and New.
const (
	DefaultTimeout         = 2 * time.Second
	DefaultScheduleRefresh = 60 * time.Second
	DefaultDNSPort         = 53
	DefaultMaxRate         = 20
	DefaultMaxTargetRate   = 5
	DefaultConcurrency     = 8
	DefaultSpoolMaxBytes   = 1 << 30
)

// minSpoolMaxBytes is the smallest spool cap.
const minSpoolMaxBytes = 1 << 20

// Limits on configured values.
const (
	maxTimeout     = time.Minute
	minRefresh     = time.Second
	maxMaxRate     = 10000
	maxConcurrency = 1024
)

// Config is an agent's configuration, read from YAML by LoadConfig.
//
//	collector: https://collector.example.org   # base URL, http or https
//	token_file: /etc/anyscope/token             # or token: "…" (exactly one)
//	name: vp-ams-1                              # must match the token's agent
//	spool_dir: /var/lib/anyscope/spool
//	spool_max_bytes: 1073741824                 # beyond it the oldest results are dropped, and reported lost
//	allow: [192.0.2.0/24, 2001:db8::/32]        # the only addresses ever probed
//	location: {lat: 52.37, lon: 4.90, provider: example-hosting, region: eu-west}
//	timeout: 2s                                 # per DNS transaction
//	schedule_refresh: 60s
//	max_rate: 20                                # probe packets per second, all targets, at most
//	max_target_rate: 5                          # probe packets per second to one target, at most
//	concurrency: 8                              # rounds running at once, at most
//	dns_port: 53                                # only labs and tests change it
//	tls: {ca_file: ca.pem, cert_file: agent.pem, key_file: agent-key.pem}  # https only; see TLS
//
// Relative paths are relative to the directory of the configuration file.
type Config struct {
	Collector string `yaml:"collector"`
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	Name      string `yaml:"name"`
	SpoolDir  string `yaml:"spool_dir"`
	// SpoolMaxBytes caps the spool on disk (default 1 GiB, at least 1
	// MiB): when the collector stays away so long that it fills up, the
	// oldest results are dropped and the collector is told they are lost.
	SpoolMaxBytes int64 `yaml:"spool_max_bytes"`
	// Allow lists the prefixes this agent may probe. It is local on purpose:
	// a schedule from the collector alone never authorises an address.
	Allow    []string  `yaml:"allow"`
	Location *Location `yaml:"location"`
	// Timeout bounds each DNS transaction.
	Timeout time.Duration `yaml:"timeout"`
	// ScheduleRefresh is how often the schedule is fetched again.
	ScheduleRefresh time.Duration `yaml:"schedule_refresh"`
	// MaxRate caps probe packets (DNS transactions, echo requests, trace
	// probes, HTTP connections) in any one second, all targets together: a
	// hard ceiling whatever the schedule asks (see probe.Pacer).
	MaxRate float64 `yaml:"max_rate"`
	// MaxTargetRate caps them per target, so that one target's many
	// addresses and probe kinds together never send its operator more.
	MaxTargetRate float64 `yaml:"max_target_rate"`
	// Concurrency caps the probe rounds running at once.
	Concurrency int `yaml:"concurrency"`
	// DNSPort is the port DNS targets are probed on.
	DNSPort uint16 `yaml:"dns_port"`
	// TLS configures HTTPS towards an https:// collector (see TLS).
	TLS *TLS `yaml:"tls"`

	// Once makes Run measure every scheduled address once, ship everything
	// and return. It is set by the process (a flag), not by the file.
	Once bool `yaml:"-"`

	token string         // from Token or TokenFile
	allow []netip.Prefix // parsed Allow
}

// Location describes where the vantage point is.
type Location struct {
	Lat      *float64 `yaml:"lat"`
	Lon      *float64 `yaml:"lon"`
	Provider string   `yaml:"provider"`
	Region   string   `yaml:"region"`
}

// LoadConfig reads, decodes strictly (unknown fields are errors), applies
// defaults and validates the configuration at path. Errors name the file and,
// where they can, the line.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent: config: %w", err)
	}
	c, err := parseConfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func parseConfig(b []byte, dir string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, yamlError(err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("config is empty")
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: more than one YAML document", extra.Line)
	}
	for _, p := range []*string{&c.TokenFile, &c.SpoolDir} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	c.TLS.resolve(dir)
	if err := c.check(lines{root.Content[0]}); err != nil {
		return nil, err
	}
	return &c, nil
}

// yamlError flattens yaml.v3's multi-line type errors.
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.New(strings.Join(te.Errors, "; "))
	}
	return err
}

// lines finds where a key sits in the decoded document, for error messages.
type lines struct{ root *yaml.Node }

// at returns "line N: " for the value at path (keys, or [i] for list items),
// or "" when it is not in the document.
func (l lines) at(path ...string) string {
	n := l.root
	for _, p := range path {
		if n == nil {
			return ""
		}
		var next *yaml.Node
		switch {
		case strings.HasPrefix(p, "["):
			i, _ := strconv.Atoi(strings.Trim(p, "[]"))
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
			}
		case n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					next = n.Content[i+1]
				}
			}
		}
		n = next
	}
	if n == nil {
		return ""
	}
	return fmt.Sprintf("line %d: ", n.Line)
}

// check applies defaults and validates c, reading the token file. It is
// idempotent, so New can run it on a Config built in code.
func (c *Config) check(l lines) error {
	if c.Collector == "" {
		return errors.New("collector is required")
	}
	u, err := url.Parse(c.Collector)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%scollector %q: want an http:// or https:// URL with a host and no query", l.at("collector"), c.Collector)
	}

	switch {
	case c.Token != "" && c.TokenFile != "":
		return fmt.Errorf("%stoken and token_file are mutually exclusive", l.at("token_file"))
	case c.Token != "":
		c.token = c.Token
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return fmt.Errorf("%stoken_file: %w", l.at("token_file"), err)
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" {
			return fmt.Errorf("%stoken_file %s is empty", l.at("token_file"), c.TokenFile)
		}
	default:
		return errors.New("one of token or token_file is required")
	}
	for _, r := range c.token {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("%stoken contains spaces or characters outside printable ASCII", l.at("token"))
		}
	}

	if c.Name == "" {
		return errors.New("name is required")
	}
	if !api.ValidName(c.Name) {
		return fmt.Errorf("%sname %q: want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit", l.at("name"), c.Name)
	}
	if err := c.TLS.check(l, u, c.Name); err != nil {
		return err
	}
	if c.SpoolDir == "" {
		return errors.New("spool_dir is required")
	}
	switch {
	case c.SpoolMaxBytes == 0:
		c.SpoolMaxBytes = DefaultSpoolMaxBytes
	case c.SpoolMaxBytes < minSpoolMaxBytes:
		return fmt.Errorf("%sspool_max_bytes %d: want at least %d (1 MiB)", l.at("spool_max_bytes"), c.SpoolMaxBytes, minSpoolMaxBytes)
	}

	if len(c.Allow) == 0 {
		return fmt.Errorf("%sallow: at least one prefix is required (the agent probes only addresses inside them)", l.at("allow"))
	}
	c.allow = nil
	for i, s := range c.Allow {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return fmt.Errorf("%sallow[%d]: %q is not a CIDR prefix", l.at("allow", fmt.Sprintf("[%d]", i)), i, s)
		}
		if p.Masked() != p {
			return fmt.Errorf("%sallow[%d]: %s has host bits set (did you mean %s?)", l.at("allow", fmt.Sprintf("[%d]", i)), i, s, p.Masked())
		}
		c.allow = append(c.allow, p)
	}

	if loc := c.Location; loc != nil {
		switch {
		case loc.Lat == nil || loc.Lon == nil:
			return fmt.Errorf("%slocation needs both lat and lon", l.at("location"))
		case *loc.Lat < -90 || *loc.Lat > 90:
			return fmt.Errorf("%slocation.lat %v out of range -90..90", l.at("location", "lat"), *loc.Lat)
		case *loc.Lon < -180 || *loc.Lon > 180:
			return fmt.Errorf("%slocation.lon %v out of range -180..180", l.at("location", "lon"), *loc.Lon)
		case len(loc.Provider) > api.MaxStringLen || len(loc.Region) > api.MaxStringLen:
			return fmt.Errorf("%slocation: provider and region are limited to %d bytes", l.at("location"), api.MaxStringLen)
		}
	}

	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	case c.Timeout < time.Millisecond || c.Timeout > maxTimeout:
		return fmt.Errorf("%stimeout %v: want between 1ms and %v", l.at("timeout"), c.Timeout, maxTimeout)
	}
	switch {
	case c.ScheduleRefresh == 0:
		c.ScheduleRefresh = DefaultScheduleRefresh
	case c.ScheduleRefresh < minRefresh:
		return fmt.Errorf("%sschedule_refresh %v: want at least %v", l.at("schedule_refresh"), c.ScheduleRefresh, minRefresh)
	}
	switch {
	case c.MaxRate == 0:
		c.MaxRate = DefaultMaxRate
	case !(c.MaxRate > 0 && c.MaxRate <= maxMaxRate):
		return fmt.Errorf("%smax_rate %v: want more than 0 and at most %d transactions per second", l.at("max_rate"), c.MaxRate, maxMaxRate)
	}
	switch {
	case c.MaxTargetRate == 0:
		c.MaxTargetRate = min(DefaultMaxTargetRate, c.MaxRate)
	case !(c.MaxTargetRate > 0 && c.MaxTargetRate <= c.MaxRate):
		return fmt.Errorf("%smax_target_rate %v: want more than 0 and at most max_rate (%v)", l.at("max_target_rate"), c.MaxTargetRate, c.MaxRate)
	}
	switch {
	case c.Concurrency == 0:
		c.Concurrency = DefaultConcurrency
	case c.Concurrency < 0 || c.Concurrency > maxConcurrency:
		return fmt.Errorf("%sconcurrency %d: want 1..%d", l.at("concurrency"), c.Concurrency, maxConcurrency)
	}
	if c.DNSPort == 0 {
		c.DNSPort = DefaultDNSPort
	}
	return nil
}

// Allowed reports whether the allow-list covers addr.
func (c *Config) Allowed(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range c.allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// TLS configures HTTPS towards the collector:
//
//	tls:
//	  ca_file: /etc/anyscope/collector-ca.pem  # trust only this CA, not the system's roots
//	  cert_file: /etc/anyscope/agent.pem       # client certificate, for a collector that requires one
//	  key_file: /etc/anyscope/agent-key.pem
//	  server_name: collector.example.org       # the name in the collector's certificate, if not the URL's host
//
// A ca_file replaces the system's roots, so that only the collector's own
// CA can vouch for it. The client certificate must name the agent, as the
// collector requires: a URI SAN anyscope://agent/<name> or a DNS SAN
// <name>. It and its key are read again when they change, so a renewal
// needs no restart.
type TLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// resolve makes t's paths relative to dir absolute.
func (t *TLS) resolve(dir string) {
	if t == nil {
		return
	}
	for _, p := range []*string{&t.CAFile, &t.CertFile, &t.KeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// check validates t for the collector at u and the agent called name,
// loading its files.
func (t *TLS) check(l lines, u *url.URL, name string) error {
	if t == nil {
		return nil
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%stls: collector %s is not https://; a CA or client certificate needs an https:// collector", l.at("tls"), u.Redacted())
	}
	if t.CAFile != "" {
		b, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("%stls.ca_file: %w", l.at("tls", "ca_file"), err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return fmt.Errorf("%stls.ca_file %s: no PEM certificate in it", l.at("tls", "ca_file"), t.CAFile)
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return fmt.Errorf("%stls: cert_file and key_file go together: set both or neither", l.at("tls"))
	case t.CertFile != "":
		certPEM, err := os.ReadFile(t.CertFile)
		if err != nil {
			return fmt.Errorf("%stls.cert_file: %w", l.at("tls", "cert_file"), err)
		}
		keyPEM, err := os.ReadFile(t.KeyFile)
		if err != nil {
			return fmt.Errorf("%stls.key_file: %w", l.at("tls", "key_file"), err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("%stls: cert_file %s with key_file %s: %w", l.at("tls", "key_file"), t.CertFile, t.KeyFile, err)
		}
		if !clientAuthAllowed(cert.Leaf) {
			return fmt.Errorf("%stls.cert_file %s: the certificate's extended key usage does not allow client authentication", l.at("tls", "cert_file"), t.CertFile)
		}
		if !certNames(cert.Leaf, name) {
			return fmt.Errorf("%stls.cert_file %s does not name agent %q: want a URI SAN anyscope://agent/%s or a DNS SAN %s",
				l.at("tls", "cert_file"), t.CertFile, name, name, name)
		}
	}
	if s := t.ServerName; s != "" && !validServerName(s) {
		return fmt.Errorf("%stls.server_name %q: want a host name or an IP address", l.at("tls", "server_name"), s)
	}
	return nil
}

// shipper returns the shipper's TLS options; nil when t is.
func (t *TLS) shipper() *shipper.TLSOptions {
	if t == nil {
		return nil
	}
	return &shipper.TLSOptions{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName}
}

// clientAuthAllowed reports whether cert may authenticate a TLS client.
func clientAuthAllowed(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// certNames reports whether cert names the agent as the collector requires
// (collector.CertNamesAgent, which the agent does not link).
func certNames(cert *x509.Certificate, name string) bool {
	for _, u := range cert.URIs {
		if u.String() == "anyscope://agent/"+name {
			return true
		}
	}
	return slices.Contains(cert.DNSNames, name)
}

// validServerName reports whether s is an IP address or a host name.
func validServerName(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	if len(s) > 253 || strings.HasPrefix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-')
	}) < 0
}
