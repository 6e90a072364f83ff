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
		"ns1.fi-xqz.k.ripe.net", // XQZ is no airport, metro or operator code
		"ns1.example.com",       // unresolved: reported, never dropped
	} {
		res := r.Resolve(id)
		place := "-"
		if res.Place != nil {
			place = res.Place.City + ", " + res.Place.Country
		}
		fmt.Printf("%-26s site=%-3s rule=%-11s confidence=%.2f place=%s\n", id, res.Site, res.Rule, res.Confidence, place)
	}
	// Output:
	// s2.lnx                     site=LON rule=target[0]   confidence=1.00 place=London, GB
	// ns1.fi-hel.k.ripe.net      site=HEL rule=cc-iata     confidence=0.90 place=Helsinki (Vantaa), FI
	// mia01.l.root-servers.org   site=MIA rule=iata-number confidence=0.35 place=Miami, US
	// ns1.fi-xqz.k.ripe.net      site=    rule=            confidence=0.00 place=-
	// ns1.example.com            site=    rule=            confidence=0.00 place=-
}

func ExampleDefault() {
	// Netnod's lnx is London in the catalog, though Smolensk North's IATA
	// code is LNX too.
	res := identity.Default("i-root").Resolve("s1.lnx")
	fmt.Println(res.Site, res.Rule, res.Place.City, res.Place.Country, res.Place.Kind)
	// Output:
	// LNX server-site London GB operator
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
