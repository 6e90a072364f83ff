package synth_test

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/catalog"
	"github.com/anyscope/anyscope/analysis/geo"
	"github.com/anyscope/anyscope/analysis/identity"
	"github.com/anyscope/anyscope/analysis/synth"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

const interval = time.Minute

func mustWorld(t testing.TB, cfg synth.Config) *synth.World {
	t.Helper()
	w, err := synth.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w
}

// collect returns every observation of w.
func collect(t testing.TB, w *synth.World) []analysis.Observation {
	t.Helper()
	var out []analysis.Observation
	if err := w.Observations(func(o analysis.Observation) error {
		out = append(out, o)
		return nil
	}); err != nil {
		t.Fatalf("Observations: %v", err)
	}
	return out
}

// digest hashes every field of every observation.
func digest(t testing.TB, w *synth.World) (uint64, int) {
	t.Helper()
	h := fnv.New64a()
	n := 0
	var buf []byte
	if err := w.Observations(func(o analysis.Observation) error {
		buf = append(buf[:0], o.VantagePoint...)
		for _, s := range []string{o.Target, o.Address.String(), string(o.Kind), string(o.Transport), o.Query, string(o.Failure), o.Identity} {
			buf = append(append(buf, '|'), s...)
		}
		buf = strconv.AppendInt(append(buf, '|'), o.At.UnixNano(), 10)
		buf = strconv.AppendUint(append(buf, '|'), o.Round, 10)
		buf = strconv.AppendInt(append(buf, '|'), int64(o.RTT), 10)
		h.Write(append(buf, '\n'))
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return h.Sum64(), n
}

func TestNewInvalid(t *testing.T) {
	t.Parallel()
	good := synth.Config{Sites: 5, VantagePoints: 10, Targets: 2, Duration: time.Hour}
	tests := []struct {
		name   string
		change func(*synth.Config)
		msg    string
	}{
		{"no sites", func(c *synth.Config) { c.Sites = 0 }, "Sites 0"},
		{"too many sites", func(c *synth.Config) { c.Sites = 100000 }, "distinct cities"},
		{"no vantage points", func(c *synth.Config) { c.VantagePoints = 0 }, "VantagePoints 0"},
		{"no targets", func(c *synth.Config) { c.Targets = 0 }, "Targets 0"},
		{"too many targets", func(c *synth.Config) { c.Targets = synth.MaxTargets + 1 }, "Targets 509"},
		{"no duration", func(c *synth.Config) { c.Duration = 0 }, "Duration"},
		{"negative interval", func(c *synth.Config) { c.Interval = -time.Second }, "Interval"},
		{"bad query", func(c *synth.Config) { c.Queries = []string{"version.bind"} }, `query "version.bind"`},
		{"negative jitter", func(c *synth.Config) { c.JitterMs = -1 }, "JitterMs"},
		{"inflation below 1", func(c *synth.Config) { c.InflationMin = 0.5 }, "inflation"},
		{"inflation min above max", func(c *synth.Config) { c.InflationMin, c.InflationMax = 3, 2 }, "inflation"},
		{"negative access", func(c *synth.Config) { c.AccessMinMs = -1 }, "access delay"},
		{"nearest share above 1", func(c *synth.Config) { c.NearestShare = 1.5 }, "NearestShare"},
		{"negative alternatives", func(c *synth.Config) { c.Alternatives = -1 }, "Alternatives"},
		{"nil event", func(c *synth.Config) { c.Events = []synth.Event{nil} }, "event 0 is nil"},
		{"event without start", func(c *synth.Config) {
			c.Events = []synth.Event{synth.Outage{Target: "t01"}}
		}, "zero From"},
		{"event ends before it starts", func(c *synth.Config) {
			c.Events = []synth.Event{synth.Outage{Target: "t01", From: t0.Add(time.Hour), Until: t0}}
		}, "not after From"},
		{"unknown target", func(c *synth.Config) {
			c.Events = []synth.Event{synth.Outage{Target: "t99", From: t0}}
		}, `no target "t99"`},
		{"unknown site", func(c *synth.Config) {
			c.Events = []synth.Event{synth.Withdraw{Target: "t01", Site: "ZZZ", From: t0}}
		}, `target "t01" has no site "ZZZ"`},
		{"unknown vantage point", func(c *synth.Config) {
			c.Events = []synth.Event{synth.Gap{VantagePoint: "vp99", From: t0}}
		}, `no vantage point "vp99"`},
		{"flapper with one site", func(c *synth.Config) {
			c.Events = []synth.Event{synth.Flapper{VantagePoint: "vp01", Target: "t01", Sites: []string{"AMS"}, From: t0}}
		}, "two sites or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := synth.New(cfg)
			if !errors.Is(err, synth.ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.msg)
			}
		})
	}
	if _, err := synth.New(good); err != nil {
		t.Errorf("the valid base config: %v", err)
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	cfg := synth.Config{Seed: 42, Sites: 12, VantagePoints: 200, Targets: 5, Duration: 5 * interval, Interval: interval,
		Queries: []string{api.QueryHostnameBind, api.QueryNSID}, Ping: true}
	a, n := digest(t, mustWorld(t, cfg))
	b, m := digest(t, mustWorld(t, cfg))
	if a != b || n != m {
		t.Errorf("same seed: digests %x (%d) and %x (%d)", a, n, b, m)
	}
	if want := 200 * 5 * 5 * 3; n != want {
		t.Errorf("%d observations, want %d", n, want)
	}
	cfg.Seed = 43
	if c, _ := digest(t, mustWorld(t, cfg)); c == a {
		t.Errorf("seeds 42 and 43 give the same observations")
	}
}

func TestSites(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, synth.Config{Seed: 7, Sites: 60, VantagePoints: 10, Targets: 7, Duration: interval})
	sites := w.Sites()
	if len(sites) != 60 {
		t.Fatalf("%d sites, want 60", len(sites))
	}
	codes := map[string]bool{}
	cities := map[string]bool{}
	for _, s := range sites {
		p, ok := catalog.Lookup(s.Code)
		if !ok || p.Kind != catalog.KindAirport || p.Latitude != s.Latitude || p.Longitude != s.Longitude || !s.HasCoords || s.Name != p.City {
			t.Errorf("site %+v is not the catalog's airport %+v", s, p)
		}
		if codes[s.Code] || cities[p.Country+p.City] {
			t.Errorf("site %s (%s) twice", s.Code, p.City)
		}
		codes[s.Code], cities[p.Country+p.City] = true, true
	}
	docs := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	addrs := map[netip.Addr]bool{}
	for i, tg := range w.Targets() {
		if i == 0 && len(tg.Sites) != len(sites) {
			t.Errorf("target %s has %d sites, want all %d", tg.Name, len(tg.Sites), len(sites))
		}
		if len(tg.Sites) < len(sites)/2 {
			t.Errorf("target %s has %d sites, want at least half of %d", tg.Name, len(tg.Sites), len(sites))
		}
		for _, a := range tg.Addresses {
			in := false
			for _, p := range docs {
				in = in || p.Contains(a)
			}
			if !in || addrs[a] {
				t.Errorf("target %s: address %v is outside the documentation ranges or used twice", tg.Name, a)
			}
			addrs[a] = true
		}
		r, err := identity.NewResolver(tg)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range tg.Sites {
			if !codes[s.Code] {
				t.Errorf("target %s: site %s is not a world site", tg.Name, s.Code)
			}
			servers := w.Servers(tg.Name, s.Code)
			if len(servers) < 1 || len(servers) > 3 {
				t.Errorf("target %s site %s: %d servers, want 1-3", tg.Name, s.Code, len(servers))
			}
			for _, id := range servers {
				if got := r.Resolve(id).Site; got != s.Code {
					t.Errorf("target %s: identity %q resolves to %q, want %s", tg.Name, id, got, s.Code)
				}
			}
		}
	}
}

// TestObservationsFollowTruth: every observation agrees with Truth, obeys
// physics, and comes in time order.
func TestObservationsFollowTruth(t *testing.T) {
	t.Parallel()
	const vps, targets, rounds = 300, 6, 8
	queries := []string{api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID}
	w := mustWorld(t, synth.Config{Seed: 3, Sites: 25, VantagePoints: vps, Targets: targets, Start: t0,
		Duration: rounds * interval, Interval: interval, Queries: queries, Ping: true})
	resolvers := map[string]*identity.Resolver{}
	sites := map[string]analysis.Site{}
	for _, tg := range w.Targets() {
		r, err := identity.NewResolver(tg)
		if err != nil {
			t.Fatal(err)
		}
		resolvers[tg.Name] = r
		for _, s := range tg.Sites {
			sites[s.Code] = s
		}
	}
	vpAt := map[string]analysis.VantagePoint{}
	for _, v := range w.VantagePoints() {
		vpAt[v.Name] = v
	}
	type key struct {
		vp, target string
		round      uint64
	}
	seen := map[key]time.Time{}
	servers := map[string]map[string]bool{} // site → servers seen
	resolved := map[string]string{}         // target/identity → site
	var last time.Time
	obs := collect(t, w)
	if want := vps * targets * rounds * (len(queries) + 1); len(obs) != want {
		t.Fatalf("%d observations, want %d", len(obs), want)
	}
	for _, o := range obs {
		if o.At.Before(last) {
			t.Fatalf("observation at %v after one at %v", o.At, last)
		}
		last = o.At
		if o.At.Before(t0) || !o.At.Before(t0.Add(rounds*interval)) {
			t.Fatalf("observation at %v outside the world's time", o.At)
		}
		k := key{o.VantagePoint, o.Target, o.Round}
		if at, ok := seen[k]; ok && !at.Equal(o.At) {
			t.Fatalf("round %+v at %v and %v", k, at, o.At)
		}
		seen[k] = o.At
		site, ok := w.Truth(o.Target, o.VantagePoint, o.At)
		if !ok || o.Failure != api.FailureNone {
			t.Fatalf("no events, yet %+v failed (truth %q, %v)", o, site, ok)
		}
		switch o.Kind {
		case api.KindDNS:
			if o.Transport != api.TransportUDP || o.Identity == "" {
				t.Fatalf("DNS observation %+v: want UDP and an identity", o)
			}
			got, ok := resolved[o.Target+"/"+o.Identity]
			if !ok {
				got = resolvers[o.Target].Resolve(o.Identity).Site
				resolved[o.Target+"/"+o.Identity] = got
			}
			if got != site {
				t.Fatalf("%s→%s at %v: identity %q resolves to %q, truth %q", o.VantagePoint, o.Target, o.At, o.Identity, got, site)
			}
			if servers[site] == nil {
				servers[site] = map[string]bool{}
			}
			servers[site][o.Target+"/"+o.Identity] = true
		case api.KindPing:
			if o.Transport != api.TransportICMP || o.Query != api.QueryEcho || o.Identity != "" {
				t.Fatalf("ping observation %+v", o)
			}
		default:
			t.Fatalf("observation of kind %q", o.Kind)
		}
		v, s := vpAt[o.VantagePoint], sites[site]
		// Never faster than light in fibre, never slower than the
		// largest inflation, access delay and noise allow.
		verdict := geo.Plausible(v.Latitude, v.Longitude, s.Latitude, s.Longitude, o.RTT)
		maxRTT := time.Duration((verdict.Distance/geo.KmPerMsRTT*synth.DefaultInflationMax + synth.DefaultAccessMaxMs + synth.DefaultJitterMs) * float64(time.Millisecond))
		if !verdict.Possible || o.RTT > maxRTT+time.Microsecond {
			t.Fatalf("%s→%s (%.0f km): RTT %v outside [%v, %v]", o.VantagePoint, site, verdict.Distance, o.RTT, verdict.MinRTT, maxRTT)
		}
	}
	if len(seen) != vps*targets*rounds {
		t.Errorf("%d distinct rounds, want %d", len(seen), vps*targets*rounds)
	}
	multi := 0
	for _, ids := range servers {
		if len(ids) > 1 {
			multi++
		}
	}
	if multi == 0 {
		t.Errorf("no site answered with more than one server")
	}
}

// TestCatchments: about NearestShare of the (vantage point, target) pairs
// reach their nearest site, the others one of the next Alternatives.
func TestCatchments(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, synth.Config{Seed: 11, Sites: 30, VantagePoints: 3000, Targets: 3, Start: t0, Duration: interval})
	nearest, total := 0, 0
	for _, tg := range w.Targets() {
		for _, v := range w.VantagePoints() {
			site, ok := w.Truth(tg.Name, v.Name, t0)
			if !ok {
				t.Fatalf("%s→%s: no truth", v.Name, tg.Name)
			}
			rank := 0 // how many of the target's sites are nearer than site
			var served float64
			for _, s := range tg.Sites {
				if s.Code == site {
					served = catalog.Distance(v.Latitude, v.Longitude, s.Latitude, s.Longitude)
				}
			}
			for _, s := range tg.Sites {
				if catalog.Distance(v.Latitude, v.Longitude, s.Latitude, s.Longitude) < served {
					rank++
				}
			}
			if rank > synth.DefaultAlternatives {
				t.Fatalf("%s→%s served by its site of rank %d", v.Name, tg.Name, rank)
			}
			if rank == 0 {
				nearest++
			}
			total++
		}
	}
	share := float64(nearest) / float64(total)
	if math.Abs(share-synth.DefaultNearestShare) > 0.03 {
		t.Errorf("%.3f of the pairs reach their nearest site, want about %.2f", share, synth.DefaultNearestShare)
	}
}

func TestVantagePoints(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, synth.Config{Seed: 5, Sites: 3, VantagePoints: 400, Targets: 1, Duration: interval})
	names := map[string]bool{}
	for _, v := range w.VantagePoints() {
		if names[v.Name] || !v.HasCoords || v.Country == "" || v.ASN < 64496 || v.ASN > 64511 {
			t.Errorf("vantage point %+v: want a unique name, coordinates, a country and a documentation ASN", v)
		}
		names[v.Name] = true
		if _, d := catalog.Nearest(v.Latitude, v.Longitude); d > synth.DefaultVPJitterKm+0.001 {
			t.Errorf("vantage point %s is %.1f km from the nearest catalog place", v.Name, d)
		}
	}
}

func TestObservationsStop(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, synth.Config{Sites: 3, VantagePoints: 10, Targets: 1, Duration: time.Hour})
	stop := errors.New("enough")
	n := 0
	err := w.Observations(func(analysis.Observation) error {
		n++
		if n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Errorf("err = %v after %d observations, want the callback's error after 5", err, n)
	}
}

func TestSource(t *testing.T) {
	t.Parallel()
	w := mustWorld(t, synth.Config{Seed: 9, Sites: 8, VantagePoints: 50, Targets: 3, Start: t0, Duration: 10 * interval, Interval: interval})
	src := w.Source()
	since, until := t0.Add(2*interval+interval/2), t0.Add(5*interval)
	all := collect(t, w)
	var want []analysis.Observation
	for _, o := range all {
		if o.Target == "t02" && !o.At.Before(since) && o.At.Before(until) {
			want = append(want, o)
		}
	}
	var got []analysis.Observation
	if err := src.Observations(t.Context(), since, until, "t02", func(o analysis.Observation) error {
		got = append(got, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d observations, want %d", len(got), len(want))
	}
	for i := range got {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Fatalf("observation %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	n := 0
	if err := src.Observations(t.Context(), time.Time{}, time.Time{}, "", func(analysis.Observation) error { n++; return nil }); err != nil || n != len(all) {
		t.Errorf("unbounded: %d observations (err %v), want %d", n, err, len(all))
	}
	if err := src.Observations(t.Context(), time.Time{}, time.Time{}, "nope", func(analysis.Observation) error { return nil }); err == nil {
		t.Errorf("unknown target: no error")
	}
	if tg, err := src.Targets(t.Context()); err != nil || len(tg) != 3 {
		t.Errorf("Targets: %d, %v", len(tg), err)
	}
	if vps, err := src.VantagePoints(t.Context()); err != nil || len(vps) != 50 {
		t.Errorf("VantagePoints: %d, %v", len(vps), err)
	}
}

// TestObservationsAllocate: generation allocates (next to) nothing per
// observation: identity strings are computed once per server.
func TestObservationsAllocate(t *testing.T) {
	w := mustWorld(t, synth.Config{Seed: 1, Sites: 20, VantagePoints: 200, Targets: 4, Duration: 10 * interval, Interval: interval,
		Queries: []string{api.QueryHostnameBind, api.QueryNSID}, Ping: true})
	n := 0
	allocs := testing.AllocsPerRun(3, func() {
		n = 0
		if err := w.Observations(func(analysis.Observation) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	})
	if perObs := allocs / float64(n); perObs > 0.001 {
		t.Errorf("%.0f allocations for %d observations", allocs, n)
	}
}

// BenchmarkObservations generates a RIPE Atlas–sized world: 12,000
// vantage points × 13 targets × 68 rounds (4.5 hours at 240 s), 10.6
// million observations per iteration.
func BenchmarkObservations(b *testing.B) {
	w := mustWorld(b, synth.Config{Seed: 1, Sites: 50, VantagePoints: 12000, Targets: 13, Duration: 68 * synth.DefaultInterval})
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := w.Observations(func(analysis.Observation) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "observations/s")
	b.ReportMetric(float64(n)/float64(b.N), "observations/op")
}
