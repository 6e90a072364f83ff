package atlas

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// parsed is everything a parser returned for one input.
type parsed struct {
	records   []Record
	malformed []*MalformedError
	err       error // the error that ended the input, nil at io.EOF
}

func parse(t testing.TB, r io.Reader, o Options) parsed {
	t.Helper()
	if o.Now == nil {
		o.Now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	}
	p, err := NewParser(r, o)
	if err != nil {
		t.Fatalf("NewParser: %v", err)
	}
	var out parsed
	for {
		rec, err := p.Next()
		var me *MalformedError
		switch {
		case errors.As(err, &me):
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v does not wrap ErrMalformed", err)
			}
			out.malformed = append(out.malformed, me)
		case errors.Is(err, io.EOF):
			return out
		case err != nil:
			out.err = err
			return out
		default:
			out.records = append(out.records, rec)
		}
	}
}

func parseFile(t testing.TB, name string, o Options) parsed {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return parse(t, f, o)
}

// line renders a result compactly, every field the parser sets.
func line(r api.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s %s rtt=%d", r.Kind, r.Transport, r.Address, r.Query, r.MeasuredAt.Format(time.RFC3339), r.RTTMicros)
	if r.Failure != "" {
		fmt.Fprintf(&b, " failure=%s", r.Failure)
	}
	if d := r.DNS; d != nil {
		fmt.Fprintf(&b, " rcode=%s identity=%q txt=%q size=%d", d.Rcode, d.Identity, d.TXT, d.Size)
		if d.NSIDHex != "" {
			fmt.Fprintf(&b, " nsid=%s/%q", d.NSIDHex, d.NSIDText)
		}
	}
	if p := r.Ping; p != nil {
		fmt.Fprintf(&b, " sent=%d rcvd=%d min=%d avg=%d max=%d sd=%d ttl=%d", p.Sent, p.Received, p.MinUS, p.AvgUS, p.MaxUS, p.StddevUS, p.ReplyTTL)
	}
	if tr := r.Trace; tr != nil {
		answered := 0
		for _, h := range tr.Hops {
			if h.Addr != "" {
				answered++
			}
		}
		fmt.Fprintf(&b, " flow=%q engine=%s stop=%s reached=%t probes=%d answered=%d", tr.Flow, tr.Engine, tr.Stop, tr.Reached, len(tr.Hops), answered)
	}
	return b.String()
}

// checkResults checks what every record must satisfy: valid results, one
// round per record, distinct sequence numbers.
func checkResults(t *testing.T, recs []Record) {
	t.Helper()
	seqs := map[uint64]bool{}
	for _, rec := range recs {
		for _, r := range rec.Results {
			if r.Target != "" {
				t.Errorf("%s: target %q, want it left to the importer", rec.Position, r.Target)
			}
			r.Target = "t"
			if err := r.Validate(); err != nil {
				t.Errorf("%s: %v", rec.Position, err)
			}
			if r.Round != rec.Results[0].Round || r.Round > r.Seq {
				t.Errorf("%s: round %d, seq %d, first round %d", rec.Position, r.Round, r.Seq, rec.Results[0].Round)
			}
			if seqs[r.Seq] {
				t.Errorf("%s: seq %d repeated", rec.Position, r.Seq)
			}
			seqs[r.Seq] = true
		}
	}
}

// TestFixtures pins, for every fixture, each record's position, what it
// became and why parts of it were skipped.
func TestFixtures(t *testing.T) {
	t.Parallel()
	type want struct {
		probe   int64
		pos     Position
		results []string
		skipped []string
	}
	for _, tc := range []struct {
		file  string
		query string
		want  []want
	}{{
		file: "dns-rdata-string.json",
		want: []want{{probe: 6036, pos: Position{0, 4, 2}, results: []string{
			`dns udp 193.0.14.129 hostname.bind 2015-09-21T14:19:58Z rtt=1347 rcode=NOERROR identity="ns1.fi-hel.k.ripe.net" txt=["ns1.fi-hel.k.ripe.net"] size=79`,
		}}},
	}, {
		file: "dns-rdata-list.json",
		want: []want{
			{probe: 1102, pos: Position{0, 4, 2}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:22:51Z rtt=68337 failure=dns_no_answer rcode=NOERROR identity="" txt=[""] size=44`}},
			{probe: 366, pos: Position{1, 707, 36}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:22:51Z rtt=254266 rcode=NOERROR identity="DNS2" txt=["DNS2"] size=62`}},
			{probe: 3845, pos: Position{2, 1433, 70}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:23:09Z rtt=54281 rcode=NOERROR identity="dns1.com2com.ru" txt=["dns1.com2com.ru"] size=73`}},
			{probe: 10497, pos: Position{3, 2188, 104}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:23:23Z rtt=108799 rcode=NOERROR identity="rslv.prg.e" txt=["rslv.prg.e"] size=54`}},
			{probe: 11116, pos: Position{4, 2908, 138}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:23:21Z rtt=7562 rcode=NOERROR identity="unbound.t72.ru" txt=["unbound.t72.ru"] size=58`}},
			{probe: 10058, pos: Position{5, 3636, 172}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:23:21Z rtt=25195 failure=dns_refused rcode=REFUSED identity="" txt=[] size=31`}},
			// A timeout of the same measurement: its question is known from
			// the records before it.
			{probe: 1113, pos: Position{6, 4165, 197}, results: []string{`dns udp 208.67.222.222 hostname.bind 2017-06-26T09:22:53Z rtt=0 failure=generic_timeout_error`}},
		},
	}, {
		file: "dns-timeout.json",
		want: []want{
			{probe: 1113, pos: Position{0, 4, 2}, skipped: []string{SkipQueryUnknown}},
			{probe: 1409, pos: Position{1, 353, 20}, skipped: []string{SkipQueryUnknown}},
			{probe: 2259, pos: Position{2, 699, 38}, skipped: []string{SkipQueryUnknown}},
		},
	}, {
		file:  "dns-timeout.json",
		query: api.QueryHostnameBind,
		want: []want{
			{probe: 1113, pos: Position{0, 4, 2}, results: []string{`dns udp 8.8.8.8 hostname.bind 2017-06-26T10:42:05Z rtt=0 failure=generic_timeout_error`}},
			{probe: 1409, pos: Position{1, 353, 20}, results: []string{`dns udp 8.8.8.8 hostname.bind 2017-06-26T10:42:06Z rtt=0 failure=generic_timeout_error`}},
			{probe: 2259, pos: Position{2, 699, 38}, results: []string{`dns udp 8.8.8.8 hostname.bind 2017-06-26T10:42:05Z rtt=0 failure=generic_timeout_error`}},
		},
	}, {
		file: "dns-servfail.json",
		want: []want{
			{probe: 100, pos: Position{0, 4, 2}, results: []string{`dns udp 8.8.8.8 hostname.bind 2017-06-26T10:42:03Z rtt=99867 failure=dns_servfail rcode=SERVFAIL identity="" txt=[] size=31`}},
			{probe: 1000, pos: Position{1, 523, 27}, results: []string{`dns udp 8.8.8.8 hostname.bind 2017-06-26T10:42:04Z rtt=82992 failure=dns_servfail rcode=SERVFAIL identity="" txt=[] size=31`}},
		},
	}, {
		file: "dns-nsid-abuf.json",
		want: []want{{probe: 14184, pos: Position{0, 4, 2}, results: []string{
			`dns udp 2001:7fd::1 nsid 2014-05-01T10:25:36Z rtt=219205 rcode=NOERROR identity="k3.ams-ix.k.ripe.net" txt=[] size=808 nsid=6b332e616d732d69782e6b2e726970652e6e6574/"k3.ams-ix.k.ripe.net"`,
		}}},
	}, {
		file: "dns-header-only-notimp.json",
		want: []want{{probe: 11180, pos: Position{0, 4, 2}, results: []string{
			`dns udp 193.0.14.129 hostname.bind 2015-10-01T09:25:16Z rtt=1282 failure=dns_other_rcode rcode=NOTIMP identity="" txt=[] size=12`,
		}}},
	}, {
		file: "dns-version-bind.json",
		want: []want{{probe: 4232, pos: Position{0, 4, 2}, skipped: []string{SkipQueryChaos}}},
	}, {
		file: "dns-resultset.jsonl",
		want: []want{
			{probe: 17107, pos: Position{0, 0, 1}, results: []string{
				`dns udp 202.70.64.5 hostname.bind 2017-07-10T16:04:48Z rtt=5136 rcode=NOERROR identity="danphe.ntc.net.np\\010danphe \\010localhost.localdomain" txt=["danphe.ntc.net.np\\010danphe \\010localhost.localdomain"] size=105`,
				`dns udp 8.8.8.8 hostname.bind 2017-07-10T16:04:49Z rtt=95363 failure=dns_servfail rcode=SERVFAIL identity="" txt=[] size=31`,
			}},
			{probe: 1355, pos: Position{1, 909, 2}, results: []string{
				`dns udp 213.144.129.2 hostname.bind 2017-07-10T16:02:44Z rtt=54787 rcode=NOERROR identity="lemur" txt=["lemur"] size=63`,
				`dns udp 80.254.161.126 hostname.bind 2017-07-10T16:02:45Z rtt=51420 rcode=NOERROR identity="res3.green.ch" txt=["res3.green.ch"] size=57`,
				`dns udp 2001:1620:2777::2 hostname.bind 2017-07-10T16:02:46Z rtt=0 failure=generic_timeout_error`,
			}},
			{probe: 1042, pos: Position{2, 2008, 3}, results: []string{
				`dns udp 192.168.30.191 hostname.bind 2017-07-10T16:02:46Z rtt=55526 rcode=NOERROR identity="dns-cacheNG" txt=["dns-cacheNG"] size=69`,
				`dns udp 27.114.140.40 hostname.bind 2017-07-10T16:02:47Z rtt=49401 rcode=NOERROR identity="adsl-dns-f02" txt=["adsl-dns-f02"] size=70`,
				`dns udp 27.114.138.4 hostname.bind 2017-07-10T16:02:48Z rtt=48979 rcode=NOERROR identity="dns-dia-F01" txt=["dns-dia-F01"] size=69`,
			}},
			{probe: 102, pos: Position{3, 3348, 4}, results: []string{
				`dns udp 193.62.22.10 hostname.bind 2017-07-10T16:02:45Z rtt=63812 rcode=NOERROR identity="macmillan.ja.net" txt=["macmillan.ja.net"] size=74`,
				`dns udp 193.62.22.2 hostname.bind 2017-07-10T16:02:46Z rtt=53259 rcode=NOERROR identity="collins.ja.net" txt=["collins.ja.net"] size=72`,
			}},
			{probe: 1000, pos: Position{4, 4312, 5}, results: []string{
				`dns udp 192.168.10.1 hostname.bind 2017-07-10T16:02:44Z rtt=0 failure=generic_timeout_error`,
			}},
			{probe: 4378, pos: Position{5, 4621, 6}, skipped: []string{SkipNoAddress}},
			{probe: 719, pos: Position{6, 4896, 7}, results: []string{
				`dns udp 130.104.230.68 hostname.bind 2017-07-10T16:02:45Z rtt=0 failure=network_unreachable`,
				`dns udp 130.104.1.1 hostname.bind 2017-07-10T16:02:46Z rtt=0 failure=network_unreachable`,
				`dns udp 130.104.1.2 hostname.bind 2017-07-10T16:02:47Z rtt=0 failure=network_unreachable`,
			}},
			{probe: 1048, pos: Position{7, 5506, 8}, results: []string{
				`dns udp 192.168.0.1 hostname.bind 2017-07-10T16:02:46Z rtt=54332 failure=dns_no_answer rcode=NOERROR identity="" txt=[""] size=44`,
			}},
			{probe: 1, pos: Position{8, 6015, 9}, results: []string{
				`dns udp 192.168.1.1 hostname.bind 2017-07-10T16:02:46Z rtt=62610 failure=dns_other_rcode rcode=NOTIMP identity="" txt=[] size=31`,
			}},
			{probe: 1136, pos: Position{9, 6444, 10}, results: []string{
				`dns udp 216.165.129.157 hostname.bind 2017-07-10T16:02:44Z rtt=86525 rcode=NOERROR identity="nycmny83rdns101.dns.tds.net" txt=["nycmny83rdns101.dns.tds.net"] size=85`,
				`dns udp 216.170.153.146 hostname.bind 2017-07-10T16:02:45Z rtt=81474 rcode=NOERROR identity="nycmny83rdns101.dns.tds.net" txt=["nycmny83rdns101.dns.tds.net"] size=85`,
			}},
			{probe: 2678, pos: Position{10, 7473, 11}, results: []string{
				`dns udp 2001:4860:4860::8888 hostname.bind 2017-07-10T16:02:45Z rtt=0 failure=network_unreachable`,
				`dns udp 8.8.8.8 hostname.bind 2017-07-10T16:02:46Z rtt=62641 failure=dns_servfail rcode=SERVFAIL identity="" txt=[] size=31`,
				`dns udp 8.8.4.4 hostname.bind 2017-07-10T16:02:47Z rtt=56113 failure=dns_servfail rcode=SERVFAIL identity="" txt=[] size=31`,
			}},
		},
	}, {
		file: "traceroute-paris.json",
		want: []want{{probe: 394, pos: Position{0, 4, 2}, results: []string{
			`trace udp 220.226.205.30 paris 2014-04-24T10:15:47Z rtt=221541 flow="udp paris_id=15" engine=ripe-atlas stop=reached reached=true probes=60 answered=60`,
		}}},
	}, {
		file: "traceroute-gap.json",
		want: []want{{probe: 319, pos: Position{0, 4, 2}, results: []string{
			`trace udp 121.244.76.25 paris 2014-07-28T15:23:47Z rtt=0 failure=generic_timeout_error flow="udp paris_id=5" engine=ripe-atlas stop=gap_limit reached=false probes=51 answered=33`,
		}}},
	}, {
		// Late answers belong to earlier probes: they are not hops.
		file: "traceroute-late-packets.json",
		want: []want{{probe: 10834, pos: Position{0, 4, 2}, results: []string{
			`trace udp 78.46.48.134 paris 2015-11-12T12:17:48Z rtt=0 failure=generic_timeout_error flow="udp paris_id=10" engine=ripe-atlas stop=gap_limit reached=false probes=18 answered=0`,
		}}},
	}, {
		file: "traceroute-unreachable.json",
		want: []want{
			{probe: 14468, pos: Position{0, 4, 2}, results: []string{
				`trace icmp 2001:980:1284:10:beee:7bff:fe87:9eda paris 2015-12-03T14:27:11Z rtt=0 failure=network_unreachable flow="icmp paris_id=1" engine=ripe-atlas stop=unreachable reached=false probes=3 answered=3`,
			}},
			{probe: 82, pos: Position{1, 1086, 49}, results: []string{
				`trace icmp 2001:6b0:e:3::1 paris 2014-05-06T15:09:00Z rtt=0 failure=host_unreachable flow="icmp paris_id=5" engine=ripe-atlas stop=unreachable reached=false probes=3 answered=3`,
			}},
			{probe: 82, pos: Position{2, 2154, 96}, results: []string{
				`trace icmp 2001:6b0:e:3::1 paris 2014-04-22T15:28:50Z rtt=0 failure=network_unreachable flow="icmp paris_id=14" engine=ripe-atlas stop= reached=false probes=0 answered=0`,
			}},
		},
	}, {
		file: "traceroute-no-paris.json",
		want: []want{{probe: 22586, pos: Position{0, 4, 2}, skipped: []string{SkipNoAddress}}},
	}, {
		file: "ping.json",
		want: []want{
			{probe: 270, pos: Position{0, 4, 2}, results: []string{`ping icmp 62.2.16.24 echo 2014-03-21T15:39:43Z rtt=57141 sent=3 rcvd=3 min=47941 avg=57141 max=63213 sd=6615 ttl=50`}},
			{probe: 202, pos: Position{1, 684, 40}, results: []string{`ping icmp 62.2.16.12 echo 2013-09-04T05:15:10Z rtt=27301 sent=3 rcvd=1 min=27301 avg=27301 max=27301 sd=0 ttl=54`}},
			// Duplicates are not replies of their own.
			{probe: 1216, pos: Position{2, 1331, 77}, results: []string{`ping icmp 62.2.16.24 echo 2014-03-20T01:08:48Z rtt=27768 sent=2 rcvd=1 min=27768 avg=27768 max=27768 sd=0 ttl=54`}},
			{probe: 202, pos: Position{3, 2064, 119}, results: []string{`ping icmp 62.2.16.24 echo 2014-03-13T21:23:51Z rtt=0 failure=generic_timeout_error sent=1 rcvd=0 min=0 avg=0 max=0 sd=0 ttl=55`}},
		},
	}} {
		t.Run(tc.file+"/"+tc.query, func(t *testing.T) {
			t.Parallel()
			got := parseFile(t, tc.file, Options{Query: tc.query})
			if got.err != nil || len(got.malformed) > 0 {
				t.Fatalf("error %v, malformed %v", got.err, got.malformed)
			}
			checkResults(t, got.records)
			if len(got.records) != len(tc.want) {
				t.Fatalf("%d records, want %d", len(got.records), len(tc.want))
			}
			for i, rec := range got.records {
				w := tc.want[i]
				if rec.ProbeID != w.probe || rec.Position != w.pos {
					t.Errorf("record %d: probe %d at %+v, want %d at %+v", i, rec.ProbeID, rec.Position, w.probe, w.pos)
				}
				var lines []string
				for _, r := range rec.Results {
					lines = append(lines, line(r))
				}
				if !slices.Equal(lines, w.results) {
					t.Errorf("record %d results:\n%s\nwant:\n%s", i, strings.Join(lines, "\n"), strings.Join(w.results, "\n"))
				}
				if !slices.Equal(rec.Skipped, w.skipped) {
					t.Errorf("record %d skipped %q, want %q", i, rec.Skipped, w.skipped)
				}
			}
		})
	}
}

// TestTraceHops pins the hops of a Paris traceroute that reached its
// destination through MPLS tunnels.
func TestTraceHops(t *testing.T) {
	t.Parallel()
	got := parseFile(t, "traceroute-paris.json", Options{})
	if len(got.records) != 1 || len(got.records[0].Results) != 1 {
		t.Fatalf("got %+v", got)
	}
	hops := got.records[0].Results[0].Trace.Hops
	for _, tc := range []struct {
		i    int
		want api.TraceHop
	}{
		{0, api.TraceHop{TTL: 1, Attempt: 1, Addr: "10.0.0.1", RTTUS: 3031, ICMPType: 11, ReplyTTL: 64}},
		{2, api.TraceHop{TTL: 1, Attempt: 3, Addr: "10.0.0.1", RTTUS: 3187, ICMPType: 11, ReplyTTL: 64}},
		{21, api.TraceHop{TTL: 8, Attempt: 1, Addr: "4.69.201.69", RTTUS: 20115, ICMPType: 11, ReplyTTL: 52,
			MPLS: []api.MPLS{{Label: 1692, TC: 0, S: true, TTL: 1}}}},
		// The destination's answer to UDP: port unreachable.
		{57, api.TraceHop{TTL: 20, Attempt: 1, Addr: "220.226.205.30", RTTUS: 221541, ICMPType: 3, ICMPCode: 3, ReplyTTL: 45}},
	} {
		h := hops[tc.i]
		if fmt.Sprint(h) != fmt.Sprint(tc.want) {
			t.Errorf("hop %d = %+v, want %+v", tc.i, h, tc.want)
		}
	}
}

// TestMalformedMixed checks that broken records are reported with their
// position and reason, and the good ones around them still come through.
func TestMalformedMixed(t *testing.T) {
	t.Parallel()
	got := parseFile(t, "malformed-mixed.jsonl", Options{})
	if got.err != nil {
		t.Fatal(got.err)
	}
	type bad struct {
		pos    Position
		reason string
	}
	want := []bad{
		{Position{1, 511, 2}, "invalid JSON at byte 120 of the record"},
		{Position{2, 632, 3}, "avg: a JSON string where float64 is wanted"},
		{Position{3, 835, 4}, "no prb_id"},
		{Position{4, 1182, 5}, "abuf is not base64"},
		{Position{6, 1933, 8}, "no timestamp"},
		{Position{7, 2270, 9}, `dst_addr "not-an-address" is not an IP address`},
		{Position{8, 2637, 10}, "not a JSON object"},
		{Position{9, 2643, 11}, "RDATA is neither a string nor a list of strings"},
	}
	if len(got.malformed) != len(want) {
		t.Fatalf("%d malformed, want %d: %v", len(got.malformed), len(want), got.malformed)
	}
	for i, m := range got.malformed {
		if m.Position != want[i].pos || !strings.Contains(m.Reason, want[i].reason) {
			t.Errorf("malformed %d: %v, want %+v", i, m, want[i])
		}
	}
	var probes []int64
	for _, r := range got.records {
		probes = append(probes, r.ProbeID)
	}
	if !slices.Equal(probes, []int64{6036, 2707, 14184}) {
		t.Errorf("records of probes %v, want 6036, 2707 (skipped http) and 14184", probes)
	}
	if s := got.records[1].Skipped; got.records[1].Type != "http" || !slices.Equal(s, []string{SkipType}) {
		t.Errorf("http record: type %q, skipped %q", got.records[1].Type, s)
	}
	checkResults(t, got.records)
}

// TestSeqStable pins sequence numbers: a change would make every re-import
// store its results a second time.
func TestSeqStable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		msm, prb, ts int64
		index        int
		kind         api.Kind
		query        string
		want         uint64
	}{
		{1423386, 6036, 1442845198, 0, api.KindDNS, api.QueryHostnameBind, 4587482321538275117},
		{1004048, 14184, 1398939936, 0, api.KindDNS, api.QueryNSID, 1596616265165639849},
	} {
		got := Seq(tc.msm, tc.prb, tc.ts, tc.index, tc.kind, tc.query)
		if got != tc.want {
			t.Errorf("Seq(%d, %d, %d, %d, %s, %s) = %d, want %d", tc.msm, tc.prb, tc.ts, tc.index, tc.kind, tc.query, got, tc.want)
		}
		if got == 0 || got >= 1<<62 {
			t.Errorf("Seq %d out of 1..2^62-1", got)
		}
	}
}

// TestReparseSameSeqs: the same input gives the same numbers, whatever
// record comes before it.
func TestReparseSameSeqs(t *testing.T) {
	t.Parallel()
	a := parseFile(t, "dns-resultset.jsonl", Options{})
	b := parseFile(t, "dns-resultset.jsonl", Options{})
	var sa, sb []uint64
	for i := range a.records {
		for j := range a.records[i].Results {
			sa = append(sa, a.records[i].Results[j].Seq)
			sb = append(sb, b.records[i].Results[j].Seq)
		}
	}
	if len(sa) == 0 || !slices.Equal(sa, sb) {
		t.Errorf("seqs differ between parses: %v vs %v", sa, sb)
	}
}

func TestNewParserOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"query nsid", Options{Query: api.QueryNSID}, true},
		{"unknown query", Options{Query: "version.bind"}, false},
		{"record size too small", Options{MaxRecordBytes: 10}, false},
		{"record size too large", Options{MaxRecordBytes: 1 << 30}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewParser(strings.NewReader(""), tc.o)
			if (err == nil) != tc.ok {
				t.Errorf("NewParser(%+v) error %v, want ok %t", tc.o, err, tc.ok)
			}
		})
	}
}
