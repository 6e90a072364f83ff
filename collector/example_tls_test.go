package collector_test

import (
	"crypto/x509"
	"fmt"
	"net/url"

	"github.com/anyscope/anyscope/collector"
)

// A client certificate names an agent by a URI SAN anyscope://agent/<name>
// or a DNS SAN <name>; its common name does not count.
func ExampleCertNamesAgent() {
	u, _ := url.Parse(collector.AgentURIPrefix + "ams-vp1")
	byURI := &x509.Certificate{URIs: []*url.URL{u}}
	byDNS := &x509.Certificate{DNSNames: []string{"fra-vp2"}}
	fmt.Println(collector.CertNamesAgent(byURI, "ams-vp1"), collector.CertNamesAgent(byURI, "fra-vp2"))
	fmt.Println(collector.CertNamesAgent(byDNS, "fra-vp2"), collector.CertNamesAgent(byDNS, "ams-vp1"))
	// Output:
	// true false
	// true false
}
