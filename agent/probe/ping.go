package probe

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	probing "github.com/prometheus-community/pro-bing"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Defaults for PingOptions.
const (
	DefaultPingCount    = 3
	DefaultPingInterval = 200 * time.Millisecond
	DefaultPingTimeout  = 2 * time.Second
	// MaxPingCount is the largest series api.PingValues may hold.
	MaxPingCount = 10000
	// MinPingInterval keeps a misconfigured agent from flooding a target.
	MinPingInterval = 10 * time.Millisecond
)

// PingSocket chooses the kind of ICMP socket a pinger uses.
type PingSocket int

// Socket kinds.
const (
	// PingAuto uses an unprivileged ICMP datagram socket when
	// net.ipv4.ping_group_range admits one of our groups, else a raw socket
	// when running as root. It falls back to a raw socket (as root) when the
	// kernel refuses the datagram socket after all.
	PingAuto PingSocket = iota
	// PingUnprivileged always uses an ICMP datagram socket
	// (SOCK_DGRAM/IPPROTO_ICMP): the kernel assigns the echo identifier and
	// delivers only this socket's replies to it.
	PingUnprivileged
	// PingPrivileged always uses a raw socket (root or CAP_NET_RAW): replies
	// are told apart by the echo identifier, a BPF filter on it, and a
	// per-pinger tracker UUID in the payload.
	PingPrivileged
)

func (s PingSocket) String() string {
	switch s {
	case PingAuto:
		return "auto"
	case PingUnprivileged:
		return "unprivileged"
	case PingPrivileged:
		return "privileged"
	}
	return "PingSocket(" + strconv.Itoa(int(s)) + ")"
}

// PingOptions configure a ping prober. Zero values take the defaults.
type PingOptions struct {
	// Count is the number of echo requests in one series (default 3).
	Count int
	// Interval is the time between two requests of a series (default 200ms,
	// at least MinPingInterval).
	Interval time.Duration
	// Timeout bounds a whole series, from the first request to the last
	// reply awaited (default 2s). It must leave room for every request:
	// Timeout > (Count-1)×Interval.
	Timeout time.Duration
	// Privileged chooses the socket kind (default PingAuto).
	Privileged PingSocket
	// Limiter, when set, books every series of echo requests before it
	// starts (WaitSeries).
	Limiter Limiter
}

// Ping measures the round-trip time to an anycast address with a short
// series of ICMP (or ICMPv6) echo requests, using pro-bing. Its identifier
// is random per series; concurrent series in one process never count each
// other's replies (see PingSocket).
type Ping struct {
	opts PingOptions

	// testHook, when set (tests only), may adjust each pinger just before
	// it runs.
	testHook func(*probing.Pinger)

	// groupOK caches PingGroupAllowed for groupTTL: reading the sysctl and
	// the process's groups at every series costs more than the series.
	groupMu   sync.Mutex
	groupOK   bool
	groupRead time.Time
}

// groupTTL is how long a reading of ping_group_range is trusted; a changed
// sysctl is seen within it.
const groupTTL = 30 * time.Second

// NewPing validates o, applies defaults and returns a prober.
func NewPing(o PingOptions) (*Ping, error) {
	switch {
	case o.Count == 0:
		o.Count = DefaultPingCount
	case o.Count < 0 || o.Count > MaxPingCount:
		return nil, fmt.Errorf("probe: ping count %d out of range [1, %d]", o.Count, MaxPingCount)
	}
	switch {
	case o.Interval == 0:
		o.Interval = DefaultPingInterval
	case o.Interval < MinPingInterval:
		return nil, fmt.Errorf("probe: ping interval %v below %v", o.Interval, MinPingInterval)
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultPingTimeout
	case o.Timeout < 0 || o.Timeout > api.MaxRTT:
		return nil, fmt.Errorf("probe: ping timeout %v out of range (0, %v]", o.Timeout, api.MaxRTT)
	}
	if need := time.Duration(o.Count-1) * o.Interval; o.Timeout <= need {
		return nil, fmt.Errorf("probe: ping timeout %v leaves no time for %d requests %v apart", o.Timeout, o.Count, o.Interval)
	}
	if o.Privileged < PingAuto || o.Privileged > PingPrivileged {
		return nil, fmt.Errorf("probe: ping socket kind %v unknown", o.Privileged)
	}
	return &Ping{opts: o}, nil
}

// Probe sends one series of echo requests to addr and returns one result
// (Kind ping, Transport icmp, Query echo) with Seq left zero for the spool
// to assign. RTTMicros is the average RTT of the replies. The failure is
// none when at least one reply came, generic_timeout_error when none did,
// permission_denied when no ICMP socket may be opened, and the classified
// send error (e.g. network_unreachable) when the first request could not be
// sent. The series ends at ctx's deadline if that comes before Timeout; it
// returns no result when ctx is cancelled (not a measurement) or when the
// limiter refuses the first request. transport must be api.TransportICMP.
func (p *Ping) Probe(ctx context.Context, t api.ScheduleTarget, addr netip.Addr, transport api.Transport) []api.Result {
	addr = addr.Unmap().WithZone("")
	// The whole series is booked with the limiter at once: its requests
	// then leave on the pinger's clock, never held up by a wait.
	every, timeout := p.opts.Interval, p.opts.Timeout
	if p.opts.Limiter != nil {
		e, err := p.opts.Limiter.WaitSeries(ctx, p.opts.Count, every)
		if err != nil {
			return nil
		}
		// A slower spacing than asked (the limiter's budget) stretches the
		// timeout by as much.
		timeout += time.Duration(p.opts.Count-1) * (e - every)
		every = e
	}
	res, _, ok := begin(ctx, nil, t, addr, api.KindPing, api.TransportICMP, api.QueryEcho)
	if !ok {
		return nil
	}
	if transport != api.TransportICMP {
		// The schedule asked for something this prober cannot send.
		res.Failure = api.FailureUnknown
		return []api.Result{res}
	}
	privileged, ok := p.socketKind()
	if !ok {
		res.Failure = api.FailurePermissionDenied
		return []api.Result{res}
	}
	s, err := p.series(ctx, addr, privileged, every, timeout)
	if err != nil && p.opts.Privileged == PingAuto && !privileged && pingPermission(err) && os.Geteuid() == 0 {
		// Nothing was sent: the booked series is still unused.
		privileged = true
		s, err = p.series(ctx, addr, privileged, every, timeout)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	res.Ping = s.values(privileged)
	switch {
	case s.received > 0:
		res.Failure = api.FailureNone
		res.RTTMicros = res.Ping.AvgUS
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		res.Failure = Classify(err)
	default:
		res.Failure = api.FailureTimeout
	}
	return []api.Result{res}
}

// pingSeries is what a series of echo requests saw.
type pingSeries struct {
	sent, received int
	rtts           []time.Duration
	ttl            int // of the last reply, -1 when unknown
}

func (s pingSeries) values(privileged bool) *api.PingValues {
	v := &api.PingValues{Privileged: privileged}
	us := func(d time.Duration) int64 { return max(0, min(d.Microseconds(), api.MaxRTT.Microseconds())) }
	v.Sent = min(s.sent, MaxPingCount)
	v.Received = min(s.received, v.Sent)
	if n := len(s.rtts); n > 0 {
		lo, hi, sum := s.rtts[0], s.rtts[0], time.Duration(0)
		for _, r := range s.rtts {
			lo, hi, sum = min(lo, r), max(hi, r), sum+r
		}
		avg := sum / time.Duration(n)
		var sq float64
		for _, r := range s.rtts {
			d := float64(r - avg)
			sq += d * d
		}
		v.MinUS, v.AvgUS, v.MaxUS = us(lo), us(avg), us(hi)
		v.StddevUS = us(time.Duration(math.Sqrt(sq / float64(n))))
	}
	if s.ttl >= 0 && s.ttl <= 255 {
		v.ReplyTTL = s.ttl
	}
	return v
}

// series sends count echo requests to addr, every apart, as one pro-bing
// pinger (one socket, its own random ICMP id), and collects the replies
// until timeout. The limiter was waited on for the whole series before it
// starts, so nothing ever holds up the reading of replies and no RTT
// includes a wait.
func (p *Ping) series(ctx context.Context, addr netip.Addr, privileged bool, every, timeout time.Duration) (pingSeries, error) {
	s := pingSeries{ttl: -1}
	// The context deadline, a little after timeout, is the backstop.
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
	defer cancel()
	pinger := probing.New(addr.String())
	pinger.SetIPAddr(&net.IPAddr{IP: addr.AsSlice()})
	pinger.SetPrivileged(privileged)
	pinger.SetLogger(probing.NoopLogger{})
	pinger.Count = p.opts.Count
	pinger.Interval = every
	pinger.Timeout = timeout
	pinger.RecordRtts = false
	pinger.RecordTTLs = false
	// Callbacks run on the pinger's own loop, one at a time.
	pinger.OnRecv = func(pkt *probing.Packet) {
		s.rtts = append(s.rtts, pkt.Rtt)
		s.ttl = pkt.TTL
	}
	if p.testHook != nil {
		p.testHook(pinger)
	}
	err := pinger.RunWithContext(ctx)
	st := pinger.Statistics()
	s.sent, s.received = st.PacketsSent, len(s.rtts)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return s, err
}

// socketKind decides between a raw and a datagram socket; ok is false when
// neither may be opened.
func (p *Ping) socketKind() (privileged, ok bool) {
	switch p.opts.Privileged {
	case PingUnprivileged:
		return false, true
	case PingPrivileged:
		return true, true
	}
	if p.groupAllowed() {
		return false, true
	}
	if os.Geteuid() == 0 {
		return true, true
	}
	return false, false
}

// groupAllowed is PingGroupAllowed, read at most once per groupTTL.
func (p *Ping) groupAllowed() bool {
	p.groupMu.Lock()
	defer p.groupMu.Unlock()
	if now := time.Now(); p.groupRead.IsZero() || now.Sub(p.groupRead) > groupTTL {
		p.groupOK, p.groupRead = PingGroupAllowed(), now
	}
	return p.groupOK
}

// PingGroupAllowed reports whether net.ipv4.ping_group_range (of this
// process's network namespace; it covers ICMPv6 too) admits the process's
// group or one of its supplementary groups, so that unprivileged ICMP
// datagram sockets may be opened.
func PingGroupAllowed() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		return false
	}
	lo, hi, ok := parsePingGroupRange(string(b))
	if !ok {
		return false
	}
	gids := []int{os.Getegid()}
	if more, err := os.Getgroups(); err == nil {
		gids = append(gids, more...)
	}
	for _, g := range gids {
		if int64(g) >= lo && int64(g) <= hi {
			return true
		}
	}
	return false
}

// parsePingGroupRange parses "lo\thi"; the kernel's default "1 0" admits no one.
func parsePingGroupRange(s string) (lo, hi int64, ok bool) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseInt(f[0], 10, 64)
	hi, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

func pingPermission(err error) bool {
	return errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}
