package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ICMP and ICMPv6 types the tracer reads.
const (
	icmp4EchoReply    = 0
	icmp4Unreach      = 3
	icmp4Echo         = 8
	icmp4TimeExceeded = 11
	icmp4ParamProblem = 12

	icmp6Unreach      = 1
	icmp6TooBig       = 2
	icmp6TimeExceeded = 3
	icmp6ParamProblem = 4
	icmp6Echo         = 128
	icmp6EchoReply    = 129

	protoICMP   = 1
	protoUDP    = 17
	protoICMPv6 = 58
)

// errQuote is wrapped by every error about a malformed ICMP message.
var errQuote = errors.New("probe: malformed icmp message")

// icmpQuote is what an ICMP message says about the probe it answers: for an
// error (time exceeded, unreachable), the quoted IP header and the first
// bytes of the quoted transport header; for an echo reply, its own id and
// sequence number.
type icmpQuote struct {
	Type, Code int
	// Echo is true for an echo reply: ID and Seq are the reply's own.
	Echo bool
	// Proto, Src, Dst come from the quoted IP header.
	Proto    int
	Src, Dst netip.Addr
	// SrcPort, DstPort: a quoted UDP header. ID, Seq: a quoted echo request
	// (or the echo reply). Checksum: the quoted transport checksum.
	SrcPort, DstPort uint16
	ID, Seq          uint16
	Checksum         uint16
	// InnerType is the type of a quoted ICMP message.
	InnerType int
	// Payload is what follows the quoted 8-byte transport header, as far
	// as it was quoted (RFC 4884 padding and extensions excluded).
	Payload []byte
	MPLS    []api.MPLS
}

// isError reports whether typ is an ICMP error that quotes the probe.
func isError(v6 bool, typ int) bool {
	if v6 {
		return typ == icmp6Unreach || typ == icmp6TooBig || typ == icmp6TimeExceeded || typ == icmp6ParamProblem
	}
	return typ == icmp4Unreach || typ == icmp4TimeExceeded || typ == icmp4ParamProblem
}

// parseTraceICMP parses an ICMP (v6 false) or ICMPv6 message, starting at its
// type byte (no outer IP header).
func parseTraceICMP(b []byte, v6 bool) (icmpQuote, error) {
	var q icmpQuote
	if len(b) < 8 {
		return q, fmt.Errorf("%w: %d bytes", errQuote, len(b))
	}
	q.Type, q.Code = int(b[0]), int(b[1])
	if (!v6 && q.Type == icmp4EchoReply) || (v6 && q.Type == icmp6EchoReply) {
		q.Echo = true
		q.Proto = protoICMP
		if v6 {
			q.Proto = protoICMPv6
		}
		q.Checksum = binary.BigEndian.Uint16(b[2:])
		q.ID, q.Seq = binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
		q.Payload = b[8:]
		return q, nil
	}
	if !isError(v6, q.Type) {
		return q, fmt.Errorf("%w: type %d is neither an error nor an echo reply", errQuote, q.Type)
	}
	inner := b[8:]
	// RFC 4884: the length of the original datagram, in 32-bit words
	// (ICMP) or 64-bit words (ICMPv6); 0 for a message without extensions
	// (or from a router that does not implement RFC 4884).
	var origLen int
	switch {
	case v6 && (q.Type == icmp6Unreach || q.Type == icmp6TimeExceeded):
		origLen = int(b[4]) * 8
	case !v6 && (q.Type == icmp4Unreach || q.Type == icmp4TimeExceeded || q.Type == icmp4ParamProblem):
		origLen = int(b[5]) * 4
	}
	var ext []byte
	switch {
	case origLen > 0 && origLen <= len(inner):
		inner, ext = inner[:origLen], inner[origLen:]
	case origLen == 0 && len(inner) >= 128+4:
		// Non-compliant routers put extensions after 128 bytes of icmpQuote
		// without setting the length (RFC 4884 section 5.5); only a valid
		// extension header is taken for one.
		if m, err := parseICMPExtensions(inner[128:], true); err == nil {
			q.MPLS = m
			inner = inner[:128]
		}
	}
	if len(ext) > 0 {
		m, err := parseICMPExtensions(ext, false)
		if err == nil {
			q.MPLS = m
		}
	}
	var th []byte
	if v6 {
		if len(inner) < 40 || inner[0]>>4 != 6 {
			return q, fmt.Errorf("%w: quoted IPv6 header truncated or wrong version", errQuote)
		}
		q.Proto = int(inner[6])
		q.Src = netip.AddrFrom16([16]byte(inner[8:24]))
		q.Dst = netip.AddrFrom16([16]byte(inner[24:40]))
		th = inner[40:]
	} else {
		if len(inner) < 20 || inner[0]>>4 != 4 {
			return q, fmt.Errorf("%w: quoted IPv4 header truncated or wrong version", errQuote)
		}
		ihl := int(inner[0]&0x0f) * 4
		if ihl < 20 || len(inner) < ihl {
			return q, fmt.Errorf("%w: quoted IPv4 header length %d", errQuote, ihl)
		}
		q.Proto = int(inner[9])
		q.Src = netip.AddrFrom4([4]byte(inner[12:16]))
		q.Dst = netip.AddrFrom4([4]byte(inner[16:20]))
		th = inner[ihl:]
	}
	if len(th) < 8 {
		return q, fmt.Errorf("%w: quoted transport header truncated to %d bytes", errQuote, len(th))
	}
	switch q.Proto {
	case protoUDP:
		q.SrcPort, q.DstPort = binary.BigEndian.Uint16(th), binary.BigEndian.Uint16(th[2:])
		q.Checksum = binary.BigEndian.Uint16(th[6:])
		// The UDP length bounds the payload: what follows is padding.
		if l := int(binary.BigEndian.Uint16(th[4:])); l >= 8 && l < len(th) {
			th = th[:l]
		}
	case protoICMP, protoICMPv6:
		q.InnerType = int(th[0])
		q.Checksum = binary.BigEndian.Uint16(th[2:])
		q.ID, q.Seq = binary.BigEndian.Uint16(th[4:]), binary.BigEndian.Uint16(th[6:])
	}
	q.Payload = th[8:]
	return q, nil
}

// parseICMPExtensions parses an RFC 4884 ICMP extension structure and returns
// the MPLS label stack (RFC 4950) it carries, if any. With strict, the
// checksum must be present and valid (used when guessing where the
// structure starts).
func parseICMPExtensions(b []byte, strict bool) ([]api.MPLS, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: extension header truncated", errQuote)
	}
	if v := b[0] >> 4; v != 2 {
		return nil, fmt.Errorf("%w: extension version %d", errQuote, v)
	}
	if sum := binary.BigEndian.Uint16(b[2:]); sum != 0 || strict {
		if traceChecksum(b) != 0 {
			return nil, fmt.Errorf("%w: extension checksum 0x%04x is wrong", errQuote, sum)
		}
	}
	var labels []api.MPLS
	for obj := b[4:]; len(obj) > 0; {
		if len(obj) < 4 {
			return labels, fmt.Errorf("%w: extension object header truncated", errQuote)
		}
		l := int(binary.BigEndian.Uint16(obj))
		if l < 4 || l > len(obj) {
			return labels, fmt.Errorf("%w: extension object length %d", errQuote, l)
		}
		class, ctype := obj[2], obj[3]
		if class == 1 && ctype == 1 { // MPLS label stack, incoming
			for e := obj[4:l]; len(e) >= 4 && len(labels) < api.MaxMPLSLabels; e = e[4:] {
				w := binary.BigEndian.Uint32(e)
				labels = append(labels, api.MPLS{
					Label: w >> 12,
					TC:    uint8(w>>9) & 7,
					S:     w&0x100 != 0,
					TTL:   uint8(w),
				})
			}
		}
		obj = obj[l:]
	}
	return labels, nil
}

// traceChecksum is the Internet checksum (RFC 1071) of b: 0 over a block that
// includes its own valid checksum.
func traceChecksum(b []byte) uint16 {
	return ^traceFold(traceSum16(0, b))
}

// traceSum16 adds b's 16-bit big-endian words to s, without folding.
func traceSum16(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// traceFold reduces a 32-bit sum to 16 bits with end-around carry.
func traceFold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// udpProbeLen is the size of every UDP-Paris payload: constant, so that the
// IP and UDP lengths are the same for every probe.
const udpProbeLen = 16

// udpPayload is the payload of one UDP-Paris probe: the trace's nonce, the
// TTL and the attempt, and a marker. Only the payload (and with it the UDP
// checksum) changes from probe to probe; the flow does not.
func udpPayload(nonce uint32, ttl, attempt int) []byte {
	b := make([]byte, udpProbeLen)
	binary.BigEndian.PutUint32(b, nonce)
	b[4], b[5] = byte(ttl), byte(attempt)
	copy(b[6:], "anyscope")
	return b
}

// udpFlow identifies one UDP-Paris trace.
type udpFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
	nonce        uint32
	srcUnknown   bool // the source address is not checked (RECVERR: the kernel did)
}

// matchPayload says which probe of the trace a quoted payload belongs to.
func (f udpFlow) matchPayload(p []byte) (ttl, attempt int, ok bool) {
	if len(p) < 6 || binary.BigEndian.Uint32(p) != f.nonce {
		return 0, 0, false
	}
	return int(p[4]), int(p[5]), true
}

// match says whether an ICMP error quotes a probe of this trace, and which.
func (f udpFlow) match(q icmpQuote) (ttl, attempt int, ok bool) {
	if q.Echo || q.Proto != protoUDP || q.Dst != f.dst || q.SrcPort != f.sport || q.DstPort != f.dport {
		return 0, 0, false
	}
	if !f.srcUnknown && q.Src != f.src {
		return 0, 0, false
	}
	return f.matchPayload(q.Payload)
}

// icmpFlow identifies one ICMP-Paris trace: echo requests with a constant
// identifier and checksum; the sequence number tells the probes apart.
type icmpFlow struct {
	v6  bool
	dst netip.Addr
	id  uint16
	// sum is the one's complement sum of every probe's ICMP message with a
	// zero checksum field: constant by construction.
	sum uint16
}

// echo builds the echo request with sequence number seq, its first two
// payload bytes compensating seq and the rest, so that the message sums to
// f.sum. The ICMPv4 checksum is filled in; for ICMPv6 the kernel adds it
// (over a constant pseudo-header, so it stays constant too).
func (f icmpFlow) echo(seq uint16) []byte {
	b := make([]byte, 8+2+8)
	b[0] = icmp4Echo
	if f.v6 {
		b[0] = icmp6Echo
	}
	binary.BigEndian.PutUint16(b[4:], f.id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[10:], "anyscope")
	rest := traceFold(traceSum16(0, b))
	// comp + rest ≡ sum (one's complement): comp = sum - rest.
	comp := traceFold(uint32(f.sum) + uint32(^rest))
	binary.BigEndian.PutUint16(b[8:], comp)
	if !f.v6 {
		binary.BigEndian.PutUint16(b[2:], traceChecksum(b))
	}
	return b
}

// match says whether an ICMP message answers a probe of this trace: an
// echo reply from the destination with our identifier, or an error quoting
// an echo request with our identifier to our destination. It returns the
// sequence number.
func (f icmpFlow) match(from netip.Addr, q icmpQuote) (seq uint16, ok bool) {
	if q.Echo {
		return q.Seq, q.ID == f.id && from.Unmap() == f.dst
	}
	want, reqType := protoICMP, icmp4Echo
	if f.v6 {
		want, reqType = protoICMPv6, icmp6Echo
	}
	if q.Proto != want || q.InnerType != reqType || q.ID != f.id || q.Dst != f.dst {
		return 0, false
	}
	return q.Seq, true
}

// demuxID returns the echo identifier an ICMP message belongs to, so that
// one raw socket serves several traces.
func demuxID(b []byte, v6 bool) (uint16, bool) {
	q, err := parseTraceICMP(b, v6)
	if err != nil {
		return 0, false
	}
	if !q.Echo {
		want := protoICMP
		if v6 {
			want = protoICMPv6
		}
		if q.Proto != want {
			return 0, false
		}
	}
	return q.ID, true
}
