package targets

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidFull(t *testing.T) {
	ts, err := LoadFile("testdata/valid-full.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 {
		t.Fatalf("got %d targets, want 3", len(ts))
	}
	if c := ts[2]; c.HTTP == nil || c.HTTP.Scheme != "https" || c.HTTP.Host != "cdn.example.org" || c.HTTP.Method != "GET" ||
		c.HTTP.Headers[0] != "CF-Ray" || c.SessionLife != 10*time.Minute || len(c.Probes) != 4 {
		t.Errorf("target 2 = %+v, http %+v", c, c.HTTP)
	}
	a := ts[0]
	if a.Name != "example-dns" || a.Interval != 30*time.Second || a.NSIDQName != "." {
		t.Errorf("target 0 = %+v", a)
	}
	if want := []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")}; len(a.Addresses) != 2 || a.Addresses[0] != want[0] || a.Addresses[1] != want[1] {
		t.Errorf("addresses = %v, want %v", a.Addresses, want)
	}
	if len(a.Sites) != 2 || a.Sites[1].Code != "FRA" || !a.Sites[1].HasCoords || a.Sites[1].Latitude != 50.03 {
		t.Errorf("sites = %+v (codes are upper-cased)", a.Sites)
	}
	if len(a.Rules) != 1 || a.Rules[0].Site != "${site}" {
		t.Errorf("rules = %+v", a.Rules)
	}
	if b := ts[1]; b.Interval != time.Minute || b.NSIDQName != "example.org." {
		t.Errorf("target 1 = %+v", b)
	}
}

// Each invalid file is rejected with a message naming the file, the line and
// the field at fault.
func TestInvalid(t *testing.T) {
	cases := map[string]string{
		"invalid-unknown-field.yml":     "testdata/invalid-unknown-field.yml: line 6: field intervall not found in type targets.target",
		"invalid-address.yml":           `testdata/invalid-address.yml:5: targets[0].addresses[1]: "300.1.2.3" is not an IPv4 or IPv6 address`,
		"invalid-duplicate-name.yml":    `testdata/invalid-duplicate-name.yml:6: targets[1].name: target "example-dns" is declared twice (also targets[0])`,
		"invalid-probe.yml":             `testdata/invalid-probe.yml:4: targets[0].probes[1]: probe kind "carrier-pigeon" is not supported (known: dns, ping, trace, session, http)`,
		"invalid-http-missing.yml":      `testdata/invalid-http-missing.yml:4: targets[0].probes: the http probe needs an http: section`,
		"invalid-http-scheme.yml":       `testdata/invalid-http-scheme.yml:7: targets[0].http.scheme: "gopher": want http or https`,
		"invalid-http-body-pattern.yml": `testdata/invalid-http-body-pattern.yml:7: targets[0].http.body_pattern: want exactly one capture group (the site), got 0`,
		"invalid-interval.yml":          `testdata/invalid-interval.yml:5: targets[0].interval: 1s is out of range 5s..24h0m0s`,
		"invalid-interval-type.yml":     `testdata/invalid-interval-type.yml: line 5: cannot unmarshal !!str ` + "`often`" + ` into time.Duration`,
		"invalid-site-latitude.yml":     `testdata/invalid-site-latitude.yml:7: targets[0].sites[0].lat: 152.31 is out of range -90..90`,
		"invalid-rule-regexp.yml":       `testdata/invalid-rule-regexp.yml:7: targets[0].identity[0]: invalid identity rule: ` + "rule 0 (pattern \"^ns(\\\\d+\"): error parsing regexp: missing closing ): `^ns(\\d+`" + ``,
		"invalid-name.yml":              `testdata/invalid-name.yml:2: targets[0].name: "example dns" is not a valid name`,
		"invalid-empty.yml":             `testdata/invalid-empty.yml:1: targets: no targets declared`,
		"invalid-no-addresses.yml":      `testdata/invalid-no-addresses.yml:2: targets[0].addresses: no addresses`,
		"invalid-syntax.yml":            `testdata/invalid-syntax.yml: line 2: did not find expected ',' or ']'`,
	}
	files, _ := filepath.Glob("testdata/invalid-*.yml")
	if len(files) != len(cases) {
		t.Errorf("%d invalid fixtures but %d cases: every fixture needs its expected message", len(files), len(cases))
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := LoadFile(filepath.Join("testdata", name))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, want)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.yml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}
