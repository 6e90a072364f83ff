package catchment

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

var (
	t0    = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	addr1 = netip.MustParseAddr("192.0.2.53")
	addr2 = netip.MustParseAddr("2001:db8::53")
)

// Identities of the K-root convention: two servers at HEL, one at AMS and
// one at STO.
const (
	hel1 = "ns1.fi-hel.k.ripe.net"
	hel2 = "ns2.fi-hel.k.ripe.net"
	ams1 = "ns1.nl-ams.k.ripe.net"
	sto1 = "ns1.se-sto.k.ripe.net"
)

// ob is a successful UDP hostname.bind observation by vp-1 of addr1, at t0
// plus min minutes, that answered id.
func ob(min int, id string) analysis.Observation {
	return analysis.Observation{
		VantagePoint: "vp-1", Target: "k-root", Address: addr1,
		Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
		At: t0.Add(time.Duration(min) * time.Minute), Identity: id, RTT: 12 * time.Millisecond,
	}
}

func failed(min int, f api.Failure) analysis.Observation {
	o := ob(min, "")
	o.Failure, o.RTT = f, 0
	return o
}

func with(o analysis.Observation, change func(*analysis.Observation)) analysis.Observation {
	change(&o)
	return o
}

func accumulate(obs ...analysis.Observation) *Accumulator {
	a := New(nil, Config{})
	for _, o := range obs {
		a.Add(o)
	}
	return a
}

func TestSwitches(t *testing.T) {
	t.Parallel()
	// The cause rules have their own tests (cause_test.go); here only the
	// cause is checked, not how it was argued.
	sw := func(from, to string, atMin, lastMin, failures int, cause analysis.Cause) Switch {
		return Switch{
			VantagePoint: "vp-1", Target: "k-root", Address: addr1,
			Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			From: from, To: to, At: t0.Add(time.Duration(atMin) * time.Minute),
			LastFrom: t0.Add(time.Duration(lastMin) * time.Minute), Failures: failures, Cause: cause,
		}
	}
	tests := []struct {
		name string
		obs  []analysis.Observation
		want []Switch
	}{
		{"stable", []analysis.Observation{ob(0, hel1), ob(1, hel1), ob(2, hel1), ob(3, hel1)}, []Switch{}},
		{"site-change", []analysis.Observation{ob(0, hel1), ob(1, hel1), ob(2, hel1), ob(3, ams1), ob(4, ams1)},
			[]Switch{sw("HEL", "AMS", 3, 2, 0, analysis.CauseRouting)}},
		{"server-change-within-site", []analysis.Observation{ob(0, hel1), ob(1, hel2), ob(2, hel1), ob(3, hel2)}, []Switch{}},
		{"failures-between-sites", []analysis.Observation{
			ob(0, hel1), ob(1, hel1), failed(2, api.FailureTimeout), failed(3, api.FailureConnectionRefused), ob(4, ams1)},
			[]Switch{sw("HEL", "AMS", 4, 1, 2, analysis.CauseUnknown)}},
		{"failures-within-site", []analysis.Observation{ob(0, hel1), failed(1, api.FailureTimeout), ob(2, hel2)}, []Switch{}},
		{"unresolved-between-sites", []analysis.Observation{ob(0, hel1), ob(1, "ns1.example.com"), ob(2, ams1)},
			[]Switch{sw("HEL", "AMS", 2, 0, 0, analysis.CauseUnknown)}},
		{"flapping", []analysis.Observation{ob(0, hel1), ob(1, ams1), ob(2, hel2), ob(3, ams1)},
			[]Switch{sw("HEL", "AMS", 1, 0, 0, analysis.CauseLoadBalancing), sw("AMS", "HEL", 2, 1, 0, analysis.CauseLoadBalancing),
				sw("HEL", "AMS", 3, 2, 0, analysis.CauseLoadBalancing)}},
		{"starts-with-failures", []analysis.Observation{failed(0, api.FailureTimeout), ob(1, hel1), ob(2, hel1)}, []Switch{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := accumulate(tt.obs...).Switches()
			for i := range got {
				got[i].FromCatchment, got[i].Moved, got[i].Evidence = 0, 0, ""
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Switches() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestSwitchesInterleaved: streams of different vantage points, addresses or
// transports, fed interleaved, never switch into each other.
func TestSwitchesInterleaved(t *testing.T) {
	t.Parallel()
	var obs []analysis.Observation
	for i := 0; i < 5; i++ {
		obs = append(obs,
			ob(2*i, hel1),
			with(ob(2*i, ams1), func(o *analysis.Observation) { o.VantagePoint = "vp-2" }),
			with(ob(2*i, sto1), func(o *analysis.Observation) { o.Address = addr2 }),
			with(ob(2*i, ams1), func(o *analysis.Observation) { o.Transport = api.TransportTCP; o.At = o.At.Add(time.Minute) }),
		)
	}
	a := accumulate(obs...)
	if got := a.Switches(); len(got) != 0 {
		t.Errorf("Switches() = %+v, want none", got)
	}
	var sites []string
	for _, c := range a.Catchments() {
		sites = append(sites, fmt.Sprintf("%s %s %s %d %.2f", c.VantagePoint, c.Address, c.Site, c.Observations, c.Confidence))
	}
	want := []string{
		"vp-1 192.0.2.53 AMS 10 0.50", // HEL over UDP, AMS over TCP: a tie, AMS seen last
		"vp-1 2001:db8::53 STO 5 1.00",
		"vp-2 192.0.2.53 AMS 5 1.00",
	}
	if !reflect.DeepEqual(sites, want) {
		t.Errorf("catchments:\n got %q\nwant %q", sites, want)
	}
}

func TestCatchmentConfidence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		obs        []analysis.Observation
		site       string
		n          int
		confidence float64
		sites      []SiteCount
	}{
		{"stable-two-servers", []analysis.Observation{ob(0, hel1), ob(1, hel2), ob(2, hel1), ob(3, hel2)}, "HEL", 4, 1,
			[]SiteCount{{"HEL", 4, t0.Add(3 * time.Minute)}}},
		{"three-to-one", []analysis.Observation{ob(0, hel1), ob(1, ams1), ob(2, hel1), ob(3, hel1)}, "HEL", 4, 0.75,
			[]SiteCount{{"HEL", 3, t0.Add(3 * time.Minute)}, {"AMS", 1, t0.Add(1 * time.Minute)}}},
		{"tie-goes-to-latest", []analysis.Observation{ob(0, hel1), ob(1, hel1), ob(2, ams1), ob(3, ams1)}, "AMS", 4, 0.5,
			[]SiteCount{{"AMS", 2, t0.Add(3 * time.Minute)}, {"HEL", 2, t0.Add(1 * time.Minute)}}},
		{"three-sites", []analysis.Observation{ob(0, hel1), ob(1, ams1), ob(2, sto1), ob(3, sto1), ob(4, hel2)}, "HEL", 5, 0.4,
			[]SiteCount{{"HEL", 2, t0.Add(4 * time.Minute)}, {"STO", 2, t0.Add(3 * time.Minute)}, {"AMS", 1, t0.Add(1 * time.Minute)}}},
		{"failures-and-unresolved-do-not-count", []analysis.Observation{
			ob(0, hel1), failed(1, api.FailureTimeout), ob(2, "ns1.example.com"), ob(3, "")}, "HEL", 1, 1,
			[]SiteCount{{"HEL", 1, t0}}},
		{"nothing-resolved", []analysis.Observation{failed(0, api.FailureTimeout), ob(1, "ns1.example.com")}, "", 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cs := accumulate(tt.obs...).Catchments()
			if len(cs) != 1 {
				t.Fatalf("got %d catchments, want 1", len(cs))
			}
			c := cs[0]
			if c.Site != tt.site || c.Observations != tt.n || c.Confidence != tt.confidence {
				t.Errorf("catchment = %s %d %v, want %s %d %v", c.Site, c.Observations, c.Confidence, tt.site, tt.n, tt.confidence)
			}
			if !reflect.DeepEqual(c.Sites, tt.sites) {
				t.Errorf("Sites = %+v, want %+v", c.Sites, tt.sites)
			}
			if len(c.Streams) != 1 || c.Streams[0].Site != tt.site || c.Streams[0].Confidence != tt.confidence {
				t.Errorf("Streams = %+v", c.Streams)
			}
		})
	}
}

func TestCatchmentCounts(t *testing.T) {
	t.Parallel()
	a := accumulate(
		ob(0, hel1), failed(1, api.FailureTimeout), ob(2, "ns1.example.com"), ob(3, "NS1.EXAMPLE.COM."),
		failed(4, api.FailureTimeout), failed(5, api.FailureDNSRefused), ob(6, "<b>x</b>"), ob(7, ams1),
		with(ob(8, hel1), func(o *analysis.Observation) { o.Transport = api.TransportTCP }),
	)
	c := a.Catchments()[0]
	if c.Unresolved != 3 || c.Failures != 3 || c.Observations != 3 {
		t.Errorf("catchment counts: unresolved %d failures %d observations %d, want 3 3 3", c.Unresolved, c.Failures, c.Observations)
	}
	wantStreams := []StreamCatchment{
		{Kind: api.KindDNS, Transport: api.TransportTCP, Query: api.QueryHostnameBind, Site: "HEL", Observations: 1, Confidence: 1},
		{Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind, Site: "AMS", Observations: 2, Confidence: 0.5,
			Unresolved: 3, Failures: 3, Switches: 1},
	}
	if !reflect.DeepEqual(c.Streams, wantStreams) {
		t.Errorf("Streams =\n%+v\nwant\n%+v", c.Streams, wantStreams)
	}
	ts := a.Targets()
	want := []TargetSummary{{
		Target: "k-root", Observations: 9, Resolved: 3,
		Unresolved: []Unresolved{{"k-root", "ns1.example.com", 2}, {"k-root", "<b>x</b>", 1}},
		Failures:   map[api.Failure]int{api.FailureTimeout: 2, api.FailureDNSRefused: 1},
	}}
	if !reflect.DeepEqual(ts, want) {
		t.Errorf("Targets() =\n%+v\nwant\n%+v", ts, want)
	}
}

func TestDisagreements(t *testing.T) {
	t.Parallel()
	nsid := func(o analysis.Observation) analysis.Observation {
		o.Query = api.QueryNSID
		o.At = o.At.Add(2 * time.Second)
		return o
	}
	tcp := func(o analysis.Observation) analysis.Observation {
		o.Transport = api.TransportTCP
		o.At = o.At.Add(4 * time.Second)
		return o
	}
	a := accumulate(
		// round 0: all agree
		ob(0, hel1), nsid(ob(0, hel2)), tcp(ob(0, hel1)),
		// round 1: NSID reaches AMS
		ob(1, hel1), nsid(ob(1, ams1)), tcp(ob(1, hel1)),
		// round 2: NSID reaches AMS again, TCP fails
		ob(2, hel1), nsid(ob(2, ams1)), tcp(failed(2, api.FailureTimeout)),
		// round 3: everyone at AMS
		ob(3, ams1), nsid(ob(3, ams1)), tcp(ob(3, ams1)),
	)
	want := []Disagreement{
		{VantagePoint: "vp-1", Target: "k-root", Address: addr1,
			A:      Answer{api.KindDNS, api.TransportUDP, api.QueryHostnameBind, "HEL"},
			B:      Answer{api.KindDNS, api.TransportUDP, api.QueryNSID, "AMS"},
			Rounds: 2, First: t0.Add(time.Minute), Last: t0.Add(2*time.Minute + 2*time.Second)},
		{VantagePoint: "vp-1", Target: "k-root", Address: addr1,
			A:      Answer{api.KindDNS, api.TransportTCP, api.QueryHostnameBind, "HEL"},
			B:      Answer{api.KindDNS, api.TransportUDP, api.QueryNSID, "AMS"},
			Rounds: 1, First: t0.Add(time.Minute + 2*time.Second), Last: t0.Add(time.Minute + 4*time.Second)},
	}
	got := a.Disagreements()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Disagreements() =\n%+v\nwant\n%+v", got, want)
	}
	if c := a.Catchments()[0]; c.Disagreements != 3 {
		t.Errorf("Catchment.Disagreements = %d, want 3", c.Disagreements)
	}
	if sw := a.Switches(); len(sw) != 3 {
		t.Errorf("Switches() = %+v, want one per stream", sw)
	}
}

// TestDisagreementsOrderIndependent: the stream that answers first in a round
// does not change what is counted.
func TestDisagreementsOrderIndependent(t *testing.T) {
	t.Parallel()
	round := func(min int, order []int) []analysis.Observation {
		all := []analysis.Observation{
			ob(min, hel1),
			with(ob(min, ams1), func(o *analysis.Observation) { o.Query = api.QueryNSID }),
			with(ob(min, hel2), func(o *analysis.Observation) { o.Query = api.QueryIDServer }),
		}
		var out []analysis.Observation
		for i, j := range order {
			o := all[j]
			o.At = o.At.Add(time.Duration(i) * time.Second)
			out = append(out, o)
		}
		return out
	}
	for _, order := range [][]int{{0, 1, 2}, {1, 0, 2}, {2, 0, 1}, {0, 2, 1}} {
		a := accumulate(round(0, order)...)
		if got := a.Catchments()[0].Disagreements; got != 2 {
			t.Errorf("order %v: %d disagreements, want 2 (NSID against each CHAOS query)", order, got)
		}
	}
}

func TestWindowAndOrder(t *testing.T) {
	t.Parallel()
	a := New(nil, Config{Window: Window{Since: t0.Add(time.Minute), Until: t0.Add(5 * time.Minute)}})
	for _, o := range []analysis.Observation{
		ob(0, ams1), // before the window
		ob(1, hel1), ob(2, hel1), ob(4, ams1),
		ob(3, sto1), // out of order: counts toward the catchment only
		ob(5, sto1), // Until is exclusive
	} {
		a.Add(o)
	}
	if got, want := a.Stats(), (Stats{Added: 4, Ignored: 2, OutOfOrder: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if sw := a.Switches(); len(sw) != 1 || sw[0].From != "HEL" || sw[0].To != "AMS" {
		t.Errorf("Switches() = %+v, want HEL→AMS only", sw)
	}
	if c := a.Catchments()[0]; c.Observations != 4 || c.Site != "HEL" {
		t.Errorf("catchment %s %d, want HEL 4", c.Site, c.Observations)
	}
}

func TestAssignments(t *testing.T) {
	t.Parallel()
	at2 := func(o analysis.Observation) analysis.Observation { o.Address = addr2; return o }
	other := func(o analysis.Observation) analysis.Observation { o.VantagePoint = "vp-2"; return o }
	a := accumulate(
		ob(0, hel1), ob(1, hel1), ob(2, hel1),
		at2(ob(0, ams1)), at2(ob(1, ams1)), at2(ob(2, sto1)),
		other(failed(0, api.FailureTimeout)),
	)
	want := []Assignment{
		{VantagePoint: "vp-1", Target: "k-root", Site: "HEL", Observations: 6, Confidence: 0.5},
		{VantagePoint: "vp-2", Target: "k-root", Site: "", Observations: 0, Confidence: 0},
	}
	if got := a.Assignments(); !reflect.DeepEqual(got, want) {
		t.Errorf("Assignments() =\n%+v\nwant\n%+v", got, want)
	}
}

func TestResolversPerTarget(t *testing.T) {
	t.Parallel()
	r, err := identity.NewResolver(analysis.Target{Name: "i-root", Rules: []analysis.Rule{{Pattern: `\.lnx$`, Site: "LON"}}})
	if err != nil {
		t.Fatal(err)
	}
	iroot := func(o analysis.Observation) analysis.Observation { o.Target = "i-root"; return o }
	obs := []analysis.Observation{iroot(ob(1, "s2.lnx")), iroot(ob(0, "s1.lnx")), ob(0, "s2.lnx")}
	got := Catchments(obs, map[string]*identity.Resolver{"i-root": r}, Window{})
	if len(got) != 2 || got[0].Target != "i-root" || got[0].Site != "LON" || got[1].Site != "LNX" {
		t.Errorf("Catchments() = %+v, want i-root at LON (its rule), k-root at LNX (built-in)", got)
	}
}

func TestSwitchesUnsortedSlice(t *testing.T) {
	t.Parallel()
	got := Switches([]analysis.Observation{ob(4, ams1), ob(0, hel1), ob(3, ams1), ob(1, hel2)}, nil, Window{})
	if len(got) != 1 || !got[0].At.Equal(t0.Add(3*time.Minute)) || !got[0].LastFrom.Equal(t0.Add(time.Minute)) {
		t.Errorf("Switches() = %+v, want HEL→AMS at +3m, last HEL at +1m", got)
	}
}

func TestUnresolvedBounded(t *testing.T) {
	t.Parallel()
	a := New(nil, Config{})
	for i := 0; i < MaxUnresolved+5; i++ {
		a.Add(ob(i, fmt.Sprintf("host%d.example.com", i)))
	}
	a.Add(ob(MaxUnresolved+6, "host0.example.com"))
	ts := a.Targets()[0]
	if len(ts.Unresolved) != MaxUnresolved || ts.UnresolvedOther != 5 {
		t.Errorf("%d unresolved identities kept, %d other; want %d and 5", len(ts.Unresolved), ts.UnresolvedOther, MaxUnresolved)
	}
	if ts.Unresolved[0] != (Unresolved{"k-root", "host0.example.com", 2}) {
		t.Errorf("most observed = %+v", ts.Unresolved[0])
	}
}

// TestAddDoesNotGrow: once a stream is known, feeding it more observations
// allocates nothing: memory follows streams, not observations.
func TestAddDoesNotGrow(t *testing.T) {
	a := New(nil, Config{})
	o := ob(0, hel1)
	f := failed(0, api.FailureTimeout)
	ss := session("vp-1", 0, time.Minute, api.EndServerClose)
	a.Add(o)
	a.Add(f)
	a.Add(ss)
	allocs := testing.AllocsPerRun(1000, func() {
		o.At = o.At.Add(time.Minute)
		a.Add(o)
		f.At = o.At
		a.Add(f)
		ss.At = o.At
		a.Add(ss)
	})
	if allocs != 0 {
		t.Errorf("Add allocates %v times per call in steady state", allocs)
	}
}

func BenchmarkAdd(b *testing.B) {
	ids := []string{hel1, hel2, ams1, "ns1.example.com"}
	vps := []string{"vp-1", "vp-2", "vp-3", "vp-4", "vp-5", "vp-6", "vp-7", "vp-8"}
	a := New(nil, Config{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o := ob(i/len(vps), ids[(i/64)%len(ids)])
		o.VantagePoint = vps[i%len(vps)]
		a.Add(o)
	}
}

// TestDisagreementsByRound: answers that carry round numbers are compared
// within their round only, however close in time two rounds are — a site
// change between two rounds one second apart is a switch, not a
// disagreement.
func TestDisagreementsByRound(t *testing.T) {
	t.Parallel()
	at := func(o analysis.Observation, sec int, round uint64, q string) analysis.Observation {
		o.At = t0.Add(time.Duration(sec) * time.Second)
		o.Round, o.Query = round, q
		return o
	}
	a := accumulate(
		at(ob(0, hel1), 0, 1, api.QueryHostnameBind), at(ob(0, hel1), 0, 1, api.QueryNSID),
		// One second later, round 3: both moved to AMS together.
		at(ob(0, ams1), 1, 3, api.QueryHostnameBind), at(ob(0, ams1), 1, 3, api.QueryNSID),
		// Round 5: NSID answered from HEL while CHAOS stayed at AMS.
		at(ob(0, ams1), 2, 5, api.QueryHostnameBind), at(ob(0, hel2), 2, 5, api.QueryNSID),
	)
	d := a.Disagreements()
	if len(d) != 1 || d[0].Rounds != 1 || d[0].A.Site == d[0].B.Site {
		t.Fatalf("Disagreements() = %+v, want exactly round 5's", d)
	}
	if got := len(a.Switches()); got != 3 {
		t.Errorf("%d switches, want 3 (both streams HEL→AMS, NSID AMS→HEL)", got)
	}
	// Without round numbers, the time window (10 s) would have paired the
	// rounds above and reported the HEL→AMS move as disagreements too.
	b := New(nil, Config{})
	for _, o := range []analysis.Observation{
		at(ob(0, hel1), 0, 0, api.QueryHostnameBind), at(ob(0, hel1), 0, 0, api.QueryNSID),
		at(ob(0, ams1), 1, 0, api.QueryHostnameBind), at(ob(0, ams1), 1, 0, api.QueryNSID),
	} {
		b.Add(o)
	}
	if len(b.Disagreements()) == 0 {
		t.Error("without round numbers the time window no longer applies")
	}
}

// TestPingAndTraceIgnored: results without an identity by nature (ping,
// traceroute) neither count as unresolved identities nor as failures of the
// catchment.
func TestPingAndTraceIgnored(t *testing.T) {
	t.Parallel()
	a := accumulate(
		ob(0, hel1),
		with(ob(1, ""), func(o *analysis.Observation) {
			o.Kind, o.Transport, o.Query = api.KindPing, api.TransportICMP, api.QueryEcho
		}),
		with(ob(2, ""), func(o *analysis.Observation) {
			o.Kind, o.Transport, o.Query = api.KindTrace, api.TransportUDP, api.QueryParis
		}),
	)
	c := a.Catchments()
	if len(c) != 1 || c[0].Observations != 1 || c[0].Unresolved != 0 {
		t.Errorf("catchments %+v, want one observation and nothing unresolved", c)
	}
	if st := a.Stats(); st.Ignored != 2 {
		t.Errorf("stats %+v, want 2 ignored", st)
	}
}

// EachStream names the same site per stream as Catchments, ties included.
func TestEachStreamAgreesWithCatchments(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("192.0.2.53")
	a := New(nil, Config{})
	ids := []string{"ns1.nl-ams.x.example", "ns1.de-fra.x.example", "ns1.de-fra.x.example", "ns1.nl-ams.x.example", "ns1.gb-lhr.x.example"}
	for i, id := range ids {
		for _, q := range []string{api.QueryHostnameBind, api.QueryIDServer} {
			if q == api.QueryIDServer && i == 4 {
				continue // a tie AMS/FRA broken by the latest
			}
			a.Add(analysis.Observation{VantagePoint: "vp1", Target: "t", Address: addr, Kind: api.KindDNS, Transport: api.TransportUDP,
				Query: q, At: t0.Add(time.Duration(i) * time.Minute), Identity: id})
		}
	}
	want := map[string]StreamCatchment{}
	for _, c := range a.Catchments() {
		for _, s := range c.Streams {
			want[s.Query] = s
		}
	}
	got := map[string]StreamCatchment{}
	if !a.EachStream("vp1", "t", addr, func(s StreamCatchment) { got[s.Query] = s }) {
		t.Fatal("pair not found")
	}
	if !maps.Equal(got, want) || len(got) != 2 {
		t.Errorf("EachStream %+v\nCatchments %+v", got, want)
	}
	if a.EachStream("vp2", "t", addr, func(StreamCatchment) {}) {
		t.Error("unknown pair reported as seen")
	}
}
