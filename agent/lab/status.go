package lab

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status describes a running lab.
type Status struct {
	Topology string       `json:"topology"`
	Started  time.Time    `json:"started"`
	StateDir string       `json:"state_dir"`
	EventLog string       `json:"event_log"`
	Nodes    []NodeStatus `json:"nodes"`
	Sites    []SiteState  `json:"sites"`
}

// NodeStatus is one namespace: its processes and BGP sessions.
type NodeStatus struct {
	Node      string            `json:"node"`
	Kind      string            `json:"kind"`
	Namespace string            `json:"namespace"`
	Present   bool              `json:"present"`
	Processes []string          `json:"processes"` // name[pid]
	Sessions  map[string]string `json:"sessions,omitempty"`
}

// Status reports the lab's namespaces, daemons, BGP sessions and site
// states; ErrNotUp when it is not up.
func (l *Lab) Status(ctx context.Context) (*Status, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	st, p, err := l.loadState()
	if err != nil {
		return nil, err
	}
	nss, err := listNamespaces(ctx, l.prefix)
	if err != nil {
		return nil, err
	}
	s := &Status{Topology: st.TopologyName, Started: st.Started, StateDir: l.dir, EventLog: l.EventLog()}
	var names []string
	for _, k := range [][]string{
		nodeNames(p.topo.Routers, func(r Router) string { return r.Name }),
		nodeNames(p.topo.Sites, func(s Site) string { return s.Name }),
		nodeNames(p.topo.VantagePoints, func(v VantagePoint) string { return v.Name }),
	} {
		names = append(names, k...)
	}
	names = append(names, "mgmt")
	for _, n := range names {
		ns := p.ns(n)
		kind := p.kinds[n]
		if n == "mgmt" {
			kind, ns = "management", p.mgmtNS()
		}
		ne := NodeStatus{Node: n, Kind: kind, Namespace: ns, Present: slices.Contains(nss, ns), Processes: []string{}}
		if ne.Present {
			out, err := run(ctx, "", "ip", "netns", "pids", ns)
			if err != nil {
				return nil, err
			}
			for _, f := range strings.Fields(out) {
				pid, _ := strconv.Atoi(f)
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				ne.Processes = append(ne.Processes, fmt.Sprintf("%s[%d]", strings.ReplaceAll(strings.TrimSpace(string(comm)), " ", ""), pid))
			}
			if kind == kindRouter || kind == kindSite {
				if ne.Sessions, err = bgpSessions(ctx, l.birdSock(n)); err != nil {
					ne.Sessions = map[string]string{"bird": err.Error()}
				}
			}
		}
		s.Nodes = append(s.Nodes, ne)
	}
	for _, site := range p.topo.Sites {
		ss, err := l.siteState(ctx, p, site)
		if err != nil {
			return nil, err
		}
		s.Sites = append(s.Sites, ss)
	}
	return s, nil
}
