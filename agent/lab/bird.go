package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// Timers short enough that sessions come up and fail over in seconds.
const bgpTimers = `	hold time 6;
	keepalive time 2;
	connect delay time 1;
	connect retry time 2;
	error wait time 1, 4;
`

// routerBird is the bird configuration of a router: one eBGP session per
// link and address family; it passes on every BGP route and its connected
// link networks, and installs BGP routes in the kernel (several next hops
// at once where paths tie, when ECMP is on).
func routerBird(p *plan, name, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# anyscope lab router %s (AS%d)\n", name, p.asn[name])
	fmt.Fprintf(&b, "log %q all;\nrouter id %s;\n\n", filepath.Join(dir, name+".bird.log"), p.rid[name])
	b.WriteString("protocol device { scan time 10; }\n")
	b.WriteString("protocol direct { ipv4; ipv6; interface \"to-*\"; }\n")
	merge := ""
	if p.topo.ECMP {
		merge = "\tmerge paths on;\n"
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, "protocol kernel kernel%s {\n\t%s { import none; export where source = RTS_BGP; };\n%s}\n", af[3:], af, merge)
	}
	var anycast4, anycast6 []string
	for _, a := range p.topo.Anycast {
		if a.Prefix.Addr().Is4() {
			anycast4 = append(anycast4, a.Prefix.String())
		} else {
			anycast6 = append(anycast6, a.Prefix.String())
		}
	}
	for _, l := range p.linksOf(name) {
		_, peer, l4, p4, l6, p6 := l.from(name)
		if p.kinds[peer] == kindVP {
			continue
		}
		for _, af := range []struct {
			name, proto  string
			local, neigh string
			anycast      []string
		}{
			{"ipv4", "n4_" + peer, l4.Addr().String(), p4.Addr().String(), anycast4},
			{"ipv6", "n6_" + peer, l6.Addr().String(), p6.Addr().String(), anycast6},
		} {
			fmt.Fprintf(&b, "\nprotocol bgp %s {\n\tlocal %s as %d;\n\tneighbor %s as %d;\n%s", af.proto, af.local, p.asn[name], af.neigh, p.asn[peer], bgpTimers)
			if p.kinds[peer] == kindSite {
				// A site may announce only the anycast prefixes.
				imp := "none"
				if len(af.anycast) > 0 {
					imp = fmt.Sprintf("where net ~ [ %s ]", strings.Join(af.anycast, ", "))
				}
				fmt.Fprintf(&b, "\t%s { import %s; export none; };\n}\n", af.name, imp)
				continue
			}
			imp := "accept;"
			if lp, ok := l.LocalPref[name]; ok {
				imp = fmt.Sprintf("bgp_local_pref = %d; accept;", lp)
			}
			exp := ""
			if med, ok := l.MED[name]; ok {
				exp += fmt.Sprintf(" bgp_med = %d;", med)
			}
			for range l.Prepend[name] {
				exp += fmt.Sprintf(" bgp_path.prepend(%d);", p.asn[name])
			}
			fmt.Fprintf(&b, "\t%s {\n\t\timport filter { %s };\n\t\texport filter { if source = RTS_BGP || source = RTS_DEVICE then {%s accept; } reject; };\n\t};\n}\n", af.name, imp, exp)
		}
	}
	return b.String()
}

// siteBird is the bird configuration of a site: static routes for the
// anycast prefixes (protocols anycast4 and anycast6: disabling them
// withdraws the announcement while the session stays up), announced to the
// upstream router, marked NO_EXPORT or prepended as the topology says.
func siteBird(p *plan, s Site, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# anyscope lab site %s (AS%d)\n", s.Name, s.ASN)
	fmt.Fprintf(&b, "log %q all;\nrouter id %s;\n\n", filepath.Join(dir, s.Name+".bird.log"), p.rid[s.Name])
	b.WriteString("protocol device { scan time 10; }\n")
	for _, af := range []struct {
		name, proto string
		v4          bool
	}{{"ipv4", "anycast4", true}, {"ipv6", "anycast6", false}} {
		var routes []string
		for _, a := range p.topo.Anycast {
			if a.Prefix.Addr().Is4() == af.v4 {
				routes = append(routes, fmt.Sprintf("\troute %s blackhole;\n", a.Prefix))
			}
		}
		if len(routes) > 0 {
			fmt.Fprintf(&b, "protocol static %s {\n\t%s;\n%s}\n", af.proto, af.name, strings.Join(routes, ""))
		}
	}
	b.WriteString("\nfilter announce {\n")
	if s.NoExport {
		b.WriteString("\tbgp_community.add((65535, 65281));\n")
	}
	for range s.Prepend {
		fmt.Fprintf(&b, "\tbgp_path.prepend(%d);\n", s.ASN)
	}
	b.WriteString("\taccept;\n}\n")
	up, _ := p.uplink(s.Name)
	for _, af := range []struct {
		name, proto  string
		local, neigh string
	}{
		{"ipv4", "up4", up.B4.Addr().String(), up.A4.Addr().String()},
		{"ipv6", "up6", up.B6.Addr().String(), up.A6.Addr().String()},
	} {
		fmt.Fprintf(&b, "\nprotocol bgp %s {\n\tlocal %s as %d;\n\tneighbor %s as %d;\n%s\t%s { import none; export filter announce; };\n}\n",
			af.proto, af.local, s.ASN, af.neigh, p.asn[up.A], bgpTimers, af.name)
	}
	return b.String()
}

// birdc runs one bird control command through a node's control socket.
// birdc exits 0 even when bird refuses a command; replies starting with an
// error code are turned into errors.
func birdc(ctx context.Context, sock string, args ...string) (string, error) {
	out, err := run(ctx, "", "birdc", append([]string{"-s", sock}, args...)...)
	if err != nil {
		return out, err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "syntax error") || strings.Contains(line, "Unable to connect") ||
			strings.HasPrefix(line, "8") || strings.HasPrefix(line, "9") {
			return out, fmt.Errorf("birdc -s %s %s: %s", sock, strings.Join(args, " "), strings.TrimSpace(out))
		}
	}
	return out, nil
}

// bgpSessions returns the state of every BGP protocol of one bird
// ("Established", "Active", ...), by protocol name.
func bgpSessions(ctx context.Context, sock string) (map[string]string, error) {
	out, err := birdc(ctx, sock, "show", "protocols")
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// name proto table state since info
		if len(f) >= 4 && f[1] == "BGP" {
			state := f[3]
			if len(f) >= 6 && state == "up" {
				state = f[len(f)-1]
			} else if len(f) >= 6 {
				state = f[3] + " " + f[len(f)-1]
			}
			states[f[0]] = state
		}
	}
	return states, nil
}

// protoUp reports whether a bird protocol is up (not disabled).
func protoUp(ctx context.Context, sock, proto string) (bool, error) {
	out, err := birdc(ctx, sock, "show", "protocols", proto)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == proto {
			return f[3] == "up", nil
		}
	}
	return false, fmt.Errorf("birdc -s %s show protocols %s: no such protocol in %q", sock, proto, strings.TrimSpace(out))
}
