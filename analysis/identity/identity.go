// Package identity maps a server identity (CHAOS hostname.bind/id.server TXT,
// NSID) to the anycast site behind it, because server identity is not site
// identity: ns1.fi-hel.k.ripe.net and ns2.fi-hel.k.ripe.net are two servers of
// one site, HEL.
package identity

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ErrInvalidRule is wrapped by every error about a target's identity rules.
var ErrInvalidRule = errors.New("invalid identity rule")

// Confidence of an operator rule whose site is declared (or when the target
// declares no site list), and of one whose site is missing from the list.
const (
	ConfidenceRule           = 1.0
	ConfidenceRuleUndeclared = 0.9
	// ConfidenceDeclaredToken is given when no convention applies but a
	// label or hyphen-separated token of the identity equals a declared site.
	ConfidenceDeclaredToken = 0.75
	// UndeclaredFactor scales a built-in guess whose site is not in the
	// target's declared site list.
	UndeclaredFactor = 0.5
)

// RuleDeclaredToken names the fallback that finds a declared site code among
// the identity's labels.
const RuleDeclaredToken = "declared-site-token"

// maxBuiltinLen bounds the identities built-in rules look at: a DNS TXT string
// and an NSID payload are at most 255 bytes, so anything much longer is not a
// name a convention could describe.
const maxBuiltinLen = 1024

// siteCodeRE is the form of a site code (upper-cased after expansion). It
// matches the codes an operator may declare in a targets file.
var siteCodeRE = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,15}$`)

// Resolution is what Resolve learned from one identity string.
type Resolution struct {
	// Site is the upper-case site code, "" when no rule applied.
	Site string
	// Server is the normalised identity (trimmed, lower-case, no trailing
	// dot): it names the server, which is not the site.
	Server string
	// Rule names what matched: "target[i]" for the target's i-th rule, a
	// built-in rule's name, or RuleDeclaredToken. Empty when unresolved.
	Rule string
	// Confidence in 0..1 that Site is right; 0 when unresolved.
	Confidence float64
	// Place is where the catalog puts Site (airport, metro or operator
	// code); nil when Site is "" or a code the catalog does not know, as an
	// operator's own site codes may be. A site the target declares with
	// coordinates is better placed by those.
	Place *catalog.Place
}

// Resolver maps identity strings of one target to sites. It is immutable
// and safe for concurrent use.
type Resolver struct {
	target   string
	rules    []targetRule
	declared map[string]string // upper-case code → declared code (upper-cased)
}

type targetRule struct {
	name     string
	re       *regexp.Regexp
	template string
}

// NewResolver compiles t's rules. A rule must have a valid regular
// expression and a Site that is either a literal site code or a template
// (regexp.Expand syntax: ${name}, $name, ${1}, $$) referring only to groups
// the pattern defines.
func NewResolver(t analysis.Target) (*Resolver, error) {
	r := &Resolver{target: t.Name, declared: make(map[string]string, len(t.Sites))}
	for _, s := range t.Sites {
		code := asciiUpper(strings.TrimSpace(s.Code))
		if code != "" {
			r.declared[code] = code
		}
	}
	for i, rule := range t.Rules {
		tr, err := compileRule(i, rule)
		if err != nil {
			return nil, err
		}
		r.rules = append(r.rules, tr)
	}
	return r, nil
}

// Default returns a resolver for a target that declares neither rules nor
// sites: only the built-in conventions apply.
func Default(target string) *Resolver {
	return &Resolver{target: target, declared: map[string]string{}}
}

func compileRule(i int, rule analysis.Rule) (targetRule, error) {
	if rule.Pattern == "" {
		return targetRule{}, fmt.Errorf("%w: rule %d: empty pattern", ErrInvalidRule, i)
	}
	re, err := regexp.Compile(rule.Pattern)
	if err != nil {
		return targetRule{}, fmt.Errorf("%w: rule %d (pattern %q): %w", ErrInvalidRule, i, api.Clip(rule.Pattern), err)
	}
	refs, literal, err := parseTemplate(rule.Site)
	if err != nil {
		return targetRule{}, fmt.Errorf("%w: rule %d (pattern %q): site %q: %w", ErrInvalidRule, i, api.Clip(rule.Pattern), api.Clip(rule.Site), err)
	}
	for _, ref := range refs {
		if !hasGroup(re, ref) {
			return targetRule{}, fmt.Errorf("%w: rule %d (pattern %q): site %q refers to group %q, which the pattern does not define",
				ErrInvalidRule, i, api.Clip(rule.Pattern), api.Clip(rule.Site), ref)
		}
	}
	if len(refs) == 0 && !siteCodeRE.MatchString(asciiUpper(literal)) {
		return targetRule{}, fmt.Errorf("%w: rule %d (pattern %q): site %q is neither a site code (1-16 letters, digits or '-') nor a template such as ${site}",
			ErrInvalidRule, i, api.Clip(rule.Pattern), api.Clip(rule.Site))
	}
	return targetRule{name: fmt.Sprintf("target[%d]", i), re: re, template: rule.Site}, nil
}

// parseTemplate returns the group references of a regexp.Expand template and
// its literal text with $$ unescaped. A '$' that starts no reference is an
// error (write $$ for a dollar sign).
func parseTemplate(t string) (refs []string, literal string, err error) {
	var lit strings.Builder
	for {
		i := strings.IndexByte(t, '$')
		if i < 0 {
			lit.WriteString(t)
			return refs, lit.String(), nil
		}
		lit.WriteString(t[:i])
		t = t[i+1:]
		switch {
		case strings.HasPrefix(t, "$"):
			lit.WriteByte('$')
			t = t[1:]
		case strings.HasPrefix(t, "{"):
			end := strings.IndexByte(t, '}')
			if end < 0 {
				return nil, "", errors.New("unterminated ${")
			}
			name := t[1:end]
			if name == "" || !isName(name) {
				return nil, "", fmt.Errorf("bad group reference ${%s}", api.Clip(name))
			}
			refs = append(refs, name)
			t = t[end+1:]
		default:
			n := 0
			for n < len(t) && isNameByte(t[n]) {
				n++
			}
			if n == 0 {
				return nil, "", errors.New("'$' must start a group reference (write $$ for a dollar sign)")
			}
			refs = append(refs, t[:n])
			t = t[n:]
		}
	}
}

func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

func isNameByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// hasGroup reports whether ref names a group of re: a named group, or a
// group number in 1..NumSubexp.
func hasGroup(re *regexp.Regexp, ref string) bool {
	if n, err := strconv.Atoi(ref); err == nil {
		return n >= 1 && n <= re.NumSubexp()
	}
	return re.SubexpIndex(ref) >= 0
}

// Target returns the name of the target whose rules r holds.
func (r *Resolver) Target() string { return r.target }

// Resolve names the site behind identity. The target's rules are tried
// first, in order; then the built-in conventions by priority. A convention
// only guesses codes the catalog knows (airport, metro or operator codes) or
// the target declares; for any other it tries its next match, then the next
// convention. When the target declares sites, a convention's guess that is
// declared wins, then a declared code found among the identity's labels, and
// only then an undeclared guess, with its confidence scaled by
// UndeclaredFactor. The target's rules and site list are not limited to the
// catalog. An identity nothing explains resolves to Site ""; callers report
// those, they never drop them.
func (r *Resolver) Resolve(identity string) Resolution {
	res := r.resolve(identity)
	if res.Site != "" {
		if p, ok := catalog.Lookup(res.Site); ok {
			res.Place = &p
		}
	}
	return res
}

// known reports whether a built-in rule may guess site: the catalog or the
// target's site list knows it.
func (r *Resolver) known(site string) bool {
	if r.declared[site] != "" {
		return true
	}
	_, ok := catalog.Lookup(site)
	return ok
}

func (r *Resolver) resolve(identity string) Resolution {
	trimmed := strings.TrimSpace(identity)
	res := Resolution{Server: normalise(trimmed)}

	for _, tr := range r.rules {
		m := tr.re.FindStringSubmatchIndex(trimmed)
		if m == nil {
			continue
		}
		site := asciiUpper(strings.TrimSpace(string(tr.re.ExpandString(nil, tr.template, trimmed, m))))
		if !siteCodeRE.MatchString(site) {
			continue // e.g. an empty or hostile capture: not a site code
		}
		res.Site, res.Rule, res.Confidence = site, tr.name, ConfidenceRule
		if len(r.declared) > 0 && r.declared[site] == "" {
			res.Confidence = ConfidenceRuleUndeclared
		}
		return res
	}

	name := strings.TrimSuffix(trimmed, ".")
	if name == "" || len(name) > maxBuiltinLen {
		return res
	}
	var first *Resolution
	for i := range builtins {
		b := &builtins[i]
		site, ok := b.match(name, r.known)
		if !ok {
			continue
		}
		if len(r.declared) == 0 {
			res.Site, res.Rule, res.Confidence = site, b.name, b.confidence
			return res
		}
		if code := r.declared[site]; code != "" {
			res.Site, res.Rule, res.Confidence = code, b.name, b.confidence
			return res
		}
		if first == nil {
			first = &Resolution{Site: site, Server: res.Server, Rule: b.name, Confidence: b.confidence * UndeclaredFactor}
		}
	}
	if code := r.declaredToken(name); code != "" {
		res.Site, res.Rule, res.Confidence = code, RuleDeclaredToken, ConfidenceDeclaredToken
		return res
	}
	if first != nil {
		return *first
	}
	return res
}

// declaredToken returns the first declared site code equal (ignoring case)
// to a label of name or to a '-' or '_' separated token of a label. Stop
// words are skipped, so that a large declared list (a dictionary of airports)
// does not turn "com" into a site.
func (r *Resolver) declaredToken(name string) string {
	lookup := func(s string) string {
		s = asciiUpper(s)
		if stopWords[s] {
			return ""
		}
		return r.declared[s]
	}
	for _, label := range strings.Split(name, ".") {
		if code := lookup(label); code != "" {
			return code
		}
		for _, tok := range strings.FieldsFunc(label, func(c rune) bool { return c == '-' || c == '_' }) {
			if code := lookup(tok); code != "" {
				return code
			}
		}
	}
	return ""
}

// normalise turns a trimmed identity into a server id.
func normalise(s string) string {
	s = strings.TrimSuffix(s, ".")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ToLower(s)
}

// asciiUpper upper-cases the ASCII letters of s and nothing else, so that a
// look-alike (the long s, the Kelvin sign) never becomes a site code.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
