// Package targets reads the YAML file in which an operator declares the
// anycast services to measure: their addresses, probe kinds and interval, the
// operator's own site list and the rules that turn identity strings into site
// codes. Decoding is strict (unknown fields are errors) and every error names
// the file and line it comes from.
package targets

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

// ErrInvalid is wrapped by every error about the file's content.
var ErrInvalid = errors.New("invalid targets file")

// Limits on what a file may declare.
const (
	MinInterval = 5 * time.Second
	MaxInterval = 24 * time.Hour
	maxTargets  = 10000
)

// file is the YAML document.
type file struct {
	Targets []target `yaml:"targets"`
}

type target struct {
	Name      string        `yaml:"name"`
	Addresses []string      `yaml:"addresses"`
	Probes    []string      `yaml:"probes"`
	Interval  time.Duration `yaml:"interval"`
	NSIDQName string        `yaml:"nsid_qname"`
	Sites     []site        `yaml:"sites"`
	Identity  []rule        `yaml:"identity"`
	HTTP      *httpSpec     `yaml:"http"`
	// SessionLife bounds a long-lived session before the agent reconnects.
	SessionLife time.Duration `yaml:"session_life"`
}

// httpSpec is how the http and session probes ask an HTTP target who it is.
type httpSpec struct {
	Scheme      string   `yaml:"scheme"`
	Port        int      `yaml:"port"`
	Host        string   `yaml:"host"`
	Path        string   `yaml:"path"`
	Method      string   `yaml:"method"`
	Headers     []string `yaml:"headers"`
	BodyPattern string   `yaml:"body_pattern"`
}

type site struct {
	Code string   `yaml:"code"`
	Name string   `yaml:"name"`
	Lat  *float64 `yaml:"lat"`
	Lon  *float64 `yaml:"lon"`
}

type rule struct {
	Pattern string `yaml:"pattern"`
	Site    string `yaml:"site"`
}

// supportedProbes are the probe kinds an agent runs.
var supportedProbes = map[string]bool{}

func init() {
	for _, k := range api.Kinds {
		supportedProbes[string(k)] = true
	}
}

// knownProbes lists the probe kinds for error messages.
func knownProbes() string {
	names := make([]string, len(api.Kinds))
	for i, k := range api.Kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

var siteCodeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,15}$`)

// LoadFile reads and validates a targets file.
func LoadFile(path string) ([]store.Target, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read targets: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes and validates a targets document; name is used in errors.
func Parse(name string, b []byte) ([]store.Target, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, name, yamlMessage(err))
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, name, yamlMessage(err))
	}
	v := validator{file: name, root: &root}
	out, err := v.targets(f.Targets)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// yamlMessage drops the library's prefix and joins multi-error messages.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

type validator struct {
	file string
	root *yaml.Node
}

// fail formats an error located at the node found by path (keys and indexes
// below the document root), falling back to the closest ancestor found.
func (v *validator) fail(path []any, format string, args ...any) error {
	line := v.line(path)
	field := fieldName(path)
	return fmt.Errorf("%w: %s:%d: %s: %s", ErrInvalid, v.file, line, field, fmt.Sprintf(format, args...))
}

func (v *validator) line(path []any) int {
	n := v.root
	if n == nil || len(n.Content) == 0 {
		return 1
	}
	n = n.Content[0]
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						line = n.Content[i].Line
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func fieldName(path []any) string {
	var sb strings.Builder
	for _, p := range path {
		switch k := p.(type) {
		case string:
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(k)
		case int:
			fmt.Fprintf(&sb, "[%d]", k)
		}
	}
	return sb.String()
}

func (v *validator) targets(ts []target) ([]store.Target, error) {
	if len(ts) == 0 {
		return nil, v.fail([]any{"targets"}, "no targets declared")
	}
	if len(ts) > maxTargets {
		return nil, v.fail([]any{"targets"}, "%d targets, at most %d allowed", len(ts), maxTargets)
	}
	seen := map[string]int{}
	out := make([]store.Target, 0, len(ts))
	for i, t := range ts {
		p := []any{"targets", i}
		if j, dup := seen[t.Name]; dup {
			return nil, v.fail(append(p, "name"), "target %q is declared twice (also targets[%d])", t.Name, j)
		}
		seen[t.Name] = i
		st, err := v.target(p, t)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func (v *validator) target(p []any, t target) (store.Target, error) {
	at := func(k ...any) []any { return append(append([]any{}, p...), k...) }
	st := store.Target{Name: t.Name, Interval: t.Interval, NSIDQName: t.NSIDQName}
	if !api.ValidName(t.Name) {
		return st, v.fail(at("name"), "%q is not a valid name: want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit", t.Name)
	}
	if len(t.Addresses) == 0 {
		return st, v.fail(at("addresses"), "no addresses")
	}
	seenAddr := map[netip.Addr]bool{}
	for i, s := range t.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return st, v.fail(at("addresses", i), "%q is not an IPv4 or IPv6 address", s)
		}
		a = a.Unmap()
		if seenAddr[a] {
			return st, v.fail(at("addresses", i), "address %s listed twice", a)
		}
		seenAddr[a] = true
		st.Addresses = append(st.Addresses, a)
	}
	if len(t.Probes) == 0 {
		return st, v.fail(at("probes"), "no probe kinds (known: %s)", knownProbes())
	}
	seenProbe := map[string]bool{}
	for i, k := range t.Probes {
		if !supportedProbes[k] {
			return st, v.fail(at("probes", i), "probe kind %q is not supported (known: %s)", k, knownProbes())
		}
		if seenProbe[k] {
			return st, v.fail(at("probes", i), "probe kind %q listed twice", k)
		}
		seenProbe[k] = true
		st.Probes = append(st.Probes, k)
	}
	if t.Interval == 0 {
		return st, v.fail(at("interval"), "missing (e.g. 30s)")
	}
	if t.Interval < MinInterval || t.Interval > MaxInterval {
		return st, v.fail(at("interval"), "%s is out of range %s..%s", t.Interval, MinInterval, MaxInterval)
	}
	if st.NSIDQName == "" {
		st.NSIDQName = "."
	}
	if _, ok := dnsName(st.NSIDQName); !ok {
		return st, v.fail(at("nsid_qname"), "%q is not a DNS name", t.NSIDQName)
	}
	if err := v.http(at, t, &st); err != nil {
		return st, err
	}
	if t.SessionLife < 0 || t.SessionLife > 24*time.Hour {
		return st, v.fail(at("session_life"), "%s is out of range 0..24h", t.SessionLife)
	}
	st.SessionLife = t.SessionLife
	seenSite := map[string]bool{}
	for i, s := range t.Sites {
		code := strings.ToUpper(s.Code)
		if !siteCodeRE.MatchString(s.Code) {
			return st, v.fail(at("sites", i, "code"), "%q is not a site code: want 1-16 letters, digits or '-'", s.Code)
		}
		if seenSite[code] {
			return st, v.fail(at("sites", i, "code"), "site %s listed twice", code)
		}
		seenSite[code] = true
		as := analysis.Site{Code: code, Name: s.Name}
		if (s.Lat == nil) != (s.Lon == nil) {
			return st, v.fail(at("sites", i), "give both lat and lon, or neither")
		}
		if s.Lat != nil {
			if *s.Lat < -90 || *s.Lat > 90 {
				return st, v.fail(at("sites", i, "lat"), "%g is out of range -90..90", *s.Lat)
			}
			if *s.Lon < -180 || *s.Lon > 180 {
				return st, v.fail(at("sites", i, "lon"), "%g is out of range -180..180", *s.Lon)
			}
			as.Latitude, as.Longitude, as.HasCoords = *s.Lat, *s.Lon, true
		}
		st.Sites = append(st.Sites, as)
	}
	for i, r := range t.Identity {
		if r.Pattern == "" {
			return st, v.fail(at("identity", i, "pattern"), "missing")
		}
		if r.Site == "" {
			return st, v.fail(at("identity", i, "site"), "missing (a site code, or a template such as ${site})")
		}
		ar := analysis.Rule{Pattern: r.Pattern, Site: r.Site}
		// The resolver validates the pattern and the template; one rule at a
		// time so the error points at its line.
		if _, err := identity.NewResolver(analysis.Target{Name: st.Name, Rules: []analysis.Rule{ar}}); err != nil {
			return st, v.fail(at("identity", i), "%v", err)
		}
		st.Rules = append(st.Rules, ar)
	}
	return st, nil
}

// dnsName reports whether s is a plausible absolute or relative DNS name.
func dnsName(s string) (string, bool) {
	if s == "." {
		return s, true
	}
	if len(s) > 253 {
		return "", false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for _, c := range label {
			if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return "", false
			}
		}
	}
	return s, true
}

// http validates a target's HTTP spec: required by the http probe, and by
// the session probe when the target has no dns probe to hold a session with.
func (v *validator) http(at func(k ...any) []any, t target, st *store.Target) error {
	has := func(k api.Kind) bool { return slices.Contains(t.Probes, string(k)) }
	h := t.HTTP
	if h == nil {
		if has(api.KindHTTP) {
			return v.fail(at("probes"), "the http probe needs an http: section (scheme, host, headers…)")
		}
		if has(api.KindSession) && !has(api.KindDNS) {
			return v.fail(at("probes"), "the session probe needs the dns probe or an http: section to hold a session with")
		}
		return nil
	}
	spec := &api.HTTPSpec{Scheme: h.Scheme, Port: h.Port, Host: h.Host, Path: h.Path, Method: strings.ToUpper(h.Method),
		Headers: slices.Clone(h.Headers), BodyPattern: h.BodyPattern}
	switch spec.Scheme {
	case "http", "https":
	case "":
		spec.Scheme = "http"
	default:
		return v.fail(at("http", "scheme"), "%q: want http or https", h.Scheme)
	}
	if spec.Port < 0 || spec.Port > 65535 {
		return v.fail(at("http", "port"), "%d is out of range 1..65535", spec.Port)
	}
	if spec.Host != "" {
		if _, ok := dnsName(spec.Host); !ok {
			return v.fail(at("http", "host"), "%q is not a host name", h.Host)
		}
	}
	if spec.Path == "" {
		spec.Path = "/"
	}
	if !strings.HasPrefix(spec.Path, "/") || len(spec.Path) > 1024 || api.CheckText("path", spec.Path, 1024) != nil {
		return v.fail(at("http", "path"), "%q: want an absolute path of printable characters", api.Clip(h.Path))
	}
	switch spec.Method {
	case "":
		spec.Method = api.QueryGet
	case api.QueryGet, api.QueryHead:
	default:
		return v.fail(at("http", "method"), "%q: want GET or HEAD", h.Method)
	}
	if len(spec.Headers) == 0 && spec.BodyPattern == "" {
		spec.Headers = []string{"X-Served-By"}
	}
	for i, name := range spec.Headers {
		if name == "" || strings.ContainsAny(name, " :\t\r\n") || len(name) > 64 {
			return v.fail(at("http", "headers", i), "%q is not a header name", api.Clip(name))
		}
	}
	if spec.BodyPattern != "" {
		re, err := regexp.Compile(spec.BodyPattern)
		if err != nil {
			return v.fail(at("http", "body_pattern"), "%v", err)
		}
		if re.NumSubexp() != 1 {
			return v.fail(at("http", "body_pattern"), "want exactly one capture group (the site), got %d", re.NumSubexp())
		}
	}
	st.HTTP = spec
	return nil
}
