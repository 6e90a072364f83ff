package api

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func valid() Result {
	return Result{
		Seq: 1, MeasuredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Target: "example-dns", Address: "2001:db8::53", Kind: KindDNS,
		Transport: TransportTCP, Query: QueryNSID, RTTMicros: 1500,
		DNS: &DNSValues{Rcode: "NOERROR", NSIDHex: "616d73", NSIDText: "ams", Identity: "ams", Size: 60},
	}
}

func TestResultValidate(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*Result)
		want string // "" = valid
	}{
		{"valid", func(*Result) {}, ""},
		{"failure without values", func(r *Result) { r.DNS = nil; r.RTTMicros = 0; r.Failure = FailureTimeout }, ""},
		{"seq zero", func(r *Result) { r.Seq = 0 }, "seq 0"},
		{"seq huge", func(r *Result) { r.Seq = 1 << 63 }, "seq"},
		{"round after seq", func(r *Result) { r.Round = 2 }, "round 2 after seq 1"},
		{"no time", func(r *Result) { r.MeasuredAt = time.Time{} }, "measured_at missing"},
		{"bad target", func(r *Result) { r.Target = "-x" }, "target name"},
		{"bad address", func(r *Result) { r.Address = "example.org" }, "address"},
		{"zone", func(r *Result) { r.Address = "fe80::1%lo" }, "without zone"},
		{"kind", func(r *Result) { r.Kind = "ping" }, "kind"},
		{"query for kind", func(r *Result) { r.Query = "version.bind" }, `query "version.bind" for kind dns over tcp`},
		{"transport for kind", func(r *Result) { r.Transport = TransportICMP }, "transport \"icmp\" for kind dns"},
		{"values of another kind", func(r *Result) { r.Ping = &PingValues{Sent: 1} }, "values of another kind"},
		{"ping", func(r *Result) {
			r.Kind, r.Transport, r.Query, r.DNS = KindPing, TransportICMP, QueryEcho, nil
			r.Ping = &PingValues{Sent: 3, Received: 4}
		}, "ping sent 3 received 4"},
		{"trace star", func(r *Result) {
			r.Kind, r.Transport, r.Query, r.DNS = KindTrace, TransportUDP, QueryParis, nil
			r.Trace = &TraceValues{Flow: "udp sport=33000 dport=33435", Hops: []TraceHop{{TTL: 1, Addr: "198.18.0.1", RTTUS: 100}, {TTL: 2}}, Stop: "gap_limit"}
		}, ""},
		{"trace bad hop", func(r *Result) {
			r.Kind, r.Transport, r.Query, r.DNS = KindTrace, TransportICMP, QueryParis, nil
			r.Trace = &TraceValues{Flow: "icmp", Hops: []TraceHop{{TTL: 1, Addr: "not-an-ip"}}}
		}, "trace.hops[0].addr"},
		{"session", func(r *Result) {
			r.Kind, r.Transport, r.Query, r.DNS = KindSession, TransportTCP, QuerySessionDNS, nil
			r.Session = &SessionValues{OpenedAt: r.MeasuredAt, ClosedAt: r.MeasuredAt.Add(time.Minute), Queries: 2,
				Answers: []SessionAnswer{{At: r.MeasuredAt, Identity: "ams-1"}}, End: EndReset}
		}, ""},
		{"session end", func(r *Result) {
			r.Kind, r.Transport, r.Query, r.DNS = KindSession, TransportTCP, QuerySessionDNS, nil
			r.Session = &SessionValues{OpenedAt: r.MeasuredAt, ClosedAt: r.MeasuredAt, End: "vanished"}
		}, "session.end"},
		{"http", func(r *Result) {
			r.Kind, r.Transport, r.Query, r.DNS = KindHTTP, TransportTCP, QueryGet, nil
			r.HTTP = &HTTPValues{Scheme: "gopher"}
		}, "http.scheme"},
		{"transport", func(r *Result) { r.Transport = "sctp" }, "transport"},
		{"rtt", func(r *Result) { r.RTTMicros = int64(MaxRTT/time.Microsecond) + 1 }, "rtt_us"},
		{"failure", func(r *Result) { r.Failure = "oops" }, "classified failure"},
		{"rcode", func(r *Result) { r.DNS.Rcode = "NO\nERROR" }, "dns.rcode"},
		{"txt count", func(r *Result) { r.DNS.TXT = make([]string, MaxTXTStrings+1) }, "dns.txt has"},
		{"nsid odd hex", func(r *Result) { r.DNS.NSIDHex = "abc" }, "not hex"},
		{"nsid long", func(r *Result) { r.DNS.NSIDHex = strings.Repeat("ab", MaxNSIDBytes+1) }, "longer than"},
		{"identity NUL", func(r *Result) { r.DNS.Identity = "a\x00b" }, "control characters"},
		{"identity invalid UTF-8", func(r *Result) { r.DNS.Identity = "a\xffb" }, "not valid UTF-8"},
		{"size", func(r *Result) { r.DNS.Size = 70000 }, "dns.size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := valid()
			c.mut(&r)
			err := r.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrInvalid containing %q", err, c.want)
			}
		})
	}
}

func TestBatchValidate(t *testing.T) {
	r := valid()
	if err := (&Batch{Agent: "vp1", Results: []Result{r}}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (&Batch{Agent: "vp 1", Results: []Result{r}}).Validate(); err == nil || !strings.Contains(err.Error(), "agent name") {
		t.Errorf("bad agent name: %v", err)
	}
	bad := r
	bad.Seq = 0
	err := (&Batch{Agent: "vp1", Results: []Result{r, bad}}).Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "results[1]: ") {
		t.Errorf("error does not name the result: %v", err)
	}
	// A hostile value is clipped before it is echoed back.
	err = (&Batch{Agent: strings.Repeat("x", 10000), Results: []Result{r}}).Validate()
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("long agent name echoed in full: %d bytes", len(err.Error()))
	}
}

func TestFailureSet(t *testing.T) {
	seen := map[Failure]bool{}
	for _, f := range Failures {
		if f == FailureNone || !f.Valid() || seen[f] {
			t.Errorf("failure %q: empty, invalid or listed twice", f)
		}
		seen[f] = true
	}
	if Failure("timeout").Valid() {
		t.Error("a string outside the set is valid")
	}
	if FailureTimeout.Responsive() || FailureConnectionRefused.Responsive() || !FailureDNSRefused.Responsive() || !FailureNone.Responsive() {
		t.Error("Responsive: a dead service must not count as answering, a REFUSED answer must")
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"vp1": true, "k-root": true, "a.b_c-d": true, "0": true, strings.Repeat("x", 63): true,
		"": false, "-x": false, ".x": false, "_x": false, "a b": false, "ä": false,
		strings.Repeat("x", 64): false, "a/b": false, "a\x00": false,
	} {
		if got := ValidName(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", s, got, want)
		}
	}
}
