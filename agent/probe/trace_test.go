package probe

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

var traceTarget = api.ScheduleTarget{Name: "lab-anycast"}

func TestNewTraceOptions(t *testing.T) {
	t.Parallel()
	p, err := NewTrace(TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := p.Options()
	if o.Transport != api.TransportUDP || o.MaxTTL != 30 || o.GapLimit != 5 || o.Attempts != 1 ||
		o.ProbeTimeout != time.Second || o.Engine != EngineAnyscope || o.Port != 33435 || o.SourcePort != 0 {
		t.Errorf("defaults: %+v", o)
	}
	for _, tc := range []struct {
		name string
		o    TraceOptions
		want string
	}{
		{"tcp transport", TraceOptions{Transport: api.TransportTCP}, `transport "tcp"`},
		{"max ttl", TraceOptions{MaxTTL: 256}, "max ttl 256"},
		{"negative gap", TraceOptions{GapLimit: -1}, "gap limit -1"},
		{"four attempts", TraceOptions{Attempts: 4}, "attempts 4 out of range 1..3"},
		{"short timeout", TraceOptions{ProbeTimeout: time.Microsecond}, "probe timeout"},
		{"engine", TraceOptions{Engine: "mtr"}, `engine "mtr"`},
		{"privileged port", TraceOptions{SourcePort: 53}, "source port 53"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTrace(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewTrace(%+v) = %v, want an error containing %q", tc.o, err, tc.want)
			}
		})
	}
}

// ipv4Header builds a 20-byte IPv4 header.
func ipv4Header(proto byte, src, dst netip.Addr, payloadLen int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payloadLen))
	h[8], h[9] = 1, proto
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], traceChecksum(h))
	return h
}

func ipv6Header(next byte, src, dst netip.Addr, payloadLen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6], h[7] = next, 1
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return h
}

func udpDatagram(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], 0xabcd)
	copy(b[8:], payload)
	return b
}

// icmpError builds an ICMP(v6) error of type/code quoting the IP packet
// inner, with RFC 4884 extensions ext when not nil.
func icmpError(v6 bool, typ, code byte, inner, ext []byte) []byte {
	b := []byte{typ, code, 0, 0, 0, 0, 0, 0}
	if ext != nil {
		padded := make([]byte, 128)
		copy(padded, inner)
		inner = padded
		if v6 {
			b[4] = byte(len(inner) / 8)
		} else {
			b[5] = byte(len(inner) / 4)
		}
	}
	b = append(append(b, inner...), ext...)
	binary.BigEndian.PutUint16(b[2:], traceChecksum(b))
	return b
}

// mplsExtension is an RFC 4884 extension structure with one RFC 4950 MPLS
// object holding labels (label, tc, s, ttl).
func mplsExtension(labels ...[4]uint32) []byte {
	obj := make([]byte, 4+4*len(labels))
	binary.BigEndian.PutUint16(obj, uint16(len(obj)))
	obj[2], obj[3] = 1, 1
	for i, l := range labels {
		binary.BigEndian.PutUint32(obj[4+4*i:], l[0]<<12|l[1]<<9|l[2]<<8|l[3])
	}
	ext := append([]byte{0x20, 0, 0, 0}, obj...)
	binary.BigEndian.PutUint16(ext[2:], traceChecksum(ext))
	return ext
}

func TestTraceMatchUDP(t *testing.T) {
	t.Parallel()
	for _, fam := range []struct {
		name     string
		v6       bool
		src, dst netip.Addr
		router   netip.Addr
		exceeded byte
	}{
		{"v4", false, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("198.18.0.1"), icmp4TimeExceeded},
		{"v6", true, netip.MustParseAddr("2001:db8:ff::2"), netip.MustParseAddr("2001:db8:53::53"), netip.MustParseAddr("2001:db8:ff::1"), icmp6TimeExceeded},
	} {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			f := udpFlow{src: fam.src, dst: fam.dst, sport: 40000, dport: 33435, nonce: 0x01020304}
			packet := func(sport uint16, nonce uint32, ttl int) []byte {
				udp := udpDatagram(sport, 33435, udpPayload(nonce, ttl, 1))
				if fam.v6 {
					return append(ipv6Header(protoUDP, fam.src, fam.dst, len(udp)), udp...)
				}
				return append(ipv4Header(protoUDP, fam.src, fam.dst, len(udp)), udp...)
			}
			q, err := parseTraceICMP(icmpError(fam.v6, fam.exceeded, 0, packet(40000, f.nonce, 7), nil), fam.v6)
			if err != nil {
				t.Fatal(err)
			}
			if ttl, attempt, ok := f.match(q); !ok || ttl != 7 || attempt != 1 {
				t.Errorf("own probe: ttl %d attempt %d ok %v, want 7 1 true", ttl, attempt, ok)
			}
			if q.Type != int(fam.exceeded) || q.Checksum != 0xabcd {
				t.Errorf("quote %+v", q)
			}
			// Another trace of the same process to the same destination:
			// another source port (its own flow), or the same port reused
			// after our trace with another nonce.
			for _, other := range [][]byte{packet(40001, f.nonce, 7), packet(40000, 0x99999999, 7)} {
				q, err := parseTraceICMP(icmpError(fam.v6, fam.exceeded, 0, other, nil), fam.v6)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, ok := f.match(q); ok {
					t.Errorf("matched another trace's probe: %+v", q)
				}
			}
			// A quote cut after the UDP header cannot be attributed.
			short := packet(40000, f.nonce, 7)
			short = short[:len(short)-udpProbeLen]
			if q, err := parseTraceICMP(icmpError(fam.v6, fam.exceeded, 0, short, nil), fam.v6); err != nil {
				t.Fatal(err)
			} else if _, _, ok := f.match(q); ok {
				t.Error("matched a quote without payload")
			}
			// A truncated quote is an error, not a match.
			if _, err := parseTraceICMP(icmpError(fam.v6, fam.exceeded, 0, packet(40000, f.nonce, 7)[:12], nil), fam.v6); err == nil {
				t.Error("truncated quote parsed")
			}
		})
	}
}

func TestTraceMatchICMP(t *testing.T) {
	t.Parallel()
	for _, fam := range []struct {
		name     string
		v6       bool
		src, dst netip.Addr
		exceeded byte
		proto    byte
	}{
		{"v4", false, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("192.0.2.53"), icmp4TimeExceeded, protoICMP},
		{"v6", true, netip.MustParseAddr("2001:db8:ff::2"), netip.MustParseAddr("2001:db8:53::53"), icmp6TimeExceeded, protoICMPv6},
	} {
		t.Run(fam.name, func(t *testing.T) {
			t.Parallel()
			f := icmpFlow{v6: fam.v6, dst: fam.dst, id: 4242, sum: 0x1234}
			other := icmpFlow{v6: fam.v6, dst: fam.dst, id: 4243, sum: 0x1234}
			wrap := func(echo []byte) []byte {
				if fam.v6 {
					return append(ipv6Header(fam.proto, fam.src, fam.dst, len(echo)), echo...)
				}
				return append(ipv4Header(fam.proto, fam.src, fam.dst, len(echo)), echo...)
			}
			for _, tc := range []struct {
				name    string
				msg     []byte
				from    netip.Addr
				seq     uint16
				matches bool
			}{
				{"time exceeded", icmpError(fam.v6, fam.exceeded, 0, wrap(f.echo(17)), nil), fam.src, 17, true},
				{"other trace's probe", icmpError(fam.v6, fam.exceeded, 0, wrap(other.echo(17)), nil), fam.src, 0, false},
				{"echo reply", echoReply(fam.v6, f.echo(18)), fam.dst, 18, true},
				{"other trace's echo reply", echoReply(fam.v6, other.echo(18)), fam.dst, 0, false},
				{"echo reply from elsewhere", echoReply(fam.v6, f.echo(18)), fam.src, 0, false},
			} {
				q, err := parseTraceICMP(tc.msg, fam.v6)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				seq, ok := f.match(tc.from, q)
				if ok != tc.matches || ok && seq != tc.seq {
					t.Errorf("%s: seq %d ok %v, want %d %v", tc.name, seq, ok, tc.seq, tc.matches)
				}
				if id, ok := demuxID(tc.msg, fam.v6); !ok || (tc.matches && id != f.id) {
					t.Errorf("%s: demux id %d %v", tc.name, id, ok)
				}
			}
		})
	}
}

// echoReply turns an echo request into the reply a host sends.
func echoReply(v6 bool, req []byte) []byte {
	b := append([]byte(nil), req...)
	b[0] = icmp4EchoReply
	if v6 {
		b[0] = icmp6EchoReply
	}
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint16(b[2:], traceChecksum(b))
	return b
}

// TestTraceICMPChecksumConstant: the sequence number varies, the checksum
// (the flow identifier of many balancers) does not.
func TestTraceICMPChecksumConstant(t *testing.T) {
	t.Parallel()
	for _, v6 := range []bool{false, true} {
		f := icmpFlow{v6: v6, id: 777, sum: 0xbeef}
		var first uint16
		for seq := 0; seq < 70000; seq += 37 {
			b := f.echo(uint16(seq))
			if got := traceFold(traceSum16(0, append([]byte{b[0], b[1], 0, 0}, b[4:]...))); got != f.sum && !(got == 0xffff && f.sum == 0) {
				t.Fatalf("v6 %v seq %d: message sums to %#x, want %#x", v6, seq, got, f.sum)
			}
			if v6 {
				continue
			}
			if traceChecksum(b) != 0 {
				t.Fatalf("seq %d: invalid ICMP checksum", seq)
			}
			c := binary.BigEndian.Uint16(b[2:])
			if seq == 0 {
				first = c
			} else if c != first {
				t.Fatalf("seq %d: checksum %#x, first %#x", seq, c, first)
			}
		}
	}
}

func TestTraceMPLS(t *testing.T) {
	t.Parallel()
	ext := mplsExtension([4]uint32{16005, 0, 0, 254}, [4]uint32{24001, 5, 1, 1})
	want := []api.MPLS{{Label: 16005, TC: 0, S: false, TTL: 254}, {Label: 24001, TC: 5, S: true, TTL: 1}}
	t.Run("structure", func(t *testing.T) {
		got, err := parseICMPExtensions(ext, true)
		if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("got %+v, %v; want %+v", got, err, want)
		}
	})
	t.Run("bad checksum", func(t *testing.T) {
		bad := append([]byte(nil), ext...)
		bad[len(bad)-1] ^= 0xff
		if _, err := parseICMPExtensions(bad, false); err == nil {
			t.Error("accepted a wrong checksum")
		}
	})
	t.Run("no checksum is allowed unless strict", func(t *testing.T) {
		nosum := append([]byte(nil), ext...)
		nosum[2], nosum[3] = 0, 0
		if got, err := parseICMPExtensions(nosum, false); err != nil || len(got) != 2 {
			t.Errorf("got %+v, %v", got, err)
		}
		if _, err := parseICMPExtensions(nosum, true); err == nil {
			t.Error("strict accepted a missing checksum")
		}
	})
	t.Run("truncated and wrong version", func(t *testing.T) {
		for _, b := range [][]byte{ext[:3], append([]byte{0x10}, ext[1:]...), append(append([]byte(nil), ext[:6]...), 0xff)} {
			if _, err := parseICMPExtensions(b, false); err == nil {
				t.Errorf("accepted % x", b)
			}
		}
	})
	t.Run("too many labels are capped", func(t *testing.T) {
		var ls [][4]uint32
		for i := range 12 {
			ls = append(ls, [4]uint32{uint32(100 + i), 0, 0, 1})
		}
		got, err := parseICMPExtensions(mplsExtension(ls...), true)
		if err != nil || len(got) != api.MaxMPLSLabels {
			t.Errorf("%d labels, %v", len(got), err)
		}
	})
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "in time exceeded v4", true: "in time exceeded v6"}[v6]
		t.Run(name, func(t *testing.T) {
			src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("192.0.2.53")
			udp := udpDatagram(40000, 33435, udpPayload(7, 3, 1))
			inner := append(ipv4Header(protoUDP, src, dst, len(udp)), udp...)
			typ := byte(icmp4TimeExceeded)
			if v6 {
				src, dst = netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8:53::53")
				inner = append(ipv6Header(protoUDP, src, dst, len(udp)), udp...)
				typ = icmp6TimeExceeded
			}
			q, err := parseTraceICMP(icmpError(v6, typ, 0, inner, ext), v6)
			if err != nil {
				t.Fatal(err)
			}
			if len(q.MPLS) != 2 || q.MPLS[1] != want[1] {
				t.Errorf("MPLS %+v", q.MPLS)
			}
			f := udpFlow{src: src, dst: dst, sport: 40000, dport: 33435, nonce: 7}
			if ttl, _, ok := f.match(q); !ok || ttl != 3 {
				t.Errorf("padded quote: ttl %d ok %v (payload % x)", ttl, ok, q.Payload)
			}
		})
	}
}

func TestTraceScamperJSON(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/trace-scamper-udp-paris.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := parseScamper(b, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v.Flow != "udp sport=40000 dport=33435" || v.Engine != EngineScamper || !v.Reached || v.Stop != StopReached {
		t.Errorf("values %+v", v)
	}
	var addrs []string
	for _, h := range v.Hops {
		addrs = append(addrs, h.Addr)
	}
	if got := strings.Join(addrs, " "); got != "198.18.0.21 * 192.0.2.53" && got != "198.18.0.21  192.0.2.53" {
		t.Errorf("hops %q", got)
	}
	if h := v.Hops[0]; h.RTTUS != 120 || h.ReplyTTL != 64 || h.ICMPType != 11 || len(h.MPLS) != 1 || h.MPLS[0].Label != 16005 || !h.MPLS[0].S {
		t.Errorf("first hop %+v", h)
	}
	if h := v.Hops[2]; h.ICMPType != 3 || h.ICMPCode != 3 || h.TTL != 3 {
		t.Errorf("last hop %+v", h)
	}
	r := api.Result{Seq: 1, MeasuredAt: time.Now(), Target: "t", Address: "192.0.2.53", Kind: api.KindTrace, Transport: api.TransportUDP, Query: api.QueryParis, Trace: v}
	if err := r.Validate(); err != nil {
		t.Error(err)
	}
}

// checkTrace validates a trace result the way the spool will (with a Seq).
func checkTrace(t *testing.T, r api.Result) {
	t.Helper()
	r.Seq = 1
	if err := r.Validate(); err != nil {
		t.Errorf("invalid result %+v: %v", r, err)
	}
	if r.Kind != api.KindTrace || r.Query != api.QueryParis || r.Trace == nil {
		t.Errorf("result %+v", r)
	}
}

// TestTraceLoopbackUDP traces the loopback: the destination answers the
// first probe with a port unreachable; concurrent traces keep their own
// flows.
func TestTraceLoopbackUDP(t *testing.T) {
	t.Parallel()
	p, err := NewTrace(TraceOptions{ProbeTimeout: 500 * time.Millisecond, MaxTTL: 3})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, a := range []string{"127.0.0.1", "::1", "127.0.0.2", "::1", "127.0.0.3", "127.0.0.1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs := p.Probe(context.Background(), traceTarget, netip.MustParseAddr(a), "")
			if len(rs) != 1 {
				t.Errorf("%d: %d results", i, len(rs))
				return
			}
			r := rs[0]
			checkTrace(t, r)
			if r.Failure != api.FailureNone || !r.Trace.Reached || len(r.Trace.Hops) != 1 || r.Trace.Hops[0].Addr != a || r.RTTMicros <= 0 {
				t.Errorf("%s: %+v %+v", a, r, r.Trace)
			}
			if h := r.Trace.Hops[0]; (h.ICMPType != 3 || h.ICMPCode != 3) && (h.ICMPType != 1 || h.ICMPCode != 4) || h.ReplyTTL == 0 {
				t.Errorf("%s: hop %+v", a, h)
			}
			if !strings.HasPrefix(r.Trace.Flow, "udp sport=") || !strings.HasSuffix(r.Trace.Flow, " dport=33435") {
				t.Errorf("flow %q", r.Trace.Flow)
			}
		}()
	}
	wg.Wait()
}

func TestTraceLoopbackICMP(t *testing.T) {
	t.Parallel()
	p, err := NewTrace(TraceOptions{Transport: api.TransportICMP, ProbeTimeout: 500 * time.Millisecond, MaxTTL: 3})
	if err != nil {
		t.Fatal(err)
	}
	r := p.Probe(context.Background(), traceTarget, netip.MustParseAddr("127.0.0.1"), "")[0]
	checkTrace(t, r)
	if os.Geteuid() != 0 {
		if r.Failure != api.FailurePermissionDenied {
			t.Errorf("unprivileged: failure %q, want permission_denied", r.Failure)
		}
		return
	}
	var wg sync.WaitGroup
	for _, a := range []string{"127.0.0.1", "::1", "127.0.0.2", "::1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := p.Probe(context.Background(), traceTarget, netip.MustParseAddr(a), "")[0]
			checkTrace(t, r)
			if r.Failure != api.FailureNone || !r.Trace.Reached || len(r.Trace.Hops) != 1 || r.Trace.Hops[0].Addr != a {
				t.Errorf("%s: %+v %+v", a, r, r.Trace)
			}
			if !strings.HasPrefix(r.Trace.Flow, "icmp id=") {
				t.Errorf("flow %q", r.Trace.Flow)
			}
		}()
	}
	wg.Wait()
}

// TestTraceCanceled: a cancelled context ends the trace at once, as a timeout.
func TestTraceCanceled(t *testing.T) {
	t.Parallel()
	p, err := NewTrace(TraceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := p.Probe(ctx, traceTarget, netip.MustParseAddr("127.0.0.1"), api.TransportUDP)[0]
	checkTrace(t, r)
	if r.Failure != api.FailureTimeout || r.Trace == nil || r.Trace.Reached || len(r.Trace.Hops) != 0 {
		t.Errorf("%+v %+v", r, r.Trace)
	}
	r = p.Probe(context.Background(), traceTarget, netip.MustParseAddr("127.0.0.1"), api.TransportTCP)[0]
	if r.Failure != api.FailureUnknown {
		t.Errorf("tcp: %+v", r)
	}
}
