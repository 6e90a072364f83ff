package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
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
		place    string // "City, CC" from the catalog
	}{
		// K-root
		{"ns1.fi-hel.k.ripe.net", "HEL", "ns1.fi-hel.k.ripe.net", "cc-iata", "Helsinki (Vantaa), FI"},
		{"ns2.fi-hel.k.ripe.net", "HEL", "ns2.fi-hel.k.ripe.net", "cc-iata", "Helsinki (Vantaa), FI"},
		{"ns1.jp-tyo.k.ripe.net", "TYO", "ns1.jp-tyo.k.ripe.net", "cc-iata", "Tokyo, JP"},
		{"ns2.gb-lon.k.ripe.net", "LON", "ns2.gb-lon.k.ripe.net", "cc-iata", "London, GB"},
		// L-root
		{"mia01.l.root-servers.org", "MIA", "mia01.l.root-servers.org", "iata-number", "Miami, US"},
		{"aa01-in-bom.l.dns.icann.org", "BOM", "aa01-in-bom.l.dns.icann.org", "cc-iata", "Mumbai, IN"},
		// F-root
		{"pek2a.f.root-servers.org", "PEK", "pek2a.f.root-servers.org", "iata-number", "Beijing, CN"},
		{"DFW.cf.f.root-servers.org", "DFW", "dfw.cf.f.root-servers.org", "upper-label", "Dallas-Fort Worth, US"},
		// E-root
		{"c01.MCI.eroot", "MCI", "c01.mci.eroot", "upper-label", "Kansas City, US"},
		// M-root
		{"M-NRT-JPNAP-1", "NRT", "m-nrt-jpnap-1", "letter-iata", "Narita, JP"},
		// I-root (Netnod codes are not always IATA: lnx is London)
		{"s1.chi", "CHI", "s1.chi", "server-site", "Chicago, US"},
		{"s2.lnx", "LNX", "s2.lnx", "server-site", "London, GB"},
		{"s1.lnx", "LNX", "s1.lnx", "server-site", "London, GB"},
		// Cloudflare DNS id.server, bare codes
		{"LHR", "LHR", "lhr", "bare-code", "London, GB"},
		{"ams", "AMS", "ams", "bare-code", "Amsterdam, NL"},
		// Quad9
		{"res100.ams.rrdns.pch.net", "AMS", "res100.ams.rrdns.pch.net", "server-site", "Amsterdam, NL"},
		// Google Public DNS NSID
		{"gpdns-ams", "AMS", "gpdns-ams", "gpdns", "Amsterdam, NL"},
		{"GPDNS-SIN", "SIN", "gpdns-sin", "gpdns", "Singapore, SG"},
		// HTTP anycast
		{"8a1b2c3d4e5f6789-LHR", "LHR", "8a1b2c3d4e5f6789-lhr", "cf-ray", "London, GB"},
		{"cache-fra19151-FRA", "FRA", "cache-fra19151-fra", "fastly", "Frankfurt am Main, DE"},
		{"IAD89-C1", "IAD", "iad89-c1", "iata-number", "Dulles, US"},
		// short NSIDs
		{"ams-1", "AMS", "ams-1", "iata-dash-number", "Amsterdam, NL"},
		{"LHR-02", "LHR", "lhr-02", "iata-dash-number", "London, GB"},
		// the lab's sites
		{"ns1.nl-ams.lab.example", "AMS", "ns1.nl-ams.lab.example", "cc-iata", "Amsterdam, NL"},
		{"ns1.de-fra.lab.example", "FRA", "ns1.de-fra.lab.example", "cc-iata", "Frankfurt am Main, DE"},
		{"sin-1", "SIN", "sin-1", "iata-dash-number", "Singapore, SG"},
		// normalisation: spaces and the root dot
		{"  ns1.fi-hel.k.ripe.net.  ", "HEL", "ns1.fi-hel.k.ripe.net", "cc-iata", "Helsinki (Vantaa), FI"},
		{"NS1.FI-HEL.K.RIPE.NET", "HEL", "ns1.fi-hel.k.ripe.net", "cc-iata", "Helsinki (Vantaa), FI"},
		{"RES100.AMS.RRDNS.PCH.NET", "AMS", "res100.ams.rrdns.pch.net", "upper-label", "Amsterdam, NL"},
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
			if p := got.Place; p == nil || p.Code != tt.site || p.City+", "+p.Country != tt.place {
				t.Errorf("Resolve(%q).Place = %+v, want %s at %s", tt.identity, p, tt.site, tt.place)
			}
		})
	}
}

// TestResolveCatalog: built-in rules guess only codes the catalog (or the
// target's site list) knows, trying the next match and the next rule when a
// candidate is unknown; the target's own rules are not limited to it.
func TestResolveCatalog(t *testing.T) {
	t.Parallel()
	// ZQX, QQZ and XQZ are in no catalog file.
	for _, code := range []string{"ZQX", "QQZ", "XQZ"} {
		if _, ok := catalog.Lookup(code); ok {
			t.Fatalf("%s is in the catalog: pick another unknown code for this test", code)
		}
	}
	target := analysis.Target{
		Name:  "example",
		Rules: []analysis.Rule{{Pattern: `^node-(?P<site>[a-z]+)$`, Site: "${site}"}, {Pattern: `\.lnx$`, Site: "LON"}},
		Sites: []analysis.Site{{Code: "XQZ"}, {Code: "LON"}, {Code: "AMS"}},
	}
	tests := []struct {
		name     string
		target   analysis.Target
		identity string
		site     string
		rule     string
		place    string // catalog code, "" for nil
	}{
		{"unknown-bare-code", analysis.Target{}, "zqx", "", "", ""},
		{"unknown-gpdns", analysis.Target{}, "gpdns-zqx", "", "", ""},
		{"unknown-letter-iata", analysis.Target{}, "M-ZQX-JPNAP-1", "", "", ""},
		{"unknown-cc-iata", analysis.Target{}, "ns1.fi-zqx.k.ripe.net", "", "", ""},
		{"unknown-cf-ray", analysis.Target{}, "8a1b2c3d4e5f6789-ZQX", "", "", ""},
		{"unknown-server-site", analysis.Target{}, "s1.zqx", "", "", ""},
		// The resolver prefix is no site, even if an airport has its code.
		{"quad9-unknown-site", analysis.Target{}, "res100.zqx.rrdns.pch.net", "", "", ""},
		// The next label's match is tried.
		{"next-label", analysis.Target{}, "ns1.xx-zqx.fi-hel.example", "HEL", "cc-iata", "HEL"},
		{"next-upper-label", analysis.Target{}, "c01.ZQX.MCI.eroot", "MCI", "upper-label", "MCI"},
		// Then the next rule: server-site's ZQX is unknown, iata-number's LHR is not.
		{"next-rule", analysis.Target{}, "lhr01.zqx.example", "LHR", "iata-number", "LHR"},
		// A declared code the catalog does not know is still guessed.
		{"declared-unknown", target, "s1.xqz", "XQZ", "server-site", ""},
		{"declared-unknown-token", target, "pop-xqz-3.example", "XQZ", RuleDeclaredToken, ""},
		// The target's rules may name any site code; Place follows the catalog.
		{"target-rule-unknown", target, "node-qqz", "QQZ", "target[0]", ""},
		{"target-rule-known", target, "node-ams", "AMS", "target[0]", "AMS"},
		{"target-rule-metro", target, "s2.lnx", "LON", "target[1]", "LON"},
		// An undeclared guess keeps its place.
		{"undeclared-guess", target, "ns1.fi-hel.k.ripe.net", "HEL", "cc-iata", "HEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.target.Name = "example"
			got := mustResolver(t, tt.target).Resolve(tt.identity)
			if got.Site != tt.site || got.Rule != tt.rule {
				t.Errorf("Resolve(%q) = %+v, want site %q rule %q", tt.identity, got, tt.site, tt.rule)
			}
			if got.Server == "" {
				t.Errorf("Resolve(%q).Server is empty: an identity is always reported", tt.identity)
			}
			switch {
			case tt.place == "" && got.Place != nil:
				t.Errorf("Resolve(%q).Place = %+v, want nil", tt.identity, got.Place)
			case tt.place != "" && (got.Place == nil || got.Place.Code != tt.place):
				t.Errorf("Resolve(%q).Place = %+v, want %s", tt.identity, got.Place, tt.place)
			}
		})
	}
}

// TestResolvePlaceIsACopy: changing a resolution's Place leaves the catalog
// alone.
func TestResolvePlaceIsACopy(t *testing.T) {
	t.Parallel()
	r := Default("example")
	got := r.Resolve("gpdns-ams")
	if got.Place == nil {
		t.Fatal("no Place for AMS")
	}
	got.Place.City = "Elsewhere"
	if p, _ := catalog.Lookup("AMS"); p.City != "Amsterdam" {
		t.Errorf("catalog's AMS is now in %q", p.City)
	}
	if again := r.Resolve("gpdns-ams"); again.Place.City != "Amsterdam" {
		t.Errorf("a later resolution's AMS is in %q", again.Place.City)
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
		// three-letter words no airport, metro or operator code carries
		"xyz", "foo", "qux", "baz", "XYZ.example.net", "gpdns-foo", "node1.qux.example",
		"res100.foo.rrdns.pch.net", "vp-xyz-1", "m-foo-ix-1",
	} {
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			got := r.Resolve(id)
			if got.Site != "" || got.Rule != "" || got.Confidence != 0 || got.Place != nil {
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
