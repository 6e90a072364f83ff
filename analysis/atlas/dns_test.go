package atlas

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// reply builds an answer in wire format, base64 as in abuf: a question, TXT
// strings (CH class for CHAOS questions) and, when nsid is not nil, an
// EDNS0 NSID option.
func reply(t testing.TB, qname string, qclass, qtype uint16, rcode int, txt []string, nsid []byte) string {
	t.Helper()
	m := new(dns.Msg)
	m.Id = 4242
	m.Response = true
	m.Rcode = rcode
	m.Question = []dns.Question{{Name: qname, Qtype: qtype, Qclass: qclass}}
	if txt != nil {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeTXT, Class: qclass}, Txt: txt})
	}
	if nsid != nil {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(1232)
		opt.Option = append(opt.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: fmt.Sprintf("%x", nsid)})
		m.Extra = append(m.Extra, opt)
	}
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(wire)
}

// dnsRecord1 is an Atlas DNS record of a user measurement (no built-in
// query) with the given result object.
func dnsRecord1(result string) string {
	return `{"type":"dns","msm_id":5000001,"prb_id":6036,"timestamp":1442845198,"fw":4790,"proto":"UDP","af":4,` +
		`"dst_addr":"198.51.100.53","result":` + result + `}`
}

func parseOne(t *testing.T, in string, o Options) (Record, *MalformedError) {
	t.Helper()
	got := parse(t, strings.NewReader(in), o)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if len(got.records)+len(got.malformed) != 1 {
		t.Fatalf("%d records and %d malformed, want one in all", len(got.records), len(got.malformed))
	}
	if len(got.malformed) == 1 {
		return Record{}, got.malformed[0]
	}
	checkResults(t, got.records)
	return got.records[0], nil
}

// TestChaosWithNSID: an answer to CH TXT hostname.bind that also carries an
// NSID is what the agent reports as two results of one round: the CHAOS
// one (TXT identity, the NSID beside it) and the NSID one. The NSID is only
// in abuf. (Built with miekg/dns: no public Atlas record at hand shows it.)
func TestChaosWithNSID(t *testing.T) {
	t.Parallel()
	abuf := reply(t, "hostname.bind.", dns.ClassCHAOS, dns.TypeTXT, dns.RcodeSuccess, []string{"ns1.ams.example.net"}, []byte("ams-1"))
	rec, bad := parseOne(t, dnsRecord1(`{"rt":12.3456,"size":90,"abuf":"`+abuf+`"}`), Options{})
	if bad != nil {
		t.Fatal(bad)
	}
	want := []string{
		`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=12346 rcode=NOERROR identity="ns1.ams.example.net" txt=["ns1.ams.example.net"] size=90 nsid=616d732d31/"ams-1"`,
		`dns udp 198.51.100.53 nsid 2015-09-21T14:19:58Z rtt=12346 rcode=NOERROR identity="ams-1" txt=[] size=90 nsid=616d732d31/"ams-1"`,
	}
	if len(rec.Results) != 2 {
		t.Fatalf("%d results, want 2", len(rec.Results))
	}
	for i, r := range rec.Results {
		if line(r) != want[i] {
			t.Errorf("result %d:\n%s\nwant\n%s", i, line(r), want[i])
		}
	}
	a, b := rec.Results[0], rec.Results[1]
	if a.Round != b.Round || a.Round != min(a.Seq, b.Seq) || a.Seq == b.Seq {
		t.Errorf("seqs %d, %d rounds %d, %d: want one round numbered by the smaller seq", a.Seq, b.Seq, a.Round, b.Round)
	}
}

func TestDNSAnswers(t *testing.T) {
	t.Parallel()
	chaos := func(rc int, txt []string, nsid []byte) string {
		return reply(t, "hostname.bind.", dns.ClassCHAOS, dns.TypeTXT, rc, txt, nsid)
	}
	for _, tc := range []struct {
		name   string
		result string
		opts   Options
		want   []string
		bad    string // reason of a malformed record
		skip   []string
	}{{
		name:   "binary NSID is named by its hex",
		result: `{"rt":1,"abuf":"` + reply(t, ".", dns.ClassINET, dns.TypeSOA, dns.RcodeSuccess, nil, []byte{0, 0xff, 'a'}) + `"}`,
		want:   []string{`dns udp 198.51.100.53 nsid 2015-09-21T14:19:58Z rtt=1000 rcode=NOERROR identity="0x00ff61" txt=[] size=0 nsid=00ff61/""`},
	}, {
		name:   "REFUSED with an NSID: the CHAOS query failed, the NSID names the server",
		result: `{"rt":1,"abuf":"` + chaos(dns.RcodeRefused, nil, []byte("lhr")) + `"}`,
		want: []string{
			`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 failure=dns_refused rcode=REFUSED identity="" txt=[] size=0 nsid=6c6872/"lhr"`,
			`dns udp 198.51.100.53 nsid 2015-09-21T14:19:58Z rtt=1000 rcode=REFUSED identity="lhr" txt=[] size=0 nsid=6c6872/"lhr"`,
		},
	}, {
		name:   "id.server",
		result: `{"rt":1,"abuf":"` + reply(t, "ID.SERVER.", dns.ClassCHAOS, dns.TypeTXT, dns.RcodeSuccess, []string{"LHR"}, nil) + `"}`,
		want:   []string{`dns udp 198.51.100.53 id.server 2015-09-21T14:19:58Z rtt=1000 rcode=NOERROR identity="LHR" txt=["LHR"] size=0`},
	}, {
		name:   "IN query without NSID",
		result: `{"rt":1,"abuf":"` + reply(t, "example.org.", dns.ClassINET, dns.TypeA, dns.RcodeNameError, nil, nil) + `"}`,
		want:   []string{`dns udp 198.51.100.53 nsid 2015-09-21T14:19:58Z rtt=1000 failure=dns_nxdomain rcode=NXDOMAIN identity="" txt=[] size=0`},
	}, {
		name:   "answers win over abuf, the first non-empty string names the server",
		result: `{"rt":1,"abuf":"` + chaos(0, []string{"from-abuf"}, nil) + `","answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":["","from-answers"]}]}`,
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 rcode=NOERROR identity="from-answers" txt=["" "from-answers"] size=0`},
	}, {
		name:   "old firmware: numeric TYPE without RDATA, TXT from abuf",
		result: `{"rt":1,"abuf":"` + chaos(0, []string{"ns2"}, nil) + `","answers":[{"RDLENGTH":4,"TYPE":16}]}`,
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 rcode=NOERROR identity="ns2" txt=["ns2"] size=0`},
	}, {
		name:   "control characters, NUL and non-ASCII in RDATA are escaped",
		result: `{"rt":1,"answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":["a\u0000b\u001b[31mc\u00e9\ud800"]}]}`,
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 rcode= identity="a\\000b\\027[31mc\\195\\169\\239\\191\\189" txt=["a\\000b\\027[31mc\\195\\169\\239\\191\\189"] size=0`},
	}, {
		name:   "binary TXT in abuf is escaped",
		result: `{"rt":1,"abuf":"` + chaos(0, []string{"x\x00\x7f\"y"}, nil) + `"}`,
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 rcode=NOERROR identity="x\\000\\127\\\"y" txt=["x\\000\\127\\\"y"] size=0`},
	}, {
		name:   "more than 16 TXT strings: the first 16 are kept",
		result: `{"rt":1,"answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]}]}`,
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 rcode= identity="1" txt=["1" "2" "3" "4" "5" "6" "7" "8" "9" "10" "11" "12" "13" "14" "15" "16"] size=0`},
	}, {
		name:   "no abuf, no TXT: no answer, rcode unknown",
		result: `{"rt":1,"size":31,"ANCOUNT":0}`,
		opts:   Options{Query: api.QueryHostnameBind},
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 failure=dns_no_answer rcode= identity="" txt=[] size=31`},
	}, {
		name:   "abuf not base64",
		result: `{"rt":1,"abuf":"@@@"}`,
		bad:    "abuf is not base64",
	}, {
		name:   "abuf not a DNS message",
		result: `{"rt":1,"abuf":"` + base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}) + `"}`,
		bad:    "abuf is not a DNS message",
	}, {
		name:   "abuf without padding",
		result: `{"rt":1,"abuf":"` + strings.TrimRight(chaos(0, []string{"ns3"}, nil), "=") + `"}`,
		want:   []string{`dns udp 198.51.100.53 hostname.bind 2015-09-21T14:19:58Z rtt=1000 rcode=NOERROR identity="ns3" txt=["ns3"] size=0`},
	}, {
		name:   "negative rt",
		result: `{"rt":-5,"abuf":"` + chaos(0, []string{"ns3"}, nil) + `"}`,
		bad:    "rt -5 ms out of range",
	}, {
		name:   "size out of range",
		result: `{"rt":1,"size":70000,"abuf":"` + chaos(0, []string{"ns3"}, nil) + `"}`,
		bad:    "size 70000 out of range",
	}, {
		name:   "RDATA of another type",
		result: `{"rt":1,"answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":[1,2]}]}`,
		bad:    "RDATA is neither a string nor a list of strings",
	}, {
		name:   "version.bind is no identity query",
		result: `{"rt":1,"answers":[{"TYPE":"TXT","NAME":"version.bind","RDATA":["BIND 9"]}]}`,
		skip:   []string{SkipQueryChaos},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec, bad := parseOne(t, dnsRecord1(tc.result), tc.opts)
			switch {
			case tc.bad != "":
				if bad == nil || !strings.Contains(bad.Reason, tc.bad) {
					t.Fatalf("got %+v, %v; want malformed %q", rec, bad, tc.bad)
				}
				return
			case bad != nil:
				t.Fatal(bad)
			}
			var got []string
			for _, r := range rec.Results {
				got = append(got, line(r))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("results:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if !equal(rec.Skipped, tc.skip) {
				t.Errorf("skipped %q, want %q", rec.Skipped, tc.skip)
			}
		})
	}
}

func TestDNSErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		errObj string
		want   api.Failure
	}{
		{`{"timeout":5000}`, api.FailureTimeout},
		{`{"socket":"connect failed Network is unreachable"}`, api.FailureNetworkUnreachable},
		{`{"socket":"connect failed Connection refused"}`, api.FailureConnectionRefused},
		{`{"socket":"connect failed No route to host"}`, api.FailureHostUnreachable},
		{`{"senderror":"sendto failed: Operation not permitted"}`, api.FailurePermissionDenied},
		{`{"socket":"connect failed Invalid argument"}`, api.FailureUnknown},
		{`{"nameserver":"no local resolvers found"}`, api.FailureUnknown},
		{`{"socket":42}`, api.FailureUnknown},
		{`{}`, api.FailureUnknown},
	} {
		t.Run(tc.errObj, func(t *testing.T) {
			t.Parallel()
			in := `{"type":"dns","msm_id":10310,"prb_id":1,"timestamp":1442845198,"proto":"TCP","dst_addr":"192.0.2.53","error":` + tc.errObj + `}`
			rec, bad := parseOne(t, in, Options{})
			if bad != nil {
				t.Fatal(bad)
			}
			if len(rec.Results) != 1 {
				t.Fatalf("%d results", len(rec.Results))
			}
			r := rec.Results[0]
			if r.Failure != tc.want || r.DNS != nil || r.Transport != api.TransportTCP || r.Query != api.QueryHostnameBind {
				t.Errorf("got %s, want failure %s over tcp, built-in hostname.bind", line(r), tc.want)
			}
		})
	}
}

func TestRecordFields(t *testing.T) {
	t.Parallel()
	base := map[string]any{"type": "dns", "msm_id": 5000001, "prb_id": 6036, "timestamp": 1442845198, "proto": "UDP",
		"dst_addr": "198.51.100.53", "result": map[string]any{"rt": 1, "answers": []any{map[string]any{"TYPE": "TXT", "NAME": "hostname.bind", "RDATA": "ns1"}}}}
	for _, tc := range []struct {
		name string
		set  map[string]any
		bad  string
		skip string
	}{
		{"no type", map[string]any{"type": nil}, "no type", ""},
		{"type not a string", map[string]any{"type": 5}, "type: a JSON number", ""},
		{"negative msm_id", map[string]any{"msm_id": -1}, "out of range", ""},
		{"prb_id zero", map[string]any{"prb_id": 0}, "out of range", ""},
		{"prb_id not an integer", map[string]any{"prb_id": 1.5}, "prb_id: a JSON number", ""},
		{"timestamp before Atlas", map[string]any{"timestamp": 1000}, "timestamp 1000 out of range", ""},
		{"timestamp in the future", map[string]any{"timestamp": 4102444800}, "timestamp 4102444800 out of range", ""},
		{"dst_addr with a zone", map[string]any{"dst_addr": "fe80::1%eth0"}, "is not an IP address", ""},
		{"no dst_addr for a result", map[string]any{"dst_addr": nil}, "no dst_addr", ""},
		{"no result at all", map[string]any{"result": nil}, "neither result, error nor resultset", ""},
		{"resultset too long", map[string]any{"result": nil, "resultset": make([]any, 300)}, "resultset has 300 entries", ""},
		{"unknown proto", map[string]any{"proto": "QUIC"}, "", SkipProto},
		{"unknown type", map[string]any{"type": "sslcert"}, "", SkipType},
		{"unknown fields are ignored", map[string]any{"future_field": map[string]any{"x": []any{1}}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := map[string]any{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range tc.set {
				if v == nil {
					delete(m, k)
				} else {
					m[k] = v
				}
			}
			b, _ := json.Marshal(m)
			rec, bad := parseOne(t, string(b), Options{})
			switch {
			case tc.bad != "":
				if bad == nil || !strings.Contains(bad.Reason, tc.bad) {
					t.Errorf("got %+v, %v; want malformed %q", rec, bad, tc.bad)
				}
			case bad != nil:
				t.Errorf("malformed: %v", bad)
			case tc.skip != "":
				if len(rec.Results) != 0 || !equal(rec.Skipped, []string{tc.skip}) {
					t.Errorf("got %+v, want skipped %q", rec, tc.skip)
				}
			default:
				if len(rec.Results) != 1 || rec.Results[0].DNS.Identity != "ns1" {
					t.Errorf("got %+v", rec)
				}
			}
		})
	}
}
