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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults for DNSOptions.
const (
	DefaultTimeout = 2 * time.Second
	// DefaultUDPSize is the EDNS0 buffer size advertised; some servers omit
	// NSID when offered less.
	DefaultUDPSize = 1232
	DefaultPort    = 53
)

// Limiter paces probe packets (Pacer is one).
type Limiter interface {
	// Wait blocks until one more packet may be sent.
	Wait(ctx context.Context) error
	// WaitSeries books n packets sent every apart and blocks until the
	// first may leave. It returns the spacing the series must keep: every,
	// or more when the budget cannot take n packets that close together.
	WaitSeries(ctx context.Context, n int, every time.Duration) (time.Duration, error)
}

// DNSOptions configure a DNS identity prober. Zero values take the defaults.
type DNSOptions struct {
	// Timeout bounds each transaction: dial, send and wait for the answer.
	Timeout time.Duration
	// UDPSize is the EDNS0 UDP buffer size advertised, at least 1232.
	UDPSize uint16
	// Port is the port the servers listen on; only tests and labs change it.
	Port uint16
	// Limiter, when set, is waited on before every transaction so that the
	// agent never exceeds its packet-rate ceiling.
	Limiter Limiter
}

// DNS asks an anycast DNS server who it is, with the three identity
// transactions of RFC 4892 and RFC 5001: CH TXT hostname.bind., CH TXT
// id.server. and an IN SOA query carrying an empty NSID option. Every query
// carries the empty NSID option, so a CHAOS answer may name the server twice.
type DNS struct {
	opts DNSOptions
}

// NewDNS validates o, applies defaults and returns a prober.
func NewDNS(o DNSOptions) (*DNS, error) {
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultTimeout
	case o.Timeout < 0 || o.Timeout > api.MaxRTT:
		return nil, fmt.Errorf("probe: dns timeout %v out of range (0, %v]", o.Timeout, api.MaxRTT)
	}
	switch {
	case o.UDPSize == 0:
		o.UDPSize = DefaultUDPSize
	case o.UDPSize < DefaultUDPSize:
		return nil, fmt.Errorf("probe: dns udp size %d below %d: servers may omit NSID", o.UDPSize, DefaultUDPSize)
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	return &DNS{opts: o}, nil
}

// NSIDQName returns the fully qualified name asked (class IN, type SOA) to
// elicit an NSID from t's servers: t.NSIDQName, or "." when it is empty.
func NSIDQName(t api.ScheduleTarget) (string, error) {
	name := t.NSIDQName
	if name == "" {
		return ".", nil
	}
	name = dns.Fqdn(name)
	if _, ok := dns.IsDomainName(name); !ok || len(name) > 254 {
		return "", fmt.Errorf("probe: nsid query name %q is not a domain name", t.NSIDQName)
	}
	return name, nil
}

// identityQuery is one of the three identity transactions.
type identityQuery struct {
	query string // api.Query*
	name  string
	class uint16
	qtype uint16
	rd    bool
	chaos bool
	err   error // set when the query cannot be built
}

func identityQueries(t api.ScheduleTarget) []identityQuery {
	qname, err := NSIDQName(t)
	return []identityQuery{
		{query: api.QueryHostnameBind, name: "hostname.bind.", class: dns.ClassCHAOS, qtype: dns.TypeTXT, chaos: true},
		{query: api.QueryIDServer, name: "id.server.", class: dns.ClassCHAOS, qtype: dns.TypeTXT, chaos: true},
		// RD is set so that a recursive resolver answers rather than refuses;
		// authoritative servers ignore it.
		{query: api.QueryNSID, name: qname, class: dns.ClassINET, qtype: dns.TypeSOA, rd: true, err: err},
	}
}

// Probe runs the three identity transactions against addr over transport,
// one after the other, each with its own deadline (ctx's or Timeout from its
// start, whichever is earlier), and returns one result per transaction, with
// Seq left zero for the spool to assign. It returns fewer results only when
// ctx ends first. t.Name must be a valid target name.
//
// A round's transactions share one socket: over UDP one flow (see
// datagram), over TCP one connection (RFC 7766 §6.2.1), opened by the first
// and closed when the round ends; see stream for how its failures are
// shared. A transaction that is not sent because the connection failed
// gets the same failure, measured when it would have been sent, without an
// RTT.
func (p *DNS) Probe(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, transport api.Transport) []api.Result {
	addr = addr.Unmap().WithZone("")
	server := netip.AddrPortFrom(addr, p.opts.Port)
	var (
		ex exchanger
		s  *stream
	)
	if transport == api.TransportTCP {
		s = &stream{server: server.String()}
		defer s.close()
		ex = s.exchange
	} else {
		d := &datagram{server: server}
		defer d.close()
		ex = d.exchange
	}
	var results []api.Result
	for _, q := range identityQueries(t) {
		var r api.Result
		if s != nil && s.err != nil {
			if ctx.Err() != nil {
				break
			}
			// Nothing is sent: the round's connection failed.
			r = api.Result{MeasuredAt: time.Now().UTC(), Kind: api.KindDNS, Transport: transport, Query: q.query, Failure: Classify(s.err)}
		} else {
			if p.opts.Limiter != nil {
				if err := p.opts.Limiter.Wait(ctx); err != nil {
					break
				}
			}
			if ctx.Err() != nil {
				break
			}
			r = p.transact(ctx, ex, transport, q)
		}
		r.Target = t.Name
		r.Address = addr.String()
		results = append(results, r)
	}
	return results
}

// exchanger sends q (packed as wire) and waits for the matching reply until
// ctx's deadline. It returns the size of the reply on the wire and the time
// from sending the query to receiving the reply; both are also set when the
// reply was bogus.
type exchanger func(ctx context.Context, q *dns.Msg, wire []byte) (*dns.Msg, int, time.Duration, error)

// transact runs one transaction and turns its outcome into a result.
func (p *DNS) transact(ctx context.Context, ex exchanger, transport api.Transport, q identityQuery) api.Result {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	start := time.Now()
	res := api.Result{
		MeasuredAt: start.UTC(),
		Kind:       api.KindDNS,
		Transport:  transport,
		Query:      q.query,
	}
	msg, wire, err := p.query(q)
	if err != nil {
		// Not a measurement of the server: the schedule asked for something
		// the agent cannot send.
		res.Failure = api.FailureUnknown
		return res
	}
	r, size, rtt, err := ex(ctx, msg, wire)
	if rtt > 0 {
		res.RTTMicros = min(rtt.Microseconds(), api.MaxRTT.Microseconds())
	}
	if err != nil {
		res.Failure = Classify(err)
		if size > 0 {
			res.DNS = &api.DNSValues{Size: size}
		}
		return res
	}
	res.DNS = values(r, size, q.chaos)
	res.Failure = failure(r.Rcode, res.DNS.Identity)
	return res
}

// query builds the message for q with an EDNS0 OPT carrying an empty NSID,
// and its wire form.
func (p *DNS) query(q identityQuery) (*dns.Msg, []byte, error) {
	if q.err != nil {
		return nil, nil, q.err
	}
	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = q.rd
	m.Question = []dns.Question{{Name: q.name, Qtype: q.qtype, Qclass: q.class}}
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(p.opts.UDPSize)
	opt.Option = append(opt.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	m.Extra = append(m.Extra, opt)
	wire, err := m.Pack()
	if err != nil {
		return nil, nil, fmt.Errorf("probe: packing %s query: %w", q.query, err)
	}
	return m, wire, nil
}

// longAgo is a deadline in the past: setting it interrupts blocked I/O.
var longAgo = time.Unix(1, 0)

// msgBufs holds read buffers of the largest DNS message, so that a
// transaction does not allocate 64 KiB.
var msgBufs = sync.Pool{New: func() any { b := make([]byte, dns.MaxMsgSize); return &b }}

// roundTrip sends q (packed as wire) on conn and waits for the matching
// reply until ctx's deadline; see exchanger. Over UDP a reply with another
// message ID is ignored (it may answer an earlier query from a reused port)
// but remembered: if no matching reply follows, the error is ErrBogus, not a
// timeout. When ctx ends, blocked I/O is interrupted by a deadline in the
// past, which stays on conn.
func roundTrip(ctx context.Context, conn net.Conn, tcp bool, q *dns.Msg, wire []byte) (*dns.Msg, int, time.Duration, error) {
	dl, _ := ctx.Deadline() // zero: none
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(longAgo) })
	defer stop()

	if tcp {
		framed := make([]byte, 2+len(wire))
		binary.BigEndian.PutUint16(framed, uint16(len(wire)))
		copy(framed[2:], wire)
		wire = framed
	}
	sent := time.Now()
	if _, err := conn.Write(wire); err != nil {
		return nil, 0, 0, ctxErr(ctx, err)
	}
	var (
		stray     error // a reply with another ID, seen over UDP
		straySize int
		strayRTT  time.Duration
	)
	bp := msgBufs.Get().(*[]byte)
	defer msgBufs.Put(bp)
	for {
		b, err := readMsg(conn, tcp, *bp)
		if err != nil {
			if stray != nil && Classify(ctxErr(ctx, err)) == api.FailureTimeout {
				return nil, straySize, strayRTT, stray
			}
			return nil, 0, 0, ctxErr(ctx, err)
		}
		rtt := time.Since(sent)
		if len(b) >= 2 && binary.BigEndian.Uint16(b) != q.Id && !tcp {
			stray, straySize, strayRTT = fmt.Errorf("%w: reply with message id %d, want %d", ErrBogus, binary.BigEndian.Uint16(b), q.Id), len(b), rtt
			continue
		}
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			return nil, len(b), rtt, fmt.Errorf("%w: %w", ErrBogus, err)
		}
		if err := match(q, r); err != nil {
			return nil, len(b), rtt, err
		}
		return r, len(b), rtt, nil
	}
}

// datagram carries the UDP transactions of one round on one socket, so one
// flow (a round's queries meet the same ECMP choices; rounds differ by
// source port). A socket is reused only after a transaction that got its
// answer: after a timeout or a bogus reply, a late or stray datagram could
// otherwise be taken for the next query's answer, so the next transaction
// gets a fresh socket.
type datagram struct {
	server netip.AddrPort
	conn   *net.UDPConn
}

// exchange is the datagram's exchanger.
func (d *datagram) exchange(ctx context.Context, q *dns.Msg, wire []byte) (*dns.Msg, int, time.Duration, error) {
	if d.conn == nil {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(d.server))
		if err != nil {
			return nil, 0, 0, err
		}
		d.conn = conn
	}
	r, size, rtt, err := roundTrip(ctx, d.conn, false, q, wire)
	if err != nil || ctx.Err() != nil {
		d.close()
	}
	return r, size, rtt, err
}

// close closes the socket, if any.
func (d *datagram) close() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}

// stream carries the TCP transactions of one round on one connection to
// server. Each transaction keeps its own deadline and its own RTT, measured
// from its own query (the connect is not part of it). How the connection
// fares is shared:
//
//   - A failed connect, or a transaction on the connection that fails
//     (timeout, RST, EOF mid-answer, write error), fails the connection: the
//     round's remaining transactions are not sent and get the same
//     classified failure.
//   - A bogus answer fails only its own transaction; the stream may be out
//     of step, so the next one opens a new connection.
//   - A connection the server closed (FIN or RST) while no query was
//     waiting is the server's policy (RFC 7766 §6.2.3), not a failure: the
//     next transaction opens a new connection.
type stream struct {
	server string
	conn   net.Conn
	// err is what failed the connection, once it has.
	err error
}

// exchange is the stream's exchanger.
func (s *stream) exchange(ctx context.Context, q *dns.Msg, wire []byte) (*dns.Msg, int, time.Duration, error) {
	if s.conn != nil && !idle(s.conn) {
		s.close()
	}
	if s.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", s.server)
		if err != nil {
			s.err = err
			return nil, 0, 0, err
		}
		s.conn = conn
	}
	r, size, rtt, err := roundTrip(ctx, s.conn, true, q, wire)
	switch {
	case err != nil && !errors.Is(err, ErrBogus):
		s.err = err
		s.close()
	case err != nil || ctx.Err() != nil:
		// Out of step, or ctx's end may have set a deadline in the past.
		s.close()
	}
	return r, size, rtt, err
}

// close closes the connection, if any.
func (s *stream) close() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// idle reports whether conn, between two transactions, can carry the next:
// nothing has arrived on it, neither data nor the server's FIN or RST. It
// peeks without blocking and without touching conn's deadlines.
func idle(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var (
		b    [1]byte
		rerr error
	)
	if err := rc.Control(func(fd uintptr) {
		// 0 bytes and no error: a FIN.
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return false
	}
	return errors.Is(rerr, syscall.EAGAIN)
}

// readMsg reads one DNS message: one datagram, or one length-prefixed
// message from a stream.
func readMsg(conn net.Conn, tcp bool, buf []byte) ([]byte, error) {
	if !tcp {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	var l [2]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return nil, err
	}
	b := buf[:binary.BigEndian.Uint16(l[:])]
	if _, err := io.ReadFull(conn, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// ctxErr prefers the context's error (deadline or cancellation) to the I/O
// error it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// match checks that r answers q: same ID, a response, same opcode and the
// same question. A reply without a question is accepted only with an error
// rcode (some servers drop the question from FORMERR or NOTIMP answers).
func match(q, r *dns.Msg) error {
	switch {
	case r.Id != q.Id:
		return fmt.Errorf("%w: reply with message id %d, want %d", ErrBogus, r.Id, q.Id)
	case !r.Response:
		return fmt.Errorf("%w: reply is not a response", ErrBogus)
	case r.Opcode != q.Opcode:
		return fmt.Errorf("%w: reply opcode %d, want %d", ErrBogus, r.Opcode, q.Opcode)
	case len(r.Question) == 0 && r.Rcode != dns.RcodeSuccess:
		return nil
	case len(r.Question) != 1:
		return fmt.Errorf("%w: reply has %d questions, want 1", ErrBogus, len(r.Question))
	}
	a, b := r.Question[0], q.Question[0]
	if !strings.EqualFold(a.Name, b.Name) || a.Qtype != b.Qtype || a.Qclass != b.Qclass {
		return fmt.Errorf("%w: reply question does not match the query", ErrBogus)
	}
	return nil
}

// values extracts what the reply says, bounded and escaped so that it always
// passes api validation, whatever the server sent.
func values(r *dns.Msg, size int, chaos bool) *api.DNSValues {
	v := &api.DNSValues{Rcode: rcode(r.Rcode), Size: size}
	for _, rr := range r.Answer {
		txt, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		for _, s := range txt.Txt {
			if len(v.TXT) == api.MaxTXTStrings {
				break
			}
			v.TXT = append(v.TXT, clean(s, 4*api.MaxStringLen))
		}
	}
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if n, ok := o.(*dns.EDNS0_NSID); ok {
				v.NSIDHex, v.NSIDText = nsid(n.Nsid)
				break
			}
		}
	}
	if chaos {
		for _, s := range v.TXT {
			if s != "" {
				v.Identity = s
				break
			}
		}
	} else if v.NSIDText != "" {
		v.Identity = v.NSIDText
	} else if v.NSIDHex != "" {
		v.Identity = "0x" + v.NSIDHex
	}
	return v
}

// failure classifies a parsed reply. The question of an identity
// transaction is who answered: a reply that names the server (an NSID comes
// with REFUSED or NXDOMAIN answers too) is a success whatever its rcode,
// which stays recorded in DNSValues.Rcode. Otherwise the rcode says why not.
func failure(rc int, identity string) api.Failure {
	if identity != "" {
		return api.FailureNone
	}
	switch rc {
	case dns.RcodeSuccess:
		if identity == "" {
			return api.FailureDNSNoAnswer
		}
		return api.FailureNone
	case dns.RcodeRefused:
		return api.FailureDNSRefused
	case dns.RcodeServerFailure:
		return api.FailureDNSServfail
	case dns.RcodeNameError:
		return api.FailureDNSNXDomain
	}
	return api.FailureDNSRcode
}

// rcode names a response code, including extended ones miekg/dns has no
// mnemonic for.
func rcode(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// nsid turns miekg/dns's hex representation of an NSID payload into the
// canonical lower-case hex of at most api.MaxNSIDBytes bytes, and the payload
// as text when every byte is printable ASCII.
func nsid(h string) (hexs, text string) {
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", ""
	}
	if len(b) > api.MaxNSIDBytes {
		b = b[:api.MaxNSIDBytes]
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return hex.EncodeToString(b), ""
		}
	}
	return hex.EncodeToString(b), string(b)
}

// clean escapes every byte outside printable ASCII as \DDD (the presentation
// format miekg/dns already uses for TXT) and truncates to max bytes.
func clean(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e {
			if b.Len()+1 > max {
				break
			}
			b.WriteByte(c)
			continue
		}
		if b.Len()+4 > max {
			break
		}
		fmt.Fprintf(&b, "\\%03d", c)
	}
	return b.String()
}
