package inference

import (
	"math"
	"testing"
)

func nan() float64 { return math.NaN() }

// checkAssignments compares assignments field by field, confidence to 1e-9.
func checkAssignments(t *testing.T, got, want []Assignment) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d assignments, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		conf := math.Abs(g.Confidence-w.Confidence) < 1e-9
		g.Confidence, w.Confidence = 0, 0
		if g != w || !conf {
			t.Errorf("assignment %d:\n got %+v (confidence %v)\nwant %+v (confidence %v)", i, got[i], got[i].Confidence, want[i], want[i].Confidence)
		}
	}
}

// checkClusterCounts checks that every cluster's VantagePoints is the
// number of assignments naming it, and that every assigned cluster exists.
func checkClusterCounts(t *testing.T, r Result) {
	t.Helper()
	type key struct {
		target, addr, label string
		method              Method
	}
	n := make(map[key]int)
	for _, a := range r.Assignments {
		if a.Cluster != "" {
			n[key{a.Target, a.Address.String(), a.Cluster, a.Method}]++
		}
	}
	for _, c := range r.Clusters {
		k := key{c.Target, c.Address.String(), c.Label, c.Method}
		if c.VantagePoints != n[k] {
			t.Errorf("cluster %s of %s %v: VantagePoints %d, %d assignments name it", c.Label, c.Target, c.Address, c.VantagePoints, n[k])
		}
		delete(n, k)
	}
	for k, v := range n {
		t.Errorf("%d assignments name cluster %s of %s %s, which is not listed", v, k.label, k.target, k.addr)
	}
}
