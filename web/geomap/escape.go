package geomap

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// Every string on the map (site codes and names, vantage point names, the
// title, link URLs) may come from the network: a DNS server chooses its own
// hostname.bind answer. appendEscaped makes any string safe in XML text and
// in double- or single-quoted attribute values alike.

// appendEscaped appends s to b escaped for XML text and attribute values:
// & < > " ' become references; tab, newline and carriage return become
// spaces (an attribute would normalise them anyway); characters XML 1.0
// forbids (other C0 controls, U+FFFE, U+FFFF), C1 controls, DEL and bytes
// that are not UTF-8 become U+FFFD. With limit > 0, at most limit runes are
// kept and "…" marks the cut.
func appendEscaped(b []byte, s string, limit int) []byte {
	if limit <= 0 || len(s) <= limit {
		plain := true
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c >= 0x7f || c == '&' || c == '<' || c == '>' || c == '"' || c == '\'' {
				plain = false
				break
			}
		}
		if plain {
			return append(b, s...)
		}
	}
	n := 0
	for i := 0; i < len(s); {
		if limit > 0 && n == limit {
			return append(b, "…"...)
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
		switch {
		case r == '&':
			b = append(b, "&amp;"...)
		case r == '<':
			b = append(b, "&lt;"...)
		case r == '>':
			b = append(b, "&gt;"...)
		case r == '"':
			b = append(b, "&#34;"...)
		case r == '\'':
			b = append(b, "&#39;"...)
		case r == '\t' || r == '\n' || r == '\r':
			b = append(b, ' ')
		case r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0xfffe || r == 0xffff:
			b = append(b, "\uFFFD"...)
		default: // includes utf8.RuneError for bytes that are not UTF-8
			b = utf8.AppendRune(b, r)
		}
	}
	return b
}

// escape is appendEscaped to a string.
func escape(s string, limit int) string { return string(appendEscaped(nil, s, limit)) }

// safeURL reports whether u may be a link on the map: a relative path
// ("vp/x", "/vp/x?y=1", "#x") or an absolute http or https URL with a host.
// Anything else is refused: other schemes (javascript:, data:, vbscript:),
// scheme-relative URLs ("//host", which leave the site), backslashes
// (browsers read "/\host" as "//host"), controls and whitespace, and what
// net/url cannot parse.
func safeURL(u string) bool {
	if u == "" || strings.ContainsAny(u, "\\") {
		return false
	}
	for _, r := range u {
		if r <= 0x20 || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	switch p.Scheme {
	case "":
		return p.Host == "" && p.Opaque == "" && !strings.HasPrefix(u, "//")
	case "http", "https":
		return p.Host != "" && p.Opaque == ""
	}
	return false
}
