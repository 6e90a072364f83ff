package probe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ICMP-Paris needs raw sockets (root or CAP_NET_RAW). Every raw ICMP socket
// receives every ICMP message of the host, so the process opens one per
// address family, shared by all its concurrent traces and closed with the
// last one; a reader demultiplexes by echo identifier (the reply's own, or
// the one in the quoted echo request), and each trace matches the sequence
// number. Identifiers are unique among the process's running traces.

// icmpMux holds the shared raw sockets.
var icmpMux = struct {
	mu    sync.Mutex
	socks [2]*rawICMP // [0] IPv4, [1] IPv6
}{}

// icmpPacket is one received ICMP message.
type icmpPacket struct {
	b        []byte
	from     netip.Addr
	at       time.Time
	replyTTL int
}

// rawICMP is one shared raw socket.
type rawICMP struct {
	v6   bool
	c    *icmp.PacketConn
	wmu  sync.Mutex // TTL and write of one packet go together
	subs map[uint16]chan icmpPacket
	refs int
	// dropped counts packets for a trace whose queue was full.
	dropped int
}

// subscribeICMP returns the shared socket of the family, opening it when
// needed, and registers a queue for echo identifier id (0: pick a free one).
func subscribeICMP(v6 bool, id uint16) (*rawICMP, uint16, chan icmpPacket, error) {
	icmpMux.mu.Lock()
	defer icmpMux.mu.Unlock()
	i := 0
	if v6 {
		i = 1
	}
	s := icmpMux.socks[i]
	if s == nil {
		var err error
		if s, err = openRawICMP(v6); err != nil {
			return nil, 0, nil, err
		}
		icmpMux.socks[i] = s
	}
	if id == 0 {
		for try := 0; try < 100; try++ {
			c := uint16(1 + rand.IntN(0xffff))
			if _, taken := s.subs[c]; !taken {
				id = c
				break
			}
		}
	}
	if _, taken := s.subs[id]; taken || id == 0 {
		if s.refs == 0 {
			icmpMux.socks[i] = nil
			s.c.Close()
		}
		return nil, 0, nil, fmt.Errorf("probe: icmp identifier %d is used by another trace", id)
	}
	ch := make(chan icmpPacket, 64)
	s.subs[id] = ch
	s.refs++
	return s, id, ch, nil
}

// unsubscribe removes id's queue and closes the socket after its last user.
func (s *rawICMP) unsubscribe(id uint16) {
	icmpMux.mu.Lock()
	defer icmpMux.mu.Unlock()
	delete(s.subs, id)
	s.refs--
	if s.refs == 0 {
		i := 0
		if s.v6 {
			i = 1
		}
		if icmpMux.socks[i] == s {
			icmpMux.socks[i] = nil
		}
		s.c.Close()
	}
}

func openRawICMP(v6 bool) (*rawICMP, error) {
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return nil, err
	}
	if v6 {
		err = c.IPv6PacketConn().SetControlMessage(ipv6.FlagHopLimit, true)
		if err == nil {
			var f ipv6.ICMPFilter
			f.SetAll(true)
			for _, t := range []ipv6.ICMPType{ipv6.ICMPTypeEchoReply, ipv6.ICMPTypeDestinationUnreachable,
				ipv6.ICMPTypeTimeExceeded, ipv6.ICMPTypePacketTooBig, ipv6.ICMPTypeParameterProblem} {
				f.Accept(t)
			}
			err = c.IPv6PacketConn().SetICMPFilter(&f)
		}
		if sc, ok := c.IPv6PacketConn().PacketConn.(syscall.Conn); ok && err == nil {
			// Flow label 0 rather than one derived from a random hash (see
			// traceSockopts).
			if rc, rerr := sc.SyscallConn(); rerr == nil {
				_ = rc.Control(func(fd uintptr) {
					_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_AUTOFLOWLABEL, 0)
				})
			}
		}
	} else {
		err = c.IPv4PacketConn().SetControlMessage(ipv4.FlagTTL, true)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &rawICMP{v6: v6, c: c, subs: map[uint16]chan icmpPacket{}}
	go s.read()
	return s, nil
}

// read dispatches every received message to the trace owning its echo
// identifier until the socket is closed.
func (s *rawICMP) read() {
	buf := make([]byte, 1500)
	for {
		var (
			n    int
			from net.Addr
			ttl  int
			err  error
		)
		if s.v6 {
			var cm *ipv6.ControlMessage
			n, cm, from, err = s.c.IPv6PacketConn().ReadFrom(buf)
			if cm != nil {
				ttl = cm.HopLimit
			}
		} else {
			var cm *ipv4.ControlMessage
			n, cm, from, err = s.c.IPv4PacketConn().ReadFrom(buf)
			if cm != nil {
				ttl = cm.TTL
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := time.Now()
		b := buf[:n]
		if !s.v6 {
			b = traceStripIPv4(b)
		}
		id, ok := demuxID(b, s.v6)
		if !ok {
			continue
		}
		ip, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		addr, _ := netip.AddrFromSlice(ip.IP)
		icmpMux.mu.Lock()
		ch := s.subs[id]
		if ch != nil {
			select {
			case ch <- icmpPacket{b: append([]byte(nil), b...), from: addr.Unmap(), at: at, replyTTL: ttl}:
			default:
				s.dropped++
			}
		}
		icmpMux.mu.Unlock()
	}
}

// traceStripIPv4 removes an IPv4 header when the raw socket delivered one (ICMP
// types 64..79, whose first byte would look like one, are unassigned).
func traceStripIPv4(b []byte) []byte {
	if len(b) >= 20 && b[0]>>4 == 4 {
		if ihl := int(b[0]&0x0f) * 4; ihl >= 20 && len(b) >= ihl+8 {
			return b[ihl:]
		}
	}
	return b
}

// send writes one echo request with the given TTL.
func (s *rawICMP) send(b []byte, dst netip.Addr, ttl int) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var err error
	if s.v6 {
		err = s.c.IPv6PacketConn().SetHopLimit(ttl)
	} else {
		err = s.c.IPv4PacketConn().SetTTL(ttl)
	}
	if err != nil {
		return err
	}
	_, err = s.c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

// traceICMP runs an ICMP-Paris trace to dst.
func (p *Trace) traceICMP(ctx context.Context, dst netip.Addr) (*api.TraceValues, error) {
	v6 := dst.Is6()
	s, id, ch, err := subscribeICMP(v6, p.opts.ICMPID)
	if err != nil {
		return nil, err
	}
	defer s.unsubscribe(id)
	f := icmpFlow{v6: v6, dst: dst, id: id, sum: uint16(rand.Uint32())}
	var flow string
	if v6 {
		// The kernel computes the checksum over a pseudo-header, constant
		// for the trace; report the value it will write.
		src, err := traceSource(dst)
		if err != nil {
			return nil, err
		}
		ps := traceSum16(0, src.AsSlice())
		ps = traceSum16(ps, dst.AsSlice())
		ps += uint32(len(f.echo(0))) + protoICMPv6
		flow = fmt.Sprintf("icmp id=%d checksum=0x%04x", id, ^traceFold(ps+uint32(f.sum)))
	} else {
		flow = fmt.Sprintf("icmp id=%d checksum=0x%04x", id, ^f.sum)
	}
	seq0 := uint16(rand.Uint32())
	send := func(ctx context.Context, ttl, attempt int) (hopAnswer, bool, error) {
		seq := seq0 + uint16((ttl-1)*maxTraceAttempts+attempt-1)
		sent := time.Now()
		if err := s.send(f.echo(seq), dst, ttl); err != nil {
			return hopAnswer{}, false, err
		}
		timer := time.NewTimer(time.Until(p.probeDeadline(ctx)))
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return hopAnswer{}, false, ctx.Err()
			case <-timer.C:
				return hopAnswer{}, false, nil
			case pk := <-ch:
				q, err := parseTraceICMP(pk.b, v6)
				if err != nil {
					continue
				}
				got, ok := f.match(pk.from, q)
				if !ok || got != seq {
					continue // another flow, or a late answer to an earlier probe
				}
				a := hopAnswer{from: pk.from, rtt: pk.at.Sub(sent), icmpType: q.Type, icmpCode: q.Code, replyTTL: pk.replyTTL, mpls: q.MPLS}
				switch {
				case q.Echo:
					a.dest = true
				case !v6 && q.Type == icmp4Unreach && q.Code == 4, v6 && q.Type == icmp6TooBig:
					continue
				case !v6 && q.Type == icmp4Unreach, v6 && q.Type == icmp6Unreach:
					a.unreach = true
				}
				return a, true, nil
			}
		}
	}
	return p.walk(ctx, flow, send)
}

// traceSource returns the source address the kernel picks towards dst.
func traceSource(dst netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
