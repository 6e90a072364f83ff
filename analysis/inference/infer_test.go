package inference

import (
	"net/netip"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis/geo"
)

func TestInfer(t *testing.T) {
	t.Parallel()
	const target = "example.org"
	addr := netip.MustParseAddr("192.0.2.53")
	ms := time.Millisecond
	newLatency := func(t *testing.T) *Latency {
		t.Helper()
		l, err := NewLatency(geo.Options{Candidates: places(t, "AMS", "SIN")})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tests := []struct {
		name  string
		build func(t *testing.T) (*Traces, *Latency)
		want  []Assignment // Target, Address filled in
		// clusters lists the merged clusters' labels and vantage points.
		clusters map[string]int
	}{
		{
			// a has both: its trace wins. b has only an RTT: latency fills
			// it in. c's disc holds no site (unassigned, reported).
			name: "traceroute wins, latency fills in",
			build: func(t *testing.T) (*Traces, *Latency) {
				var tr Traces
				tr.AddTrace("a", target, addr, t0, path("198.51.100.1"))
				l := newLatency(t)
				l.AddRTT(vpAt(t, "a", "AMS"), target, addr, 2*ms)
				l.AddRTT(vpAt(t, "b", "SIN"), target, addr, 3*ms)
				return &tr, l
			},
			want: []Assignment{
				{VantagePoint: "a", Cluster: "via 198.51.100.1", Observations: 1, Confidence: 1, Method: MethodTraceroute},
				{VantagePoint: "b", Cluster: "~SIN", Observations: 1, Confidence: 1, Method: MethodLatency},
			},
			// ~AMS lost its only vantage point to the trace.
			clusters: map[string]int{"via 198.51.100.1": 1, "~SIN": 1},
		},
		{
			name: "unassigned by latency is reported",
			build: func(t *testing.T) (*Traces, *Latency) {
				l, err := NewLatency(geo.Options{Candidates: places(t, "AMS", "FRA"), MaxIterations: 1})
				if err != nil {
					t.Fatal(err)
				}
				l.AddRTT(vpAt(t, "a", "AMS"), target, addr, 2*ms)
				l.AddRTT(vpAt(t, "b", "FRA"), target, addr, 3*ms)
				return nil, l
			},
			want: []Assignment{
				{VantagePoint: "a", Cluster: "~AMS", Observations: 1, Confidence: 1, Method: MethodLatency},
				{VantagePoint: "b", Cluster: "", Observations: 1, Confidence: 0, Method: MethodLatency},
			},
			clusters: map[string]int{"~AMS": 1},
		},
		{
			name: "traces alone",
			build: func(t *testing.T) (*Traces, *Latency) {
				var tr Traces
				tr.AddTrace("a", target, addr, t0, path("198.51.100.1"))
				return &tr, nil
			},
			want:     []Assignment{{VantagePoint: "a", Cluster: "via 198.51.100.1", Observations: 1, Confidence: 1, Method: MethodTraceroute}},
			clusters: map[string]int{"via 198.51.100.1": 1},
		},
		{
			name:     "nothing",
			build:    func(t *testing.T) (*Traces, *Latency) { return nil, nil },
			clusters: map[string]int{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := Infer(tt.build(t))
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.want {
				tt.want[i].Target, tt.want[i].Address = target, addr
			}
			checkAssignments(t, res.Assignments, tt.want)
			checkClusterCounts(t, res)
			got := make(map[string]int)
			for _, c := range res.Clusters {
				got[c.Label] = c.VantagePoints
			}
			if len(got) != len(tt.clusters) {
				t.Errorf("clusters %v, want %v", got, tt.clusters)
			}
			for l, n := range tt.clusters {
				if got[l] != n {
					t.Errorf("clusters %v, want %v", got, tt.clusters)
					break
				}
			}
		})
	}
}
