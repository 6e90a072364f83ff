package lab

import (
	"fmt"
	"net/netip"
)

// Kinds of lab nodes; each node is one network namespace.
const (
	kindRouter = "router"
	kindSite   = "site"
	kindVP     = "vp"
)

// plan is a topology turned into namespaces, interfaces and addresses. It is
// computed, never stored: the same topology always gives the same plan.
type plan struct {
	topo   *Topology
	prefix string // namespace name prefix, e.g. "as-"
	links  []p2p  // router-router, then site uplinks, then VP uplinks
	kinds  map[string]string
	asn    map[string]uint32
	rid    map[string]netip.Addr // BGP router ids
	mgmt   map[string]netip.Addr // VP -> management address
	owner  map[netip.Addr]string // link address -> node holding it
}

// p2p is one veth pair. A is the router side of site and VP uplinks.
type p2p struct {
	A, B       string
	IfA, IfB   string
	A4, B4     netip.Prefix // address/30
	A6, B6     netip.Prefix // address/64
	LocalPref  map[string]uint32
	MED        map[string]uint32
	Prepend    map[string]int
	routerOnly bool // both ends are routers
}

func newPlan(t *Topology, prefix string) *plan {
	p := &plan{
		topo: t, prefix: prefix,
		kinds: map[string]string{}, asn: map[string]uint32{},
		rid: map[string]netip.Addr{}, mgmt: map[string]netip.Addr{},
		owner: map[netip.Addr]string{},
	}
	id := netip.MustParseAddr("198.19.255.0")
	for _, r := range t.Routers {
		p.kinds[r.Name], p.asn[r.Name] = kindRouter, r.ASN
		id = id.Next()
		p.rid[r.Name] = id
	}
	for _, s := range t.Sites {
		p.kinds[s.Name], p.asn[s.Name] = kindSite, s.ASN
		id = id.Next()
		p.rid[s.Name] = id
	}
	for _, v := range t.VantagePoints {
		p.kinds[v.Name] = kindVP
	}
	add := func(a, b string) *p2p {
		k := len(p.links)
		base4 := linkNet4.Addr().As4()
		n := uint32(base4[0])<<24 | uint32(base4[1])<<16 | uint32(k*4)
		a4 := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n) + 1})
		base6 := linkNet6.Addr().As16()
		base6[6], base6[7] = byte(k>>8), byte(k)
		net6 := netip.AddrFrom16(base6)
		a6 := net6.Next()
		l := p2p{
			A: a, B: b, IfA: "to-" + b, IfB: "to-" + a,
			A4: netip.PrefixFrom(a4, 30), B4: netip.PrefixFrom(a4.Next(), 30),
			A6: netip.PrefixFrom(a6, 64), B6: netip.PrefixFrom(a6.Next(), 64),
		}
		p.owner[l.A4.Addr()], p.owner[l.B4.Addr()] = a, b
		p.owner[l.A6.Addr()], p.owner[l.B6.Addr()] = a, b
		p.links = append(p.links, l)
		return &p.links[len(p.links)-1]
	}
	for _, l := range t.Links {
		pl := add(l.A, l.B)
		pl.LocalPref, pl.MED, pl.Prepend, pl.routerOnly = l.LocalPref, l.MED, l.Prepend, true
	}
	for _, s := range t.Sites {
		add(s.Router, s.Name)
	}
	for _, v := range t.VantagePoints {
		add(v.Router, v.Name)
	}
	a := t.Management.Prefix.Addr()
	for _, v := range t.VantagePoints {
		a = a.Next()
		if a == t.Management.Host {
			a = a.Next()
		}
		p.mgmt[v.Name] = a
	}
	return p
}

// ns is the namespace of a node.
func (p *plan) ns(node string) string { return p.prefix + node }

// mgmtNS is the namespace holding the management bridge.
func (p *plan) mgmtNS() string { return p.prefix + "mgmt" }

// hostLink is the management veth in the host's namespace.
func (p *plan) hostLink() string { return p.prefix + "mgmt" }

// namespaces lists every namespace of the lab, management last.
func (p *plan) namespaces() []string {
	var out []string
	for _, r := range p.topo.Routers {
		out = append(out, p.ns(r.Name))
	}
	for _, s := range p.topo.Sites {
		out = append(out, p.ns(s.Name))
	}
	for _, v := range p.topo.VantagePoints {
		out = append(out, p.ns(v.Name))
	}
	return append(out, p.mgmtNS())
}

// linksOf lists the links a node is an end of.
func (p *plan) linksOf(node string) []p2p {
	var out []p2p
	for _, l := range p.links {
		if l.A == node || l.B == node {
			out = append(out, l)
		}
	}
	return out
}

// uplink is the link of a site or VP to its router.
func (p *plan) uplink(node string) (p2p, error) {
	for _, l := range p.links {
		if l.B == node && !l.routerOnly {
			return l, nil
		}
	}
	return p2p{}, fmt.Errorf("%s has no uplink", node)
}

func (p *plan) site(name string) (Site, bool) {
	for _, s := range p.topo.Sites {
		if s.Name == name {
			return s, true
		}
	}
	return Site{}, false
}

func (p *plan) vp(name string) (VantagePoint, bool) {
	for _, v := range p.topo.VantagePoints {
		if v.Name == name {
			return v, true
		}
	}
	return VantagePoint{}, false
}

// from returns, for one link seen from node, the local interface, the peer
// and the local and remote addresses.
func (l p2p) from(node string) (ifName, peer string, local4, peer4, local6, peer6 netip.Prefix) {
	if l.A == node {
		return l.IfA, l.B, l.A4, l.B4, l.A6, l.B6
	}
	return l.IfB, l.A, l.B4, l.A4, l.B6, l.A6
}
