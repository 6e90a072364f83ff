package atlas_test

import (
	"bufio"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/analyzer"
	"github.com/anyscope/anyscope/analysis/atlas"
	"github.com/anyscope/anyscope/analysis/catchment"
	"github.com/anyscope/anyscope/analysis/identity"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// TestMain lets the real-data test use a throwaway PostgreSQL cluster; it
// starts only when a test asks for a database.
func TestMain(m *testing.M) { pgtest.Main(m) }

// realData are excerpts of real RIPE Atlas CHAOS measurements of anycast
// DNS services (testdata/README.md says where they come from). site is how
// a reader who looked at the identities maps them to sites, written here
// without the identity package:
//
//   - Cloudflare's authoritative servers answer id.server with a bare
//     airport code ("JNB", "LHR"): the answer is the site.
//   - CIRA's .ca servers answer hostname.bind with "ns01.<site>.ca-servers.ca"
//     or "ns02.<site>.ca-servers.ca", in either case ("NS01.YYZ.CA-SERVERS.CA",
//     "ns02.LAX.ca-servers.ca"): two servers per site, so ns01 → ns02 is a
//     change of server, not of site. CIRA's Montreal site is "mtl", which is
//     no airport code: the operator's site list names it (declare).
var realData = []struct {
	name string
	file string
	// target is the name the importer gives the measurement's target.
	target string
	site   func(id string) string
	// declare, when set, is the operator's declaration of the target,
	// applied after the import (`anyscope targets apply` adopting it).
	declare *store.Target
	// What the excerpt was chosen to show, counted by hand from the file.
	probes, switches int
	serverChanges    bool
}{
	{
		name: "cloudflare id.server, site switches", file: "dns-id-server-site-switches.jsonl", target: "atlas-1768147",
		site:   bareCodeSite,
		probes: 20, switches: 7,
	},
	{
		name: "ca-servers hostname.bind, server changes inside sites", file: "dns-hostname-bind-server-changes.jsonl", target: "atlas-1911041",
		site: caServersSite,
		declare: &store.Target{
			Name: "atlas-1911041", Addresses: []netip.Addr{netip.MustParseAddr("199.4.144.2")}, Probes: []string{"dns"},
			Interval: 240 * time.Second,
			Sites: []analysis.Site{
				{Code: "LAX", Name: "Los Angeles"}, {Code: "LHR", Name: "London"}, {Code: "MIA", Name: "Miami"},
				{Code: "MTL", Name: "Montreal"}, {Code: "YWG", Name: "Winnipeg"}, {Code: "YYC", Name: "Calgary"},
				{Code: "YYZ", Name: "Toronto"},
			},
		},
		probes: 21, switches: 0, serverChanges: true,
	},
}

var (
	bareCodeRE  = regexp.MustCompile(`^[A-Za-z]{3}$`)
	caServersRE = regexp.MustCompile(`^(?i)ns0[12]\.([a-z]{3})\.ca-servers\.ca$`)
)

func bareCodeSite(id string) string {
	if bareCodeRE.MatchString(id) {
		return strings.ToUpper(id)
	}
	return ""
}

func caServersSite(id string) string {
	if m := caServersRE.FindStringSubmatch(id); m != nil {
		return strings.ToUpper(m[1])
	}
	return ""
}

// TestRealDataCatchmentsAndSwitches imports real Atlas CHAOS results of
// anycast services into PostgreSQL, runs the analyzer over the store, and
// checks its catchments, switches and failures against a count made from
// the raw JSON alone.
func TestRealDataCatchmentsAndSwitches(t *testing.T) {
	t.Parallel()
	for _, tc := range realData {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			path := filepath.Join("testdata", tc.file)
			raw := readRaw(t, path)
			want := countRaw(raw, tc.site)
			if len(want) != tc.probes || want.switches() != tc.switches || (want.serverChanges() > 0) != tc.serverChanges {
				t.Fatalf("the raw count of %s: %d probes, %d site changes, %d server changes inside a site; the excerpt was chosen for %d probes, %d switches, server changes %t",
					tc.file, len(want), want.switches(), want.serverChanges(), tc.probes, tc.switches, tc.serverChanges)
			}

			st, err := store.Open(ctx, pgtest.DB(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			im, err := atlas.NewImporter[store.Agent](st, atlas.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			err = im.Import(ctx, f, tc.file)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			sum := im.Summary()
			if sum.Records != int64(len(raw)) || sum.Results != int64(len(raw)) || sum.Stored != sum.Results || sum.Malformed != 0 ||
				len(sum.Skipped) != 0 || !slices.Equal(sum.Targets, []string{tc.target}) || sum.VantagePoints != len(want) {
				t.Fatalf("import of %d records (%d probes) into target %s: %+v", len(raw), len(want), tc.target, sum)
			}
			if tc.declare != nil {
				if _, err := st.ApplyTargets(ctx, []store.Target{*tc.declare}); err != nil {
					t.Fatal(err)
				}
			}

			// The store yields, per vantage point and in time order, the
			// identities of the raw JSON.
			gotIDs := map[string][]string{}
			err = st.Observations(ctx, time.Time{}, time.Time{}, tc.target, func(o analysis.Observation) error {
				gotIDs[o.VantagePoint] = append(gotIDs[o.VantagePoint], o.Identity)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			wantIDs := map[string][]string{}
			for vp, p := range want {
				for _, o := range p.obs {
					wantIDs[vp] = append(wantIDs[vp], o.identity)
				}
			}
			if !maps.EqualFunc(gotIDs, wantIDs, slices.Equal) {
				t.Errorf("identities per vantage point from the store:\n%v\nfrom the raw JSON:\n%v", gotIDs, wantIDs)
			}

			first, last := raw.span()
			fs, err := analyzer.Run(ctx, st, "", analyzer.Config{Window: catchment.Window{Since: first, Until: last.Add(time.Second)}})
			if err != nil {
				t.Fatal(err)
			}
			compare(t, tc.target, want, fs)
			logSummary(t, tc.target, want, fs)
			compareIdentityPackage(t, tc.target, raw, tc.site)
		})
	}
}

// compare checks the analyzer's findings for target against the raw count.
func compare(t *testing.T, target string, want rawCount, fs analyzer.Findings) {
	t.Helper()
	assignments := map[string]catchment.Assignment{}
	for _, a := range fs.Assignments {
		if a.Target == target {
			assignments[a.VantagePoint] = a
		}
	}
	catchments := map[string]catchment.Catchment{}
	for _, c := range fs.Catchments {
		if c.Target != target {
			continue
		}
		if _, dup := catchments[c.VantagePoint]; dup {
			t.Errorf("%s: catchments at more than one address of %s; the measurement has one", c.VantagePoint, target)
		}
		catchments[c.VantagePoint] = c
	}
	switches := map[string][]change{}
	for _, s := range fs.Switches {
		if s.Target == target {
			switches[s.VantagePoint] = append(switches[s.VantagePoint], change{s.From, s.To, s.At})
		}
	}
	for vp := range assignments {
		if _, ok := want[vp]; !ok {
			t.Errorf("the analyzer assigns %s, which the raw JSON does not have", vp)
		}
	}
	for vp, p := range want {
		a, c := assignments[vp], catchments[vp]
		if a.Site != p.majority || a.Observations != p.resolved {
			t.Errorf("%s: assignment %q from %d observations; raw majority %q of %d (sites %v)", vp, a.Site, a.Observations, p.majority, p.resolved, p.counts)
		}
		if c.Site != p.majority || c.Observations != p.resolved || c.Failures != p.failures || c.Unresolved != 0 {
			t.Errorf("%s: catchment %q, %d observations, %d failures, %d unresolved; raw: %q, %d, %d failures, all resolved",
				vp, c.Site, c.Observations, c.Failures, c.Unresolved, p.majority, p.resolved, p.failures)
		}
		if got := switches[vp]; !slices.EqualFunc(got, p.changes, change.equal) {
			t.Errorf("%s: switches %v; raw site changes %v", vp, got, p.changes)
		}
	}
}

func logSummary(t *testing.T, target string, want rawCount, fs analyzer.Findings) {
	t.Helper()
	perSite := map[string]int{}
	for _, p := range want {
		perSite[p.majority]++
	}
	causes := map[analysis.Cause]int{}
	n := 0
	for _, s := range fs.Switches {
		if s.Target == target {
			causes[s.Cause]++
			n++
		}
	}
	t.Logf("%s: %d probes, catchments by site %v, %d switches (causes %v), %d server changes inside a site, %d failures",
		target, len(want), perSite, n, causes, want.serverChanges(), want.failures())
}

// compareIdentityPackage logs where the identity package's built-in rules
// alone (no declared sites) disagree with the hand-made mapping. It computes
// nothing the test asserts.
func compareIdentityPackage(t *testing.T, target string, raw rawRecords, site func(string) string) {
	t.Helper()
	r := identity.Default(target)
	seen := map[string]bool{}
	for _, rec := range raw {
		id := rec.identity
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		if got := r.Resolve(id).Site; got != site(id) {
			t.Logf("built-in rules alone: %q → %q; the hand-made mapping says %q", id, got, site(id))
		}
	}
}

// rawRecord is what the test reads from one Atlas record, by itself.
type rawRecord struct {
	probe    int64
	at       time.Time
	identity string // "" when the query failed or the answer named nothing
	failed   bool
}

type rawRecords []rawRecord

func (rs rawRecords) span() (first, last time.Time) {
	for i, r := range rs {
		if i == 0 || r.at.Before(first) {
			first = r.at
		}
		if i == 0 || r.at.After(last) {
			last = r.at
		}
	}
	return first, last
}

// readRaw decodes an Atlas JSON-lines file with encoding/json into maps and,
// when a record has no decoded answers, its abuf with miekg/dns. The
// identity is the first non-empty TXT string of the answer.
func readRaw(t *testing.T, path string) rawRecords {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out rawRecords
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m["type"] != "dns" {
			t.Fatalf("%s: a %v record; this count knows DNS only", path, m["type"])
		}
		rec := rawRecord{probe: int64(m["prb_id"].(float64)), at: time.Unix(int64(m["timestamp"].(float64)), 0).UTC()}
		if _, ok := m["error"]; ok {
			rec.failed = true
			out = append(out, rec)
			continue
		}
		res := m["result"].(map[string]any)
		var txt []string
		answers, _ := res["answers"].([]any)
		for _, a := range answers {
			am := a.(map[string]any)
			if am["TYPE"] != "TXT" {
				continue
			}
			switch r := am["RDATA"].(type) {
			case string:
				txt = append(txt, r)
			case []any:
				for _, s := range r {
					txt = append(txt, s.(string))
				}
			}
		}
		if len(answers) == 0 {
			if s, ok := res["abuf"].(string); ok {
				wire, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					t.Fatal(err)
				}
				msg := new(dns.Msg)
				if err := msg.Unpack(wire); err != nil {
					t.Fatal(err)
				}
				for _, rr := range msg.Answer {
					if tr, ok := rr.(*dns.TXT); ok {
						txt = append(txt, tr.Txt...)
					}
				}
			}
		}
		for _, s := range txt {
			if s != "" {
				if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
					t.Fatalf("%s: identity %q needs escaping rules this count does not have", path, s)
				}
				rec.identity = s
				break
			}
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rawCount is the independent count per vantage point ("atlas-<prb_id>").
type rawCount map[string]*rawProbe

type rawProbe struct {
	obs []rawRecord // in time order
	// counts and last are per site; majority is the site most observations
	// named, ties going to the one seen last, then to the smaller code.
	counts   map[string]int
	last     map[string]time.Time
	majority string
	resolved int
	failures int
	// changes are the site changes between consecutive resolved
	// observations; serverChanges the identity changes inside one site.
	changes       []change
	serverChanges int
}

type change struct {
	from, to string
	at       time.Time // of the first observation at to
}

func (c change) equal(d change) bool { return c.from == d.from && c.to == d.to && c.at.Equal(d.at) }

func (c change) String() string {
	return c.from + "→" + c.to + " at " + c.at.UTC().Format(time.RFC3339)
}

func countRaw(raw rawRecords, site func(string) string) rawCount {
	out := rawCount{}
	for _, r := range raw {
		vp := "atlas-" + strconv.FormatInt(r.probe, 10)
		p := out[vp]
		if p == nil {
			p = &rawProbe{counts: map[string]int{}, last: map[string]time.Time{}}
			out[vp] = p
		}
		p.obs = append(p.obs, r)
	}
	for _, p := range out {
		slices.SortStableFunc(p.obs, func(a, b rawRecord) int { return a.at.Compare(b.at) })
		prevSite, prevID := "", ""
		for _, o := range p.obs {
			if o.failed {
				p.failures++
				continue
			}
			s := site(o.identity)
			if s == "" {
				continue
			}
			p.resolved++
			p.counts[s]++
			p.last[s] = o.at
			switch {
			case prevSite != "" && s != prevSite:
				p.changes = append(p.changes, change{prevSite, s, o.at})
			case prevSite != "" && o.identity != prevID:
				p.serverChanges++
			}
			prevSite, prevID = s, o.identity
		}
		for s, n := range p.counts {
			best := p.majority
			if best == "" || cmp.Or(cmp.Compare(n, p.counts[best]), p.last[s].Compare(p.last[best]), cmp.Compare(best, s)) > 0 {
				p.majority = s
			}
		}
	}
	return out
}

func (c rawCount) switches() (n int) {
	for _, p := range c {
		n += len(p.changes)
	}
	return n
}

func (c rawCount) serverChanges() (n int) {
	for _, p := range c {
		n += p.serverChanges
	}
	return n
}

func (c rawCount) failures() (n int) {
	for _, p := range c {
		n += p.failures
	}
	return n
}
