package lab

import (
	"fmt"
	"path/filepath"
	"strings"
)

// nsdZone is the one zone every site serves, so that ordinary queries (the
// agent's NSID query, for instance) get an answer and not only a refusal.
const nsdZone = `$ORIGIN lab.example.
$TTL 300
@	IN SOA ns.lab.example. hostmaster.lab.example. 1 3600 600 86400 300
@	IN NS ns.lab.example.
ns	IN TXT "anyscope lab"
`

// nsdConf is the configuration of a site's NSD: it answers on the anycast
// addresses only, CHAOS hostname.bind / id.server from identity and NSID
// from nsid, runs in the foreground as root (no chroot) and keeps all its
// files in the site's state directory.
func nsdConf(p *plan, s Site, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# anyscope lab site %s\nserver:\n", s.Name)
	for _, a := range p.topo.Anycast {
		fmt.Fprintf(&b, "\tip-address: %s\n", a.Address)
	}
	fmt.Fprintf(&b, "\tidentity: %q\n\tnsid: \"ascii_%s\"\n", s.Identity, s.NSID)
	fmt.Fprintf(&b, "\tusername: \"\"\n\tchroot: \"\"\n\tdatabase: \"\"\n")
	fmt.Fprintf(&b, "\tzonesdir: %q\n", dir)
	fmt.Fprintf(&b, "\tpidfile: %q\n", filepath.Join(dir, s.Name+".nsd.pid"))
	fmt.Fprintf(&b, "\tlogfile: %q\n", filepath.Join(dir, s.Name+".nsd.log"))
	fmt.Fprintf(&b, "\tzonelistfile: %q\n", filepath.Join(dir, s.Name+".zone.list"))
	fmt.Fprintf(&b, "\txfrdfile: %q\n", filepath.Join(dir, s.Name+".xfrd.state"))
	fmt.Fprintf(&b, "\txfrdir: %q\n", dir)
	b.WriteString("\tserver-count: 1\n\thide-version: no\n\tverbosity: 1\n\tip-freebind: yes\n")
	b.WriteString("remote-control:\n\tcontrol-enable: no\n")
	fmt.Fprintf(&b, "zone:\n\tname: \"lab.example\"\n\tzonefile: %q\n", filepath.Join(dir, "lab.example.zone"))
	return b.String()
}
