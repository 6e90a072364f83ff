package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// Truth is where routing currently leads each vantage point: computed from
// the kernel forwarding tables of the vantage point and of every router on
// the way (what BGP installed), never by asking the service. Analysis
// results are checked against it.
type Truth struct {
	Time          time.Time    `json:"time"`
	VantagePoints []TruthEntry `json:"vantage_points"`
	Sites         []SiteState  `json:"sites"`
}

// TruthEntry is the catchment of one vantage point for one anycast address.
type TruthEntry struct {
	VantagePoint string `json:"vantage_point"`
	Address      string `json:"address"`
	// Sites reached: more than one when equal-cost paths lead to different
	// sites (per-flow load balancing); empty when there is no route.
	Sites []string `json:"sites"`
	// Paths lists every forwarding path, node by node, VP first, site last.
	Paths [][]string `json:"paths"`
	// Blackholed is true when a site reached is black-holed: its route is
	// announced but its service drops the traffic.
	Blackholed bool   `json:"blackholed"`
	Problem    string `json:"problem,omitempty"` // why no site is reached
}

// SiteState is what scenarios did to a site.
type SiteState struct {
	Site       string `json:"site"`
	Announced  bool   `json:"announced"`  // its anycast routes are announced
	Blackholed bool   `json:"blackholed"` // nftables drops DNS and HTTP to it
}

// Truth computes the ground truth of a running lab.
func (l *Lab) Truth(ctx context.Context) (*Truth, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	_, p, err := l.loadState()
	if err != nil {
		return nil, err
	}
	return truth(ctx, p, l)
}

func truth(ctx context.Context, p *plan, l *Lab) (*Truth, error) {
	tr := &Truth{Time: time.Now().UTC()}
	holes := map[string]bool{}
	for _, s := range p.topo.Sites {
		st, err := l.siteState(ctx, p, s)
		if err != nil {
			return nil, err
		}
		holes[s.Name] = st.Blackholed
		tr.Sites = append(tr.Sites, st)
	}
	tables := fibCache{}
	for _, v := range p.topo.VantagePoints {
		for _, a := range p.topo.Anycast {
			e := TruthEntry{VantagePoint: v.Name, Address: a.Address.String(), Sites: []string{}, Paths: [][]string{}}
			w := walker{ctx: ctx, p: p, fib: tables, dst: a.Address}
			if err := w.walk(v.Name, nil); err != nil {
				return nil, err
			}
			e.Paths = w.paths
			for _, path := range w.paths {
				site := path[len(path)-1]
				if !slices.Contains(e.Sites, site) {
					e.Sites = append(e.Sites, site)
				}
				e.Blackholed = e.Blackholed || holes[site]
			}
			sort.Strings(e.Sites)
			if len(e.Sites) == 0 {
				e.Problem = strings.Join(w.problems, "; ")
			}
			tr.VantagePoints = append(tr.VantagePoints, e)
		}
	}
	return tr, nil
}

// route is one entry of `ip -j route show`.
type route struct {
	Dst      string `json:"dst"`
	Type     string `json:"type"`
	Dev      string `json:"dev"`
	Gateway  string `json:"gateway"`
	Metric   int    `json:"metric"`
	Nexthops []struct {
		Dev     string `json:"dev"`
		Gateway string `json:"gateway"`
	} `json:"nexthops"`
	prefix netip.Prefix
}

// fibCache holds the main routing table of each namespace and family.
type fibCache map[string][]route

func (c fibCache) lookup(ctx context.Context, ns string, dst netip.Addr) (*route, error) {
	fam := "-4"
	if dst.Is6() {
		fam = "-6"
	}
	key := ns + fam
	routes, ok := c[key]
	if !ok {
		out, err := run(ctx, "", "ip", "-j", "-n", ns, fam, "route", "show", "table", "main")
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(out) != "" {
			if err := json.Unmarshal([]byte(out), &routes); err != nil {
				return nil, fmt.Errorf("ip -j -n %s %s route show: %w", ns, fam, err)
			}
		}
		for i := range routes {
			d := routes[i].Dst
			if d == "default" {
				d = "0.0.0.0/0"
				if dst.Is6() {
					d = "::/0"
				}
			}
			pfx, err := netip.ParsePrefix(d)
			if a, aerr := netip.ParseAddr(d); aerr == nil {
				pfx, err = hostPrefix(a), nil
			}
			if err != nil {
				return nil, fmt.Errorf("ip -n %s route: destination %q: %w", ns, routes[i].Dst, err)
			}
			routes[i].prefix = pfx
		}
		c[key] = routes
	}
	var best *route
	for i := range routes {
		r := &routes[i]
		if !r.prefix.Contains(dst) || (r.Type != "" && r.Type != "unicast") {
			continue
		}
		if best == nil || r.prefix.Bits() > best.prefix.Bits() ||
			(r.prefix.Bits() == best.prefix.Bits() && r.Metric < best.Metric) {
			best = r
		}
	}
	return best, nil
}

// walker follows next hops from a vantage point to the sites.
type walker struct {
	ctx      context.Context
	p        *plan
	fib      fibCache
	dst      netip.Addr
	paths    [][]string
	problems []string
}

func (w *walker) walk(node string, path []string) error {
	path = append(slices.Clone(path), node)
	if w.p.kinds[node] == kindSite {
		w.paths = append(w.paths, path)
		return nil
	}
	if slices.Contains(path[:len(path)-1], node) {
		w.problems = append(w.problems, "routing loop: "+strings.Join(path, " → "))
		return nil
	}
	r, err := w.fib.lookup(w.ctx, w.p.ns(node), w.dst)
	if err != nil {
		return err
	}
	if r == nil {
		w.problems = append(w.problems, "no route at "+node)
		return nil
	}
	devs := []string{r.Dev}
	if len(r.Nexthops) > 0 {
		devs = devs[:0]
		for _, nh := range r.Nexthops {
			devs = append(devs, nh.Dev)
		}
	}
	for _, dev := range devs {
		next, ok := strings.CutPrefix(dev, "to-")
		if _, known := w.p.kinds[next]; !ok || !known {
			w.problems = append(w.problems, fmt.Sprintf("route at %s leaves the lab's links (dev %q)", node, dev))
			continue
		}
		if err := w.walk(next, path); err != nil {
			return err
		}
	}
	return nil
}

// siteState reads a site's announcement and black-hole state from bird and
// nftables.
func (l *Lab) siteState(ctx context.Context, p *plan, s Site) (SiteState, error) {
	st := SiteState{Site: s.Name}
	for _, proto := range siteProtos(p) {
		up, err := protoUp(ctx, l.birdSock(s.Name), proto)
		if err != nil {
			return st, err
		}
		st.Announced = st.Announced || up
	}
	out, err := run(ctx, "", "ip", "netns", "exec", p.ns(s.Name), "nft", "list", "tables")
	if err != nil {
		return st, err
	}
	st.Blackholed = strings.Contains(out, "inet "+blackholeTable)
	return st, nil
}

// siteProtos are the bird protocols holding a site's anycast routes.
func siteProtos(p *plan) []string {
	var v4, v6 bool
	for _, a := range p.topo.Anycast {
		v4 = v4 || a.Address.Is4()
		v6 = v6 || a.Address.Is6()
	}
	var out []string
	if v4 {
		out = append(out, "anycast4")
	}
	if v6 {
		out = append(out, "anycast6")
	}
	return out
}
