package catchment

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// at returns vp's observations answering id once a minute, at minutes
// [from, to).
func at(vp string, from, to int, id string) []analysis.Observation {
	var out []analysis.Observation
	for m := from; m < to; m++ {
		out = append(out, with(ob(m, id), func(o *analysis.Observation) { o.VantagePoint = vp }))
	}
	return out
}

// fails returns vp's timeouts once a minute at minutes [from, to).
func fails(vp string, from, to int) []analysis.Observation {
	var out []analysis.Observation
	for m := from; m < to; m++ {
		out = append(out, with(failed(m, api.FailureTimeout), func(o *analysis.Observation) { o.VantagePoint = vp }))
	}
	return out
}

// session is a DNS session of vp to addr1 opened at t0 plus open, closed
// at t0 plus closed, that ended with end.
func session(vp string, open, closed time.Duration, end string) analysis.Observation {
	o := analysis.Observation{
		VantagePoint: vp, Target: "k-root", Address: addr1,
		Kind: api.KindSession, Transport: api.TransportTCP, Query: api.QuerySessionDNS,
		At: t0.Add(open), Identity: hel1,
		Session: &analysis.Session{ClosedAt: t0.Add(closed), End: end, LastIdentity: hel1},
	}
	switch end {
	case api.EndReset:
		o.Failure = api.FailureConnectionReset
	case api.EndTimeout:
		o.Failure = api.FailureTimeout
	}
	return o
}

func joined(parts ...[]analysis.Observation) []analysis.Observation {
	return slices.Concat(parts...)
}

// describe renders the switches of the DNS streams as
// "vp From>To +minute cause".
func describe(sws []Switch) []string {
	out := []string{}
	for _, s := range sws {
		if s.Kind == api.KindSession {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s>%s +%s %s", s.VantagePoint, s.From, s.To, s.At.Sub(t0), s.Cause))
	}
	return out
}

// alternating is vp-1 flipping between HEL and AMS every two minutes over
// twelve minutes, beside vp-2 which stays at HEL.
func alternating() []analysis.Observation {
	return joined(
		at("vp-1", 0, 2, hel1), at("vp-1", 2, 4, ams1), at("vp-1", 4, 6, hel1),
		at("vp-1", 6, 8, ams1), at("vp-1", 8, 10, hel1), at("vp-1", 10, 12, ams1),
		at("vp-2", 0, 12, hel1),
	)
}

func TestCauses(t *testing.T) {
	t.Parallel()
	lb := []string{
		"vp-1 HEL>AMS +2m0s load_balancing", "vp-1 AMS>HEL +4m0s load_balancing", "vp-1 HEL>AMS +6m0s load_balancing",
		"vp-1 AMS>HEL +8m0s load_balancing", "vp-1 HEL>AMS +10m0s load_balancing",
	}
	var keptSessions, brokenSessions []analysis.Observation
	for m := 1; m < 12; m += 2 {
		open, closed := time.Duration(m)*time.Minute, time.Duration(m)*time.Minute+70*time.Second
		keptSessions = append(keptSessions, session("vp-1", open, closed, api.EndServerClose))
		brokenSessions = append(brokenSessions, session("vp-1", open, closed, api.EndReset))
	}
	tests := []struct {
		name string
		obs  []analysis.Observation
		want []string
	}{
		{"withdrawal", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel2), at("vp-3", 0, 10, hel1), at("vp-4", 0, 10, hel2),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-3", 10, 20, sto1), at("vp-4", 10, 20, sto1),
			at("vp-5", 0, 20, ams1),
		), []string{
			"vp-1 HEL>AMS +10m0s withdrawal", "vp-2 HEL>AMS +10m0s withdrawal",
			"vp-3 HEL>STO +10m0s withdrawal", "vp-4 HEL>STO +10m0s withdrawal",
		}},
		// BGP converges for some vantage points later than for others.
		{"withdrawal-staggered", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 11, hel1), at("vp-4", 0, 12, hel1),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-3", 11, 20, ams1), at("vp-4", 12, 20, ams1),
		), []string{
			"vp-1 HEL>AMS +10m0s withdrawal", "vp-2 HEL>AMS +10m0s withdrawal",
			"vp-3 HEL>AMS +11m0s withdrawal", "vp-4 HEL>AMS +12m0s withdrawal",
		}},
		// The announcement comes back: the same set returns at once.
		{"withdrawal-and-restore", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 10, hel1),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-3", 10, 20, ams1),
			at("vp-1", 20, 30, hel1), at("vp-2", 20, 30, hel1), at("vp-3", 20, 30, hel1),
		), []string{
			"vp-1 HEL>AMS +10m0s withdrawal", "vp-2 HEL>AMS +10m0s withdrawal", "vp-3 HEL>AMS +10m0s withdrawal",
			"vp-1 AMS>HEL +20m0s withdrawal", "vp-2 AMS>HEL +20m0s withdrawal", "vp-3 AMS>HEL +20m0s withdrawal",
		}},
		// Four of five leave (80%); the fifth stops answering: HEL is gone.
		{"withdrawal-rest-fails", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 10, hel1), at("vp-4", 0, 10, hel1),
			at("vp-5", 0, 10, hel1), fails("vp-5", 10, 20),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-3", 10, 20, ams1), at("vp-4", 10, 20, ams1),
		), []string{
			"vp-1 HEL>AMS +10m0s withdrawal", "vp-2 HEL>AMS +10m0s withdrawal",
			"vp-3 HEL>AMS +10m0s withdrawal", "vp-4 HEL>AMS +10m0s withdrawal",
		}},
		// Four of five leave but the fifth keeps answering from HEL: the
		// site is still announced, so each move is a routing change.
		{"most-move-site-still-seen", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 10, hel1), at("vp-4", 0, 10, hel1),
			at("vp-5", 0, 20, hel1),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-3", 10, 20, ams1), at("vp-4", 10, 20, ams1),
		), []string{
			"vp-1 HEL>AMS +10m0s routing", "vp-2 HEL>AMS +10m0s routing",
			"vp-3 HEL>AMS +10m0s routing", "vp-4 HEL>AMS +10m0s routing",
		}},
		{"half-move", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 20, hel1), at("vp-4", 0, 20, hel1),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1),
		), []string{"vp-1 HEL>AMS +10m0s routing", "vp-2 HEL>AMS +10m0s routing"}},
		// Two join AMS, which vp-5 never left: AMS is not coming back.
		{"two-join-occupied-site", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 20, hel1), at("vp-4", 0, 20, hel1),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-5", 0, 20, ams1),
		), []string{"vp-1 HEL>AMS +10m0s routing", "vp-2 HEL>AMS +10m0s routing"}},
		// vp-5 leaves AMS a minute before two others arrive: AMS did not
		// go away, so their arrival is no return.
		{"site-changes-hands", joined(
			at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 20, hel1), at("vp-4", 0, 20, hel1),
			at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-5", 0, 9, ams1), at("vp-5", 9, 20, sto1),
		), []string{"vp-5 AMS>STO +9m0s routing", "vp-1 HEL>AMS +10m0s routing", "vp-2 HEL>AMS +10m0s routing"}},
		// vp-1 flaps between HEL and AMS, then HEL is withdrawn: vp-1 is one
		// vantage point at HEL, not one per visit, so vp-1 and vp-2 are
		// HEL's whole catchment.
		{"withdrawal-with-flapper", joined(
			at("vp-1", 0, 1, hel1), at("vp-1", 1, 2, ams1), at("vp-1", 2, 3, hel1), at("vp-1", 3, 4, ams1),
			at("vp-1", 4, 5, hel1), at("vp-1", 5, 6, ams1), at("vp-1", 6, 7, hel1), at("vp-1", 7, 8, ams1),
			at("vp-1", 8, 9, hel1), at("vp-1", 9, 20, ams1),
			at("vp-2", 0, 10, hel1), at("vp-2", 10, 20, ams1), at("vp-3", 0, 20, ams1),
		), []string{
			"vp-1 HEL>AMS +1m0s load_balancing", "vp-1 AMS>HEL +2m0s load_balancing", "vp-1 HEL>AMS +3m0s load_balancing",
			"vp-1 AMS>HEL +4m0s load_balancing", "vp-1 HEL>AMS +5m0s load_balancing", "vp-1 AMS>HEL +6m0s load_balancing",
			// A flapper is no member of either site's catchment: its moves
			// are load balancing even when HEL goes; it witnesses that
			// HEL went, which lets vp-2, alone at HEL, read as withdrawn.
			"vp-1 HEL>AMS +7m0s load_balancing", "vp-1 AMS>HEL +8m0s load_balancing", "vp-1 HEL>AMS +9m0s load_balancing",
			"vp-2 HEL>AMS +10m0s withdrawal",
		}},
		{"routing", joined(
			at("vp-1", 0, 5, hel1), at("vp-1", 5, 10, ams1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 10, hel2),
		), []string{"vp-1 HEL>AMS +5m0s routing"}},
		// The only vantage point at HEL leaves and nobody sees HEL again:
		// as likely a withdrawal as a routing change; withdrawal is said.
		{"alone-and-site-gone", joined(
			at("vp-1", 0, 5, hel1), at("vp-1", 5, 20, ams1), at("vp-2", 0, 20, ams1),
		), []string{"vp-1 HEL>AMS +5m0s withdrawal"}},
		// ... unless it comes back, which shows HEL was still there. Its
		// return leaves AMS, where it was alone, never to be seen again:
		// by the same rule that reads as AMS withdrawn.
		{"alone-and-back", joined(
			at("vp-1", 0, 5, hel1), at("vp-1", 5, 15, ams1), at("vp-1", 15, 20, hel1),
		), []string{"vp-1 HEL>AMS +5m0s routing", "vp-1 AMS>HEL +15m0s withdrawal"}},
		{"load-balancing", alternating(), lb},
		{"load-balancing-sessions-kept", joined(alternating(), keptSessions), lb},
		// Alternating while connections break is per-packet balancing or
		// flapping routes, not per-flow balancing.
		{"alternating-sessions-broke", joined(alternating(), brokenSessions), []string{
			"vp-1 HEL>AMS +2m0s unknown", "vp-1 AMS>HEL +4m0s unknown", "vp-1 HEL>AMS +6m0s unknown",
			"vp-1 AMS>HEL +8m0s unknown", "vp-1 HEL>AMS +10m0s routing",
		}},
		// A move then a return is one return: not yet alternation.
		{"one-return", joined(
			at("vp-1", 0, 5, hel1), at("vp-1", 5, 10, ams1), at("vp-1", 10, 15, hel1),
			at("vp-2", 0, 15, hel1), at("vp-3", 0, 15, ams1),
		), []string{"vp-1 HEL>AMS +5m0s routing", "vp-1 AMS>HEL +10m0s routing"}},
		{"switch-on-last-observation", joined(
			at("vp-1", 0, 9, hel1), at("vp-1", 9, 10, ams1), at("vp-2", 0, 10, hel1),
		), []string{"vp-1 HEL>AMS +9m0s unknown"}},
		// Alone at HEL, but too little data follows to call HEL gone.
		{"alone-switch-on-last-observation", joined(
			at("vp-1", 0, 9, hel1), at("vp-1", 9, 10, ams1),
		), []string{"vp-1 HEL>AMS +9m0s unknown"}},
		{"one-more-observation-then-end", joined(
			at("vp-1", 0, 8, hel1), at("vp-1", 8, 10, ams1), at("vp-2", 0, 10, hel1),
		), []string{"vp-1 HEL>AMS +8m0s routing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sws := feed(tt.obs, nil, Window{}).Switches()
			if got := describe(sws); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("switches:\n got %q\nwant %q", got, tt.want)
			}
			for _, s := range sws {
				if s.Evidence == "" {
					t.Errorf("switch %+v has no evidence", s)
				}
			}
		})
	}
}

// TestCausesOrderIndependent: causes depend on the observations, not on how
// the streams of different vantage points were interleaved when fed.
func TestCausesOrderIndependent(t *testing.T) {
	t.Parallel()
	obs := joined(
		at("vp-1", 0, 10, hel1), at("vp-1", 10, 20, ams1), at("vp-1", 20, 30, hel1),
		at("vp-2", 0, 10, hel1), at("vp-2", 10, 20, ams1), at("vp-2", 20, 30, hel1),
		at("vp-3", 0, 10, hel1), at("vp-3", 10, 20, sto1), at("vp-3", 20, 30, hel1),
		at("vp-4", 0, 5, ams1), at("vp-4", 5, 30, sto1),
	)
	inTime := feed(obs, nil, Window{}).Switches()
	byVP := accumulate(obs...).Switches() // one vantage point after another
	if !reflect.DeepEqual(inTime, byVP) {
		t.Errorf("fed in time order:\n%+v\nfed by vantage point:\n%+v", inTime, byVP)
	}
	n := 0
	for _, s := range inTime {
		if s.Cause == analysis.CauseWithdrawal {
			n++
		}
	}
	if len(inTime) != 7 || n != 6 {
		t.Errorf("switches %q, want six withdrawal (3 out, 3 back) and vp-4's move", describe(inTime))
	}
}

func TestCauseEvidence(t *testing.T) {
	t.Parallel()
	sws := feed(joined(
		at("vp-1", 0, 10, hel1), at("vp-2", 0, 10, hel1), at("vp-3", 0, 10, hel1),
		at("vp-1", 10, 20, ams1), at("vp-2", 10, 20, ams1), at("vp-3", 10, 20, ams1),
		at("vp-1", 20, 25, hel1), at("vp-2", 20, 25, hel1), at("vp-3", 20, 25, hel1),
		at("vp-4", 0, 25, ams1),
	), nil, Window{}).Switches()
	if len(sws) != 6 {
		t.Fatalf("%d switches, want 6", len(sws))
	}
	for _, tt := range []struct {
		name                 string
		s                    Switch
		fromCatchment, moved int
		evidence             string
	}{
		{"withdrawn", sws[0], 3, 3, "3 of 3 vantage points at HEL left it within 3m0s and none saw HEL in the 3m0s after"},
		// AMS keeps vp-4: the return is not AMS withdrawn but HEL back.
		{"restored", sws[3], 4, 3, "3 vantage points arrived at HEL within 3m0s after none had seen it for 11m0s: a withdrawal ended"},
	} {
		if tt.s.FromCatchment != tt.fromCatchment || tt.s.Moved != tt.moved || tt.s.Evidence != tt.evidence {
			t.Errorf("%s: FromCatchment %d Moved %d Evidence %q, want %d %d %q",
				tt.name, tt.s.FromCatchment, tt.s.Moved, tt.s.Evidence, tt.fromCatchment, tt.moved, tt.evidence)
		}
	}
}

// TestWithdrawalSpan: the span is three probe intervals of the family unless
// configured; vantage points leaving further apart did not leave together.
func TestWithdrawalSpan(t *testing.T) {
	t.Parallel()
	// vp-1 leaves HEL ten minutes before vp-2 and vp-3; then HEL is gone.
	obs := joined(
		at("vp-1", 0, 10, hel1), at("vp-1", 10, 30, ams1),
		at("vp-2", 0, 20, hel1), at("vp-2", 20, 30, ams1),
		at("vp-3", 0, 20, hel1), at("vp-3", 20, 30, ams1),
	)
	for _, tt := range []struct {
		name string
		span time.Duration
		want []string
	}{
		{"default-three-intervals", 0, []string{
			"vp-1 HEL>AMS +10m0s routing", "vp-2 HEL>AMS +20m0s withdrawal", "vp-3 HEL>AMS +20m0s withdrawal"}},
		{"configured-wider", 15 * time.Minute, []string{
			"vp-1 HEL>AMS +10m0s withdrawal", "vp-2 HEL>AMS +20m0s withdrawal", "vp-3 HEL>AMS +20m0s withdrawal"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := New(nil, Config{WithdrawalSpan: tt.span})
			for _, o := range obs {
				a.Add(o)
			}
			if got := describe(a.Switches()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("switches:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestSwitchesReclassified: causes are decided over everything added so far,
// again after more observations arrive.
func TestSwitchesReclassified(t *testing.T) {
	t.Parallel()
	a := accumulate(joined(at("vp-1", 0, 5, hel1), at("vp-1", 5, 6, ams1), at("vp-2", 0, 6, hel1))...)
	if got := a.Switches(); len(got) != 1 || got[0].Cause != analysis.CauseUnknown {
		t.Fatalf("before: %q, want one unknown", describe(got))
	}
	for _, o := range joined(at("vp-1", 6, 9, ams1), at("vp-2", 6, 9, hel1)) {
		a.Add(o)
	}
	if got := a.Switches(); len(got) != 1 || got[0].Cause != analysis.CauseRouting {
		t.Errorf("after: %q, want one routing", describe(got))
	}
}

func TestTCPBroke(t *testing.T) {
	t.Parallel()
	// vp-1 moves from HEL to AMS at minute 5 (one observation a minute).
	move := joined(at("vp-1", 0, 5, hel1), at("vp-1", 5, 10, ams1))
	min := func(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }
	tests := []struct {
		name    string
		session analysis.Observation
		want    bool
	}{
		{"reset-across-switch", session("vp-1", min(3), min(5.2), api.EndReset), true},
		{"timeout-across-switch", session("vp-1", min(3), min(6.5), api.EndTimeout), true},
		{"identity-changed", session("vp-1", min(3), min(5.1), api.EndIdentityChanged), true},
		{"broke-just-before", session("vp-1", min(2), min(3.5), api.EndReset), true},
		{"broke-just-after", session("vp-1", min(5.5), min(6.9), api.EndReset), true},
		{"server-close-across-switch", session("vp-1", min(3), min(5.2), api.EndServerClose), false},
		{"life-ended-across-switch", session("vp-1", min(3), min(5.2), api.EndLifeEnded), false},
		{"broke-long-before", session("vp-1", min(0), min(2.5), api.EndReset), false},
		{"broke-long-after", session("vp-1", min(8), min(9.5), api.EndReset), false},
		{"other-vantage-point", session("vp-2", min(3), min(5.2), api.EndReset), false},
		{"other-address", with(session("vp-1", min(3), min(5.2), api.EndReset), func(o *analysis.Observation) { o.Address = addr2 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The session may be fed before or after the switch it covers.
			for _, order := range []string{"time-order", "session-first", "session-last"} {
				var obs []analysis.Observation
				switch order {
				case "time-order":
					obs = joined(move, []analysis.Observation{tt.session})
					slices.SortStableFunc(obs, func(x, y analysis.Observation) int { return x.At.Compare(y.At) })
				case "session-first":
					obs = joined([]analysis.Observation{tt.session}, move)
				default:
					obs = joined(move, []analysis.Observation{tt.session})
				}
				sws := accumulate(obs...).Switches()
				var dns []Switch
				for _, s := range sws {
					if s.Kind == api.KindDNS {
						dns = append(dns, s)
					}
				}
				if len(dns) != 1 || dns[0].TCPBroke != tt.want {
					t.Errorf("%s: switches %+v, want one with TCPBroke %v", order, dns, tt.want)
				}
			}
		})
	}
}

// TestTCPBrokeRing: a pair remembers its latest broken sessions and
// switches; a session breaking around a switch is found however many came
// before.
func TestTCPBrokeRing(t *testing.T) {
	t.Parallel()
	a := New(nil, Config{})
	var obs []analysis.Observation
	// 200 flips, one every other minute, each with a session broken by it.
	for i := 0; i < 200; i++ {
		id := hel1
		if i%2 == 1 {
			id = ams1
		}
		obs = append(obs, at("vp-1", 2*i, 2*i+2, id)...)
		if i > 0 {
			obs = append(obs, session("vp-1", time.Duration(2*i-1)*time.Minute, time.Duration(2*i)*time.Minute+10*time.Second, api.EndReset))
		}
	}
	slices.SortStableFunc(obs, func(x, y analysis.Observation) int { return x.At.Compare(y.At) })
	for _, o := range obs {
		a.Add(o)
	}
	n := 0
	for _, s := range a.Switches() {
		if s.Kind == api.KindDNS {
			n++
			if !s.TCPBroke {
				t.Errorf("switch at %s not marked", s.At.Sub(t0))
			}
		}
	}
	if n != 199 {
		t.Errorf("%d switches, want 199", n)
	}
	if c := a.pairs[pairKey{"vp-1", "k-root", addr1}]; len(c.lives) > maxRecent || len(c.recent) > maxRecent {
		t.Errorf("pair remembers %d sessions and %d switches, want at most %d", len(c.lives), len(c.recent), maxRecent)
	}
}
