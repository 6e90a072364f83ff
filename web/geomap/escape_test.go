package geomap

import (
	"encoding/xml"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		limit    int
		want     string
	}{
		{"plain", "ns1.fi-hel.k.ripe.net", 0, "ns1.fi-hel.k.ripe.net"},
		{"markup", hostile, 0, "&lt;img src=x onerror=alert(1)&gt;"},
		{"quotes and ampersand", `a"b'c&d`, 0, "a&#34;b&#39;c&amp;d"},
		{"cdata end", "]]>", 0, "]]&gt;"},
		{"controls", "a\x00b\x01c\x1b[0m\x7f", 0, "a\uFFFDb\uFFFDc\uFFFD[0m\uFFFD"},
		{"whitespace controls", "a\tb\nc\rd", 0, "a b c d"},
		{"C1 control", "a\u0085b", 0, "a\uFFFDb"},
		{"non-characters", "a\ufffe\uffffb", 0, "a\uFFFD\uFFFDb"},
		{"invalid UTF-8", "a\xff\xfe\xc3b", 0, "a\uFFFD\uFFFD\uFFFDb"},
		{"non-ASCII kept", "São Paulo · 東京", 0, "São Paulo · 東京"},
		{"cut", "abcdefgh", 5, "abcde…"},
		{"cut counts characters", "ééééé", 3, "ééé…"},
		{"cut after escaping nothing", "<<<<", 2, "&lt;&lt;…"},
		{"not cut at the limit", "abc", 3, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := escape(tc.in, tc.limit)
			if got != tc.want {
				t.Errorf("escape(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("escape(%q) = %q is not UTF-8", tc.in, got)
			}
			// The result is valid as text and in both kinds of attribute.
			for _, doc := range []string{"<x>" + got + "</x>", `<x a="` + got + `"/>`, `<x a='` + got + `'/>`} {
				if err := xml.Unmarshal([]byte(doc), new(struct{})); err != nil {
					t.Errorf("%q is not well-formed: %v", doc, err)
				}
			}
		})
	}
}

func TestSafeURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want bool
	}{
		{"/vp/vp-1", true},
		{"vp/vp-1?at=2025-01-01T00:00:00Z", true},
		{"../vp/x#dot", true},
		{"#vp-1", true},
		{"?vp=1", true},
		{"http://anyscope.example/vp/1", true},
		{"HTTPS://anyscope.example/vp/1", true},
		{"javascript:alert(1)", false},
		{"JavaScript:alert(1)", false},
		{" javascript:alert(1)", false},
		{"java\tscript:alert(1)", false},
		{"java\nscript:alert(1)", false},
		{"data:text/html,<script>alert(1)</script>", false},
		{"vbscript:msgbox(1)", false},
		{"//evil.example/x", false},
		{"/\\evil.example/x", false},
		{"https:///nohost", false},
		{"https:evil", false},
		{"mailto:a@example.org", false},
		{"/vp/a b", false},
		{"/vp/\x00", false},
		{"/vp/\xff", false},
		{"", false},
	} {
		t.Run(tc.url, func(t *testing.T) {
			if got := safeURL(tc.url); got != tc.want {
				t.Errorf("safeURL(%q) = %v, want %v", tc.url, got, tc.want)
			}
		})
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{hostile, "]]>", "a\x00\xff", "\ufffe", strings.Repeat("é", 30)} {
		f.Add(s, 0)
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, limit int) {
		got := escape(s, limit%64)
		if !utf8.ValidString(got) || strings.ContainsAny(got, "<>\"'") {
			t.Fatalf("escape(%q) = %q", s, got)
		}
		if err := xml.Unmarshal([]byte(`<x a="`+got+`">`+got+`</x>`), new(struct{})); err != nil {
			t.Fatalf("escape(%q) = %q: %v", s, got, err)
		}
	})
}
