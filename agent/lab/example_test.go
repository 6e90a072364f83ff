package lab_test

import (
	"fmt"

	"github.com/anyscope/anyscope/agent/lab"
)

func ExampleParseTopology() {
	topo, err := lab.ParseTopology("two-sites.yaml", []byte(`
anycast: [{prefix: 192.0.2.0/24, address: 192.0.2.53}]
management: {prefix: 203.0.113.0/24, host: 203.0.113.1}
routers: [{name: r1, asn: 64512}, {name: r2, asn: 64513}]
links: [{a: r1, b: r2}]
sites:
  - {name: ams, router: r1, asn: 65001, identity: ns1.nl-ams.lab.example, nsid: ams-1}
  - {name: fra, router: r2, asn: 65002, identity: ns1.de-fra.lab.example, nsid: fra-1, no_export: true}
vantage_points: [{name: vp1, router: r1}, {name: vp2, router: r2}]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range topo.Sites {
		fmt.Printf("%s behind %s announces %s (local: %v)\n", s.Name, s.Router, topo.Anycast[0].Prefix, s.NoExport)
	}
	_, err = lab.ParseTopology("bad.yaml", []byte("anycast: [{prefix: 10.0.0.0/8, address: 10.0.0.53}]\n"))
	fmt.Println(err)
	// Output:
	// ams behind r1 announces 192.0.2.0/24 (local: false)
	// fra behind r2 announces 192.0.2.0/24 (local: true)
	// invalid topology: bad.yaml:1: anycast[0].prefix: 10.0.0.0/8 is outside the documentation and benchmark ranges
}
