package inference

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// MaxLastHops is how many distinct last hops Traces keeps per vantage point,
// target and address; traces ending in further ones are counted as "other"
// (they lower the confidence but join no cluster).
const MaxLastHops = 8

// maxUpstreams is how many distinct hops before each kept last hop are
// counted; traces with further ones count for none of them.
const maxUpstreams = 3

// viaPrefix starts the label of a traceroute cluster.
const viaPrefix = "via "

// Traces accumulates Paris traceroute path ends and clusters vantage points
// by the router their traces end in (see the package documentation). The
// zero value is ready to use.
type Traces struct {
	pairs   map[pairKey]*pathEnds
	dropped int
}

// pathEnds is what Traces remembers of one vantage point at one address.
type pathEnds struct {
	hops  []lastHop // at most MaxLastHops, in order first seen
	other int       // traces whose last hop is not in hops
}

// lastHop is one last hop before the destination and how often it was seen.
type lastHop struct {
	addr netip.Addr
	n    int
	last int64 // Unix ns of its latest trace
	// up counts the hops seen just before it; traces whose hop before was
	// absent, of another family or not kept count for none.
	up  [maxUpstreams]upstream
	nUp uint8
}

type upstream struct {
	addr netip.Addr
	n    int
}

// AddTrace counts one traceroute from vantage point vp to addr, a target's
// address, measured at at. pathEnd lists the last responding hops before
// the destination, nearest last (analysis.Observation.PathEnd). Feed only
// traces that reached the destination or stopped close to it: the last hop
// of a trace that died halfway names a router on the way, not the site's
// upstream.
//
// A trace without a path end, with an invalid address, or whose last hop
// is the destination itself or of the other IP family is dropped and
// counted (Dropped). IPv4-mapped IPv6 addresses count as IPv4.
func (t *Traces) AddTrace(vp, target string, addr netip.Addr, at time.Time, pathEnd []netip.Addr) {
	addr = canonical(addr)
	if !addr.IsValid() || len(pathEnd) == 0 {
		t.dropped++
		return
	}
	hop := canonical(pathEnd[len(pathEnd)-1])
	if !hop.IsValid() || hop.Is4() != addr.Is4() || hop == addr {
		t.dropped++
		return
	}
	var up netip.Addr
	if len(pathEnd) >= 2 {
		if u := canonical(pathEnd[len(pathEnd)-2]); u.IsValid() && u.Is4() == addr.Is4() && u != hop && u != addr {
			up = u
		}
	}

	if t.pairs == nil {
		t.pairs = make(map[pairKey]*pathEnds)
	}
	k := pairKey{vp, target, addr}
	p := t.pairs[k]
	if p == nil {
		p = &pathEnds{}
		t.pairs[k] = p
	}
	i := slices.IndexFunc(p.hops, func(h lastHop) bool { return h.addr == hop })
	if i < 0 {
		if len(p.hops) == MaxLastHops {
			p.other++
			return
		}
		p.hops = append(p.hops, lastHop{addr: hop})
		i = len(p.hops) - 1
	}
	h := &p.hops[i]
	h.n++
	h.last = max(h.last, at.UnixNano())
	if !up.IsValid() {
		return
	}
	for j := range h.nUp {
		if h.up[j].addr == up {
			h.up[j].n++
			return
		}
	}
	if int(h.nUp) < maxUpstreams {
		h.up[h.nUp] = upstream{up, 1}
		h.nUp++
	}
}

// Dropped counts the traces AddTrace could not use.
func (t *Traces) Dropped() int { return t.dropped }

// Result clusters the last hops of each target address and assigns every
// vantage point with a trace to the cluster holding most of its traces;
// ties go to the cluster of the hop it saw last, then to the smaller label.
func (t *Traces) Result() Result {
	groups := make(map[addrKey][]pairKey)
	for k := range t.pairs {
		a := addrKey{k.target, k.addr}
		groups[a] = append(groups[a], k)
	}
	keys := make([]addrKey, 0, len(groups))
	for a := range groups {
		keys = append(keys, a)
	}
	slices.SortFunc(keys, compareAddrKey)

	var out Result
	for _, a := range keys {
		vps := groups[a]
		slices.SortFunc(vps, func(x, y pairKey) int { return cmp.Compare(x.vp, y.vp) })
		t.cluster(a, vps, &out)
	}
	return out
}

// hopTotal is one last hop over every vantage point of an address.
type hopTotal struct {
	addr netip.Addr
	n    int
	up   map[netip.Addr]int
}

// cluster clusters one address's last hops and assigns its vantage points.
func (t *Traces) cluster(a addrKey, vps []pairKey, out *Result) {
	// Every last hop of the address, with its traces and hops before it.
	index := make(map[netip.Addr]int)
	var hops []hopTotal
	for _, k := range vps {
		for _, h := range t.pairs[k].hops {
			i, ok := index[h.addr]
			if !ok {
				i = len(hops)
				index[h.addr] = i
				hops = append(hops, hopTotal{addr: h.addr, up: make(map[netip.Addr]int)})
			}
			hops[i].n += h.n
			for _, u := range h.up[:h.nUp] {
				hops[i].up[u.addr] += u.n
			}
		}
	}

	// Same router, same cluster (index); same upstream for most traces of
	// each, same cluster (union).
	parent := make([]int, len(hops))
	for i := range parent {
		parent[i] = i
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	byUp := make(map[netip.Addr]int)
	for i, h := range hops {
		for u, n := range h.up {
			if 2*n <= h.n {
				continue
			}
			if j, ok := byUp[u]; ok {
				parent[find(i)] = find(j)
			} else {
				byUp[u] = i
			}
		}
	}

	// Members, most traces first; the first names the cluster.
	members := make(map[int][]int)
	for i := range hops {
		r := find(i)
		members[r] = append(members[r], i)
	}
	label := make(map[int]string, len(members))
	clusters := make(map[int]*Cluster, len(members))
	for r, ms := range members {
		slices.SortFunc(ms, func(x, y int) int {
			return cmp.Or(cmp.Compare(hops[y].n, hops[x].n), hops[x].addr.Compare(hops[y].addr))
		})
		c := &Cluster{Target: a.target, Address: a.addr, Label: viaPrefix + hops[ms[0]].addr.String(), Method: MethodTraceroute}
		for _, i := range ms {
			c.Hops = append(c.Hops, hops[i].addr)
		}
		label[r] = c.Label
		clusters[r] = c
	}

	// Each vantage point to the cluster holding most of its traces.
	type share struct {
		root, n int
		last    int64
	}
	for _, k := range vps {
		p := t.pairs[k]
		total := p.other
		var shares []share
		for _, h := range p.hops {
			total += h.n
			r := find(index[h.addr])
			j := slices.IndexFunc(shares, func(s share) bool { return s.root == r })
			if j < 0 {
				shares = append(shares, share{root: r})
				j = len(shares) - 1
			}
			shares[j].n += h.n
			shares[j].last = max(shares[j].last, h.last)
		}
		best := slices.MaxFunc(shares, func(x, y share) int {
			return cmp.Or(cmp.Compare(x.n, y.n), cmp.Compare(x.last, y.last), cmp.Compare(label[y.root], label[x.root]))
		})
		clusters[best.root].VantagePoints++
		out.Assignments = append(out.Assignments, Assignment{
			VantagePoint: k.vp, Target: k.target, Address: k.addr,
			Cluster:      label[best.root],
			Observations: total,
			Confidence:   float64(best.n) / float64(total),
			Method:       MethodTraceroute,
		})
	}
	var cs []Cluster
	for _, c := range clusters {
		if c.VantagePoints > 0 {
			cs = append(cs, *c)
		}
	}
	sortClusters(cs)
	out.Clusters = append(out.Clusters, cs...)
}
