package lab

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultTopology(t *testing.T) {
	topo := DefaultTopology()
	if n := len(topo.Sites); n < 4 {
		t.Errorf("%d sites, want at least 4", n)
	}
	if n := len(topo.Routers); n < 6 {
		t.Errorf("%d routers, want at least 6", n)
	}
	if n := len(topo.VantagePoints); n < 8 {
		t.Errorf("%d vantage points, want at least 8", n)
	}
	if len(topo.Links) < len(topo.Routers) {
		t.Errorf("%d links for %d routers: a line or a star, not a graph with cycles", len(topo.Links), len(topo.Routers))
	}
	var local, v4, v6 bool
	for _, s := range topo.Sites {
		local = local || s.NoExport || s.Prepend > 0
	}
	for _, a := range topo.Anycast {
		v4, v6 = v4 || a.Address.Is4(), v6 || a.Address.Is6()
	}
	if !local || !v4 || !v6 || !topo.ECMP {
		t.Errorf("default topology: local site %v, IPv4 %v, IPv6 %v, ECMP %v; want all", local, v4, v6, topo.ECMP)
	}
}

func TestPlan(t *testing.T) {
	p := newPlan(DefaultTopology(), DefaultPrefix)
	seen := map[netip.Addr]bool{}
	for _, l := range p.links {
		for _, pfx := range []netip.Prefix{l.A4, l.B4, l.A6, l.B6} {
			if seen[pfx.Addr()] {
				t.Errorf("address %s used twice", pfx.Addr())
			}
			seen[pfx.Addr()] = true
			if !allowed(pfx.Masked()) || !(linkNet4.Contains(pfx.Addr()) || linkNet6.Contains(pfx.Addr())) {
				t.Errorf("link address %s outside the link networks", pfx)
			}
		}
		for _, ifn := range []string{l.IfA, l.IfB} {
			if len(ifn) > 15 {
				t.Errorf("interface name %q longer than 15 bytes", ifn)
			}
		}
		if l.A4.Masked() != l.B4.Masked() || l.A6.Masked() != l.B6.Masked() {
			t.Errorf("link %s-%s: ends in different networks: %s %s", l.A, l.B, l.A4, l.B4)
		}
	}
	for vp, a := range p.mgmt {
		if !p.topo.Management.Prefix.Contains(a) || a == p.topo.Management.Host || seen[a] {
			t.Errorf("management address of %s: %s", vp, a)
		}
		seen[a] = true
	}
}

func TestParseTopologyValid(t *testing.T) {
	topo, err := LoadTopology("testdata/valid-minimal.yml")
	if err != nil {
		t.Fatal(err)
	}
	if topo.Sites[0].Identity != "ns1.ams.lab.example" || topo.Anycast[0].Address != netip.MustParseAddr("192.0.2.53") {
		t.Errorf("decoded %+v", topo)
	}
}

func TestParseTopologyInvalid(t *testing.T) {
	want := map[string]string{
		"invalid-anycast-address.yml": "2: anycast[0].address: 198.51.100.53 is not inside 192.0.2.0/24",
		"invalid-anycast-range.yml":   "2: anycast[0].prefix: 10.0.0.0/8 is outside the documentation and benchmark ranges",
		"invalid-asn-type.yml":        "5: cannot unmarshal !!str `sixty` into uint32",
		"invalid-duplicate-asn.yml":   "10: sites[0].asn: AS64512 is already used by router r1",
		"invalid-duplicate-name.yml":  `12: vantage_points[0].name: "ams" is already the name of a site`,
		"invalid-link-policy.yml":     `8: links[0].local_pref: "r3" is not an end of this link (r1 or r2)`,
		"invalid-link-router.yml":     `8: links[0].b: "r3" is not a router`,
		"invalid-management-host.yml": `3: management.host: "198.51.100.1" is not a host address inside 203.0.113.0/24`,
		"invalid-missing-nsid.yml":    "10: sites[0].nsid: missing",
		"invalid-name.yml":            `6: routers[1].name: "R-2" must be 1-10 lower-case letters or digits, starting with a letter`,
		"invalid-no-sites.yml":        "1: sites: no site declared",
		"invalid-public-asn.yml":      "6: routers[1].asn: 3356 is not a private AS number (64512-65534, 4200000000-4294967294)",
		"invalid-unknown-field.yml":   `8: unknown field "weight"`,
		"invalid-vp-router.yml":       `12: vantage_points[0].router: "ams" is not a router`,
	}
	files, err := filepath.Glob("testdata/invalid-*.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(want) {
		t.Errorf("%d invalid-*.yml files, %d expected messages: keep them in step", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".yml"), func(t *testing.T) {
			_, err := LoadTopology(f)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if got, w := err.Error(), "invalid topology: "+f+":"+want[name]; got != w {
				t.Errorf("got  %s\nwant %s", got, w)
			}
		})
	}
}

func TestParseScenario(t *testing.T) {
	steps, err := ParseScenario("s.yaml", []byte("steps:\n  - {do: withdraw, target: ams}\n  - {sleep: 2s}\n  - {do: flap, target: fra, count: 2, period: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || steps[1].Sleep.Seconds() != 2 || steps[2].Count != 2 {
		t.Errorf("steps %+v", steps)
	}
	for in, want := range map[string]string{
		"steps:\n  - {do: explode, target: ams}\n": `scenario s.yaml: steps[0]: unknown action "explode"`,
		"steps:\n  - {do: withdraw}\n":             "scenario s.yaml: steps[0]: withdraw needs a target",
		"steps:\n  - {do: withdraw, site: ams}\n":  `scenario s.yaml:2: unknown field "site"`,
		"steps: []\n": "scenario s.yaml: no steps",
	} {
		_, err := ParseScenario("s.yaml", []byte(in))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: got %v, want %s…", in, err, want)
		}
	}
}

func TestMain(m *testing.M) {
	// The lab runs this test binary inside site namespaces as the HTTP
	// responder, and inside vantage points as an HTTP client.
	switch os.Getenv(helperEnv) {
	case "httpd":
		os.Exit(helperHTTPD(os.Args[1:]))
	case "httpget":
		os.Exit(helperHTTPGet(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestNewRefusesTestBinaryAsHTTPD: without Options.HTTPD, the lab would run
// its own executable as each site's HTTP responder — in a test, the test
// binary, which would run the whole suite there instead.
func TestNewRefusesTestBinaryAsHTTPD(t *testing.T) {
	if _, err := New(Options{StateDir: t.TempDir(), Prefix: "xt-"}); err == nil || !strings.Contains(err.Error(), "Go test binary") {
		t.Fatalf("New without HTTPD in a test binary: %v", err)
	}
}
