package probe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Paris traceroute
//
// A classic traceroute changes the UDP destination port (or the ICMP
// sequence number, and with it the checksum) for every probe. Per-flow load
// balancers hash those fields, so consecutive TTLs may follow different
// paths, and the trace shows links that do not exist ("false links"); towards
// an anycast address the hops may even belong to different sites. Paris
// traceroute (Augustin et al., 2006) keeps every field a balancer may hash
// constant for the whole trace and tells probes apart by a field outside the
// flow identifier:
//
//   - UDP: source and destination port are fixed; the probes differ only in
//     their payload (and so in the UDP checksum), which the ICMP error quotes.
//   - ICMP: type, code, identifier and checksum are fixed; the sequence number
//     varies and the first two payload bytes compensate for it, so that the
//     checksum stays the same.
//
// A reply is matched to its probe through the header and payload that the
// ICMP error quotes, never by order of arrival.

// Defaults for TraceOptions.
const (
	DefaultTraceMaxTTL       = 30
	DefaultTraceGapLimit     = 5
	DefaultTraceAttempts     = 1
	DefaultTraceProbeTimeout = time.Second
	DefaultTracePort         = 33435
	// Source ports chosen at random when TraceOptions.SourcePort is 0.
	traceMinSourcePort = 33000
	traceMaxSourcePort = 60000
	maxTraceAttempts   = 3
)

// Trace engines.
const (
	EngineAnyscope = "anyscope"
	EngineScamper  = "scamper"
)

// Reasons a trace stops (api.TraceValues.Stop).
const (
	StopReached     = "reached"
	StopUnreachable = "unreachable"
	StopGapLimit    = "gap_limit"
	StopMaxTTL      = "max_ttl"
	StopTimeout     = "timeout"
)

// ErrTraceUnsupported is wrapped when a trace cannot be run the way it was
// asked (a transport the engine does not implement).
var ErrTraceUnsupported = errors.New("probe: trace not supported")

// TraceOptions configure a Paris traceroute prober. Zero values take the
// defaults.
type TraceOptions struct {
	// Transport is used when Probe is called without one: api.TransportUDP
	// (default, unprivileged) or api.TransportICMP (needs a raw socket).
	Transport api.Transport
	// MaxTTL is the largest TTL probed (default 30, at most 255).
	MaxTTL int
	// GapLimit stops the trace after that many consecutive TTLs without
	// any answer (default 5).
	GapLimit int
	// Attempts is the number of probes per TTL (default 1, at most 3). The
	// next TTL follows the first answered attempt.
	Attempts int
	// ProbeTimeout is how long to wait for the answer of one probe
	// (default 1s).
	ProbeTimeout time.Duration
	// Limiter, when set, is waited on before every packet.
	Limiter Limiter
	// Engine is "anyscope" (default) or "scamper" (CAIDA's prober, when
	// installed; it must be allowed to open raw sockets).
	Engine string
	// SourcePort fixes the UDP source port (the ICMP identifier for
	// scamper's icmp-paris); 0 picks one at random in 33000..60000 for every
	// trace. It is the same for every probe of a trace.
	SourcePort uint16
	// Port is the UDP destination port (default 33435).
	Port uint16
	// ICMPID fixes the ICMP echo identifier of ICMP-Paris traces; 0 picks
	// one at random that no concurrent trace of this process uses.
	ICMPID uint16
}

// Trace runs Paris traceroutes. It is safe for concurrent use: every trace
// has its own flow, and replies are matched to it by their quoted headers.
type Trace struct {
	opts TraceOptions
}

// NewTrace validates o, applies defaults and returns a prober.
func NewTrace(o TraceOptions) (*Trace, error) {
	switch o.Transport {
	case "":
		o.Transport = api.TransportUDP
	case api.TransportUDP, api.TransportICMP:
	default:
		return nil, fmt.Errorf("%w: transport %q (want udp or icmp)", ErrTraceUnsupported, o.Transport)
	}
	switch {
	case o.MaxTTL == 0:
		o.MaxTTL = DefaultTraceMaxTTL
	case o.MaxTTL < 1 || o.MaxTTL > 255:
		return nil, fmt.Errorf("probe: trace max ttl %d out of range 1..255", o.MaxTTL)
	}
	switch {
	case o.GapLimit == 0:
		o.GapLimit = DefaultTraceGapLimit
	case o.GapLimit < 1 || o.GapLimit > 255:
		return nil, fmt.Errorf("probe: trace gap limit %d out of range 1..255", o.GapLimit)
	}
	switch {
	case o.Attempts == 0:
		o.Attempts = DefaultTraceAttempts
	case o.Attempts < 1 || o.Attempts > maxTraceAttempts:
		return nil, fmt.Errorf("probe: trace attempts %d out of range 1..%d", o.Attempts, maxTraceAttempts)
	}
	switch {
	case o.ProbeTimeout == 0:
		o.ProbeTimeout = DefaultTraceProbeTimeout
	case o.ProbeTimeout < time.Millisecond || o.ProbeTimeout > time.Minute:
		return nil, fmt.Errorf("probe: trace probe timeout %v out of range [1ms, 1m]", o.ProbeTimeout)
	}
	switch o.Engine {
	case "":
		o.Engine = EngineAnyscope
	case EngineAnyscope, EngineScamper:
	default:
		return nil, fmt.Errorf("%w: engine %q (want %s or %s)", ErrTraceUnsupported, o.Engine, EngineAnyscope, EngineScamper)
	}
	if o.SourcePort != 0 && o.SourcePort < 1024 {
		return nil, fmt.Errorf("probe: trace source port %d is privileged (want 0 or 1024..65535)", o.SourcePort)
	}
	if o.Port == 0 {
		o.Port = DefaultTracePort
	}
	return &Trace{opts: o}, nil
}

// Options returns the options in effect, defaults applied.
func (p *Trace) Options() TraceOptions { return p.opts }

// Probe traces the path to addr over transport (the options' transport
// when empty) and returns exactly one result, with Seq left zero for the
// spool to assign. Failure is none when the destination answered, the
// unreachable kind when an ICMP unreachable ended the trace, a timeout when
// the destination never answered, and permission_denied when the socket the
// method needs is not allowed.
func (p *Trace) Probe(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, transport api.Transport) []api.Result {
	addr = addr.Unmap().WithZone("")
	if transport == "" {
		transport = p.opts.Transport
	}
	res := api.Result{
		MeasuredAt: time.Now().UTC(),
		Target:     t.Name,
		Address:    addr.String(),
		Kind:       api.KindTrace,
		Transport:  transport,
		Query:      api.QueryParis,
	}
	v, err := p.run(ctx, addr, transport)
	if v != nil {
		res.Trace = v
		res.Failure = traceFailure(v)
		if v.Reached {
			res.RTTMicros = min(lastRTT(v), api.MaxRTT.Microseconds())
		}
	}
	if err != nil {
		res.Failure = Classify(err)
		switch {
		case errors.Is(err, ErrTraceUnsupported):
			res.Failure = api.FailureUnknown
		case errors.Is(err, context.Canceled):
			// Cut short before the destination answered.
			res.Failure = api.FailureTimeout
		}
	}
	return []api.Result{res}
}

func (p *Trace) run(ctx context.Context, addr netip.Addr, transport api.Transport) (*api.TraceValues, error) {
	if !addr.IsValid() {
		return nil, fmt.Errorf("%w: invalid address", ErrTraceUnsupported)
	}
	sport := p.opts.SourcePort
	if sport == 0 {
		sport = uint16(traceMinSourcePort + rand.IntN(traceMaxSourcePort-traceMinSourcePort+1))
	}
	if p.opts.Engine == EngineScamper {
		return p.scamper(ctx, addr, transport, sport)
	}
	switch transport {
	case api.TransportUDP:
		return p.traceUDP(ctx, addr, sport)
	case api.TransportICMP:
		return p.traceICMP(ctx, addr)
	}
	return nil, fmt.Errorf("%w: transport %q", ErrTraceUnsupported, transport)
}

// hopAnswer is what one probe got back.
type hopAnswer struct {
	from     netip.Addr
	rtt      time.Duration
	icmpType int
	icmpCode int
	replyTTL int
	mpls     []api.MPLS
	// dest says the destination itself answered (port unreachable from the
	// destination for UDP, echo reply for ICMP); unreach says an ICMP
	// destination unreachable ended the path.
	dest, unreach bool
}

// prober sends the probe for (ttl, attempt) and waits for its answer; ok is
// false for a star. A non-nil error ends the trace (a socket fault or ctx).
type prober func(ctx context.Context, ttl, attempt int) (a hopAnswer, ok bool, err error)

// walk runs the TTL loop shared by the native methods: Limiter before every
// packet, attempts per TTL, gap limit, max TTL, stop on destination or
// unreachable.
func (p *Trace) walk(ctx context.Context, flow string, send prober) (*api.TraceValues, error) {
	v := &api.TraceValues{Flow: flow, Engine: EngineAnyscope, Hops: []api.TraceHop{}}
	gap := 0
	for ttl := 1; ttl <= p.opts.MaxTTL; ttl++ {
		answered := false
		for attempt := 1; attempt <= p.opts.Attempts && !answered; attempt++ {
			if p.opts.Limiter != nil {
				if err := p.opts.Limiter.Wait(ctx); err != nil {
					v.Stop = StopTimeout
					return v, ctxErr(ctx, err)
				}
			}
			if err := ctx.Err(); err != nil {
				v.Stop = StopTimeout
				return v, err
			}
			a, ok, err := send(ctx, ttl, attempt)
			if err != nil {
				v.Stop = StopTimeout
				return v, ctxErr(ctx, err)
			}
			h := api.TraceHop{TTL: ttl}
			if p.opts.Attempts > 1 {
				h.Attempt = attempt
			}
			if ok {
				answered = true
				h.Addr = a.from.Unmap().WithZone("").String()
				h.RTTUS = max(1, min(a.rtt.Microseconds(), api.MaxRTT.Microseconds()))
				h.ICMPType, h.ICMPCode, h.ReplyTTL, h.MPLS = a.icmpType, a.icmpCode, a.replyTTL, a.mpls
			}
			v.Hops = append(v.Hops, h)
			if ok && a.dest {
				v.Reached, v.Stop = true, StopReached
				return v, nil
			}
			if ok && a.unreach {
				v.Stop = StopUnreachable
				return v, nil
			}
		}
		if answered {
			gap = 0
		} else if gap++; gap >= p.opts.GapLimit {
			v.Stop = StopGapLimit
			return v, nil
		}
	}
	v.Stop = StopMaxTTL
	return v, nil
}

// traceFailure classifies a finished trace.
func traceFailure(v *api.TraceValues) api.Failure {
	if v.Reached {
		return api.FailureNone
	}
	if v.Stop == StopUnreachable {
		for i := len(v.Hops) - 1; i >= 0; i-- {
			if h := v.Hops[i]; h.Addr != "" {
				return unreachFailure(h.ICMPType, h.ICMPCode)
			}
		}
	}
	return api.FailureTimeout
}

// unreachFailure maps an ICMP or ICMPv6 destination unreachable code.
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

// lastRTT is the RTT of the last answered hop.
func lastRTT(v *api.TraceValues) int64 {
	for i := len(v.Hops) - 1; i >= 0; i-- {
		if v.Hops[i].Addr != "" {
			return v.Hops[i].RTTUS
		}
	}
	return 0
}

// probeDeadline is when the current probe times out, bounded by ctx.
func (p *Trace) probeDeadline(ctx context.Context) time.Time {
	d := time.Now().Add(p.opts.ProbeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
		return dl
	}
	return d
}
