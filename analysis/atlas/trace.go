package atlas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

type traceRecord struct {
	DstAddr string     `json:"dst_addr"`
	DstName string     `json:"dst_name"`
	Proto   string     `json:"proto"`
	ParisID *int64     `json:"paris_id"`
	Result  []traceHop `json:"result"`
}

type traceHop struct {
	Hop    *int64       `json:"hop"`
	Error  string       `json:"error"`
	Result []traceReply `json:"result"`
}

type traceReply struct {
	X       string          `json:"x"`
	From    string          `json:"from"`
	RTT     *float64        `json:"rtt"`
	TTL     *int64          `json:"ttl"`
	Err     json.RawMessage `json:"err"`
	Late    json.RawMessage `json:"late"`
	Dup     json.RawMessage `json:"dup"`
	ICMPExt *icmpExt        `json:"icmpext"`
}

// icmpExt holds ICMP extension objects (RFC 4884); class 1 type 1 is an
// MPLS label stack (RFC 4950).
type icmpExt struct {
	Obj []struct {
		Class int64 `json:"class"`
		Type  int64 `json:"type"`
		MPLS  []struct {
			Label int64 `json:"label"`
			Exp   int64 `json:"exp"`
			S     int64 `json:"s"`
			TTL   int64 `json:"ttl"`
		} `json:"mpls"`
	} `json:"obj"`
}

// ICMP destination unreachable types.
const (
	icmp4Unreach = 3
	icmp6Unreach = 1
)

// Atlas does not say which ICMP message an answering hop sent; it follows
// from the hop: time exceeded from routers, and from the destination an
// echo reply (ICMP), a port unreachable (UDP) or nothing ICMP (TCP).
func answerType(v4, dest bool, transport api.Transport) (typ, code int) {
	switch {
	case !dest && v4:
		return 11, 0
	case !dest:
		return 3, 0
	case transport == api.TransportICMP && v4:
		return 0, 0
	case transport == api.TransportICMP:
		return 129, 0
	case transport == api.TransportUDP && v4:
		return icmp4Unreach, 3
	case transport == api.TransportUDP:
		return icmp6Unreach, 4
	}
	return 0, 0
}

// errICMP maps a reply's "err" ("N" network, "H" host, "A" administratively
// prohibited, "P" protocol, "p" port unreachable, "h" beyond scope, or an
// ICMP code number) to the ICMP type and code.
func errICMP(raw json.RawMessage, v4 bool) (typ, code int, err error) {
	typ = icmp6Unreach
	if v4 {
		typ = icmp4Unreach
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		n, perr := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
		if perr != nil || n < 0 || n > 255 {
			return 0, 0, errors.New("err is neither a letter nor an ICMP code")
		}
		return typ, int(n), nil
	}
	codes4 := map[string]int{"N": 0, "H": 1, "P": 2, "p": 3, "A": 13, "h": 1}
	codes6 := map[string]int{"N": 0, "A": 1, "h": 2, "H": 3, "p": 4, "P": 4}
	if v4 {
		if c, ok := codes4[s]; ok {
			return typ, c, nil
		}
	} else if c, ok := codes6[s]; ok {
		return typ, c, nil
	}
	return typ, 1, nil // another letter: some destination unreachable
}

// unreachFailure maps an ICMP or ICMPv6 destination unreachable code, as
// the agent does.
func unreachFailure(typ, code int) api.Failure {
	switch {
	case typ == icmp4Unreach && (code == 0 || code == 6 || code == 9 || code == 11):
		return api.FailureNetworkUnreachable
	case typ == icmp6Unreach && code == 0:
		return api.FailureNetworkUnreachable
	case typ == icmp4Unreach && code == 3, typ == icmp6Unreach && code == 4:
		return api.FailureConnectionRefused
	}
	return api.FailureHostUnreachable
}

func present(raw json.RawMessage) bool {
	t := string(bytes.TrimSpace(raw))
	return t != "" && t != "null" && t != "false" && t != "0"
}

func (c *converter) trace(data []byte) error {
	var t traceRecord
	if err := json.Unmarshal(data, &t); err != nil {
		return jsonError(err)
	}
	dst, ok, err := destination(t.DstAddr, t.DstName, "", "")
	if err != nil {
		return err
	}
	if !ok {
		for _, h := range t.Result {
			if len(h.Result) > 0 {
				return errors.New("no dst_addr")
			}
		}
		c.skip(SkipNoAddress) // e.g. name resolution failed
		return nil
	}
	if t.ParisID == nil || *t.ParisID == 0 {
		c.skip(SkipNotParis)
		return nil
	}
	if *t.ParisID < 0 || *t.ParisID > 65535 {
		return fmt.Errorf("paris_id %d out of range", *t.ParisID)
	}
	var transport api.Transport
	switch strings.ToUpper(t.Proto) {
	case "UDP":
		transport = api.TransportUDP
	case "ICMP":
		transport = api.TransportICMP
	case "TCP":
		transport = api.TransportTCP
	default:
		c.skip(SkipProto)
		return nil
	}
	v4 := dst.Is4()
	v := &api.TraceValues{
		Flow:   fmt.Sprintf("%s paris_id=%d", transport, *t.ParisID),
		Engine: "ripe-atlas",
		Hops:   []api.TraceHop{},
	}
	seen := map[int64]bool{}
	var (
		hopError           string // the first hop-level error
		lastTTL            int64
		unreach            bool // the last hop that answered sent an unreachable
		unreachTyp, unCode int
		destRTT            int64
	)
	for i, h := range t.Result {
		if h.Hop == nil {
			if h.Error != "" && len(h.Result) == 0 {
				hopError = h.Error // e.g. name resolution failed, before any hop
				continue
			}
			return fmt.Errorf("result[%d]: no hop number", i)
		}
		n := *h.Hop
		if n < 1 || n > 255 || seen[n] {
			return fmt.Errorf("result[%d]: hop %d out of range or repeated", i, n)
		}
		seen[n] = true
		lastTTL = max(lastTTL, n)
		if h.Error != "" && hopError == "" {
			hopError = h.Error
		}
		attempt, answered := 0, false
		hopUnreach, hopTyp, hopCode := false, 0, 0
		for _, r := range h.Result {
			if present(r.Late) || present(r.Dup) {
				continue // an answer to an earlier probe, not a probe of its own
			}
			if attempt++; attempt > 16 {
				break
			}
			th := api.TraceHop{TTL: int(n), Attempt: attempt}
			if r.X == "*" || r.From == "" {
				v.Hops = append(v.Hops, th)
				continue
			}
			from, err := netip.ParseAddr(r.From)
			if err != nil || from.Zone() != "" {
				return fmt.Errorf("hop %d: from %q is not an IP address", n, api.Clip(r.From))
			}
			from = from.Unmap()
			th.Addr = from.String()
			if r.RTT != nil {
				us, err := ms(fmt.Sprintf("hop %d: rtt", n), *r.RTT)
				if err != nil {
					return err
				}
				th.RTTUS = max(1, us)
			}
			if r.TTL != nil {
				if *r.TTL < 0 || *r.TTL > 255 {
					return fmt.Errorf("hop %d: ttl %d out of range", n, *r.TTL)
				}
				th.ReplyTTL = int(*r.TTL)
			}
			dest := from == dst
			if present(r.Err) {
				typ, code, err := errICMP(r.Err, v4)
				if err != nil {
					return fmt.Errorf("hop %d: %w", n, err)
				}
				th.ICMPType, th.ICMPCode = typ, code
				hopUnreach, hopTyp, hopCode = true, typ, code
			} else {
				th.ICMPType, th.ICMPCode = answerType(v4, dest, transport)
			}
			if r.ICMPExt != nil {
				for _, o := range r.ICMPExt.Obj {
					if o.Class != 1 || o.Type != 1 {
						continue
					}
					for _, m := range o.MPLS {
						if len(th.MPLS) == api.MaxMPLSLabels {
							break
						}
						if m.Label < 0 || m.Label >= 1<<20 || m.Exp < 0 || m.Exp > 7 || m.TTL < 0 || m.TTL > 255 {
							return fmt.Errorf("hop %d: MPLS label %d exp %d ttl %d out of range", n, m.Label, m.Exp, m.TTL)
						}
						th.MPLS = append(th.MPLS, api.MPLS{Label: uint32(m.Label), TC: uint8(m.Exp), S: m.S != 0, TTL: uint8(m.TTL)})
					}
				}
			}
			if dest && !v.Reached {
				v.Reached, destRTT = true, th.RTTUS
			}
			answered = true
			v.Hops = append(v.Hops, th)
		}
		if answered {
			unreach, unreachTyp, unCode = hopUnreach, hopTyp, hopCode
		}
	}
	if len(v.Hops) > api.MaxTraceHops {
		return fmt.Errorf("%d hop probes, at most %d", len(v.Hops), api.MaxTraceHops)
	}
	res := api.Result{
		MeasuredAt: c.rec.Time, Address: dst.String(),
		Kind: api.KindTrace, Transport: transport, Query: api.QueryParis, Trace: v,
	}
	switch {
	case v.Reached:
		v.Stop, res.RTTMicros = "reached", destRTT
	case unreach:
		v.Stop, res.Failure = "unreachable", unreachFailure(unreachTyp, unCode)
	case lastTTL == 255:
		v.Stop, res.Failure = "gap_limit", api.FailureTimeout
	case len(v.Hops) == 0 && hopError != "":
		// The probe could not send at all (e.g. "connect failed: Network
		// is unreachable").
		v.Stop, res.Failure = "", textFailure(hopError)
	default:
		v.Stop, res.Failure = "max_ttl", api.FailureTimeout
	}
	c.add(res, 0)
	return nil
}
