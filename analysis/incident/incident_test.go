package incident

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		msg  string // "" for valid
	}{
		{"zero-means-defaults", Config{}, ""},
		{"atlas", Config{Interval: 240 * time.Second, MinFailures: 3, MinVantagePoints: 2, OutageShare: 1, CatchmentShare: 0.5}, ""},
		{"negative-interval", Config{Interval: -time.Second}, "negative interval"},
		{"interval-too-long", Config{Interval: 30 * 24 * time.Hour}, "longer than"},
		{"negative-min-failures", Config{MinFailures: -1}, "negative min failures"},
		{"negative-min-vantage-points", Config{MinVantagePoints: -2}, "negative min vantage points"},
		{"outage-share-above-one", Config{OutageShare: 1.5}, "outage share 1.5 is not in [0, 1]"},
		{"outage-share-nan", Config{OutageShare: math.NaN()}, "outage share NaN"},
		{"catchment-share-negative", Config{CatchmentShare: -0.1}, "catchment share -0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := New(tt.cfg)
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want ErrConfig saying %q", err, tt.msg)
			}
			if d != nil {
				t.Error("a detector came with the error")
			}
		})
	}
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Interval: DefaultInterval, MinFailures: DefaultMinFailures, MinVantagePoints: DefaultMinVantagePoints,
		OutageShare: DefaultOutageShare, CatchmentShare: DefaultCatchmentShare}
	if d.cfg != want {
		t.Errorf("defaults %+v, want %+v", d.cfg, want)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		kind     api.Kind
		failure  api.Failure
		identity string
		rtt      time.Duration
		want     outcome
	}{
		{"dns-answer", api.KindDNS, api.FailureNone, "ns1.fi-hel.k.ripe.net", time.Millisecond, answered},
		{"dns-answer-without-identity", api.KindDNS, api.FailureDNSNoAnswer, "", time.Millisecond, answered},
		{"dns-refused-is-an-answer", api.KindDNS, api.FailureDNSRefused, "", time.Millisecond, answered},
		{"dns-servfail-is-an-answer", api.KindDNS, api.FailureDNSServfail, "", time.Millisecond, answered},
		{"dns-timeout", api.KindDNS, api.FailureTimeout, "", 0, failed},
		{"dns-bogus", api.KindDNS, api.FailureDNSBogus, "", 0, failed},
		{"tcp-refused", api.KindDNS, api.FailureConnectionRefused, "", 0, failed},
		{"tcp-reset", api.KindDNS, api.FailureConnectionReset, "", 0, failed},
		{"closed-before-answer", api.KindDNS, api.FailureConnectionClosed, "", 0, failed},
		{"network-unreachable", api.KindHTTP, api.FailureNetworkUnreachable, "", 0, failed},
		{"http-answer", api.KindHTTP, api.FailureNone, "cache-hel1", time.Millisecond, answered},
		{"not-allowed-is-agent-side", api.KindDNS, api.FailureNotAllowed, "", 0, ignored},
		{"permission-denied-is-agent-side", api.KindDNS, api.FailurePermissionDenied, "", 0, ignored},
		{"panic-is-agent-side", api.KindHTTP, api.FailurePanic, "", 0, ignored},
		{"unknown-failure-is-agent-side", api.KindDNS, api.FailureUnknown, "", 0, ignored},
		{"failure-outside-the-closed-set", api.KindDNS, api.Failure("exploded"), "", 0, ignored},
		{"session-that-answered-then-reset", api.KindSession, api.FailureConnectionReset, "ns1.fi-hel.k.ripe.net", time.Millisecond, answered},
		{"session-that-never-connected", api.KindSession, api.FailureConnectionRefused, "", 0, failed},
		{"session-answered-without-identity", api.KindSession, api.FailureTimeout, "", time.Millisecond, answered},
		{"ping-failure-is-not-health", api.KindPing, api.FailureTimeout, "", 0, ignored},
		{"trace", api.KindTrace, api.FailureTimeout, "", 0, traced},
		{"unknown-kind", api.Kind("carrier-pigeon"), api.FailureNone, "", 0, ignored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := analysis.Observation{Kind: tt.kind, Failure: tt.failure, Identity: tt.identity, RTT: tt.rtt}
			if got := classify(&o); got != tt.want {
				t.Errorf("classify = %d, want %d", got, tt.want)
			}
		})
	}
	for i := range nClass {
		if failureClass(classFailure(i)) != i {
			t.Errorf("class %d does not round-trip", i)
		}
	}
}

func TestStreamLearnsInterval(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name string
		gaps []time.Duration
		want time.Duration
	}{
		{"none-yet", nil, 0},
		{"fixed-atlas", []time.Duration{240 * s, 240 * s, 240 * s}, 240 * s},
		{"upload-gap-ignored", []time.Duration{10 * s, 10 * s, 3600 * s, 10 * s}, 10 * s},
		{"two-pauses-ignored", []time.Duration{10 * s, 600 * s, 10 * s, 900 * s}, 10 * s},
		{"burst-ignored", []time.Duration{10 * s, 10 * s, 100 * time.Millisecond, 10 * s}, 10 * s},
		{"duplicate-time-ignored", []time.Duration{10 * s, 0, 10 * s}, 10 * s},
		{"schedule-change-adopted", []time.Duration{10 * s, 10 * s, 10 * s, 10 * s, 240 * s, 240 * s, 240 * s, 240 * s, 240 * s, 240 * s, 240 * s, 240 * s}, 240 * s},
		{"pause-capped", []time.Duration{30 * 24 * time.Hour}, time.Duration(maxInterval)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var st stream
			at := t0.UnixNano()
			st.observe(at)
			for _, g := range tt.gaps {
				at += int64(g)
				st.observe(at)
			}
			if got := time.Duration(st.interval); got != tt.want {
				t.Errorf("interval %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("average-of-jittered", func(t *testing.T) {
		t.Parallel()
		var st stream
		at := t0.UnixNano()
		for i := range 200 {
			st.observe(at)
			at += int64(time.Duration(5+10*(i%2)) * s) // 5 s, 15 s, 5 s…: mean 10 s
		}
		if got := time.Duration(st.interval); got < 9*s || got > 11*s {
			t.Errorf("interval %v, want about 10s", got)
		}
	})
}

// obs is a UDP hostname.bind observation of k-root's IPv4 address.
func obs(vp string, at time.Duration, f api.Failure) analysis.Observation {
	o := analysis.Observation{
		VantagePoint: vp, Target: "k-root", Address: netip.MustParseAddr("192.0.2.53"),
		Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
		At: t0.Add(at), Failure: f,
	}
	if f == api.FailureNone {
		o.Identity, o.RTT = "ns1.example", time.Millisecond
	}
	return o
}

func TestStatsAndDisorder(t *testing.T) {
	t.Parallel()
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	d.Add(obs("vp-1", 0, api.FailureNone), "HEL")
	d.Add(obs("vp-1", 10*s, api.FailureNone), "HEL")
	d.Add(obs("vp-1", 5*s, api.FailureTimeout), "") // older than the stream's last
	ping := obs("vp-1", 11*s, api.FailureTimeout)
	ping.Kind, ping.Transport, ping.Query = api.KindPing, api.TransportICMP, api.QueryEcho
	d.Add(ping, "")
	d.Add(obs("vp-1", 12*s, api.FailureNotAllowed), "")
	d.Add(analysis.Observation{VantagePoint: "vp-1", Kind: api.KindDNS}, "") // no time
	// Another stream's failure older than the pair's latest answer.
	late := obs("vp-1", 9*s, api.FailureTimeout)
	late.Query = api.QueryNSID
	d.Add(late, "")
	if got, want := d.Stats(), (Stats{Added: 2, Ignored: 3, OutOfOrder: 2}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	p := d.pairs[pairKey{vp: 0, target: 0, addr: netip.MustParseAddr("192.0.2.53")}]
	if p.state != healthy || p.site == 0 || p.g.sites[p.site].name != "HEL" {
		t.Errorf("pair state %d site %d after disorder, want healthy at HEL", p.state, p.site)
	}
}

// TestPathEndsBounded: a black hole whose victims' traceroutes end somewhere
// new every round keeps at most MaxPathEnds of them, and every vantage point.
func TestPathEndsBounded(t *testing.T) {
	t.Parallel()
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	for r := range 40 {
		at := time.Duration(r) * 10 * s
		for i := range 20 {
			f := api.FailureNone
			if r >= 4 {
				f = api.FailureTimeout
			}
			vp := fmt.Sprintf("vp-hel-%02d", i)
			site := ""
			if f == api.FailureNone {
				site = "HEL"
			}
			d.Add(obs(vp, at, f), site)
			tr := obs(vp, at+s, api.FailureTimeout)
			tr.Kind, tr.Query = api.KindTrace, api.QueryParis
			tr.PathEnd = []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(r)}), netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})}
			d.Add(tr, "")
		}
		d.Add(obs("vp-ams", at+2*s, api.FailureNone), "AMS")
	}
	got := d.Incidents()
	if len(got) != 1 || got[0].Kind != analysis.IncidentBlackhole || got[0].Site != "HEL" {
		t.Fatalf("got:%s", describe(got))
	}
	if n := len(got[0].Evidence.PathEnds); n != MaxPathEnds {
		t.Errorf("%d path ends, want %d", n, MaxPathEnds)
	}
	if n := len(got[0].VantagePoints); n != 20 {
		t.Errorf("%d vantage points, want 20", n)
	}
	if again := d.Incidents(); !slices.EqualFunc(got, again, func(x, y analysis.Incident) bool {
		return x.Start.Equal(y.Start) && x.End.Equal(y.End) && slices.Equal(x.VantagePoints, y.VantagePoints)
	}) {
		t.Errorf("a second call changed the incidents:%s", describe(again))
	}
}

// TestNoteIsOneCleanLine: identity-derived site names are untrusted text.
func TestNoteIsOneCleanLine(t *testing.T) {
	t.Parallel()
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	evil := "HEL\n<script>\x00" + strings.Repeat("A", 200)
	s := time.Second
	for r := range 8 {
		at := time.Duration(r) * 10 * s
		for _, vp := range []string{"vp-1", "vp-2"} {
			if r < 3 {
				d.Add(obs(vp, at, api.FailureNone), evil)
			} else {
				d.Add(obs(vp, at, api.FailureTimeout), "")
			}
		}
		d.Add(obs("vp-3", at+s, api.FailureNone), "AMS")
	}
	got := d.Incidents()
	if len(got) != 1 || got[0].Site != evil {
		t.Fatalf("got:%s", describe(got))
	}
	note := got[0].Evidence.Note
	if strings.ContainsAny(note, "\n\x00") || len(note) > 400 {
		t.Errorf("note is not one clean line: %q", note)
	}
}
