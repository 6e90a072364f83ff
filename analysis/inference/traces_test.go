package inference

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// path parses a path end, nearest the destination last.
func path(addrs ...string) []netip.Addr {
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// trace is one AddTrace call; at is minutes after t0.
type trace struct {
	vp, target, addr string
	at               int
	end              []netip.Addr
}

// repeat returns n traces of vp to addr ending in end, a minute apart from
// minute at on.
func repeat(n int, vp, addr string, at int, end []netip.Addr) []trace {
	out := make([]trace, n)
	for i := range out {
		out[i] = trace{vp, "example.org", addr, at + i, end}
	}
	return out
}

// wantCluster is a cluster as tests spell it.
type wantCluster struct {
	addr, label string
	hops        []string
	vps         int
}

func TestTraces(t *testing.T) {
	t.Parallel()
	const v4, v6 = "192.0.2.53", "2001:db8::53"
	tests := []struct {
		name     string
		in       []trace
		want     []Assignment // Target example.org, Method traceroute
		clusters []wantCluster
	}{
		{
			// Two vantage points whose traces end in one router, a third
			// whose traces end in another: two sites.
			name: "two upstream routers",
			in: slices.Concat(
				repeat(3, "a", v4, 0, path("203.0.113.1", "198.51.100.1")),
				repeat(2, "b", v4, 0, path("203.0.113.2", "198.51.100.1")),
				repeat(2, "c", v4, 0, path("203.0.113.3", "198.51.100.2")),
			),
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 3, Confidence: 1},
				{VantagePoint: "b", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 2, Confidence: 1},
				{VantagePoint: "c", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.2", Observations: 2, Confidence: 1},
			},
			clusters: []wantCluster{
				{v4, "via 198.51.100.1", []string{"198.51.100.1"}, 2},
				{v4, "via 198.51.100.2", []string{"198.51.100.2"}, 1},
			},
		},
		{
			// a's traces alternate 3:2 between two routers with different
			// routers before them: the majority, confidence 3/5.
			name: "alternating last hops",
			in: []trace{
				{"a", "example.org", v4, 0, path("203.0.113.1", "198.51.100.1")},
				{"a", "example.org", v4, 1, path("203.0.113.2", "198.51.100.2")},
				{"a", "example.org", v4, 2, path("203.0.113.1", "198.51.100.1")},
				{"a", "example.org", v4, 3, path("203.0.113.2", "198.51.100.2")},
				{"a", "example.org", v4, 4, path("203.0.113.1", "198.51.100.1")},
				{"b", "example.org", v4, 0, path("203.0.113.2", "198.51.100.2")},
			},
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 5, Confidence: 0.6},
				{VantagePoint: "b", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.2", Observations: 1, Confidence: 1},
			},
			clusters: []wantCluster{
				{v4, "via 198.51.100.1", []string{"198.51.100.1"}, 1},
				{v4, "via 198.51.100.2", []string{"198.51.100.2"}, 1},
			},
		},
		{
			name: "tie goes to the hop seen last",
			in: []trace{
				{"a", "example.org", v4, 0, path("198.51.100.1")},
				{"a", "example.org", v4, 5, path("198.51.100.2")},
			},
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.2", Observations: 2, Confidence: 0.5},
			},
			clusters: []wantCluster{{v4, "via 198.51.100.2", []string{"198.51.100.2"}, 1}},
		},
		{
			// Two last hops behind one upstream router are one cluster,
			// named after the one with more traces; a vantage point
			// alternating between them is wholly in it.
			name: "shared upstream joins last hops",
			in: slices.Concat(
				repeat(3, "a", v4, 0, path("203.0.113.9", "198.51.100.1")),
				repeat(1, "b", v4, 0, path("203.0.113.9", "198.51.100.2")),
				[]trace{
					{"c", "example.org", v4, 0, path("203.0.113.9", "198.51.100.1")},
					{"c", "example.org", v4, 1, path("203.0.113.9", "198.51.100.2")},
				},
			),
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 3, Confidence: 1},
				{VantagePoint: "b", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 1, Confidence: 1},
				{VantagePoint: "c", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 2, Confidence: 1},
			},
			clusters: []wantCluster{{v4, "via 198.51.100.1", []string{"198.51.100.1", "198.51.100.2"}, 3}},
		},
		{
			// 198.51.100.2 has 203.0.113.9 before it in one trace of two
			// (the other shows no hop before it): not most of its traces.
			name: "upstream shared by half the traces does not join",
			in: slices.Concat(
				repeat(2, "a", v4, 0, path("203.0.113.9", "198.51.100.1")),
				repeat(1, "b", v4, 0, path("203.0.113.9", "198.51.100.2")),
				repeat(1, "b", v4, 1, path("198.51.100.2")),
			),
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 2, Confidence: 1},
				{VantagePoint: "b", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.2", Observations: 2, Confidence: 1},
			},
			clusters: []wantCluster{
				{v4, "via 198.51.100.1", []string{"198.51.100.1"}, 1},
				{v4, "via 198.51.100.2", []string{"198.51.100.2"}, 1},
			},
		},
		{
			// One vantage point, both families: two assignments, two
			// clusters; an IPv4-mapped destination is IPv4; a hop of the
			// other family before the last one is no upstream.
			name: "IPv4 and IPv6 kept apart",
			in: slices.Concat(
				repeat(2, "a", v4, 0, path("198.51.100.1")),
				repeat(1, "a", "::ffff:192.0.2.53", 2, path("::ffff:198.51.100.1")),
				repeat(2, "a", v6, 0, path("2001:db8:1::1")),
				repeat(1, "b", v6, 0, path("198.51.100.1", "2001:db8:1::1")),
			),
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 3, Confidence: 1},
				{VantagePoint: "a", Address: netip.MustParseAddr(v6), Cluster: "via 2001:db8:1::1", Observations: 2, Confidence: 1},
				{VantagePoint: "b", Address: netip.MustParseAddr(v6), Cluster: "via 2001:db8:1::1", Observations: 1, Confidence: 1},
			},
			clusters: []wantCluster{
				{v4, "via 198.51.100.1", []string{"198.51.100.1"}, 1},
				{v6, "via 2001:db8:1::1", []string{"2001:db8:1::1"}, 2},
			},
		},
		{
			// Beyond MaxLastHops distinct last hops, traces count as
			// "other": in the denominator, in no cluster.
			name: "last hops beyond the bound count as other",
			in: func() []trace {
				in := repeat(3, "a", v4, 0, path("198.51.100.1"))
				for i := range 10 {
					in = append(in, trace{"a", "example.org", v4, 10 + i, path(fmt.Sprintf("203.0.113.%d", 10+i))})
				}
				return in
			}(),
			want: []Assignment{
				{VantagePoint: "a", Address: netip.MustParseAddr(v4), Cluster: "via 198.51.100.1", Observations: 13, Confidence: 3.0 / 13},
			},
			clusters: []wantCluster{{v4, "via 198.51.100.1", []string{"198.51.100.1"}, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tr Traces
			for _, x := range tt.in {
				tr.AddTrace(x.vp, x.target, netip.MustParseAddr(x.addr), t0.Add(time.Duration(x.at)*time.Minute), x.end)
			}
			if tr.Dropped() != 0 {
				t.Errorf("Dropped() = %d, want 0", tr.Dropped())
			}
			res := tr.Result()
			for i := range tt.want {
				tt.want[i].Target, tt.want[i].Method = "example.org", MethodTraceroute
			}
			checkAssignments(t, res.Assignments, tt.want)
			checkClusterCounts(t, res)
			var got []wantCluster
			for _, c := range res.Clusters {
				var hops []string
				for _, h := range c.Hops {
					hops = append(hops, h.String())
				}
				if c.Method != MethodTraceroute || c.Target != "example.org" {
					t.Errorf("cluster %s: method %q target %q", c.Label, c.Method, c.Target)
				}
				got = append(got, wantCluster{c.Address.String(), c.Label, hops, c.VantagePoints})
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.clusters) {
				t.Errorf("clusters\n got %v\nwant %v", got, tt.clusters)
			}
		})
	}
}

// TestTracesTargets: one router in front of two targets makes a cluster of
// each; a target's clusters are its own.
func TestTracesTargets(t *testing.T) {
	t.Parallel()
	var tr Traces
	addr := netip.MustParseAddr("192.0.2.53")
	tr.AddTrace("a", "one.example.org", addr, t0, path("198.51.100.1"))
	tr.AddTrace("a", "two.example.org", addr, t0, path("198.51.100.1"))
	res := tr.Result()
	if len(res.Assignments) != 2 || len(res.Clusters) != 2 {
		t.Fatalf("%d assignments, %d clusters, want 2 and 2: %+v", len(res.Assignments), len(res.Clusters), res)
	}
	for i, target := range []string{"one.example.org", "two.example.org"} {
		if res.Assignments[i].Target != target || res.Clusters[i].Target != target || res.Clusters[i].VantagePoints != 1 {
			t.Errorf("%d: assignment %+v, cluster %+v, want target %s", i, res.Assignments[i], res.Clusters[i], target)
		}
	}
}

func TestTracesDropped(t *testing.T) {
	t.Parallel()
	addr := netip.MustParseAddr("192.0.2.53")
	tests := []struct {
		name string
		addr netip.Addr
		end  []netip.Addr
	}{
		{"no path end", addr, nil},
		{"invalid address", netip.Addr{}, path("198.51.100.1")},
		{"invalid last hop", addr, []netip.Addr{{}}},
		{"last hop is the destination", addr, path("198.51.100.1", "192.0.2.53")},
		{"last hop of the other family", addr, path("2001:db8:1::1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tr Traces
			tr.AddTrace("a", "example.org", tt.addr, t0, tt.end)
			if tr.Dropped() != 1 {
				t.Errorf("Dropped() = %d, want 1", tr.Dropped())
			}
			if res := tr.Result(); len(res.Assignments) != 0 || len(res.Clusters) != 0 {
				t.Errorf("result %+v, want empty", res)
			}
		})
	}
}

// TestTracesBounded: a vantage point whose traces end somewhere new every
// time, behind a new router every time, keeps at most MaxLastHops last
// hops and maxUpstreams upstreams each.
func TestTracesBounded(t *testing.T) {
	t.Parallel()
	var tr Traces
	addr := netip.MustParseAddr("2001:db8::53")
	for i := range 1000 {
		last := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 15: byte(i % 20)})
		up := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 2, 14: byte(i >> 8), 15: byte(i)})
		tr.AddTrace("a", "example.org", addr, t0.Add(time.Duration(i)*time.Second), []netip.Addr{up, last})
	}
	p := tr.pairs[pairKey{"a", "example.org", addr}]
	if len(p.hops) != MaxLastHops {
		t.Errorf("%d last hops kept, want %d", len(p.hops), MaxLastHops)
	}
	n := p.other
	for _, h := range p.hops {
		n += h.n
		if int(h.nUp) > maxUpstreams {
			t.Errorf("hop %v keeps %d upstreams, want at most %d", h.addr, h.nUp, maxUpstreams)
		}
	}
	if n != 1000 {
		t.Errorf("%d traces counted, want 1000", n)
	}
	res := tr.Result()
	if len(res.Assignments) != 1 || res.Assignments[0].Observations != 1000 || res.Assignments[0].Confidence != 0.05 {
		t.Errorf("assignments %+v, want one of 1000 observations, confidence 0.05", res.Assignments)
	}
}

func BenchmarkTraces12000(b *testing.B) {
	const (
		vps     = 12000
		traces  = 10 // per vantage point
		routers = 250
	)
	addr := netip.MustParseAddr("192.0.2.53")
	type in struct {
		vp  string
		at  time.Time
		end []netip.Addr
	}
	var ins []in
	for v := range vps {
		name := fmt.Sprintf("vp%d", v)
		for k := range traces {
			r := (v*7 + k/8) % routers // a path change now and then
			up := netip.AddrFrom4([4]byte{203, 0, 113, byte(r / 4)})
			last := netip.AddrFrom4([4]byte{198, 51, 100, byte(r)})
			ins = append(ins, in{name, t0.Add(time.Duration(k) * time.Minute), []netip.Addr{up, last}})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		var tr Traces
		for _, x := range ins {
			tr.AddTrace(x.vp, "example.org", addr, x.at, x.end)
		}
		if res := tr.Result(); len(res.Assignments) != vps {
			b.Fatalf("%d assignments", len(res.Assignments))
		}
	}
	b.ReportMetric(float64(len(ins)), "traces/op")
}
