package probe

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// site answers identity queries like one site of an anycast DNS service.
type site struct {
	hostname string // CH TXT hostname.bind.
	idServer string // CH TXT id.server.
	nsid     []byte // NSID payload, returned when asked for
	rcode    int    // answered rcode; identities only with NOERROR
}

func (s site) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.Rcode = s.rcode
	if s.rcode == dns.RcodeSuccess && len(req.Question) == 1 {
		q := req.Question[0]
		txt := func(v string) {
			if v != "" {
				m.Answer = append(m.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS},
					Txt: []string{v},
				})
			}
		}
		switch {
		case q.Qclass == dns.ClassCHAOS && strings.EqualFold(q.Name, "hostname.bind."):
			txt(s.hostname)
		case q.Qclass == dns.ClassCHAOS && strings.EqualFold(q.Name, "id.server."):
			txt(s.idServer)
		}
	}
	if opt := req.IsEdns0(); opt != nil {
		ro := m.SetEdns0(1232, false).IsEdns0()
		for _, o := range opt.Option {
			if o.Option() == dns.EDNS0NSID && s.nsid != nil {
				ro.Option = append(ro.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: hex.EncodeToString(s.nsid)})
			}
		}
	}
	_ = w.WriteMsg(m)
}

// listenBoth binds TCP and UDP on the same free port of host.
func listenBoth(t *testing.T, host string) (net.Listener, net.PacketConn, uint16) {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("listen tcp: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			l.Close()
			continue
		}
		t.Cleanup(func() { l.Close(); pc.Close() })
		return l, pc, uint16(port)
	}
	t.Fatal("no port free for both TCP and UDP")
	return nil, nil, 0
}

// serve runs a miekg/dns server with h on host, UDP and TCP, and returns its
// port.
func serve(t *testing.T, host string, h dns.Handler) uint16 {
	t.Helper()
	l, pc, port := listenBoth(t, host)
	for _, srv := range []*dns.Server{{Listener: l, Handler: h}, {PacketConn: pc, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return port
}

// serveRaw runs hand-written UDP and TCP servers on host and returns their
// port. udp gets each datagram and returns what to send back (nil: nothing);
// tcp gets each accepted connection.
func serveRaw(t *testing.T, host string, udp func(q []byte) []byte, tcp func(c net.Conn)) uint16 {
	t.Helper()
	l, pc, port := listenBoth(t, host)
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if udp == nil {
				continue
			}
			if a := udp(buf[:n]); a != nil {
				_, _ = pc.WriteTo(a, from)
			}
		}
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if tcp != nil {
					tcp(c)
				}
			})
		}
	})
	return port
}

// readTCPQuery reads one length-prefixed query from c.
func readTCPQuery(c net.Conn) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	q := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(c, q)
	return q, err
}

func frame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

func newProber(t *testing.T, port uint16, timeout time.Duration) *DNS {
	t.Helper()
	p, err := NewDNS(DNSOptions{Port: port, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var target = api.ScheduleTarget{Name: "k-root", Addresses: []string{"193.0.14.129"}, Probes: []api.Kind{api.KindDNS}, IntervalSeconds: 60}

// checkValid fails the test unless every result would be accepted by the
// collector once the spool numbers it.
func checkValid(t *testing.T, results []api.Result) {
	t.Helper()
	for i, r := range results {
		r.Seq = uint64(i + 1)
		if err := r.Validate(); err != nil {
			t.Errorf("result %d (%s) is invalid: %v\n%+v", i, r.Query, err, r)
		}
	}
}

func byQuery(results []api.Result) map[string]api.Result {
	m := map[string]api.Result{}
	for _, r := range results {
		m[r.Query] = r
	}
	return m
}

func TestDNSProbeSite(t *testing.T) {
	t.Parallel()
	s := site{hostname: "ns1.ams.example.org", idServer: "AMS", nsid: []byte("ams-1")}
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, transport := range []api.Transport{api.TransportUDP, api.TransportTCP} {
			t.Run(fmt.Sprintf("%s/%s", host, transport), func(t *testing.T) {
				t.Parallel()
				if host == "::1" {
					l, err := net.Listen("tcp", "[::1]:0")
					if err != nil {
						t.Skipf("IPv6 loopback ::1 is not configured on this machine: %v", err)
					}
					l.Close()
				}
				p := newProber(t, serve(t, host, s), time.Second)
				before := time.Now()
				results := p.Probe(context.Background(), target, netip.MustParseAddr(host), transport)
				checkValid(t, results)
				if len(results) != 3 {
					t.Fatalf("got %d results, want 3", len(results))
				}
				want := map[string]api.DNSValues{
					api.QueryHostnameBind: {Rcode: "NOERROR", TXT: []string{"ns1.ams.example.org"}, NSIDHex: hex.EncodeToString([]byte("ams-1")), NSIDText: "ams-1", Identity: "ns1.ams.example.org"},
					api.QueryIDServer:     {Rcode: "NOERROR", TXT: []string{"AMS"}, NSIDHex: hex.EncodeToString([]byte("ams-1")), NSIDText: "ams-1", Identity: "AMS"},
					api.QueryNSID:         {Rcode: "NOERROR", NSIDHex: hex.EncodeToString([]byte("ams-1")), NSIDText: "ams-1", Identity: "ams-1"},
				}
				for q, r := range byQuery(results) {
					if r.Failure != api.FailureNone {
						t.Errorf("%s: failure %q", q, r.Failure)
						continue
					}
					if r.Target != "k-root" || r.Address != host || r.Kind != api.KindDNS || r.Transport != transport || r.Seq != 0 {
						t.Errorf("%s: wrong identification: %+v", q, r)
					}
					if r.MeasuredAt.Before(before.Add(-time.Millisecond)) || r.MeasuredAt.After(time.Now()) || r.MeasuredAt.Location() != time.UTC {
						t.Errorf("%s: measured_at %v not the UTC send time", q, r.MeasuredAt)
					}
					if r.RTTMicros <= 0 {
						t.Errorf("%s: rtt %dµs", q, r.RTTMicros)
					}
					w := want[q]
					got := *r.DNS
					if got.Size <= 12 {
						t.Errorf("%s: size %d", q, got.Size)
					}
					got.Size = 0
					if fmt.Sprint(got) != fmt.Sprint(w) {
						t.Errorf("%s: values\n got  %+v\n want %+v", q, got, w)
					}
				}
			})
		}
	}
}

func TestDNSProbeFailures(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	loop := netip.MustParseAddr("127.0.0.1")
	// echoID returns garbage that starts with the query's message ID, so the
	// reply looks like an answer to it but cannot be parsed.
	echoID := func(q []byte) []byte {
		return append([]byte{q[0], q[1]}, 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xde, 0xad)
	}
	tests := []struct {
		name      string
		port      func(t *testing.T) uint16
		transport api.Transport
		want      api.Failure
		alt       api.Failure // also acceptable (a race the kernel decides)
		rcode     string
		// deadlines is how many transaction deadlines the probe waits out:
		// over UDP each transaction its own, over TCP the first on the
		// round's connection (the others inherit its failure).
		deadlines int
	}{
		{
			name:      "refused",
			port:      func(t *testing.T) uint16 { return serve(t, "127.0.0.1", site{rcode: dns.RcodeRefused}) },
			transport: api.TransportUDP, want: api.FailureDNSRefused, rcode: "REFUSED",
		},
		{
			name:      "refused over tcp",
			port:      func(t *testing.T) uint16 { return serve(t, "127.0.0.1", site{rcode: dns.RcodeRefused}) },
			transport: api.TransportTCP, want: api.FailureDNSRefused, rcode: "REFUSED",
		},
		{
			name:      "servfail",
			port:      func(t *testing.T) uint16 { return serve(t, "127.0.0.1", site{rcode: dns.RcodeServerFailure}) },
			transport: api.TransportUDP, want: api.FailureDNSServfail, rcode: "SERVFAIL",
		},
		{
			name:      "nxdomain",
			port:      func(t *testing.T) uint16 { return serve(t, "127.0.0.1", site{rcode: dns.RcodeNameError}) },
			transport: api.TransportUDP, want: api.FailureDNSNXDomain, rcode: "NXDOMAIN",
		},
		{
			name:      "notimp",
			port:      func(t *testing.T) uint16 { return serve(t, "127.0.0.1", site{rcode: dns.RcodeNotImplemented}) },
			transport: api.TransportUDP, want: api.FailureDNSRcode, rcode: "NOTIMP",
		},
		{
			name:      "no identity",
			port:      func(t *testing.T) uint16 { return serve(t, "127.0.0.1", site{}) },
			transport: api.TransportTCP, want: api.FailureDNSNoAnswer, rcode: "NOERROR",
		},
		{
			name:      "garbage with the query id",
			port:      func(t *testing.T) uint16 { return serveRaw(t, "127.0.0.1", echoID, nil) },
			transport: api.TransportUDP, want: api.FailureDNSBogus,
		},
		{
			name: "garbage over tcp",
			port: func(t *testing.T) uint16 {
				return serveRaw(t, "127.0.0.1", nil, func(c net.Conn) {
					if _, err := readTCPQuery(c); err == nil {
						_, _ = c.Write(frame([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")))
					}
				})
			},
			transport: api.TransportTCP, want: api.FailureDNSBogus,
		},
		{
			name: "garbage with another id",
			port: func(t *testing.T) uint16 {
				return serveRaw(t, "127.0.0.1", func(q []byte) []byte { return []byte{q[0] ^ 0xff, q[1], 1, 2, 3} }, nil)
			},
			transport: api.TransportUDP, want: api.FailureDNSBogus, deadlines: 3,
		},
		{
			name: "wrong question",
			port: func(t *testing.T) uint16 {
				return serve(t, "127.0.0.1", dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
					m := new(dns.Msg)
					m.SetReply(req)
					m.Question[0].Name = "evil.example.org."
					_ = w.WriteMsg(m)
				}))
			},
			transport: api.TransportUDP, want: api.FailureDNSBogus,
		},
		{
			name: "wrong id over tcp",
			port: func(t *testing.T) uint16 {
				return serve(t, "127.0.0.1", dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
					m := new(dns.Msg)
					m.SetReply(req)
					m.Id++
					_ = w.WriteMsg(m)
				}))
			},
			transport: api.TransportTCP, want: api.FailureDNSBogus,
		},
		{
			name:      "never answers",
			port:      func(t *testing.T) uint16 { return serveRaw(t, "127.0.0.1", func([]byte) []byte { return nil }, nil) },
			transport: api.TransportUDP, want: api.FailureTimeout, deadlines: 3,
		},
		{
			name: "never answers over tcp",
			port: func(t *testing.T) uint16 {
				return serveRaw(t, "127.0.0.1", nil, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
			},
			transport: api.TransportTCP, want: api.FailureTimeout, deadlines: 1,
		},
		{
			name: "closes after reading the query",
			port: func(t *testing.T) uint16 {
				return serveRaw(t, "127.0.0.1", nil, func(c net.Conn) { _, _ = readTCPQuery(c) })
			},
			transport: api.TransportTCP, want: api.FailureConnectionClosed,
		},
		{
			name: "closes half way through the answer",
			port: func(t *testing.T) uint16 {
				return serveRaw(t, "127.0.0.1", nil, func(c net.Conn) {
					if q, err := readTCPQuery(c); err == nil {
						_, _ = c.Write(frame(q)[:8])
					}
				})
			},
			transport: api.TransportTCP, want: api.FailureConnectionClosed,
		},
		{
			name:      "closes immediately",
			port:      func(t *testing.T) uint16 { return serveRaw(t, "127.0.0.1", nil, func(net.Conn) {}) },
			transport: api.TransportTCP, want: api.FailureConnectionClosed, alt: api.FailureConnectionReset,
		},
		{
			name: "resets",
			port: func(t *testing.T) uint16 {
				return serveRaw(t, "127.0.0.1", nil, func(c net.Conn) {
					_, _ = readTCPQuery(c)
					_ = c.(*net.TCPConn).SetLinger(0)
				})
			},
			transport: api.TransportTCP, want: api.FailureConnectionReset,
		},
		{
			name: "nothing listening over udp",
			port: func(t *testing.T) uint16 {
				_, pc, port := listenBoth(t, "127.0.0.1")
				pc.Close()
				return port
			},
			transport: api.TransportUDP, want: api.FailureConnectionRefused,
		},
		{
			name: "nothing listening over tcp",
			port: func(t *testing.T) uint16 {
				l, _, port := listenBoth(t, "127.0.0.1")
				l.Close()
				return port
			},
			transport: api.TransportTCP, want: api.FailureConnectionRefused,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProber(t, tt.port(t), timeout)
			start := time.Now()
			results := p.Probe(context.Background(), target, loop, tt.transport)
			elapsed := time.Since(start)
			checkValid(t, results)
			if len(results) != 3 {
				t.Fatalf("got %d results, want 3", len(results))
			}
			for _, r := range results {
				if r.Failure != tt.want && (tt.alt == "" || r.Failure != tt.alt) {
					t.Errorf("%s: failure %q, want %q", r.Query, r.Failure, tt.want)
				}
				if tt.rcode != "" && (r.DNS == nil || r.DNS.Rcode != tt.rcode) {
					t.Errorf("%s: dns values %+v, want rcode %s", r.Query, r.DNS, tt.rcode)
				}
				if r.Failure == api.FailureTimeout && r.RTTMicros != 0 {
					t.Errorf("%s: timeout with rtt %dµs", r.Query, r.RTTMicros)
				}
			}
			// The deadlines waited out, and otherwise prompt.
			limit := time.Duration(tt.deadlines)*timeout + 500*time.Millisecond
			if tt.deadlines == 0 {
				limit = timeout
			}
			if elapsed > limit {
				t.Errorf("probe took %v, want at most %v", elapsed, limit)
			}
			if elapsed < time.Duration(tt.deadlines)*timeout {
				t.Errorf("probe took %v, before its %d deadlines", elapsed, tt.deadlines)
			}
		})
	}
}

func TestDNSProbeHostile(t *testing.T) {
	t.Parallel()
	binary := strings.Repeat("\\001", 255) // 255 control bytes: 1020 bytes escaped
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("s%d\\000\\255\\\"", i))
	}
	nsid := append([]byte("\x00\x1b[31m\xff\xfe"), make([]byte, 400)...) // control, invalid UTF-8, too long
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		hdr := dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS}
		if strings.EqualFold(q.Name, "hostname.bind.") {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{binary, "\\000nul"}})
		} else {
			for i := 0; i < len(many); i += 4 {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: many[i : i+4]})
			}
		}
		m.SetEdns0(4096, false).IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: hex.EncodeToString(nsid)}}
		_ = w.WriteMsg(m)
	})
	for _, transport := range []api.Transport{api.TransportUDP, api.TransportTCP} {
		t.Run(string(transport), func(t *testing.T) {
			t.Parallel()
			p := newProber(t, serve(t, "127.0.0.1", h), time.Second)
			results := p.Probe(context.Background(), target, netip.MustParseAddr("127.0.0.1"), transport)
			checkValid(t, results)
			got := byQuery(results)
			if len(got) != 3 {
				t.Fatalf("got %d results, want 3", len(results))
			}
			wantHex := hex.EncodeToString(nsid[:api.MaxNSIDBytes])
			for q, r := range got {
				if r.DNS == nil {
					t.Fatalf("%s: no dns values (failure %q)", q, r.Failure)
				}
				if r.DNS.NSIDHex != wantHex || r.DNS.NSIDText != "" {
					t.Errorf("%s: nsid %q / %q, want the first %d bytes as hex and no text", q, r.DNS.NSIDHex, r.DNS.NSIDText, api.MaxNSIDBytes)
				}
			}
			hb := got[api.QueryHostnameBind].DNS
			if len(hb.TXT) != 2 || hb.TXT[0] != binary || hb.Identity != binary || hb.TXT[1] != `\000nul` {
				t.Errorf("hostname.bind: %+v", hb)
			}
			id := got[api.QueryIDServer].DNS
			if len(id.TXT) != api.MaxTXTStrings || id.TXT[0] != `s0\000\255\"` {
				t.Errorf("id.server: %d strings, first %q", len(id.TXT), id.TXT[0])
			}
			if n := got[api.QueryNSID]; n.Failure != api.FailureNone || n.DNS.Identity != "0x"+wantHex {
				t.Errorf("nsid: failure %q identity %q", n.Failure, n.DNS.Identity)
			}
		})
	}
}

func TestDNSProbeCanceled(t *testing.T) {
	t.Parallel()
	port := serveRaw(t, "127.0.0.1", func([]byte) []byte { return nil }, nil)
	p := newProber(t, port, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	results := p.Probe(ctx, target, netip.MustParseAddr("127.0.0.1"), api.TransportUDP)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("canceled probe returned after %v", d)
	}
	if len(results) != 1 || results[0].Failure != api.FailureUnknown {
		t.Errorf("got %+v, want one result interrupted by the cancellation", results)
	}
}

type countingLimiter struct {
	mu sync.Mutex
	n  int
}

func (l *countingLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if l.n > 2 {
		return errors.New("rate ceiling reached")
	}
	return nil
}

func (l *countingLimiter) WaitSeries(ctx context.Context, n int, every time.Duration) (time.Duration, error) {
	for range n {
		if err := l.Wait(ctx); err != nil {
			return every, err
		}
	}
	return every, nil
}

func TestDNSProbeLimiter(t *testing.T) {
	t.Parallel()
	lim := &countingLimiter{}
	p, err := NewDNS(DNSOptions{Port: serve(t, "127.0.0.1", site{hostname: "a"}), Limiter: lim})
	if err != nil {
		t.Fatal(err)
	}
	results := p.Probe(context.Background(), target, netip.MustParseAddr("127.0.0.1"), api.TransportUDP)
	if len(results) != 2 || lim.n != 3 {
		t.Errorf("got %d results after %d waits, want 2 after 3", len(results), lim.n)
	}
}

// TestDNSProbeNSIDWithRefused: a server that refuses the query (it does not
// serve the name asked) but still sends its NSID has answered the identity
// question: the NSID transaction succeeds, its rcode is kept. The CHAOS
// queries, refused without a TXT, name no one and fail.
func TestDNSProbeNSIDWithRefused(t *testing.T) {
	t.Parallel()
	p := newProber(t, serve(t, "127.0.0.1", site{rcode: dns.RcodeRefused, nsid: []byte("fra-1")}), time.Second)
	results := p.Probe(context.Background(), target, netip.MustParseAddr("127.0.0.1"), api.TransportUDP)
	checkValid(t, results)
	got := byQuery(results)
	if r := got[api.QueryNSID]; r.Failure != api.FailureNone || r.DNS == nil || r.DNS.Identity != "fra-1" || r.DNS.Rcode != "REFUSED" {
		t.Errorf("NSID transaction: failure %q, values %+v; want success naming fra-1 with rcode REFUSED", r.Failure, r.DNS)
	}
	// The CHAOS replies carry the NSID too (every query asks for it), but
	// their question is the TXT: without it they count as refused.
	if r := got[api.QueryHostnameBind]; r.Failure != api.FailureDNSRefused {
		t.Errorf("hostname.bind: failure %q, want %q", r.Failure, api.FailureDNSRefused)
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestDNSProbeTCPOneConnectionPerRound: the TCP transactions of a round share
// one connection, a new one per round, and each still gets its own answer.
func TestDNSProbeTCPOneConnectionPerRound(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	var (
		mu   sync.Mutex
		from []string // the client address of each query, in order
	)
	s := site{hostname: "ns1.ams.example.org", idServer: "AMS", nsid: []byte("ams-1")}
	srv := &dns.Server{Listener: cl, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		mu.Lock()
		from = append(from, w.RemoteAddr().String())
		mu.Unlock()
		s.ServeDNS(w, req)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })

	p := newProber(t, uint16(l.Addr().(*net.TCPAddr).Port), time.Second)
	want := map[string]string{
		api.QueryHostnameBind: "ns1.ams.example.org",
		api.QueryIDServer:     "AMS",
		api.QueryNSID:         "ams-1",
	}
	var previous string
	for round := 1; round <= 3; round++ {
		results := p.Probe(context.Background(), target, netip.MustParseAddr("127.0.0.1"), api.TransportTCP)
		checkValid(t, results)
		if len(results) != 3 {
			t.Fatalf("round %d: got %d results, want 3", round, len(results))
		}
		for i, r := range results {
			if q := identityQueries(target)[i].query; r.Query != q {
				t.Errorf("round %d: result %d is %s, want %s", round, i, r.Query, q)
			}
			if r.Failure != api.FailureNone || r.DNS == nil || r.DNS.Identity != want[r.Query] || r.DNS.NSIDText != "ams-1" {
				t.Errorf("round %d: %s: failure %q, values %+v; want identity %q", round, r.Query, r.Failure, r.DNS, want[r.Query])
			}
			if r.RTTMicros <= 0 {
				t.Errorf("round %d: %s: rtt %dµs", round, r.Query, r.RTTMicros)
			}
		}
		if n := cl.accepted.Load(); n != int32(round) {
			t.Errorf("after round %d the server accepted %d connections, want %d", round, n, round)
		}
		mu.Lock()
		got := slices.Clone(from)
		mu.Unlock()
		if len(got) != 3*round {
			t.Fatalf("after round %d the server saw %d queries, want %d", round, len(got), 3*round)
		}
		last := got[len(got)-3:]
		if last[0] != last[1] || last[1] != last[2] || last[0] == previous {
			t.Errorf("round %d: queries came from %v (previous round from %s), want one new connection", round, last, previous)
		}
		previous = last[0]
	}
}

// gateLimiter lets the first transaction go and every later one only after
// the test server has closed a connection.
type gateLimiter struct {
	waits  int
	closed chan struct{}
}

func (l *gateLimiter) Wait(ctx context.Context) error {
	l.waits++
	if l.waits == 1 {
		return nil
	}
	select {
	case <-l.closed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *gateLimiter) WaitSeries(ctx context.Context, _ int, every time.Duration) (time.Duration, error) {
	return every, l.Wait(ctx)
}

// answerTCP answers the identity query q, framed: TXT "ams" to a CHAOS
// query, NSID "ams-1" always.
func answerTCP(q []byte) []byte {
	req := new(dns.Msg)
	if err := req.Unpack(q); err != nil || len(req.Question) != 1 {
		return frame([]byte("not a query"))
	}
	m := new(dns.Msg)
	m.SetReply(req)
	if qq := req.Question[0]; qq.Qclass == dns.ClassCHAOS {
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS}, Txt: []string{"ams"}})
	}
	m.SetEdns0(1232, false).IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: hex.EncodeToString([]byte("ams-1"))}}
	b, err := m.Pack()
	if err != nil {
		return frame([]byte("cannot pack"))
	}
	return frame(b)
}

// TestDNSProbeTCPRound: how the fate of the round's connection is shared by
// its transactions. A connection that fails fails the transactions still to
// come, which are not sent; a bogus answer fails its own; a connection the
// server closed between two transactions is replaced.
func TestDNSProbeTCPRound(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	ok := api.FailureNone
	tests := []struct {
		name string
		// serve handles connection n (from 1); read reads the next query.
		serve   func(c net.Conn, n int, read func() ([]byte, error), closed chan<- struct{})
		gate    bool // transactions after the first wait for a closed connection
		want    [3]api.Failure
		conns   int32 // connections accepted
		queries int32 // queries the server read
	}{
		{
			name: "reset after the first answer",
			serve: func(c net.Conn, n int, read func() ([]byte, error), _ chan<- struct{}) {
				if q, err := read(); err == nil {
					_, _ = c.Write(answerTCP(q))
				}
				_, _ = read()
				_ = c.(*net.TCPConn).SetLinger(0)
			},
			want: [3]api.Failure{ok, api.FailureConnectionReset, api.FailureConnectionReset}, conns: 1, queries: 2,
		},
		{
			name: "silent after the first answer",
			serve: func(c net.Conn, n int, read func() ([]byte, error), _ chan<- struct{}) {
				if q, err := read(); err == nil {
					_, _ = c.Write(answerTCP(q))
				}
				for {
					if _, err := read(); err != nil {
						return
					}
				}
			},
			want: [3]api.Failure{ok, api.FailureTimeout, api.FailureTimeout}, conns: 1, queries: 2,
		},
		{
			name: "closes half way through the second answer",
			serve: func(c net.Conn, n int, read func() ([]byte, error), _ chan<- struct{}) {
				if q, err := read(); err == nil {
					_, _ = c.Write(answerTCP(q))
				}
				if q, err := read(); err == nil {
					_, _ = c.Write(answerTCP(q)[:10])
				}
			},
			want: [3]api.Failure{ok, api.FailureConnectionClosed, api.FailureConnectionClosed}, conns: 1, queries: 2,
		},
		{
			name: "bogus first answer",
			serve: func(c net.Conn, n int, read func() ([]byte, error), _ chan<- struct{}) {
				for {
					q, err := read()
					if err != nil {
						return
					}
					a := answerTCP(q)
					if n == 1 {
						a = frame([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
					}
					_, _ = c.Write(a)
				}
			},
			want: [3]api.Failure{api.FailureDNSBogus, ok, ok}, conns: 2, queries: 3,
		},
		{
			name: "closes after every answer",
			serve: func(c net.Conn, n int, read func() ([]byte, error), closed chan<- struct{}) {
				if q, err := read(); err == nil {
					_, _ = c.Write(answerTCP(q))
				}
				c.Close()
				closed <- struct{}{}
			},
			gate: true,
			want: [3]api.Failure{ok, ok, ok}, conns: 3, queries: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var conns, queries atomic.Int32
			// Registered before serveRaw's, so run after it has waited for
			// the server's handlers: the counts are final then.
			t.Cleanup(func() {
				if n := conns.Load(); n != tt.conns {
					t.Errorf("server accepted %d connections, want %d", n, tt.conns)
				}
				if n := queries.Load(); n != tt.queries {
					t.Errorf("server read %d queries, want %d", n, tt.queries)
				}
			})
			closed := make(chan struct{}, 3)
			port := serveRaw(t, "127.0.0.1", nil, func(c net.Conn) {
				n := conns.Add(1)
				tt.serve(c, int(n), func() ([]byte, error) {
					q, err := readTCPQuery(c)
					if err == nil {
						queries.Add(1)
					}
					return q, err
				}, closed)
			})
			o := DNSOptions{Port: port, Timeout: timeout}
			if tt.gate {
				o.Limiter = &gateLimiter{closed: closed}
			}
			p, err := NewDNS(o)
			if err != nil {
				t.Fatal(err)
			}
			results := p.Probe(context.Background(), target, netip.MustParseAddr("127.0.0.1"), api.TransportTCP)
			checkValid(t, results)
			if len(results) != 3 {
				t.Fatalf("got %d results, want 3", len(results))
			}
			for i, r := range results {
				if r.Failure != tt.want[i] {
					t.Errorf("%s: failure %q, want %q", r.Query, r.Failure, tt.want[i])
				}
				if r.Failure == api.FailureNone && (r.DNS == nil || r.DNS.NSIDText != "ams-1" || r.RTTMicros <= 0) {
					t.Errorf("%s: values %+v, rtt %dµs; want the answer", r.Query, r.DNS, r.RTTMicros)
				}
				if r.Failure != api.FailureNone && r.Failure != api.FailureDNSBogus && r.RTTMicros != 0 {
					t.Errorf("%s: %s with rtt %dµs", r.Query, r.Failure, r.RTTMicros)
				}
			}
		})
	}
}

// TestDNSProbeUDPOneSocketPerRound: the UDP transactions of a round share
// one socket (one flow) while they are answered; after a transaction that
// timed out, the next one gets a fresh socket, so a late answer cannot be
// taken for its own.
func TestDNSProbeUDPOneSocketPerRound(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		from []string                // the client address of each query, in order
		drop = map[int]bool{4: true} // round 2's first query (hostname.bind) goes unanswered
	)
	s := site{hostname: "ns1.ams.example.org", idServer: "AMS", nsid: []byte("ams-1")}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		mu.Lock()
		from = append(from, w.RemoteAddr().String())
		n := len(from)
		mu.Unlock()
		if !drop[n] {
			s.ServeDNS(w, req)
		}
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })

	p := newProber(t, uint16(pc.LocalAddr().(*net.UDPAddr).Port), 300*time.Millisecond)
	for round := 1; round <= 2; round++ {
		results := p.Probe(context.Background(), target, netip.MustParseAddr("127.0.0.1"), api.TransportUDP)
		checkValid(t, results)
		if len(results) != 3 {
			t.Fatalf("round %d: got %d results, want 3", round, len(results))
		}
		for i, r := range results {
			want := api.FailureNone
			if round == 2 && i == 0 {
				want = api.FailureTimeout
			}
			if r.Failure != want {
				t.Errorf("round %d: %s: failure %q, want %q", round, r.Query, r.Failure, want)
			}
		}
	}
	mu.Lock()
	got := slices.Clone(from)
	mu.Unlock()
	if len(got) != 6 {
		t.Fatalf("the server saw %d queries, want 6: %v", len(got), got)
	}
	if got[0] != got[1] || got[1] != got[2] {
		t.Errorf("round 1's queries came from %v, want one socket", got[:3])
	}
	// Round 2: the first query timed out; the other two share a fresh socket.
	if got[4] == got[3] || got[4] != got[5] {
		t.Errorf("round 2's queries came from %v, want the first alone, then one new socket", got[3:])
	}
}
