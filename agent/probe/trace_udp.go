package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// UDP-Paris without privileges: one connected UDP socket per trace, so the
// source port (and with it the whole 5-tuple) is fixed, and the kernel
// queues the ICMP errors quoting that socket's packets on the socket's own
// error queue (IP_RECVERR, IPV6_RECVERR). Concurrent traces never see each
// other's errors. The error queue gives the ICMP type and code and the
// offender address (struct sock_extended_err), and the quoted UDP payload,
// which names the probe (nonce, TTL, attempt).

// sock_extended_err origins (linux/errqueue.h).
const (
	eeOriginICMP  = 2
	eeOriginICMP6 = 3
)

// traceUDP runs a UDP-Paris trace to dst from source port sport (picking
// another at random when the port is taken and the options leave it free).
func (p *Trace) traceUDP(ctx context.Context, dst netip.Addr, sport uint16) (*api.TraceValues, error) {
	network := "udp4"
	if dst.Is6() {
		network = "udp6"
	}
	raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, p.opts.Port))
	var conn *net.UDPConn
	var err error
	for try := 0; ; try++ {
		conn, err = net.DialUDP(network, &net.UDPAddr{Port: int(sport)}, raddr)
		if err == nil || p.opts.SourcePort != 0 || try == 8 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		sport = uint16(traceMinSourcePort + rand.IntN(traceMaxSourcePort-traceMinSourcePort+1))
	}
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	v6 := dst.Is6()
	if err := traceSockopts(rc, v6); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(longAgo) })
	defer stop()

	f := udpFlow{dst: dst, sport: sport, dport: p.opts.Port, nonce: rand.Uint32(), srcUnknown: true}
	flow := fmt.Sprintf("udp sport=%d dport=%d", sport, p.opts.Port)
	buf := make([]byte, 1500)
	oob := make([]byte, 512)
	send := func(ctx context.Context, ttl, attempt int) (hopAnswer, bool, error) {
		if err := traceSetTTL(rc, v6, ttl); err != nil {
			return hopAnswer{}, false, err
		}
		payload := udpPayload(f.nonce, ttl, attempt)
		sent := time.Now()
		if _, err := conn.Write(payload); err != nil {
			// A pending error of an earlier probe (sk_err) is reported by
			// the next send; the packet was not sent: send again.
			if ctx.Err() != nil {
				return hopAnswer{}, false, ctx.Err()
			}
			sent = time.Now()
			if _, err := conn.Write(payload); err != nil {
				return hopAnswer{}, false, err
			}
		}
		if err := conn.SetReadDeadline(p.probeDeadline(ctx)); err != nil {
			return hopAnswer{}, false, err
		}
		for {
			a, err := readErrQueue(rc, v6, buf, oob)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return hopAnswer{}, false, ctx.Err()
				}
				return hopAnswer{}, false, nil // a star
			}
			if err != nil {
				return hopAnswer{}, false, err
			}
			if a.data {
				// The destination answered with a datagram.
				a.from, a.rtt, a.dest = dst, a.at.Sub(sent), true
				return a.hopAnswer, true, nil
			}
			if !a.from.IsValid() {
				continue // a local error, or an origin we do not read
			}
			ttl2, att2, ok := f.matchPayload(a.payload)
			if !ok || ttl2 != ttl || att2 != attempt {
				continue // a late answer to an earlier probe
			}
			a.rtt = a.at.Sub(sent)
			a.from = a.from.Unmap()
			switch {
			case !v6 && a.icmpType == icmp4Unreach && a.icmpCode == 3, v6 && a.icmpType == icmp6Unreach && a.icmpCode == 4:
				a.dest = a.from == dst
				a.unreach = !a.dest
			case !v6 && a.icmpType == icmp4Unreach && a.icmpCode == 4, v6 && a.icmpType == icmp6TooBig:
				continue // too big: our probes are small; not an answer
			case !v6 && a.icmpType == icmp4Unreach, v6 && a.icmpType == icmp6Unreach:
				a.unreach = true
			}
			return a.hopAnswer, true, nil
		}
	}
	return p.walk(ctx, flow, send)
}

func traceSockopts(rc syscall.RawConn, v6 bool) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
			}
			// The kernel would derive the flow label from a random
			// per-socket hash; balancers that hash it would give every
			// trace a random path. Label 0 makes the 5-tuple the whole flow.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_AUTOFLOWLABEL, 0)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt", serr)
	}
	return nil
}

func traceSetTTL(rc syscall.RawConn, v6 bool, ttl int) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt", serr)
	}
	return nil
}

// errQueueEntry is one entry of a socket's error queue.
type errQueueEntry struct {
	hopAnswer
	payload []byte
	at      time.Time
	data    bool // a datagram from the destination, not an error
}

// readErrQueue waits (until the socket's read deadline) for one entry on
// the error queue, or for a datagram from the destination (then data is
// set). An entry that is not an ICMP error has no from address.
func readErrQueue(rc syscall.RawConn, v6 bool, buf, oob []byte) (e errQueueEntry, err error) {
	var n, oobn int
	var rerr error
	gotData := false
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if rerr == unix.EAGAIN {
			// Not an error: maybe the destination answered with data.
			var derr error
			_, _, _, _, derr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
			if derr == nil {
				gotData, rerr = true, nil
				return true
			}
			return derr != unix.EAGAIN
		}
		return true
	})
	e.at = time.Now()
	if err != nil {
		return e, err
	}
	if gotData {
		e.data = true
		return e, nil
	}
	if rerr != nil {
		// The socket's pending error seen by a plain receive: not an answer.
		return e, nil
	}
	e.payload = append([]byte(nil), buf[:n]...)
	cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
	if perr != nil {
		return e, nil
	}
	for _, m := range cmsgs {
		switch {
		case (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR) ||
			(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_RECVERR):
			parseExtendedErr(&e, m.Data)
		case (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL) ||
			(m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT):
			if len(m.Data) >= 4 {
				e.replyTTL = int(int32(binary.NativeEndian.Uint32(m.Data)))
			}
		}
	}
	if e.from.IsValid() {
		// Quotes of more than 128 bytes may carry RFC 4884 extensions after
		// the padded original datagram; the payload is what follows our UDP
		// header in the icmpQuote.
		hdr := 20 + 8
		if v6 {
			hdr = 40 + 8
		}
		if off := 128 - hdr; len(e.payload) >= off+4 {
			if m, err := parseICMPExtensions(e.payload[off:], true); err == nil {
				e.mpls = m
			}
		}
	}
	return e, nil
}

// parseExtendedErr reads struct sock_extended_err and the offender address
// that follows it.
func parseExtendedErr(e *errQueueEntry, b []byte) {
	if len(b) < 16 {
		return
	}
	origin := b[4]
	if origin != eeOriginICMP && origin != eeOriginICMP6 {
		return
	}
	e.icmpType, e.icmpCode = int(b[5]), int(b[6])
	sa := b[16:]
	if len(sa) < 2 {
		return
	}
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		if len(sa) >= 8 {
			e.from = netip.AddrFrom4([4]byte(sa[4:8]))
		}
	case unix.AF_INET6:
		if len(sa) >= 24 {
			e.from = netip.AddrFrom16([16]byte(sa[8:24])).Unmap()
		}
	}
}
