package agent

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadConfigInvalid(t *testing.T) {
	t.Parallel()
	// One file per rule, with the exact message an operator sees.
	tests := map[string]string{
		"invalid-allow-host-bits.yml":     "line 6: allow[0]: 192.0.2.1/24 has host bits set (did you mean 192.0.2.0/24?)",
		"invalid-allow-missing.yml":       "allow: at least one prefix is required (the agent probes only addresses inside them)",
		"invalid-allow-prefix.yml":        `line 7: allow[1]: "192.0.2.0/33" is not a CIDR prefix`,
		"invalid-collector-missing.yml":   "collector is required",
		"invalid-collector-scheme.yml":    `line 1: collector "ftp://collector.example.org": want an http:// or https:// URL with a host and no query`,
		"invalid-concurrency.yml":         "line 7: concurrency 5000: want 1..1024",
		"invalid-dns-port.yml":            "line 7: cannot unmarshal !!int `70000` into uint16",
		"invalid-duration-unit.yml":       "line 7: cannot unmarshal !!int `2` into time.Duration",
		"invalid-empty.yml":               "config is empty",
		"invalid-location-incomplete.yml": "line 8: location needs both lat and lon",
		"invalid-location-lat.yml":        "line 8: location.lat 152.37 out of range -90..90",
		"invalid-location-lon.yml":        "line 9: location.lon -190 out of range -180..180",
		"invalid-max-rate.yml":            "line 7: max_rate -5: want more than 0 and at most 10000 transactions per second",
		"invalid-max-target-rate.yml":     "line 7: max_target_rate 20: want more than 0 and at most max_rate (10)",
		"invalid-name-missing.yml":        "name is required",
		"invalid-name.yml":                `line 3: name "vp ams 1": want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit`,
		"invalid-schedule-refresh.yml":    "line 7: schedule_refresh 100ms: want at least 1s",
		"invalid-spool-dir-missing.yml":   "spool_dir is required",
		"invalid-syntax.yml":              "yaml: line 1: did not find expected ',' or ']'",
		"invalid-timeout.yml":             "line 7: timeout 5m0s: want between 1ms and 1m0s",
		"invalid-token-both.yml":          "line 7: token and token_file are mutually exclusive",
		"invalid-token-characters.yml":    "line 2: token contains spaces or characters outside printable ASCII",
		"invalid-token-file-empty.yml":    "line 2: token_file testdata/empty.token is empty",
		"invalid-token-file-missing.yml":  "line 2: token_file: open testdata/no-such.token: no such file or directory",
		"invalid-token-missing.yml":       "one of token or token_file is required",
		"invalid-two-documents.yml":       "line 7: more than one YAML document",
		"invalid-unknown-field.yml":       "line 7: field colector not found in type agent.Config",
	}
	files, err := filepath.Glob("testdata/invalid-*.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("%d invalid-*.yml files but %d expectations", len(files), len(tests))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			want, ok := tests[filepath.Base(f)]
			if !ok {
				t.Fatalf("no expected message for %s", f)
			}
			_, err := LoadConfig(f)
			if err == nil {
				t.Fatal("LoadConfig succeeded")
			}
			if got, want := err.Error(), f+": "+want; got != want {
				t.Errorf("error\n got  %s\n want %s", got, want)
			}
		})
	}
}

func TestLoadConfigValid(t *testing.T) {
	t.Parallel()
	t.Run("minimal", func(t *testing.T) {
		t.Parallel()
		c, err := LoadConfig("testdata/valid-minimal.yml")
		if err != nil {
			t.Fatal(err)
		}
		if c.token != "s3cret" || c.Name != "vp-ams-1" || c.SpoolDir != "/var/lib/anyscope/spool" {
			t.Errorf("decoded %+v", c)
		}
		if c.Timeout != DefaultTimeout || c.ScheduleRefresh != DefaultScheduleRefresh || c.DNSPort != DefaultDNSPort ||
			c.MaxRate != DefaultMaxRate || c.Concurrency != DefaultConcurrency || c.Location != nil {
			t.Errorf("defaults not applied: %+v", c)
		}
	})
	t.Run("full", func(t *testing.T) {
		t.Parallel()
		c, err := LoadConfig("testdata/valid-full.yml")
		if err != nil {
			t.Fatal(err)
		}
		if c.Collector != "https://collector.example.org:8443/anyscope" || c.token != "tok-3f9a1c" ||
			c.SpoolDir != "testdata/spool" || c.TokenFile != "testdata/valid.token" {
			t.Errorf("decoded %+v (token %q)", c, c.token)
		}
		if c.Timeout != 1500*time.Millisecond || c.ScheduleRefresh != 5*time.Minute || c.MaxRate != 50 ||
			c.Concurrency != 4 || c.DNSPort != 5353 {
			t.Errorf("decoded %+v", c)
		}
		if l := c.Location; l == nil || *l.Lat != 52.37 || *l.Lon != 4.90 || l.Provider != "example-hosting" || l.Region != "eu-west" {
			t.Errorf("location %+v", c.Location)
		}
		for addr, want := range map[string]bool{
			"192.0.2.1":          true,
			"192.0.3.1":          false,
			"198.51.100.53":      true,
			"198.51.100.54":      false,
			"2001:db8::53":       true,
			"2001:db9::53":       false,
			"::ffff:192.0.2.200": true, // 4in6 is the IPv4 address
		} {
			if got := c.Allowed(netip.MustParseAddr(addr)); got != want {
				t.Errorf("Allowed(%s) = %v, want %v", addr, got, want)
			}
		}
	})
}
