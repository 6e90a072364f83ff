package store_test

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/atlas"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

func TestEnsureVantagePoint(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	lat, lon := 60.17, 24.94

	a, err := st.EnsureVantagePoint(ctx, "atlas-6036", nil, nil, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 || a.Name != "atlas-6036" || a.Latitude != nil || a.Provider != "" || a.Region != "" {
		t.Errorf("created %+v", a)
	}
	if toks, err := st.Tokens(ctx, "atlas-6036"); err != nil || len(toks) != 0 {
		t.Errorf("tokens %v, %v: an imported vantage point has none", toks, err)
	}

	b, err := st.EnsureVantagePoint(ctx, "atlas-6036", &lat, &lon, 64500, "FI")
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != a.ID || b.Latitude == nil || *b.Latitude != lat || *b.Longitude != lon || b.Provider != "AS64500" || b.Region != "FI" {
		t.Errorf("updated %+v", b)
	}
	c, err := st.EnsureVantagePoint(ctx, "atlas-6036", nil, nil, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != a.ID || c.Latitude == nil || *c.Latitude != lat || c.Provider != "AS64500" || c.Region != "FI" {
		t.Errorf("nothing given must keep what is known: %+v", c)
	}

	for _, tc := range []struct {
		name     string
		vp       string
		lat, lon *float64
		asn      int
		country  string
	}{
		{"bad name", "atlas 1", nil, nil, 0, ""},
		{"latitude only", "atlas-1", &lat, nil, 0, ""},
		{"latitude out of range", "atlas-1", ptr(91.0), &lon, 0, ""},
		{"negative AS", "atlas-1", nil, nil, -1, ""},
		{"AS beyond 32 bits", "atlas-1", nil, nil, 1 << 33, ""},
		{"control character in country", "atlas-1", nil, nil, 0, "F\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := st.EnsureVantagePoint(ctx, tc.vp, tc.lat, tc.lon, tc.asn, tc.country); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("error %v, want ErrInvalid", err)
			}
		})
	}
}

func TestEnsureTarget(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	seed(t, st) // k-root, active, declared by the operator
	ctx := t.Context()
	a1, a2, a3 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.53")

	if err := st.EnsureTarget(ctx, "atlas-10301", []netip.Addr{a1}); err != nil {
		t.Fatal(err)
	}
	active, err := st.ActiveTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].Name != "k-root" {
		t.Errorf("active targets %v: an imported target must not enter the schedules, k-root must stay", active)
	}
	if err := st.EnsureTarget(ctx, "atlas-10301", []netip.Addr{a1, a2, netip.AddrFrom16(a1.As16())}, "trace", "dns", "trace"); err != nil {
		t.Fatal(err)
	}
	var (
		addrs    []netip.Addr
		probes   []string
		interval float64
		retired  bool
	)
	sqlScan(t, dsn, `SELECT addresses, probes, interval_seconds, retired_at IS NOT NULL FROM targets WHERE name = 'atlas-10301'`, &addrs, &probes, &interval, &retired)
	if !slices.Equal(addrs, []netip.Addr{a1, a2}) || !slices.Equal(probes, []string{"dns", "trace"}) || interval != 240 || !retired {
		t.Errorf("atlas-10301: addresses %v probes %v interval %g retired %t", addrs, probes, interval, retired)
	}

	// An existing, operator-declared target gains the addresses it lacks
	// and keeps everything else.
	if err := st.EnsureTarget(ctx, "k-root", []netip.Addr{a3, kroot.Addresses[0]}, "dns"); err != nil {
		t.Fatal(err)
	}
	all, err := st.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]analysis.Target{}
	for _, tg := range all {
		byName[tg.Name] = tg
	}
	k := byName["k-root"]
	if !slices.Equal(k.Addresses, append(slices.Clone(kroot.Addresses), a3)) || !slices.Equal(k.Rules, kroot.Rules) || len(k.Sites) != 2 {
		t.Errorf("k-root after EnsureTarget: %+v", k)
	}
	if active, _ := st.ActiveTargets(ctx); len(active) != 1 || active[0].Name != "k-root" {
		t.Errorf("active targets %v", active)
	}
	if err := st.EnsureTarget(ctx, "k-root", nil); err != nil {
		t.Errorf("nothing to add to an existing target: %v", err)
	}

	for _, tc := range []struct {
		name   string
		target string
		addrs  []netip.Addr
		probes []string
	}{
		{"bad name", "k root", []netip.Addr{a1}, nil},
		{"invalid address", "atlas-1", []netip.Addr{{}}, nil},
		{"zone", "atlas-1", []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}, nil},
		{"unknown probe kind", "atlas-1", []netip.Addr{a1}, []string{"smtp"}},
		{"new target without addresses", "atlas-1", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := st.EnsureTarget(ctx, tc.target, tc.addrs, tc.probes...); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("error %v, want ErrInvalid", err)
			}
		})
	}
}

// atlasFixtures are the real RIPE Atlas records of package atlas.
var atlasFixtures = []string{
	"dns-resultset.jsonl", "dns-rdata-list.json", "dns-rdata-string.json", "dns-nsid-abuf.json",
	"dns-servfail.json", "dns-header-only-notimp.json", "traceroute-paris.json", "traceroute-gap.json",
	"traceroute-unreachable.json", "ping.json",
}

func atlasFixture(name string) string {
	return filepath.Join("..", "..", "analysis", "atlas", "testdata", name)
}

func importAtlas(t *testing.T, st *store.Store, o atlas.ImportOptions) atlas.Summary {
	t.Helper()
	im, err := atlas.NewImporter[store.Agent](st, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range atlasFixtures {
		f, err := os.Open(atlasFixture(name))
		if err != nil {
			t.Fatal(err)
		}
		err = im.Import(t.Context(), f, name)
		f.Close()
		if err != nil {
			t.Fatalf("Import %s: %v", name, err)
		}
	}
	return im.Summary()
}

// TestImportAtlasRoundTrip imports real RIPE Atlas results twice: the
// second import stores nothing, and the identities the store yields per
// vantage point are exactly those counted from the raw JSON by a separate,
// minimal decoding.
func TestImportAtlasRoundTrip(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	ctx := t.Context()
	probes := map[int64]atlas.Probe{6036: {ID: 6036, Latitude: 60.17, Longitude: 24.94, HasCoords: true, ASN: 64500, Country: "FI"}}

	first := importAtlas(t, st, atlas.ImportOptions{Probes: probes, BatchSize: 7})
	if first.Results == 0 || first.Stored != first.Results || first.Duplicates != 0 || first.Malformed != 0 {
		t.Fatalf("first import: %+v", first)
	}
	var rows, hops int64
	sqlScan(t, dsn, `SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM trace_hops)`, &rows, &hops)
	if rows != first.Results || hops != 60+51+3+3 {
		t.Errorf("%d rows, %d trace hops stored; want %d results and 117 hops", rows, hops, first.Results)
	}

	second := importAtlas(t, st, atlas.ImportOptions{Probes: probes})
	if second.Results != first.Results || second.Stored != 0 || second.Duplicates != first.Results {
		t.Errorf("second import: %d results, %d stored, %d duplicates; want all %d duplicates", second.Results, second.Stored, second.Duplicates, first.Results)
	}
	sqlScan(t, dsn, `SELECT count(*) FROM results`, &rows)
	if rows != first.Results {
		t.Errorf("%d rows after the second import, want %d", rows, first.Results)
	}

	vp, err := st.AgentByName(ctx, "atlas-6036")
	if err != nil {
		t.Fatal(err)
	}
	if vp.Latitude == nil || *vp.Latitude != 60.17 || vp.Provider != "AS64500" || vp.Region != "FI" {
		t.Errorf("atlas-6036: %+v", vp)
	}

	got := map[[2]string]int{}
	dnsObs := 0
	err = st.Observations(ctx, time.Time{}, time.Time{}, "", func(o analysis.Observation) error {
		if o.Kind == api.KindDNS {
			dnsObs++
			if o.Identity != "" {
				got[[2]string{o.VantagePoint, o.Identity}]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := rawIdentityCounts(t, atlasFixtures)
	if len(want) != 15 || !maps.Equal(got, want) {
		t.Errorf("identities per vantage point from the store:\n%v\nfrom the raw JSON:\n%v", got, want)
	}
	if want[[2]string{"atlas-14184", "k3.ams-ix.k.ripe.net"}] != 1 {
		t.Errorf("the NSID of probe 14184 is missing from the raw count: %v", want)
	}
	if dnsObs == 0 {
		t.Error("no DNS observation")
	}
}

// rawIdentityCounts counts DNS identities per (vantage point, identity)
// from Atlas files with nothing but encoding/json (into maps) and, for
// abuf, miekg/dns: for a CHAOS hostname.bind or id.server question, the
// first non-empty TXT string (answers' RDATA, else abuf's TXT); for any
// answer, its NSID (text when printable, else 0x and hex).
func rawIdentityCounts(t *testing.T, files []string) map[[2]string]int {
	t.Helper()
	counts := map[[2]string]int{}
	for _, name := range files {
		b, err := os.ReadFile(atlasFixture(name))
		if err != nil {
			t.Fatal(err)
		}
		var records []map[string]any
		if strings.HasSuffix(name, ".jsonl") {
			sc := bufio.NewScanner(strings.NewReader(string(b)))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Fatal(err)
				}
				records = append(records, m)
			}
		} else if err := json.Unmarshal(b, &records); err != nil {
			t.Fatal(err)
		}
		for _, rec := range records {
			if rec["type"] != "dns" {
				continue
			}
			vp := "atlas-" + jsonNumber(rec["prb_id"])
			txs := []any{rec}
			if rs, ok := rec["resultset"].([]any); ok {
				txs = rs
			}
			for _, tx := range txs {
				res, _ := tx.(map[string]any)["result"].(map[string]any)
				if res == nil {
					continue
				}
				var msg *dns.Msg
				if s, ok := res["abuf"].(string); ok {
					wire, err := base64.StdEncoding.DecodeString(s)
					if err != nil {
						t.Fatal(err)
					}
					msg = new(dns.Msg)
					if err := msg.Unpack(wire); err != nil {
						t.Fatal(err)
					}
				}
				chaos := false
				var txt []string
				answers, _ := res["answers"].([]any)
				for _, a := range answers {
					am := a.(map[string]any)
					if am["TYPE"] != "TXT" {
						continue
					}
					n := strings.TrimSuffix(strings.ToLower(am["NAME"].(string)), ".")
					chaos = chaos || n == "hostname.bind" || n == "id.server"
					switch r := am["RDATA"].(type) {
					case string:
						txt = append(txt, r)
					case []any:
						for _, s := range r {
							txt = append(txt, s.(string))
						}
					}
				}
				if msg != nil && len(msg.Question) > 0 {
					q := msg.Question[0]
					chaos = q.Qclass == dns.ClassCHAOS && (strings.EqualFold(q.Name, "hostname.bind.") || strings.EqualFold(q.Name, "id.server."))
				}
				if len(txt) == 0 && msg != nil {
					for _, rr := range msg.Answer {
						if tr, ok := rr.(*dns.TXT); ok {
							txt = append(txt, tr.Txt...)
						}
					}
				}
				if chaos {
					for _, s := range txt {
						if s != "" {
							if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
								t.Fatalf("%s: identity %q needs escaping rules this count does not have", name, s)
							}
							counts[[2]string{vp, s}]++
							break
						}
					}
				}
				if msg == nil {
					continue
				}
				if opt := msg.IsEdns0(); opt != nil {
					for _, o := range opt.Option {
						if n, ok := o.(*dns.EDNS0_NSID); ok {
							raw, _ := hex.DecodeString(n.Nsid)
							id := string(raw)
							if strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
								id = "0x" + hex.EncodeToString(raw)
							}
							counts[[2]string{vp, id}]++
						}
					}
				}
			}
		}
	}
	return counts
}

// jsonNumber formats a number decoded into an interface (a float64).
func jsonNumber(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
