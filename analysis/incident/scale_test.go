package incident

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// scenario generates many vantage points spread over sites, probing each
// address of one target at a fixed or Poisson interval (gaps drawn from an
// exponential distribution truncated to [interval/10, 4·interval], as the
// agent's scheduler does), with sites that stop answering during a window
// and, elsewhere, lone timeouts (never two in a row).
type scenario struct {
	vps, sites int
	addrs      []netip.Addr
	streams    int // 1–3: UDP hostname.bind, UDP NSID, TCP hostname.bind
	interval   time.Duration
	length     time.Duration
	poisson    bool
	noise      float64 // probability of a lone timeout
	seed       uint64
	down       []int // sites that stop answering
	from, to   time.Duration
	// broken vantage points (indexes) fail towards everything meanwhile.
	broken              []int
	brokenFrom, brokeTo time.Duration
}

// truth is what one of a scenario's incidents must be.
type truth struct {
	vps        []string
	start, end time.Time
}

// truths are a scenario's incidents: per address (black hole or outage) and
// per broken vantage point.
type truths struct {
	addr map[netip.Addr]*truth
	vp   map[string]*truth
}

func (s scenario) siteName(i int) string { return fmt.Sprintf("S%02d", i) }

func (s scenario) generate() ([]fed, truths) {
	rng := rand.New(rand.NewPCG(s.seed, 42))
	streams := []struct {
		tr api.Transport
		q  string
	}{{api.TransportUDP, api.QueryHostnameBind}, {api.TransportUDP, api.QueryNSID}, {api.TransportTCP, api.QueryHostnameBind}}[:s.streams]
	want := truths{addr: make(map[netip.Addr]*truth), vp: make(map[string]*truth)}
	var out []fed
	iv := float64(s.interval)
	for i := range s.vps {
		site := i % s.sites
		vp := fmt.Sprintf("vp-%05d", i)
		down := slices.Contains(s.down, site)
		broken := slices.Contains(s.broken, i)
		for _, addr := range s.addrs {
			at := time.Duration(rng.Float64() * iv)
			prevFailed, answered := false, false
			var first, recovered time.Time
			for at < s.length {
				when := t0.Add(at)
				hole := down && at >= s.from && at < s.to
				cut := broken && at >= s.brokenFrom && at < s.brokeTo
				// No noise near a failure: it would move its start.
				quiet := down && at >= s.from-5*s.interval && at < s.to+5*s.interval ||
					broken && at >= s.brokenFrom-5*s.interval && at < s.brokeTo+5*s.interval
				fail := hole || cut || !quiet && !prevFailed && rng.Float64() < s.noise
				if cut {
					tr := want.vp[vp]
					if tr == nil {
						tr = &truth{vps: []string{vp}, start: when}
						want.vp[vp] = tr
					}
					if when.Before(tr.start) {
						tr.start = when
					}
				}
				if broken && at >= s.brokeTo && !fail && !answered {
					// The vantage point's first answer after its cut
					// ends its incident, whichever address it was.
					answered = true
					if tr := want.vp[vp]; tr != nil && (tr.end.IsZero() || when.Before(tr.end)) {
						tr.end = when
					}
				}
				if hole && first.IsZero() {
					first = when
				}
				if down && !hole && at >= s.to && recovered.IsZero() {
					recovered = when
				}
				for k, st := range streams {
					o := analysis.Observation{
						VantagePoint: vp, Target: "k-root", Address: addr,
						Kind: api.KindDNS, Transport: st.tr, Query: st.q,
						At: when.Add(time.Duration(k) * 100 * time.Millisecond),
					}
					name := ""
					if fail {
						o.Failure = api.FailureTimeout
					} else {
						o.Identity, o.RTT, name = "ns1."+s.siteName(site)+".example", time.Millisecond, s.siteName(site)
					}
					out = append(out, fed{o: o, site: name})
				}
				prevFailed = fail
				gap := iv
				if s.poisson {
					gap = min(max(rng.ExpFloat64()*iv, iv/10), 4*iv)
				}
				at += time.Duration(gap)
			}
			if !first.IsZero() {
				tr := want.addr[addr]
				if tr == nil {
					tr = &truth{start: first}
					want.addr[addr] = tr
				}
				tr.vps = append(tr.vps, vp)
				if first.Before(tr.start) {
					tr.start = first
				}
				if recovered.After(tr.end) {
					tr.end = recovered
				}
			}
		}
	}
	slices.SortStableFunc(out, func(x, y fed) int { return x.o.At.Compare(y.o.At) })
	return out, want
}

// TestScale: thousands of vantage points over 10 sites, Poisson-scheduled,
// with lone timeouts everywhere; one site black-holed on both addresses,
// every site down, or a black hole while a few vantage points lose their
// uplinks. The incidents must be exactly the truth: no false alarm from the
// noise, every victim listed, start and end exact.
func TestScale(t *testing.T) {
	t.Parallel()
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")}
	s := time.Second
	tests := []struct {
		name string
		sc   scenario
		kind analysis.IncidentKind
	}{
		{"blackhole", scenario{vps: 5000, sites: 10, addrs: addrs, streams: 1, interval: 10 * s, length: 300 * s,
			poisson: true, noise: 0.01, seed: 1, down: []int{3}, from: 100 * s, to: 200 * s}, analysis.IncidentBlackhole},
		{"outage", scenario{vps: 1000, sites: 10, addrs: addrs, streams: 2, interval: 10 * s, length: 300 * s,
			poisson: true, noise: 0.01, seed: 2, down: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, from: 100 * s, to: 200 * s}, analysis.IncidentOutage},
		{"blackhole-and-broken-vantage-points", scenario{vps: 1000, sites: 10, addrs: addrs, streams: 3, interval: 10 * s, length: 400 * s,
			poisson: true, noise: 0.01, seed: 3, down: []int{7}, from: 100 * s, to: 200 * s,
			broken: []int{11, 42, 105, 500, 999}, brokenFrom: 150 * s, brokeTo: 300 * s}, analysis.IncidentBlackhole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			obs, tr := tt.sc.generate()
			d, err := New(Config{Interval: tt.sc.interval})
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range obs {
				d.Add(x.o, x.site)
			}
			var want []analysis.Incident
			for addr, w := range tr.addr {
				in := analysis.Incident{Kind: tt.kind, Target: "k-root", Address: addr, Start: w.start, End: w.end, VantagePoints: w.vps}
				if tt.kind == analysis.IncidentBlackhole {
					in.Site = tt.sc.siteName(tt.sc.down[0])
				}
				want = append(want, in)
			}
			for _, w := range tr.vp {
				want = append(want, analysis.Incident{Kind: analysis.IncidentVantagePoint, Target: "k-root", Start: w.start, End: w.end, VantagePoints: w.vps})
			}
			for i := range want {
				slices.Sort(want[i].VantagePoints)
			}
			slices.SortFunc(want, compareIncidents)
			got := d.Incidents()
			if len(got) != len(want) {
				t.Fatalf("%d incidents, want %d:%s\nwant:%s", len(got), len(want), describe(got), describe(want))
			}
			for i, w := range want {
				g := got[i]
				if g.Kind != w.Kind || g.Site != w.Site || g.Target != w.Target || g.Address != w.Address ||
					!g.Start.Equal(w.Start) || !g.End.Equal(w.End) || !slices.Equal(g.VantagePoints, w.VantagePoints) {
					t.Errorf("incident %d:%s\nwant:%s", i, describe(got[i:i+1]), describe(want[i:i+1]))
				}
			}
		})
	}
}

// BenchmarkDetector feeds 5,000 vantage points × 10 sites × 2 addresses × 3
// streams for 20 rounds (600,000 observations), one site black-holed for
// six rounds, and reports observations per second.
func BenchmarkDetector(b *testing.B) {
	sc := scenario{vps: 5000, sites: 10, streams: 3, interval: 10 * time.Second, length: 20 * 10 * time.Second,
		addrs: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")},
		noise: 0.01, seed: 7, down: []int{4}, from: 80 * time.Second, to: 140 * time.Second}
	obs, tr := sc.generate()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		d, err := New(Config{})
		if err != nil {
			b.Fatal(err)
		}
		for _, x := range obs {
			d.Add(x.o, x.site)
		}
		if got := d.Incidents(); len(got) != len(tr.addr) {
			b.Fatalf("%d incidents, want %d", len(got), len(tr.addr))
		}
	}
	b.ReportMetric(float64(len(obs))*float64(b.N)/b.Elapsed().Seconds(), "obs/s")
}
