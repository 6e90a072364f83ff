package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
)

// run executes a command and returns its standard output. A failure names
// the command and carries what it printed.
func run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String() + " " + out.String())
		if stdin != "" {
			msg += "\ninput was:\n" + stdin
		}
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}

// ipBatch runs ip commands in one process, in namespace ns ("" for the host).
func ipBatch(ctx context.Context, ns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	_, err := run(ctx, strings.Join(lines, "\n")+"\n", "ip", args...)
	return err
}

// listNamespaces returns the names of network namespaces starting with prefix.
func listNamespaces(ctx context.Context, prefix string) ([]string, error) {
	out, err := run(ctx, "", "ip", "-j", "netns", "list")
	if err != nil {
		return nil, err
	}
	var list []struct {
		Name string `json:"name"`
	}
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return nil, fmt.Errorf("ip -j netns list: %w", err)
		}
	}
	var names []string
	for _, n := range list {
		if strings.HasPrefix(n.Name, prefix) {
			names = append(names, n.Name)
		}
	}
	return names, nil
}

// sysctls for every namespace, and for routers.
var (
	baseSysctls = []string{
		"net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.keep_addr_on_down=1",
		"net.ipv6.conf.default.keep_addr_on_down=1",
		"net.ipv6.conf.all.accept_ra=0",
		"net.ipv6.conf.default.accept_ra=0",
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
	}
	// Clean traceroutes: no ICMP rate limiting on lab routers, nor on sites
	// (they answer UDP probes with port unreachables).
	icmpSysctls = []string{
		"net.ipv4.icmp_ratelimit=0",
		"net.ipv4.icmp_msgs_per_sec=100000",
		"net.ipv6.icmp.ratelimit=0",
	}
	routerSysctls = []string{
		"net.ipv4.ip_forward=1",
		"net.ipv6.conf.all.forwarding=1",
	}
	// ECMP hashes the 5-tuple itself, as real routers do (policy 3 with
	// fields src, dst, proto, sport, dport). Policy 1 would use a hash the
	// packet already carries, and across veth pairs a packet keeps the one
	// its sending socket drew at random: one flow's path would change with
	// every socket, and Paris traceroute could not be checked.
	ecmpSysctls = []string{
		"net.ipv4.fib_multipath_hash_fields=0x37",
		"net.ipv4.fib_multipath_hash_policy=3",
		"net.ipv6.fib_multipath_hash_fields=0x37",
		"net.ipv6.fib_multipath_hash_policy=3",
	}
)

// buildNetwork creates the namespaces, veth pairs, addresses and static
// routes of the plan. Routes between routers come from BGP later.
func buildNetwork(ctx context.Context, p *plan) error {
	for _, ns := range p.namespaces() {
		if _, err := run(ctx, "", "ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	// Sysctls first: the defaults apply to interfaces created afterwards.
	err := parallel(p.namespaces(), func(ns string) error {
		keys := append([]string(nil), baseSysctls...)
		if ns == p.mgmtNS() {
			keys = append(keys, "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0", "net.ipv6.conf.all.disable_ipv6=1")
		} else if kind := p.kinds[strings.TrimPrefix(ns, p.prefix)]; kind == kindRouter {
			keys = append(keys, routerSysctls...)
			keys = append(keys, icmpSysctls...)
			if p.topo.ECMP {
				keys = append(keys, ecmpSysctls...)
			}
		} else if kind == kindSite {
			keys = append(keys, icmpSysctls...)
		}
		_, err := run(ctx, "", "ip", append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, keys...)...)
		return err
	})
	if err != nil {
		return err
	}

	// veth pairs, created inside the A namespace and moved to B: nothing
	// ever appears in the host's namespace.
	create := map[string][]string{}
	for _, l := range p.links {
		create[l.A] = append(create[l.A], fmt.Sprintf("link add %s type veth peer name %s netns %s", l.IfA, l.IfB, p.ns(l.B)))
	}
	// The management bridge; each VP gets a leg.
	mg := []string{"link add br0 type bridge", "link set br0 up", "link set lo up"}
	for _, v := range p.topo.VantagePoints {
		leg := "vp-" + v.Name
		mg = append(mg,
			fmt.Sprintf("link add %s type veth peer name mgmt0 netns %s", leg, p.ns(v.Name)),
			fmt.Sprintf("link set %s master br0 up", leg))
	}
	if err := ipBatch(ctx, p.mgmtNS(), mg); err != nil {
		return err
	}
	for node, lines := range create {
		if err := ipBatch(ctx, p.ns(node), lines); err != nil {
			return err
		}
	}
	if p.topo.Management.Host.IsValid() {
		host := p.hostLink()
		bits := p.topo.Management.Prefix.Bits()
		if err := ipBatch(ctx, "", []string{
			fmt.Sprintf("link add %s type veth peer name host netns %s", host, p.mgmtNS()),
			fmt.Sprintf("addr add %s/%d dev %s", p.topo.Management.Host, bits, host),
			fmt.Sprintf("link set %s up", host),
		}); err != nil {
			return err
		}
		if err := ipBatch(ctx, p.mgmtNS(), []string{"link set host master br0 up"}); err != nil {
			return err
		}
	}

	// Addresses, links up, static routes of sites and VPs.
	nodes := append(append(nodeNames(p.topo.Routers, func(r Router) string { return r.Name }),
		nodeNames(p.topo.Sites, func(s Site) string { return s.Name })...),
		nodeNames(p.topo.VantagePoints, func(v VantagePoint) string { return v.Name })...)
	return parallel(nodes, func(node string) error {
		return ipBatch(ctx, p.ns(node), nodeConfig(p, node))
	})
}

// nodeConfig is the ip batch giving a node its addresses and static routes.
func nodeConfig(p *plan, node string) []string {
	lines := []string{"link set lo up"}
	for _, l := range p.linksOf(node) {
		ifn, _, l4, _, l6, _ := l.from(node)
		lines = append(lines,
			fmt.Sprintf("addr replace %s dev %s", l4, ifn),
			fmt.Sprintf("addr replace %s dev %s nodad", l6, ifn),
			fmt.Sprintf("link set %s up", ifn))
	}
	switch p.kinds[node] {
	case kindSite:
		for _, a := range p.topo.Anycast {
			lines = append(lines, fmt.Sprintf("addr replace %s dev lo", hostPrefix(a.Address)))
		}
		lines = append(lines, defaultRoutes(p, node)...)
	case kindVP:
		lines = append(lines, defaultRoutes(p, node)...)
		lines = append(lines,
			fmt.Sprintf("addr replace %s/%d dev mgmt0", p.mgmt[node], p.topo.Management.Prefix.Bits()),
			"link set mgmt0 up")
	}
	return lines
}

// defaultRoutes send a site's or VP's traffic to its router: the measured
// network. The management network has only its connected prefix.
func defaultRoutes(p *plan, node string) []string {
	up, err := p.uplink(node)
	if err != nil {
		return nil
	}
	return []string{
		fmt.Sprintf("route replace default via %s dev %s", up.A4.Addr(), up.IfB),
		fmt.Sprintf("route replace default via %s dev %s", up.A6.Addr(), up.IfB),
	}
}

// parallel runs f for every item at once and returns the first error.
func parallel(items []string, f func(string) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(items))
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(it)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func nodeNames[T any](xs []T, name func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = name(x)
	}
	return out
}

// hostPrefix is the /32 or /128 of an address.
func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
