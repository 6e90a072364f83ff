package identity_test

import (
	"fmt"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
)

func ExampleResolver() {
	r, err := identity.NewResolver(analysis.Target{
		Name: "i-root",
		// Netnod names its sites with its own codes: lnx is London.
		Rules: []analysis.Rule{{Pattern: `^s[0-9]+\.lnx$`, Site: "LON"}},
		Sites: []analysis.Site{{Code: "LON"}, {Code: "HEL"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, id := range []string{
		"s2.lnx",                // the operator's rule
		"ns1.fi-hel.k.ripe.net", // a built-in convention, declared site
		"mia01.l.root-servers.org",
		"ns1.example.com", // unresolved: reported, never dropped
	} {
		res := r.Resolve(id)
		fmt.Printf("%-26s site=%-3s rule=%-11s confidence=%.2f\n", id, res.Site, res.Rule, res.Confidence)
	}
	// Output:
	// s2.lnx                     site=LON rule=target[0]   confidence=1.00
	// ns1.fi-hel.k.ripe.net      site=HEL rule=cc-iata     confidence=0.90
	// mia01.l.root-servers.org   site=MIA rule=iata-number confidence=0.35
	// ns1.example.com            site=    rule=            confidence=0.00
}

func ExampleNewResolver_invalid() {
	_, err := identity.NewResolver(analysis.Target{
		Name:  "example",
		Rules: []analysis.Rule{{Pattern: `^(?P<city>[a-z]+)\.`, Site: "${site}"}},
	})
	fmt.Println(err)
	// Output:
	// invalid identity rule: rule 0 (pattern "^(?P<city>[a-z]+)\\."): site "${site}" refers to group "site", which the pattern does not define
}
