package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/anyscope/anyscope/analysis"
)

func mustResolver(t *testing.T, target analysis.Target) *Resolver {
	t.Helper()
	r, err := NewResolver(target)
	if err != nil {
		t.Fatalf("NewResolver: %v", err)
	}
	return r
}

// TestResolveBuiltin covers every convention in DOMAIN.md's table, with no
// operator rules and no site list.
func TestResolveBuiltin(t *testing.T) {
	t.Parallel()
	r := mustResolver(t, analysis.Target{Name: "example"})
	tests := []struct {
		identity string
		site     string
		server   string
		rule     string
	}{
		// K-root
		{"ns1.fi-hel.k.ripe.net", "HEL", "ns1.fi-hel.k.ripe.net", "cc-iata"},
		{"ns2.fi-hel.k.ripe.net", "HEL", "ns2.fi-hel.k.ripe.net", "cc-iata"},
		// L-root
		{"mia01.l.root-servers.org", "MIA", "mia01.l.root-servers.org", "iata-number"},
		{"aa01-in-bom.l.dns.icann.org", "BOM", "aa01-in-bom.l.dns.icann.org", "cc-iata"},
		// F-root
		{"pek2a.f.root-servers.org", "PEK", "pek2a.f.root-servers.org", "iata-number"},
		{"DFW.cf.f.root-servers.org", "DFW", "dfw.cf.f.root-servers.org", "upper-label"},
		// E-root
		{"c01.MCI.eroot", "MCI", "c01.mci.eroot", "upper-label"},
		// M-root
		{"M-NRT-JPNAP-1", "NRT", "m-nrt-jpnap-1", "letter-iata"},
		// I-root (Netnod codes are not always IATA: lnx is London)
		{"s1.chi", "CHI", "s1.chi", "server-site"},
		{"s2.lnx", "LNX", "s2.lnx", "server-site"},
		// Cloudflare DNS id.server, bare codes
		{"LHR", "LHR", "lhr", "bare-code"},
		{"ams", "AMS", "ams", "bare-code"},
		// Quad9
		{"res100.ams.rrdns.pch.net", "AMS", "res100.ams.rrdns.pch.net", "server-site"},
		// Google Public DNS NSID
		{"gpdns-ams", "AMS", "gpdns-ams", "gpdns"},
		{"GPDNS-SIN", "SIN", "gpdns-sin", "gpdns"},
		// HTTP anycast
		{"8a1b2c3d4e5f6789-LHR", "LHR", "8a1b2c3d4e5f6789-lhr", "cf-ray"},
		{"cache-fra19151-FRA", "FRA", "cache-fra19151-fra", "fastly"},
		{"IAD89-C1", "IAD", "iad89-c1", "iata-number"},
		// short NSIDs
		{"ams-1", "AMS", "ams-1", "iata-dash-number"},
		{"LHR-02", "LHR", "lhr-02", "iata-dash-number"},
		// normalisation: spaces and the root dot
		{"  ns1.fi-hel.k.ripe.net.  ", "HEL", "ns1.fi-hel.k.ripe.net", "cc-iata"},
		{"NS1.FI-HEL.K.RIPE.NET", "HEL", "ns1.fi-hel.k.ripe.net", "cc-iata"},
		{"RES100.AMS.RRDNS.PCH.NET", "AMS", "res100.ams.rrdns.pch.net", "upper-label"},
	}
	for _, tt := range tests {
		t.Run(tt.identity, func(t *testing.T) {
			t.Parallel()
			got := r.Resolve(tt.identity)
			if got.Site != tt.site || got.Server != tt.server || got.Rule != tt.rule {
				t.Errorf("Resolve(%q) = %+v, want site %q server %q rule %q", tt.identity, got, tt.site, tt.server, tt.rule)
			}
			if got.Confidence <= 0 || got.Confidence > 1 {
				t.Errorf("Resolve(%q).Confidence = %v, want in (0, 1]", tt.identity, got.Confidence)
			}
		})
	}
}

// TestResolveNoFalsePositives: common host-name words and structure-less
// names must stay unresolved rather than become sites.
func TestResolveNoFalsePositives(t *testing.T) {
	t.Parallel()
	r := mustResolver(t, analysis.Target{Name: "example"})
	for _, id := range []string{
		"", " ", ".", "ns1", "www", "com", "net", "org", "dns", "k", "root", "WWW", "DNS",
		"ns1.example.com", "ns1.example.com.", "a.root-servers.net", "k.root-servers.net",
		"localhost", "unbound 1.17.1", "NSD 4.7.0", "dns1.example.net", "www1.example.org",
		"ns1.com", "ns1.net", "us-east-1", "eu-west-2.compute", "root", "bind",
		"ns.example", "my-dns.example", "server", "9.18.24", "2001:db8::53",
	} {
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			got := r.Resolve(id)
			if got.Site != "" || got.Rule != "" || got.Confidence != 0 {
				t.Errorf("Resolve(%q) = %+v, want unresolved", id, got)
			}
		})
	}
}

func TestResolveTargetRules(t *testing.T) {
	t.Parallel()
	target := analysis.Target{
		Name: "i-root",
		Rules: []analysis.Rule{
			{Pattern: `\.lnx$`, Site: "LON"},
			{Pattern: `^s[0-9]+\.(?P<site>[a-z]+)$`, Site: "${site}"},
			{Pattern: `^node-([a-z]+)-`, Site: "$1"},
			{Pattern: `^capture:(?P<site>.*)$`, Site: "${site}"},
		},
		Sites: []analysis.Site{{Code: "lon"}, {Code: "CHI"}, {Code: "Ams"}, {Code: "NET"}},
	}
	r := mustResolver(t, target)
	tests := []struct {
		identity   string
		site       string
		rule       string
		confidence float64
	}{
		{"s2.lnx", "LON", "target[0]", ConfidenceRule},
		{"s1.chi", "CHI", "target[1]", ConfidenceRule},
		{"s1.sto", "STO", "target[1]", ConfidenceRuleUndeclared},
		{"node-ams-3", "AMS", "target[2]", ConfidenceRule},
		// A capture that is no site code does not match; the built-ins
		// and the declared list get their turn.
		{"capture:<script>", "", "", 0},
		{"capture:", "", "", 0},
		{"capture:ams", "AMS", "target[3]", ConfidenceRule},
		// Built-ins after the rules: a declared site keeps its confidence.
		{"ams", "AMS", "bare-code", 0.8},
		// A guess outside the declared list is kept, with less confidence.
		{"ns1.fi-hel.k.ripe.net", "HEL", "cc-iata", 0.9 * UndeclaredFactor},
		// A declared code among the labels beats an undeclared guess.
		{"mia01.chi.example", "CHI", "server-site", 0.7},
		{"mia01.x.chi-2.example", "CHI", RuleDeclaredToken, ConfidenceDeclaredToken},
		{"fra-ams_1.example", "AMS", RuleDeclaredToken, ConfidenceDeclaredToken},
		{"pop-chi-3.example", "CHI", RuleDeclaredToken, ConfidenceDeclaredToken},
		// Stop words stay unresolved even when declared (write a rule).
		{"ns1.example.net", "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.identity, func(t *testing.T) {
			t.Parallel()
			got := r.Resolve(tt.identity)
			if got.Site != tt.site || got.Rule != tt.rule || got.Confidence != tt.confidence {
				t.Errorf("Resolve(%q) = %+v, want site %q rule %q confidence %v", tt.identity, got, tt.site, tt.rule, tt.confidence)
			}
		})
	}
}

// TestResolveFirstRuleWins: rules are tried in order.
func TestResolveFirstRuleWins(t *testing.T) {
	t.Parallel()
	r := mustResolver(t, analysis.Target{Name: "t", Rules: []analysis.Rule{
		{Pattern: `^ns`, Site: "FIRST"},
		{Pattern: `hel`, Site: "SECOND"},
	}})
	if got := r.Resolve("ns1.fi-hel.k.ripe.net"); got.Site != "FIRST" || got.Rule != "target[0]" {
		t.Errorf("got %+v, want FIRST from target[0]", got)
	}
}

func TestNewResolverInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rule analysis.Rule
		want string
	}{
		{"bad-regexp", analysis.Rule{Pattern: `^(ams`, Site: "AMS"},
			`invalid identity rule: rule 1 (pattern "^(ams"): error parsing regexp: missing closing ): ` + "`^(ams`"},
		{"empty-pattern", analysis.Rule{Pattern: ``, Site: "AMS"},
			`invalid identity rule: rule 1: empty pattern`},
		{"missing-group", analysis.Rule{Pattern: `^(?P<city>[a-z]+)`, Site: "${site}"},
			`invalid identity rule: rule 1 (pattern "^(?P<city>[a-z]+)"): site "${site}" refers to group "site", which the pattern does not define`},
		{"group-number-out-of-range", analysis.Rule{Pattern: `^([a-z]+)`, Site: "$2"},
			`invalid identity rule: rule 1 (pattern "^([a-z]+)"): site "$2" refers to group "2", which the pattern does not define`},
		{"trailing-letters-name-a-group", analysis.Rule{Pattern: `^([a-z]+)`, Site: "$1x"},
			`invalid identity rule: rule 1 (pattern "^([a-z]+)"): site "$1x" refers to group "1x", which the pattern does not define`},
		{"lone-dollar", analysis.Rule{Pattern: `^a`, Site: "A$"},
			`invalid identity rule: rule 1 (pattern "^a"): site "A$": '$' must start a group reference (write $$ for a dollar sign)`},
		{"unterminated", analysis.Rule{Pattern: `^(?P<site>a)`, Site: "${site"},
			`invalid identity rule: rule 1 (pattern "^(?P<site>a)"): site "${site": unterminated ${`},
		{"bad-literal", analysis.Rule{Pattern: `^a`, Site: "New York"},
			`invalid identity rule: rule 1 (pattern "^a"): site "New York" is neither a site code (1-16 letters, digits or '-') nor a template such as ${site}`},
		{"empty-site", analysis.Rule{Pattern: `^a`, Site: ""},
			`invalid identity rule: rule 1 (pattern "^a"): site "" is neither a site code (1-16 letters, digits or '-') nor a template such as ${site}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewResolver(analysis.Target{Name: "t", Rules: []analysis.Rule{
				{Pattern: `^ok$`, Site: "OK"}, tt.rule,
			}})
			if err == nil {
				t.Fatalf("NewResolver: no error, want %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidRule) {
				t.Errorf("error %v does not wrap ErrInvalidRule", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestNewResolverValidTemplates(t *testing.T) {
	t.Parallel()
	for _, rule := range []analysis.Rule{
		{Pattern: `^(?P<site>[a-z]{3})`, Site: "${site}"},
		{Pattern: `^(?P<site>[a-z]{3})`, Site: "$site"},
		{Pattern: `^(?P<site>[a-z]{3})-(?P<n>[0-9])`, Site: "${site}-${n}"},
		{Pattern: `^([a-z]{3})`, Site: "${1}"},
		{Pattern: `^([a-z]{3})`, Site: "$1"},
		{Pattern: `lnx`, Site: "lon"},
	} {
		if _, err := NewResolver(analysis.Target{Name: "t", Rules: []analysis.Rule{rule}}); err != nil {
			t.Errorf("NewResolver(%+v): %v", rule, err)
		}
	}
	r := mustResolver(t, analysis.Target{Name: "t", Rules: []analysis.Rule{
		{Pattern: `^(?P<site>[a-z]{3})-(?P<n>[0-9])`, Site: "${site}-${n}"},
	}})
	if got := r.Resolve("fra-2.example"); got.Site != "FRA-2" {
		t.Errorf("Resolve = %+v, want FRA-2", got)
	}
}

// TestResolveHostile: untrusted text from the network must neither panic nor
// take long, and must not resolve by accident.
func TestResolveHostile(t *testing.T) {
	t.Parallel()
	r := mustResolver(t, analysis.Target{Name: "t",
		Rules: []analysis.Rule{{Pattern: `^(?P<site>(a|aa)+)$`, Site: "${site}"}, {Pattern: `(x+x+)+y`, Site: "X"}},
		Sites: []analysis.Site{{Code: "AMS"}, {Code: "SIN"}, {Code: "KIX"}},
	})
	huge := strings.Repeat("a", 1<<20)
	tests := []struct {
		name, identity, site string
	}{
		{"script", "<script>alert(1)</script>", ""},
		{"img", `<img src=x onerror=alert(1)>`, ""},
		{"markdown", "a|b\n# heading", ""},
		{"unicode", "ñandú.ámsterdam.例え.テスト", ""},
		{"kelvin-sign", "gpdns-\u212aix", ""},
		{"long-s", "\u017fin", ""},
		{"greek-lookalike", "\u0391MS", ""},
		{"rtl-override", "\u202eSMA", ""},
		{"nul-and-controls", "ams\x00\x01\x7f", ""},
		{"invalid-utf8", "\xff\xfe\xfd", ""},
		{"huge-a", huge, ""},
		{"huge-labels", strings.Repeat("a1.", 1<<18) + "ams", ""},
		{"huge-cc", strings.Repeat("fi-hel.", 1<<17), ""},
		{"redos-classic", strings.Repeat("x", 1<<16), ""},
		{"many-dashes", strings.Repeat("-", 1<<16), ""},
		{"many-dots", strings.Repeat(".", 1<<16), ""},
		{"cc-iata-in-the-middle", "xx.yy-ams.zz", "AMS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// How fast is measured by BenchmarkResolveHostile, not here.
			got := r.Resolve(tt.identity)
			if got.Site != tt.site {
				t.Errorf("Resolve(%.40q) = site %q, want %q", tt.identity, got.Site, tt.site)
			}
		})
	}
	t.Run("invalid-utf8-server", func(t *testing.T) {
		t.Parallel()
		if got := r.Resolve("\xffAMS"); got.Server != "\uFFFDams" {
			t.Errorf("Server = %q, want valid UTF-8", got.Server)
		}
	})
}

func TestBuiltinsOrdered(t *testing.T) {
	t.Parallel()
	bs := BuiltinRules()
	if len(bs) < 7 {
		t.Fatalf("BuiltinRules() has %d rules", len(bs))
	}
	for i := 1; i < len(bs); i++ {
		if bs[i-1].Priority > bs[i].Priority {
			t.Errorf("rule %s (priority %d) listed before %s (priority %d)", bs[i-1].Name, bs[i-1].Priority, bs[i].Name, bs[i].Priority)
		}
	}
	for _, b := range bs {
		if b.Confidence <= 0 || b.Confidence > 1 {
			t.Errorf("rule %s: confidence %v", b.Name, b.Confidence)
		}
	}
}

func BenchmarkResolve(b *testing.B) {
	r, err := NewResolver(analysis.Target{Name: "t", Sites: []analysis.Site{{Code: "HEL"}}})
	if err != nil {
		b.Fatal(err)
	}
	ids := []string{"ns1.fi-hel.k.ripe.net", "res100.ams.rrdns.pch.net", "mia01.l.root-servers.org", "ns1.example.com"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Resolve(ids[i%len(ids)])
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	r := Default("k-root")
	if r.Target() != "k-root" {
		t.Errorf("Target() = %q", r.Target())
	}
	if got := r.Resolve("ns1.fi-hel.k.ripe.net"); got.Site != "HEL" || got.Confidence != 0.9 {
		t.Errorf("Resolve = %+v", got)
	}
}

// BenchmarkResolveHostile: a megabyte-long identity resolves in linear time
// (RE2), so a hostile answer cannot stall analysis.
func BenchmarkResolveHostile(b *testing.B) {
	r := Default("k-root")
	huge := strings.Repeat("a", 1<<20)
	b.SetBytes(int64(len(huge)))
	for b.Loop() {
		r.Resolve(huge)
	}
}
