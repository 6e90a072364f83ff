package identity

import (
	"regexp"
	"sort"
	"strings"
)

// scope says what part of an identity a built-in rule's pattern is matched
// against.
type scope int

const (
	scopeName  scope = iota // the whole identity (trimmed, no trailing dot)
	scopeLabel              // each dot-separated label in turn, left to right
)

// builtin is one convention operators use to name their servers. The pattern's
// first submatch is the candidate site code. Rules are tried by ascending
// priority; a candidate that is a stop word, or that neither the catalog
// (analysis/catalog) nor the target's site list knows, is skipped and the
// rule's next match, then the next rule, is tried.
type builtin struct {
	name       string
	scope      scope
	priority   int
	confidence float64
	caseless   bool
	pattern    string
	re         *regexp.Regexp
}

// builtinTable is the data: conventions seen in the field (see DOMAIN.md).
// A caseless rule is matched against the identity with ASCII letters
// lower-cased (only ASCII: Unicode case folding would let look-alikes such
// as the Kelvin sign pass for letters). Every pattern is anchored and
// bounded, and Go's RE2 engine runs in linear time, so hostile input cannot
// make a rule slow.
var builtinTable = []builtin{
	// Cloudflare DNS id.server "LHR", or any bare three-letter code.
	{name: "bare-code", scope: scopeName, priority: 10, confidence: 0.8, caseless: true,
		pattern: `^([a-z]{3})$`},
	// Google Public DNS NSID "gpdns-ams".
	{name: "gpdns", scope: scopeName, priority: 20, confidence: 0.95, caseless: true,
		pattern: `^gpdns-([a-z]{3})(?:[-_.]|$)`},
	// Cloudflare CF-Ray header "<16 hex digits>-<IATA>".
	{name: "cf-ray", scope: scopeName, priority: 21, confidence: 0.95, caseless: true,
		pattern: `^[0-9a-f]{16}-([a-z]{3})$`},
	// Fastly X-Served-By "cache-fra19151-FRA".
	{name: "fastly", scope: scopeName, priority: 22, confidence: 0.9, caseless: true,
		pattern: `^cache-([a-z]{3})[0-9]+(?:-[a-z]{3})?$`},
	// M-root "M-NRT-JPNAP-1": service letter, IATA, exchange, number.
	{name: "letter-iata", scope: scopeName, priority: 30, confidence: 0.9, caseless: true,
		pattern: `^[a-z]-([a-z]{3})-[a-z0-9-]*[a-z0-9]$`},
	// K-root "ns1.fi-hel.k.ripe.net", L-root "aa01-in-bom.l.dns.icann.org":
	// a <country>-<IATA> pair inside a label.
	{name: "cc-iata", scope: scopeLabel, priority: 40, confidence: 0.9, caseless: true,
		pattern: `(?:^|[^a-z])[a-z]{2}-([a-z]{3})(?:[^a-z]|$)`},
	// F-root "DFW.cf.f.root-servers.org", E-root "c01.MCI.eroot": an
	// upper-case three-letter label.
	{name: "upper-label", scope: scopeLabel, priority: 50, confidence: 0.85,
		pattern: `^([A-Z]{3})$`},
	// Quad9 "res100.ams.rrdns.pch.net", Netnod "s1.chi": a server label
	// (letters and a number) followed by a three-letter site label.
	{name: "server-site", scope: scopeName, priority: 60, confidence: 0.7, caseless: true,
		pattern: `^[a-z]+[0-9]+[a-z]?\.([a-z]{3})(?:\.|$)`},
	// L-root "mia01.l.root-servers.org", F-root "pek2a.f.root-servers.org",
	// CloudFront "IAD89-C1": IATA, a server number and maybe a letter,
	// at the start of the first label.
	{name: "iata-number", scope: scopeName, priority: 70, confidence: 0.7, caseless: true,
		pattern: `^([a-z]{3})[0-9]{1,4}[a-z]?(?:[-.]|$)`},
	// Short NSIDs "ams-1", "lhr-02": IATA, a dash and a server number,
	// nothing else.
	{name: "iata-dash-number", scope: scopeName, priority: 75, confidence: 0.6, caseless: true,
		pattern: `^([a-z]{3})-[0-9]{1,4}$`},
}

// stopWords are three-letter labels common in host names that are not sites.
// Built-in rules never guess them; a target's rules or declared site list can
// still claim one.
var stopWords = map[string]bool{
	"COM": true, "NET": true, "ORG": true, "EDU": true, "GOV": true, "MIL": true,
	"INT": true, "BIZ": true, "WWW": true, "DNS": true, "WEB": true, "SRV": true,
	"FTP": true, "NTP": true, "APP": true, "API": true, "CDN": true, "VIP": true,
	"BGP": true, "LAN": true, "WAN": true, "DEV": true, "PRD": true, "STG": true,
	"TST": true, "POP": true, "NIC": true, "DOH": true, "DOT": true, "TXT": true,
	"SOA": true, "DMZ": true, "EXT": true, "LOC": true, "NSD": true,
	// Quad9's and PCH's resolver prefix (res100.ams.rrdns.pch.net), and
	// Resistencia's airport code: without this, an unknown site label after
	// it would let iata-number guess Argentina.
	"RES": true,
}

// builtins is builtinTable compiled and sorted by priority.
var builtins = compileBuiltins(builtinTable)

func compileBuiltins(table []builtin) []builtin {
	out := make([]builtin, len(table))
	copy(out, table)
	for i := range out {
		out[i].re = regexp.MustCompile(out[i].pattern)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].priority < out[j].priority })
	return out
}

// maxMatches bounds how many matches a rule looks at before giving up.
const maxMatches = 8

// match returns the rule's site for name, upper-cased: the first candidate
// that is not a stop word and that accept takes.
func (b *builtin) match(name string, accept func(string) bool) (string, bool) {
	if b.caseless {
		name = asciiLower(name)
	}
	switch b.scope {
	case scopeLabel:
		seen := 0
		for label := range strings.SplitSeq(name, ".") {
			if seen >= maxMatches*4 {
				break
			}
			seen++
			if site, ok := b.matchOne(label, accept); ok {
				return site, true
			}
		}
		return "", false
	default:
		return b.matchOne(name, accept)
	}
}

func (b *builtin) matchOne(s string, accept func(string) bool) (string, bool) {
	for _, m := range b.re.FindAllStringSubmatch(s, maxMatches) {
		site := asciiUpper(m[1])
		if !stopWords[site] && accept(site) {
			return site, true
		}
	}
	return "", false
}

// BuiltinRule describes one built-in rule, for documentation and reports.
type BuiltinRule struct {
	Name       string
	Pattern    string
	Priority   int
	Confidence float64
	// Caseless rules see the identity with ASCII letters lower-cased.
	Caseless bool
}

// BuiltinRules lists the built-in rules in the order they are tried.
func BuiltinRules() []BuiltinRule {
	out := make([]BuiltinRule, len(builtins))
	for i, b := range builtins {
		out[i] = BuiltinRule{Name: b.name, Pattern: b.pattern, Priority: b.priority, Confidence: b.confidence, Caseless: b.caseless}
	}
	return out
}

// asciiLower lower-cases the ASCII letters of s and nothing else.
func asciiLower(s string) string {
	i := 0
	for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if b[i] >= 'A' && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}
