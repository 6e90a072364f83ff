package lab

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalid is wrapped by every error about a topology file's content.
var ErrInvalid = errors.New("invalid topology")

//go:embed topologies/default.yaml
var defaultTopology []byte

// Topology is a lab network: routers (one private AS each) joined by links,
// sites that announce the anycast prefixes to their upstream router and
// answer on the anycast addresses, and vantage points behind routers.
type Topology struct {
	Anycast       []Anycast
	Management    Management
	ECMP          bool // per-flow (L4 hash) multipath where BGP paths tie
	Routers       []Router
	Links         []Link
	Sites         []Site
	VantagePoints []VantagePoint
}

// Anycast is one announced prefix and the service address inside it.
type Anycast struct {
	Prefix  netip.Prefix
	Address netip.Addr
}

// Management is the network joining every vantage point to the collector,
// apart from the measured network. Host, when valid, is given to a veth in the
// host's namespace so a collector on the host is reachable from every VP.
type Management struct {
	Prefix netip.Prefix
	Host   netip.Addr
}

// Router is one BGP speaker with its own AS.
type Router struct {
	Name string
	ASN  uint32
}

// Link joins two routers with one eBGP session per address family. The
// policy maps are keyed by the router that applies them: LocalPref to routes
// it learns over this link, MED and Prepend to routes it sends over it.
type Link struct {
	A, B      string
	LocalPref map[string]uint32
	MED       map[string]uint32
	Prepend   map[string]int
}

// Site is one anycast instance: bird announcing the anycast prefixes to its
// upstream router, NSD and the HTTP responder answering on the addresses.
type Site struct {
	Name     string
	Router   string
	ASN      uint32
	Identity string // CHAOS hostname.bind / id.server
	NSID     string
	Prepend  int  // extra copies of the site's AS on the announcement
	NoExport bool // a local node: the upstream keeps it to itself
}

// VantagePoint is a measuring host behind a router.
type VantagePoint struct {
	Name   string
	Router string
}

// The address ranges a lab may use: documentation and benchmark prefixes only.
var allowedRanges = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// Link networks come from here; anycast and management prefixes must not
// overlap them.
var (
	linkNet4 = netip.MustParsePrefix("198.18.0.0/16")
	linkNet6 = netip.MustParsePrefix("2001:db8:ffff::/48")
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// Limits keeping generated names and address plans in range.
const (
	maxNodes = 200
	maxLinks = 4096
)

// file is the YAML document as written.
type file struct {
	Anycast []struct {
		Prefix  string `yaml:"prefix"`
		Address string `yaml:"address"`
	} `yaml:"anycast"`
	Management *struct {
		Prefix string `yaml:"prefix"`
		Host   string `yaml:"host"`
	} `yaml:"management"`
	ECMP    bool `yaml:"ecmp"`
	Routers []struct {
		Name string `yaml:"name"`
		ASN  uint32 `yaml:"asn"`
	} `yaml:"routers"`
	Links []struct {
		A         string            `yaml:"a"`
		B         string            `yaml:"b"`
		LocalPref map[string]uint32 `yaml:"local_pref"`
		MED       map[string]uint32 `yaml:"med"`
		Prepend   map[string]int    `yaml:"prepend"`
	} `yaml:"links"`
	Sites []struct {
		Name     string `yaml:"name"`
		Router   string `yaml:"router"`
		ASN      uint32 `yaml:"asn"`
		Identity string `yaml:"identity"`
		NSID     string `yaml:"nsid"`
		Prepend  int    `yaml:"prepend"`
		NoExport bool   `yaml:"no_export"`
	} `yaml:"sites"`
	VantagePoints []struct {
		Name   string `yaml:"name"`
		Router string `yaml:"router"`
	} `yaml:"vantage_points"`
}

// DefaultTopology returns the topology shipped with the binary.
func DefaultTopology() *Topology {
	t, err := ParseTopology("default.yaml", defaultTopology)
	if err != nil {
		panic(err) // covered by tests
	}
	return t
}

// DefaultTopologyYAML returns the source of the built-in topology.
func DefaultTopologyYAML() []byte { return bytes.Clone(defaultTopology) }

// LoadTopology reads and validates a topology file.
func LoadTopology(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return ParseTopology(path, b)
}

// ParseTopology decodes a topology strictly (unknown fields are errors) and
// validates it; name is used in errors, which carry the line they refer to.
func ParseTopology(name string, b []byte) (*Topology, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, yamlMessage(name, err))
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, yamlMessage(name, err))
	}
	v := validator{file: name, root: &root}
	return v.topology(&f)
}

// yamlMessage turns the YAML library's errors into "name:LINE: message"
// lines, like the validator's, without Go type names.
func yamlMessage(name string, err error) string {
	msgs := []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for i, m := range msgs {
		if sm := unknownFieldRE.FindStringSubmatch(m); sm != nil {
			m = fmt.Sprintf("line %s: unknown field %q", sm[1], sm[2])
		}
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			msgs[i] = name + ":" + sm[1] + ": " + sm[2]
		} else {
			msgs[i] = name + ": " + m
		}
	}
	return strings.Join(msgs, "; ")
}

var (
	unknownFieldRE = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)
	lineRE         = regexp.MustCompile(`^line (\d+): (.*)$`)
)

type validator struct {
	file string
	root *yaml.Node
}

func (v *validator) fail(path []any, format string, args ...any) error {
	return fmt.Errorf("%w: %s:%d: %s: %s", ErrInvalid, v.file, v.line(path), fieldName(path), fmt.Sprintf(format, args...))
}

// line finds the line of the node at path (keys and indexes below the
// document root), or of its closest ancestor present.
func (v *validator) line(path []any) int {
	if v.root == nil || len(v.root.Content) == 0 {
		return 1
	}
	n := v.root.Content[0]
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next, line = n.Content[i+1], n.Content[i].Line
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

func allowed(p netip.Prefix) bool {
	for _, r := range allowedRanges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func privateASN(n uint32) bool {
	return (n >= 64512 && n <= 65534) || (n >= 4200000000 && n <= 4294967294)
}

func (v *validator) topology(f *file) (*Topology, error) {
	t := &Topology{ECMP: f.ECMP}
	names := map[string]string{} // node name -> kind
	asns := map[uint32]string{}
	node := func(path []any, kind, name string) error {
		if !nameRE.MatchString(name) {
			return v.fail(path, "%q must be 1-10 lower-case letters or digits, starting with a letter", name)
		}
		if name == "mgmt" {
			return v.fail(path, "%q is reserved for the management network", name)
		}
		if k, dup := names[name]; dup {
			return v.fail(path, "%q is already the name of a %s", name, k)
		}
		names[name] = kind
		return nil
	}
	asn := func(path []any, n uint32, owner string) error {
		if !privateASN(n) {
			return v.fail(path, "%d is not a private AS number (64512-65534, 4200000000-4294967294)", n)
		}
		if o, dup := asns[n]; dup {
			return v.fail(path, "AS%d is already used by %s", n, o)
		}
		asns[n] = owner
		return nil
	}

	if len(f.Anycast) == 0 {
		return nil, v.fail([]any{"anycast"}, "no anycast prefix declared")
	}
	for i, a := range f.Anycast {
		p, err := netip.ParsePrefix(a.Prefix)
		if err != nil {
			return nil, v.fail([]any{"anycast", i, "prefix"}, "%q is not a prefix", a.Prefix)
		}
		if p != p.Masked() {
			return nil, v.fail([]any{"anycast", i, "prefix"}, "%s has host bits set (%s)", p, p.Masked())
		}
		if !allowed(p) {
			return nil, v.fail([]any{"anycast", i, "prefix"}, "%s is outside the documentation and benchmark ranges", p)
		}
		if p.Overlaps(linkNet4) || p.Overlaps(linkNet6) {
			return nil, v.fail([]any{"anycast", i, "prefix"}, "%s overlaps the link networks (%s, %s)", p, linkNet4, linkNet6)
		}
		for j, o := range t.Anycast {
			if o.Prefix.Overlaps(p) {
				return nil, v.fail([]any{"anycast", i, "prefix"}, "%s overlaps anycast[%d] %s", p, j, o.Prefix)
			}
		}
		addr, err := netip.ParseAddr(a.Address)
		if err != nil {
			return nil, v.fail([]any{"anycast", i, "address"}, "%q is not an IP address", a.Address)
		}
		if !p.Contains(addr) {
			return nil, v.fail([]any{"anycast", i, "address"}, "%s is not inside %s", addr, p)
		}
		t.Anycast = append(t.Anycast, Anycast{Prefix: p, Address: addr})
	}

	if f.Management == nil {
		return nil, v.fail([]any{"management"}, "missing (e.g. {prefix: 203.0.113.0/24, host: 203.0.113.1})")
	}
	mp, err := netip.ParsePrefix(f.Management.Prefix)
	switch {
	case err != nil:
		return nil, v.fail([]any{"management", "prefix"}, "%q is not a prefix", f.Management.Prefix)
	case !mp.Addr().Is4() || mp.Bits() > 28 || mp != mp.Masked():
		return nil, v.fail([]any{"management", "prefix"}, "%s must be an IPv4 network of /28 or larger", f.Management.Prefix)
	case !allowed(mp):
		return nil, v.fail([]any{"management", "prefix"}, "%s is outside the documentation and benchmark ranges", mp)
	case mp.Overlaps(linkNet4):
		return nil, v.fail([]any{"management", "prefix"}, "%s overlaps the link networks (%s)", mp, linkNet4)
	}
	for j, a := range t.Anycast {
		if a.Prefix.Overlaps(mp) {
			return nil, v.fail([]any{"management", "prefix"}, "%s overlaps anycast[%d] %s", mp, j, a.Prefix)
		}
	}
	t.Management.Prefix = mp
	if f.Management.Host != "" {
		h, err := netip.ParseAddr(f.Management.Host)
		if err != nil || !mp.Contains(h) || h == mp.Addr() {
			return nil, v.fail([]any{"management", "host"}, "%q is not a host address inside %s", f.Management.Host, mp)
		}
		t.Management.Host = h
	}

	if len(f.Routers) == 0 {
		return nil, v.fail([]any{"routers"}, "no router declared")
	}
	for i, r := range f.Routers {
		if err := node([]any{"routers", i, "name"}, "router", r.Name); err != nil {
			return nil, err
		}
		if err := asn([]any{"routers", i, "asn"}, r.ASN, "router "+r.Name); err != nil {
			return nil, err
		}
		t.Routers = append(t.Routers, Router{Name: r.Name, ASN: r.ASN})
	}

	pairs := map[[2]string]int{}
	for i, l := range f.Links {
		for _, end := range []struct{ key, name string }{{"a", l.A}, {"b", l.B}} {
			if names[end.name] != "router" {
				return nil, v.fail([]any{"links", i, end.key}, "%q is not a router", end.name)
			}
		}
		if l.A == l.B {
			return nil, v.fail([]any{"links", i}, "%s is linked to itself", l.A)
		}
		key := [2]string{min(l.A, l.B), max(l.A, l.B)}
		if j, dup := pairs[key]; dup {
			return nil, v.fail([]any{"links", i}, "%s and %s are already linked by links[%d]", l.A, l.B, j)
		}
		pairs[key] = i
		for field, keys := range map[string][]string{"local_pref": mapKeys(l.LocalPref), "med": mapKeys(l.MED), "prepend": mapKeys(l.Prepend)} {
			for _, k := range keys {
				if k != l.A && k != l.B {
					return nil, v.fail([]any{"links", i, field}, "%q is not an end of this link (%s or %s)", k, l.A, l.B)
				}
			}
		}
		for k, n := range l.Prepend {
			if n < 0 || n > 8 {
				return nil, v.fail([]any{"links", i, "prepend"}, "%s: %d is not between 0 and 8", k, n)
			}
		}
		t.Links = append(t.Links, Link{A: l.A, B: l.B, LocalPref: l.LocalPref, MED: l.MED, Prepend: l.Prepend})
	}

	if len(f.Sites) == 0 {
		return nil, v.fail([]any{"sites"}, "no site declared")
	}
	for i, s := range f.Sites {
		if err := node([]any{"sites", i, "name"}, "site", s.Name); err != nil {
			return nil, err
		}
		if names[s.Router] != "router" {
			return nil, v.fail([]any{"sites", i, "router"}, "%q is not a router", s.Router)
		}
		if err := asn([]any{"sites", i, "asn"}, s.ASN, "site "+s.Name); err != nil {
			return nil, err
		}
		if err := identityText(s.Identity, 255); err != nil {
			return nil, v.fail([]any{"sites", i, "identity"}, "%v", err)
		}
		if err := printable(s.NSID, 128); err != nil {
			return nil, v.fail([]any{"sites", i, "nsid"}, "%v", err)
		}
		if strings.ContainsAny(s.Identity+s.NSID, `"\`) {
			return nil, v.fail([]any{"sites", i}, "identity and nsid may not contain quotes or backslashes")
		}
		if s.Prepend < 0 || s.Prepend > 8 {
			return nil, v.fail([]any{"sites", i, "prepend"}, "%d is not between 0 and 8", s.Prepend)
		}
		t.Sites = append(t.Sites, Site{Name: s.Name, Router: s.Router, ASN: s.ASN, Identity: s.Identity, NSID: s.NSID, Prepend: s.Prepend, NoExport: s.NoExport})
	}

	if len(f.VantagePoints) == 0 {
		return nil, v.fail([]any{"vantage_points"}, "no vantage point declared")
	}
	for i, p := range f.VantagePoints {
		if err := node([]any{"vantage_points", i, "name"}, "vantage point", p.Name); err != nil {
			return nil, err
		}
		if names[p.Router] != "router" {
			return nil, v.fail([]any{"vantage_points", i, "router"}, "%q is not a router", p.Router)
		}
		t.VantagePoints = append(t.VantagePoints, VantagePoint{Name: p.Name, Router: p.Router})
	}
	if n := len(names); n > maxNodes {
		return nil, v.fail(nil, "%d routers, sites and vantage points, at most %d allowed", n, maxNodes)
	}
	if n := len(t.Links) + len(t.Sites) + len(t.VantagePoints); n > maxLinks {
		return nil, v.fail([]any{"links"}, "%d point-to-point links, at most %d allowed", n, maxLinks)
	}
	// Two addresses of the management prefix are not for vantage points: the
	// network address and the broadcast address; the host takes one more.
	if free := 1<<(32-mp.Bits()) - 3; len(t.VantagePoints) > free {
		return nil, v.fail([]any{"management", "prefix"}, "%s is too small for %d vantage points", mp, len(t.VantagePoints))
	}
	return t, nil
}

// identityText checks a CHAOS identity: printable ASCII, spaces allowed (a
// hostile identity such as `<img src=x onerror=alert(1)>` is what the
// browser tests serve), but no quote or backslash, which NSD's quoted
// configuration strings cannot carry as Go quotes them.
func identityText(s string, maxLen int) error {
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("%q must not start or end with a space", s)
	}
	if strings.ContainsAny(s, "\\\"") {
		return fmt.Errorf("%q must not contain a quote or backslash", s)
	}
	if err := printable(strings.ReplaceAll(s, " ", "_"), maxLen); err != nil {
		return fmt.Errorf("%q must be printable ASCII (spaces allowed)", s)
	}
	return nil
}

func printable(s string, maxLen int) error {
	if s == "" {
		return errors.New("missing")
	}
	if len(s) > maxLen {
		return fmt.Errorf("longer than %d characters", maxLen)
	}
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return fmt.Errorf("%q must be printable ASCII without spaces", s)
		}
	}
	return nil
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
