package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// sessionDNS asks CH TXT hostname.bind. over one TCP connection (RFC 7766),
// each query carrying an empty NSID option and an empty edns-tcp-keepalive
// option (RFC 7828), which asks the server to keep the connection open.
type sessionDNS struct {
	server netip.AddrPort
	conn   net.Conn
	buf    []byte // the reader's
	last   *dns.Msg
}

// sessionDNSAnswer is one message read from the connection.
type sessionDNSAnswer struct {
	msg  *dns.Msg
	size int
}

func newSessionDNS(server netip.AddrPort) *sessionDNS {
	return &sessionDNS{server: server, buf: make([]byte, dns.MaxMsgSize)}
}

func (p *sessionDNS) dial(ctx context.Context, d *net.Dialer) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", p.server.String())
	p.conn = c
	return c, err
}

func (p *sessionDNS) send(w io.Writer) error {
	m := new(dns.Msg)
	m.Id = dns.Id()
	m.Question = []dns.Question{{Name: "hostname.bind.", Qtype: dns.TypeTXT, Qclass: dns.ClassCHAOS}}
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(DefaultUDPSize)
	opt.Option = append(opt.Option,
		&dns.EDNS0_NSID{Code: dns.EDNS0NSID},
		&dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE}, // no timeout: a client's request
	)
	m.Extra = append(m.Extra, opt)
	wire, err := m.Pack()
	if err != nil {
		return fmt.Errorf("probe: packing session query: %w", err)
	}
	p.last = m
	framed := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(wire)), uint16(len(wire)))
	_, err = w.Write(append(framed, wire...))
	return err
}

func (p *sessionDNS) read() (any, error) {
	b, err := readMsg(p.conn, true, p.buf)
	if err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	if err := r.Unpack(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBogus, err)
	}
	return sessionDNSAnswer{msg: r, size: len(b)}, nil
}

// check matches the answer to the last query and names the server: the NSID
// as text when it is printable, else the TXT string, else the NSID in hex.
func (p *sessionDNS) check(answer any) (string, bool, error) {
	a, ok := answer.(sessionDNSAnswer)
	if !ok || p.last == nil {
		return "", false, fmt.Errorf("%w: an answer to no query", ErrBogus)
	}
	if err := match(p.last, a.msg); err != nil {
		return "", false, err
	}
	v := values(a.msg, a.size, true)
	switch {
	case v.NSIDText != "":
		return v.NSIDText, false, nil
	case v.Identity != "":
		return v.Identity, false, nil
	case v.NSIDHex != "":
		return "0x" + v.NSIDHex, false, nil
	}
	return "", false, nil
}
