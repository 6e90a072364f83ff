// Package inference finds catchments of anycast targets whose servers say
// nothing about themselves: no CHAOS TXT, no NSID, no HTTP header naming the
// site. Without an identity, which site served a vantage point cannot be
// read; it can only be inferred, from two kinds of evidence, and the labels
// this package gives to sites say so.
//
// # Traceroute: the last hop before the destination
//
// A Paris traceroute (constant flow identifier for every TTL) from a vantage
// point to an anycast address ends, just before the destination, in the
// upstream router of the site that answers: vantage points whose traces end
// in the same router reach the same site. Because the flow is constant, a
// per-flow load balancer on the path cannot make hops alternate within one
// trace, and the last hop is stable from trace to trace as long as routing
// is. Traces keeps, per vantage point, target and address, how often each
// last hop was seen (Observation.PathEnd's last entry) and, per last hop,
// which hop came before it. Last hops are then clustered, per target and
// address, by two rules kept deliberately simple:
//
//   - the same router address is the same cluster;
//   - two last hops are one cluster when, for most (more than half) of the
//     traces that end in each, the hop before them is the same router: one
//     site with two edge routers behind one upstream, or one router
//     answering from two interfaces.
//
// Each vantage point joins the cluster holding most of its traces. The
// cluster is labelled "via <address>" after its most common last hop: a
// router, not a site name. Two clusters may still be one site (a site with
// two upstreams that share nothing), and a router next to two sites would
// make one cluster of them; the label shows the evidence, not a city.
//
// # Latency: discs and iGreedy
//
// An RTT of r ms puts the answering server within r × 100 km of the vantage
// point (package geo). Latency keeps each vantage point's smallest RTT per
// target and address; geo.Enumerate (iGreedy) turns the discs into a lower
// bound on the sites and places each on a catalog city. A vantage point is
// then given the nearest enumerated site inside its disc, labelled "~<code>"
// (the tilde says "near", e.g. "~FRA"). Latency cannot tell apart the sites
// inside one disc, and BGP does not follow geography: a vantage point served
// by a farther site whose disc also holds a nearer one is assigned the
// nearer one. Confidence says how much the disc decided: 1 when it holds one
// enumerated site, 1/n when it holds n. A disc holding none leaves the
// vantage point unassigned, which is reported as such.
//
// # Both
//
// Infer merges the two per vantage point, target and address: the
// traceroute assignment wins (it sees the path), latency fills in for
// vantage points without traces. Memory is bounded per vantage point,
// target and address (MaxLastHops last hops and three hops before each;
// traces ending in further last hops are counted as "other"). Accumulators are not safe for concurrent
// use. Vantage point and target names are carried through as data.
package inference

import (
	"cmp"
	"net/netip"
	"slices"
)

// Method says from what an assignment was inferred.
type Method string

// Methods.
const (
	MethodTraceroute Method = "traceroute"
	MethodLatency    Method = "latency"
)

// Assignment is the inferred site (cluster) of one vantage point at one
// address of a target.
type Assignment struct {
	VantagePoint string
	Target       string
	Address      netip.Addr
	// Cluster labels the inferred site: "via <router>" (traceroute) or
	// "~<code>" (latency). "" when the evidence placed the vantage point
	// nowhere (latency: its disc holds no enumerated site).
	Cluster string
	// Observations counts the traces (traceroute) or RTTs (latency) the
	// assignment rests on.
	Observations int
	// Confidence in [0, 1]: traceroute, the share of the vantage point's
	// traces whose last hop is in Cluster; latency, 1 / the number of
	// enumerated sites inside its disc. 0 when unassigned.
	Confidence float64
	Method     Method
}

// Cluster is one inferred site of one address of a target.
type Cluster struct {
	Target  string
	Address netip.Addr
	Label   string
	Method  Method
	// VantagePoints counts the vantage points assigned to it.
	VantagePoints int
	// Hops (traceroute) are the last hops that make up the cluster, most
	// traces first; Hops[0] names it.
	Hops []netip.Addr
	// Latitude and Longitude (latency) place the enumerated site: on its
	// catalog place, or on the vantage point whose disc found it when no
	// place lies inside that disc.
	Latitude  float64
	Longitude float64
	HasCoords bool
	// Proven (latency) is true for sites that iGreedy's first round found:
	// their discs overlap no other kept disc, so geometry alone proves
	// them distinct. Later sites rest on placements.
	Proven bool
}

// Result is what an accumulator (or Infer) found.
type Result struct {
	// Assignments, by target, address and vantage point.
	Assignments []Assignment
	// Clusters with at least one vantage point, by target, address, method
	// and label.
	Clusters []Cluster
}

// pairKey names one vantage point at one address of a target.
type pairKey struct {
	vp, target string
	addr       netip.Addr
}

// addrKey names one address of a target.
type addrKey struct {
	target string
	addr   netip.Addr
}

func compareAddrKey(a, b addrKey) int {
	return cmp.Or(cmp.Compare(a.target, b.target), a.addr.Compare(b.addr))
}

// canonical strips what makes equal addresses compare unequal: the IPv4
// mapping of an IPv6 address and a zone.
func canonical(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// Infer merges what traces and latency found: per vantage point, target and
// address, the traceroute assignment wins and latency fills in for vantage
// points without one (assigned or not). Cluster counts are recomputed over
// the merged assignments and clusters left without vantage points dropped.
// Either accumulator may be nil.
func Infer(traces *Traces, latency *Latency) (Result, error) {
	var tr, lat Result
	if traces != nil {
		tr = traces.Result()
	}
	if latency != nil {
		var err error
		if lat, err = latency.Result(); err != nil {
			return Result{}, err
		}
	}
	return merge(tr, lat), nil
}

// merge lays lat under tr.
func merge(tr, lat Result) Result {
	have := make(map[pairKey]bool, len(tr.Assignments))
	out := Result{Assignments: slices.Clone(tr.Assignments)}
	for _, a := range tr.Assignments {
		have[pairKey{a.VantagePoint, a.Target, a.Address}] = true
	}
	for _, a := range lat.Assignments {
		if !have[pairKey{a.VantagePoint, a.Target, a.Address}] {
			out.Assignments = append(out.Assignments, a)
		}
	}
	sortAssignments(out.Assignments)

	type clusterKey struct {
		addrKey
		method Method
		label  string
	}
	n := make(map[clusterKey]int)
	for _, a := range out.Assignments {
		if a.Cluster != "" {
			n[clusterKey{addrKey{a.Target, a.Address}, a.Method, a.Cluster}]++
		}
	}
	for _, c := range slices.Concat(tr.Clusters, lat.Clusters) {
		c.VantagePoints = n[clusterKey{addrKey{c.Target, c.Address}, c.Method, c.Label}]
		if c.VantagePoints > 0 {
			out.Clusters = append(out.Clusters, c)
		}
	}
	sortClusters(out.Clusters)
	return out
}

func sortAssignments(as []Assignment) {
	slices.SortFunc(as, func(a, b Assignment) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), a.Address.Compare(b.Address), cmp.Compare(a.VantagePoint, b.VantagePoint), cmp.Compare(a.Method, b.Method))
	})
}

func sortClusters(cs []Cluster) {
	slices.SortFunc(cs, func(a, b Cluster) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), a.Address.Compare(b.Address), cmp.Compare(a.Method, b.Method), cmp.Compare(a.Label, b.Label))
	})
}
