package atlas

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// dnsResponse is one DNS transaction: the record itself, or one entry of
// its resultset.
type dnsResponse struct {
	DstAddr string                     `json:"dst_addr"`
	DstName string                     `json:"dst_name"`
	Proto   string                     `json:"proto"`
	Time    *int64                     `json:"time"`
	Qbuf    string                     `json:"qbuf"`
	Result  *dnsResult                 `json:"result"`
	Error   map[string]json.RawMessage `json:"error"`
}

type dnsRecord struct {
	dnsResponse
	Resultset []dnsResponse `json:"resultset"`
}

type dnsResult struct {
	RT      *float64    `json:"rt"`
	Size    *int64      `json:"size"`
	Abuf    string      `json:"abuf"`
	Answers []dnsAnswer `json:"answers"`
}

type dnsAnswer struct {
	Type  json.RawMessage `json:"TYPE"`
	Name  string          `json:"NAME"`
	RData rdata           `json:"RDATA"`
}

// rdata is an answer's RDATA: a string before firmware 4750, a list of
// strings (the TXT record's character strings) from 4750 on.
type rdata []string

func (r *rdata) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*r = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*r = rdata{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New("RDATA is neither a string nor a list of strings")
	}
	*r = l
	return nil
}

// isTXT reports whether an answer's TYPE says TXT ("TXT", or 16 in old
// firmware).
func (a *dnsAnswer) isTXT() bool {
	t := string(bytes.TrimSpace(a.Type))
	return t == `"TXT"` || t == "16"
}

// builtinHostnameBind reports whether msm is one of RIPE Atlas's built-in
// CHAOS hostname.bind measurements towards the root servers (IPv4 103xx,
// IPv6 113xx), whose failures say nothing else about their query.
func builtinHostnameBind(msm int64) bool {
	return msm >= 10300 && msm <= 10399 || msm >= 11300 && msm <= 11399
}

func (c *converter) dns(data []byte) error {
	var d dnsRecord
	if err := json.Unmarshal(data, &d); err != nil {
		return jsonError(err)
	}
	entries := d.Resultset
	if entries == nil {
		if d.Result == nil && d.Error == nil {
			return errors.New("dns: neither result, error nor resultset")
		}
		entries = []dnsResponse{d.dnsResponse}
	}
	if len(entries) > maxResultset {
		return fmt.Errorf("dns: resultset has %d entries, at most %d", len(entries), maxResultset)
	}
	// Every transaction of a measurement asks the same question: decode
	// all first, so that an entry that says nothing of its question (an
	// error) learns it from one that does.
	preps := make([]dnsPrep, len(entries))
	for i := range entries {
		if err := c.prepare(&preps[i], &entries[i], &d.dnsResponse); err != nil {
			return c.entryError(d.Resultset != nil, i, err)
		}
	}
	for i := range entries {
		if err := c.dnsResponse(i, &preps[i], &entries[i], &d.dnsResponse); err != nil {
			return c.entryError(d.Resultset != nil, i, err)
		}
	}
	return nil
}

func (c *converter) entryError(set bool, i int, err error) error {
	if set {
		return fmt.Errorf("resultset[%d]: %w", i, err)
	}
	return err
}

// dnsPrep is what a transaction's buffers say.
type dnsPrep struct {
	msg   *dns.Msg // the answer, from abuf
	query string   // api.Query*, "" when not known yet
	skip  string   // why it is no identity query
}

// prepare decodes a transaction's abuf and qbuf and tells its query from
// them or from its answers' names; top holds the record's own fields,
// which a resultset entry inherits when it lacks them.
func (c *converter) prepare(p *dnsPrep, e, top *dnsResponse) error {
	var err error
	var answers []dnsAnswer
	if e.Result != nil {
		answers = e.Result.Answers
		if e.Result.Abuf != "" {
			if p.msg, err = unpack("abuf", e.Result.Abuf); err != nil {
				return err
			}
		}
	}
	qbuf := e.Qbuf
	if qbuf == "" {
		qbuf = top.Qbuf
	}
	var query *dns.Msg
	if qbuf != "" {
		if query, err = unpack("qbuf", qbuf); err != nil {
			return err
		}
	}
	p.query, p.skip = questionOf(p.msg, query, answers)
	if p.query != "" || p.skip != "" {
		c.p.learn(c.rec.MsmID, p.query, p.skip)
	}
	return nil
}

// dnsResponse converts one transaction.
func (c *converter) dnsResponse(index int, p *dnsPrep, e, top *dnsResponse) error {
	if e.Result == nil && e.Error == nil {
		c.skip(SkipEmptyResponse)
		return nil
	}
	addr, ok, err := destination(e.DstAddr, e.DstName, top.DstAddr, top.DstName)
	if err != nil {
		return err
	}
	if !ok {
		if e.Result == nil {
			c.skip(SkipNoAddress)
			return nil
		}
		return errors.New("no dst_addr")
	}
	proto := e.Proto
	if proto == "" {
		proto = top.Proto
	}
	var transport api.Transport
	switch strings.ToUpper(proto) {
	case "", "UDP":
		transport = api.TransportUDP
	case "TCP":
		transport = api.TransportTCP
	default:
		c.skip(SkipProto)
		return nil
	}
	at := c.rec.Time
	if e.Time != nil && e != top {
		if at, err = c.p.time(*e.Time); err != nil {
			return err
		}
	}
	q, skip := p.query, p.skip
	if q == "" && skip == "" {
		q, skip = c.p.fallbackQuery(c.rec.MsmID)
	}
	if skip != "" {
		c.skip(skip)
		return nil
	}
	res := api.Result{MeasuredAt: at, Address: addr.String(), Kind: api.KindDNS, Transport: transport, Query: q}
	if e.Result == nil {
		res.Failure = errorFailure(e.Error)
		c.add(res, index)
		return nil
	}
	if e.Result.RT != nil {
		if res.RTTMicros, err = ms("rt", *e.Result.RT); err != nil {
			return err
		}
	}
	v := &api.DNSValues{}
	if s := e.Result.Size; s != nil {
		if *s < 0 || *s > 65535 {
			return fmt.Errorf("size %d out of range 0..65535", *s)
		}
		v.Size = int(*s)
	}
	msg := p.msg
	rc := -1 // unknown without abuf
	if msg != nil {
		rc = msg.Rcode
		v.Rcode = rcode(rc)
	}
	for _, a := range e.Result.Answers {
		if !a.isTXT() {
			continue
		}
		for _, s := range a.RData {
			if len(v.TXT) < api.MaxTXTStrings {
				v.TXT = append(v.TXT, clean(s, 4*api.MaxStringLen))
			}
		}
	}
	if len(v.TXT) == 0 && msg != nil {
		v.TXT = txt(msg)
	}
	if msg != nil {
		v.NSIDHex, v.NSIDText = nsidOf(msg)
	}
	nsidIdentity := v.NSIDText
	if nsidIdentity == "" && v.NSIDHex != "" {
		nsidIdentity = "0x" + v.NSIDHex
	}
	chaos := q != api.QueryNSID
	if chaos {
		for _, s := range v.TXT {
			if s != "" {
				v.Identity = s
				break
			}
		}
	} else {
		v.Identity = nsidIdentity
	}
	res.DNS, res.Failure = v, failure(rc, v.Identity)
	c.add(res, index)
	if chaos && nsidIdentity != "" {
		// The agent asks NSID on every query: a CHAOS answer with an NSID
		// is also an NSID result of the same transaction and round.
		n := res
		n.Query = api.QueryNSID
		n.DNS = &api.DNSValues{Rcode: v.Rcode, NSIDHex: v.NSIDHex, NSIDText: v.NSIDText, Identity: nsidIdentity, Size: v.Size}
		n.Failure = api.FailureNone
		c.add(n, index)
	}
	return nil
}

// destination picks the address a transaction went to: dst_addr, or a
// dst_name that is an address (Atlas writes only dst_name when it could
// not even send), the entry's own before the record's. A dst_addr that is
// not an address is an error; none at all is ok == false.
func destination(addr, name, topAddr, topName string) (netip.Addr, bool, error) {
	for _, s := range []string{addr, topAddr} {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Addr{}, false, fmt.Errorf("dst_addr %q is not an IP address", api.Clip(s))
		}
		return a.Unmap(), true, nil
	}
	for _, s := range []string{name, topName} {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			return a.Unmap(), true, nil
		}
	}
	return netip.Addr{}, false, nil
}

// unpack decodes a base64 DNS message.
func unpack(field, b64 string) (*dns.Msg, error) {
	if len(b64) > base64.StdEncoding.EncodedLen(maxAbufBytes) {
		return nil, fmt.Errorf("%s longer than %d bytes", field, maxAbufBytes)
	}
	wire, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if wire, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return nil, fmt.Errorf("%s is not base64", field)
		}
	}
	m := new(dns.Msg)
	if err := m.Unpack(wire); err != nil {
		return nil, fmt.Errorf("%s is not a DNS message: %w", field, err)
	}
	return m, nil
}

// questionOf tells a transaction's query from the question of its answer
// or of its query, or from the name of a TXT answer; skip is set when it
// was no identity query, and both are empty when nothing says.
func questionOf(msg, query *dns.Msg, answers []dnsAnswer) (q, skip string) {
	for _, m := range []*dns.Msg{msg, query} {
		if m != nil && len(m.Question) > 0 {
			qu := m.Question[0]
			if qu.Qclass != dns.ClassCHAOS {
				return api.QueryNSID, ""
			}
			if qu.Qtype == dns.TypeTXT {
				switch strings.ToLower(qu.Name) {
				case "hostname.bind.":
					return api.QueryHostnameBind, ""
				case "id.server.":
					return api.QueryIDServer, ""
				}
			}
			return "", SkipQueryChaos
		}
	}
	for _, a := range answers {
		if !a.isTXT() {
			continue
		}
		switch name := strings.TrimSuffix(strings.ToLower(a.Name), "."); {
		case name == "hostname.bind":
			return api.QueryHostnameBind, ""
		case name == "id.server":
			return api.QueryIDServer, ""
		case strings.HasSuffix(name, ".bind") || strings.HasSuffix(name, ".server"):
			return "", SkipQueryChaos
		}
	}
	return "", ""
}

// maxLearned bounds the measurements whose query a parser remembers.
const maxLearned = 100_000

// learn remembers the query of a measurement.
func (p *Parser) learn(msm int64, q, skip string) {
	if _, ok := p.learned[msm]; ok || len(p.learned) >= maxLearned {
		return
	}
	if p.learned == nil {
		p.learned = map[int64]dnsPrep{}
	}
	p.learned[msm] = dnsPrep{query: q, skip: skip}
}

// fallbackQuery is the query of a transaction that does not say: the one
// its measurement showed earlier in the input, the built-in hostname.bind
// measurements', or the parser's option.
func (p *Parser) fallbackQuery(msm int64) (q, skip string) {
	if l, ok := p.learned[msm]; ok {
		return l.query, l.skip
	}
	if builtinHostnameBind(msm) {
		return api.QueryHostnameBind, ""
	}
	if p.opts.Query != "" {
		return p.opts.Query, ""
	}
	return "", SkipQueryUnknown
}

// errorFailure classifies an Atlas DNS error object: {"timeout": 5000},
// {"socket": "connect failed Network is unreachable"}, {"nameserver": "no
// local resolvers found"}, …
func errorFailure(e map[string]json.RawMessage) api.Failure {
	if _, ok := e["timeout"]; ok {
		return api.FailureTimeout
	}
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var s string
		if json.Unmarshal(e[k], &s) != nil {
			continue
		}
		if f := textFailure(s); f != api.FailureUnknown {
			return f
		}
	}
	return api.FailureUnknown
}

// textFailure maps the error text an Atlas probe reports (strerror and
// friends) to the closest classified failure.
func textFailure(s string) api.Failure {
	s = strings.ToLower(s)
	switch {
	case strings.Contains(s, "timed out") || strings.Contains(s, "timeout"):
		return api.FailureTimeout
	case strings.Contains(s, "refused"):
		return api.FailureConnectionRefused
	case strings.Contains(s, "reset"):
		return api.FailureConnectionReset
	case strings.Contains(s, "network is unreachable") || strings.Contains(s, "network unreachable"):
		return api.FailureNetworkUnreachable
	case strings.Contains(s, "no route to host") || strings.Contains(s, "host is unreachable") || strings.Contains(s, "host unreachable"):
		return api.FailureHostUnreachable
	case strings.Contains(s, "permission denied") || strings.Contains(s, "operation not permitted"):
		return api.FailurePermissionDenied
	}
	return api.FailureUnknown
}

// The helpers below mirror agent/probe's treatment of a reply, so an
// imported answer is stored as the agent would have stored it.

// txt collects the TXT strings of a reply's answer section.
func txt(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		t, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		for _, s := range t.Txt {
			if len(out) == api.MaxTXTStrings {
				return out
			}
			out = append(out, clean(s, 4*api.MaxStringLen))
		}
	}
	return out
}

// nsidOf returns a reply's NSID as canonical lower-case hex of at most
// api.MaxNSIDBytes bytes, and as text when every byte is printable ASCII.
func nsidOf(m *dns.Msg) (hexs, text string) {
	opt := m.IsEdns0()
	if opt == nil {
		return "", ""
	}
	for _, o := range opt.Option {
		n, ok := o.(*dns.EDNS0_NSID)
		if !ok {
			continue
		}
		b, err := hex.DecodeString(n.Nsid)
		if err != nil || len(b) == 0 {
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
	return "", ""
}

// failure classifies a reply as the agent does: a reply that names the
// server is a success whatever its rcode; otherwise the rcode says why not.
// rc < 0 means the rcode is unknown (no abuf).
func failure(rc int, identity string) api.Failure {
	if identity != "" {
		return api.FailureNone
	}
	switch rc {
	case dns.RcodeSuccess:
		return api.FailureDNSNoAnswer
	case dns.RcodeRefused:
		return api.FailureDNSRefused
	case dns.RcodeServerFailure:
		return api.FailureDNSServfail
	case dns.RcodeNameError:
		return api.FailureDNSNXDomain
	}
	if rc < 0 {
		return api.FailureDNSNoAnswer
	}
	return api.FailureDNSRcode
}

// rcode names a response code, including extended ones without a mnemonic.
func rcode(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// clean escapes every byte outside printable ASCII as \DDD (the
// presentation format miekg/dns and Atlas already use for TXT) and
// truncates to max bytes.
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
