package probe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// scamper runs CAIDA's scamper (`trace -P udp-paris` or `icmp-paris`) as
// the engine and converts its JSON into the same values. scamper sends and
// paces its own packets: the Limiter is waited on once, before it starts,
// and does not see the trace's later probes.
func (p *Trace) scamper(ctx context.Context, dst netip.Addr, transport api.Transport, sport uint16) (*api.TraceValues, error) {
	bin, err := exec.LookPath("scamper")
	if err != nil {
		return nil, fmt.Errorf("%w: scamper engine: %w", ErrTraceUnsupported, err)
	}
	wait := int((p.opts.ProbeTimeout + 999_999_999) / 1_000_000_000) // whole seconds, rounded up
	wait = max(1, min(wait, 20))
	var method string
	switch transport {
	case api.TransportUDP:
		method = fmt.Sprintf("udp-paris -s %d -d %d", sport, p.opts.Port)
	case api.TransportICMP:
		method = "icmp-paris"
		if p.opts.ICMPID != 0 {
			method += fmt.Sprintf(" -s %d", p.opts.ICMPID)
		}
	default:
		return nil, fmt.Errorf("%w: scamper transport %q", ErrTraceUnsupported, transport)
	}
	if p.opts.Limiter != nil {
		if err := p.opts.Limiter.Wait(ctx); err != nil {
			return nil, ctxErr(ctx, err)
		}
	}
	cmd := fmt.Sprintf("trace -P %s -m %d -g %d -q %d -w %d", method, p.opts.MaxTTL, p.opts.GapLimit, p.opts.Attempts, wait)
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, bin, "-O", "json", "-c", cmd, "-i", dst.String())
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("probe: scamper %s: %w: %s", cmd, err, strings.TrimSpace(stderr.String()))
	}
	return parseScamper(stdout.Bytes(), p.opts.Attempts)
}

// scamperTrace is the part of scamper's JSON trace object we read.
type scamperTrace struct {
	Type       string       `json:"type"`
	Method     string       `json:"method"`
	Dst        string       `json:"dst"`
	Sport      int          `json:"sport"`
	Dport      int          `json:"dport"`
	ICMPSum    int          `json:"icmp_sum"`
	StopReason string       `json:"stop_reason"`
	HopCount   int          `json:"hop_count"`
	Hops       []scamperHop `json:"hops"`
}

type scamperHop struct {
	Addr     string  `json:"addr"`
	ProbeTTL int     `json:"probe_ttl"`
	ProbeID  int     `json:"probe_id"`
	RTT      float64 `json:"rtt"` // milliseconds
	ReplyTTL int     `json:"reply_ttl"`
	ICMPType int     `json:"icmp_type"`
	ICMPCode int     `json:"icmp_code"`
	ICMPExt  []struct {
		MPLS []struct {
			TTL   uint8  `json:"mpls_ttl"`
			S     int    `json:"mpls_s"`
			Exp   uint8  `json:"mpls_exp"`
			Label uint32 `json:"mpls_label"`
		} `json:"mpls_labels"`
	} `json:"icmpext"`
}

// parseScamper converts the first trace object of scamper's JSON output.
// scamper lists answered probes only; the TTLs it probed without an answer
// become stars (attempts of them per TTL).
func parseScamper(out []byte, attempts int) (*api.TraceValues, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var t scamperTrace
		if err := json.Unmarshal(sc.Bytes(), &t); err != nil || t.Type != "trace" {
			continue
		}
		return t.values(attempts), nil
	}
	return nil, fmt.Errorf("probe: scamper printed no trace")
}

func (t scamperTrace) values(attempts int) *api.TraceValues {
	v := &api.TraceValues{Engine: EngineScamper, Hops: []api.TraceHop{}}
	if strings.HasPrefix(t.Method, "icmp") {
		v.Flow = fmt.Sprintf("icmp id=%d checksum=0x%04x", t.Sport, t.ICMPSum)
	} else {
		v.Flow = fmt.Sprintf("udp sport=%d dport=%d", t.Sport, t.Dport)
	}
	switch t.StopReason {
	case "COMPLETED":
		v.Stop, v.Reached = StopReached, true
	case "UNREACH", "ICMP":
		v.Stop = StopUnreachable
	case "GAPLIMIT":
		v.Stop = StopGapLimit
	case "HOPLIMIT":
		v.Stop = StopMaxTTL
	}
	byTTL := map[int][]scamperHop{}
	maxTTL := t.HopCount
	for _, h := range t.Hops {
		byTTL[h.ProbeTTL] = append(byTTL[h.ProbeTTL], h)
		maxTTL = max(maxTTL, h.ProbeTTL)
	}
	for ttl := 1; ttl <= maxTTL && ttl <= 255; ttl++ {
		hs := byTTL[ttl]
		sort.Slice(hs, func(i, j int) bool { return hs[i].ProbeID < hs[j].ProbeID })
		next := 1
		for _, h := range hs {
			for ; next < h.ProbeID && next <= maxTraceAttempts; next++ {
				v.Hops = append(v.Hops, traceStar(ttl, next, attempts))
			}
			a, err := netip.ParseAddr(h.Addr)
			if err != nil {
				continue
			}
			hop := api.TraceHop{
				TTL: ttl, Addr: a.Unmap().WithZone("").String(),
				RTTUS:    max(1, int64(h.RTT*1000)),
				ICMPType: h.ICMPType, ICMPCode: h.ICMPCode, ReplyTTL: h.ReplyTTL,
			}
			if attempts > 1 {
				hop.Attempt = h.ProbeID
			}
			for _, e := range h.ICMPExt {
				for _, m := range e.MPLS {
					if len(hop.MPLS) < api.MaxMPLSLabels {
						hop.MPLS = append(hop.MPLS, api.MPLS{Label: m.Label & (1<<20 - 1), TC: m.Exp & 7, S: m.S != 0, TTL: m.TTL})
					}
				}
			}
			v.Hops = append(v.Hops, hop)
			next = h.ProbeID + 1
		}
		if len(hs) == 0 {
			for a := 1; a <= attempts; a++ {
				v.Hops = append(v.Hops, traceStar(ttl, a, attempts))
			}
		}
	}
	return v
}

func traceStar(ttl, attempt, attempts int) api.TraceHop {
	h := api.TraceHop{TTL: ttl}
	if attempts > 1 {
		h.Attempt = attempt
	}
	return h
}
