package report

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

func TestRTTHistogram(t *testing.T) {
	t.Parallel()
	ms := func(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }
	tests := []struct {
		name      string
		rtts      []time.Duration
		wantMed   time.Duration
		wantMin   time.Duration
		maxBucket int
	}{
		{"one", []time.Duration{ms(20)}, ms(20), ms(20), 1},
		{"lower-median-of-even", []time.Duration{ms(10), ms(20), ms(30), ms(40)}, ms(20), ms(10), 4},
		{"odd", []time.Duration{ms(40), ms(10), ms(30)}, ms(30), ms(10), 3},
		{"tenth-of-a-ms-below-100ms", []time.Duration{ms(12.31), ms(12.46), ms(12.48)}, ms(12.4), ms(12.31), 2},
		{"never-below-the-fastest", []time.Duration{ms(12.37), ms(12.38), ms(90)}, ms(12.37), ms(12.37), 2},
		{"ms-below-1s", []time.Duration{ms(250.7), ms(251.2), ms(900)}, ms(251), ms(250.7), 3},
		{"10ms-below-10s", []time.Duration{ms(1234), ms(1239), ms(5000)}, ms(1234), ms(1234), 2},
		{"slow-answers-clamped", []time.Duration{time.Hour, 3 * time.Hour, 24 * time.Hour}, maxRTT, maxRTT, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := &rttHistogram{counts: map[time.Duration]int{}}
			for _, d := range tt.rtts {
				h.add(d)
			}
			if got := h.median(); got != tt.wantMed {
				t.Errorf("median = %s, want %s", got, tt.wantMed)
			}
			if h.min != tt.wantMin || h.n != len(tt.rtts) {
				t.Errorf("min %s n %d, want %s %d", h.min, h.n, tt.wantMin, len(tt.rtts))
			}
			if len(h.counts) > tt.maxBucket {
				t.Errorf("%d buckets, want at most %d", len(h.counts), tt.maxBucket)
			}
		})
	}
}

// However many distinct RTTs arrive, a site holds a bounded histogram.
func TestRTTHistogramBounded(t *testing.T) {
	t.Parallel()
	h := &rttHistogram{counts: map[time.Duration]int{}}
	for d := time.Duration(1); d < 200*time.Second; d = d*1001/1000 + 1 {
		h.add(d)
	}
	if len(h.counts) > 3100 {
		t.Errorf("%d buckets after %d RTTs", len(h.counts), h.n)
	}
}

// A network that makes a rule name thousands of sites fills at most
// maxLatencySites histograms; the rest is counted, not kept.
func TestSiteRTTsBounded(t *testing.T) {
	t.Parallel()
	target := analysis.Target{Name: "t", Rules: []analysis.Rule{{Pattern: `^site-(?P<s>[a-z0-9]+)$`, Site: "${s}"}}}
	r, err := identity.NewResolver(target)
	if err != nil {
		t.Fatal(err)
	}
	s := newSiteRTTs(map[string]*identity.Resolver{"t": r})
	extra := 10
	for i := range maxLatencySites + extra {
		s.add(analysis.Observation{
			VantagePoint: "vp", Target: "t", Address: netip.MustParseAddr("192.0.2.1"), Kind: api.KindDNS,
			Identity: fmt.Sprintf("site-s%d", i), RTT: time.Millisecond,
		})
	}
	// Failures, answers without RTT and unknown targets count nowhere.
	s.add(analysis.Observation{Target: "t", Identity: "site-s1", Failure: api.FailureTimeout})
	s.add(analysis.Observation{Target: "t", Identity: "site-s1"})
	s.add(analysis.Observation{Target: "other", Identity: "site-s1", RTT: time.Millisecond})
	got, other := s.summary("t")
	if len(got) != maxLatencySites || other != extra {
		t.Errorf("%d sites kept, %d answers beyond, want %d and %d", len(got), other, maxLatencySites, extra)
	}
	for _, l := range got {
		if l.Observations != 1 {
			t.Errorf("site %s: %d answers", l.Site, l.Observations)
			break
		}
	}
}
