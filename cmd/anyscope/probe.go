package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/anyscope/anyscope/agent/probe"
	"github.com/anyscope/anyscope/analysis/identity"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ProbeCmd runs every probe kind once from this host against the given
// addresses: the tool to reach for instead of dig +nsid, mtr and curl -I.
// The addresses named on the command line are the only ones probed.
type ProbeCmd struct {
	Addresses []string      `arg:"" name:"address" help:"Anycast addresses to probe (IPv4 or IPv6)."`
	Kinds     []string      `help:"Probe kinds to run." default:"dns,ping,trace,http,session" enum:"dns,ping,trace,http,session"`
	JSON      bool          `name:"json" help:"Print the results as JSON (one api.Result per line) instead of a table."`
	Timeout   time.Duration `help:"Per DNS transaction, per HTTP request and per trace probe." default:"2s"`
	DNSPort   uint16        `name:"dns-port" help:"Port of the DNS servers." default:"53"`
	NSIDQName string        `name:"nsid-qname" help:"Name asked (IN SOA) to elicit NSID." default:"."`
	Trace     string        `help:"Traceroute method: udp (Paris UDP, unprivileged) or icmp (Paris ICMP, raw socket)." default:"udp" enum:"udp,icmp"`
	HTTP      string        `name:"http" help:"HTTP scheme for the http and session probes: http or https." default:"http" enum:"http,https"`
	Host      string        `help:"Host header and TLS SNI of the HTTP probes (default: the address)."`
	Path      string        `help:"Path of the HTTP request." default:"/"`
	Header    []string      `help:"Response headers naming the site, in order." default:"X-Served-By,CF-Ray,X-Amz-Cf-Pop"`
	Session   time.Duration `help:"How long the long-lived session probe keeps its connection (a query every second)." default:"3s"`
	Rate      float64       `help:"Packets per second, at most." default:"20"`
}

// Run probes every address with every kind, concurrently per address, and
// prints what answered.
func (c *ProbeCmd) Run(ctx context.Context, log *slog.Logger) error {
	var addrs []netip.Addr
	for _, s := range c.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%q is not an IPv4 or IPv6 address", s)
		}
		addrs = append(addrs, a.Unmap())
	}
	lim := probe.NewPacer(max(c.Rate, 0.1))
	t := api.ScheduleTarget{Name: "probe", NSIDQName: c.NSIDQName, SessionLifeSeconds: c.Session.Seconds(),
		HTTP: &api.HTTPSpec{Scheme: c.HTTP, Host: c.Host, Path: c.Path, Method: api.QueryGet, Headers: c.Header}}
	if err := probe.CheckHTTPSpec(t.HTTP); err != nil {
		return err
	}
	type task struct {
		kind api.Kind
		run  func(ctx context.Context, addr netip.Addr) []api.Result
	}
	var tasks []task
	for _, k := range c.Kinds {
		switch api.Kind(k) {
		case api.KindDNS:
			p, err := probe.NewDNS(probe.DNSOptions{Timeout: c.Timeout, Port: c.DNSPort, Limiter: lim})
			if err != nil {
				return err
			}
			tasks = append(tasks, task{api.KindDNS, func(ctx context.Context, a netip.Addr) []api.Result {
				return append(p.Probe(ctx, t, a, api.TransportUDP), p.Probe(ctx, t, a, api.TransportTCP)...)
			}})
		case api.KindPing:
			p, err := probe.NewPing(probe.PingOptions{Limiter: lim})
			if err != nil {
				return err
			}
			tasks = append(tasks, task{api.KindPing, func(ctx context.Context, a netip.Addr) []api.Result {
				return p.Probe(ctx, t, a, api.TransportICMP)
			}})
		case api.KindTrace:
			tr := api.Transport(c.Trace)
			p, err := probe.NewTrace(probe.TraceOptions{Transport: tr, ProbeTimeout: c.Timeout, Limiter: lim})
			if err != nil {
				return err
			}
			tasks = append(tasks, task{api.KindTrace, func(ctx context.Context, a netip.Addr) []api.Result {
				return p.Probe(ctx, t, a, tr)
			}})
		case api.KindHTTP:
			p, err := probe.NewHTTP(probe.HTTPOptions{Timeout: c.Timeout, Limiter: lim})
			if err != nil {
				return err
			}
			tasks = append(tasks, task{api.KindHTTP, func(ctx context.Context, a netip.Addr) []api.Result {
				return p.Probe(ctx, t, a, api.TransportTCP)
			}})
		case api.KindSession:
			p, err := probe.NewSession(probe.SessionOptions{Interval: time.Second, Life: c.Session, Port: c.DNSPort, Limiter: lim})
			if err != nil {
				return err
			}
			tasks = append(tasks, task{api.KindSession, func(ctx context.Context, a netip.Addr) []api.Result {
				return []api.Result{p.Run(ctx, t, a, api.QuerySessionDNS), p.Run(ctx, t, a, api.QuerySessionHTTP)}
			}})
		}
	}

	// Run everything at once, showing progress on the terminal.
	results := make([][][]api.Result, len(addrs))
	var wg sync.WaitGroup
	var mu sync.Mutex
	done, total := 0, len(addrs)*len(tasks)
	progress := func() {
		if !c.JSON {
			fmt.Fprintf(os.Stderr, "\rprobing: %d/%d done", done, total)
		}
	}
	progress()
	for i, a := range addrs {
		results[i] = make([][]api.Result, len(tasks))
		for j, tk := range tasks {
			wg.Go(func() {
				rs := tk.run(ctx, a)
				mu.Lock()
				results[i][j] = rs
				done++
				progress()
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if !c.JSON {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		for i := range addrs {
			for _, rs := range results[i] {
				for _, r := range rs {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	res := identity.Default("probe")
	for i, a := range addrs {
		var all []api.Result
		for _, rs := range results[i] {
			all = append(all, rs...)
		}
		printProbe(os.Stdout, a, all, res)
	}
	return nil
}

// printProbe writes one address's results as a readable table. Identity
// strings come from the network: the probers have already escaped anything
// not printable, and nothing here is interpreted.
func printProbe(w io.Writer, addr netip.Addr, rs []api.Result, res *identity.Resolver) {
	fmt.Fprintf(w, "%s\n", addr)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	site := func(id string) string {
		if id == "" {
			return ""
		}
		if r := res.Resolve(id); r.Site != "" {
			return r.Site
		}
		return "?"
	}
	ms := func(us int64) string { return fmt.Sprintf("%.1f ms", float64(us)/1000) }
	status := func(r api.Result) string {
		if r.Failure != api.FailureNone {
			return string(r.Failure)
		}
		return "ok"
	}
	fmt.Fprintln(tw, "  PROBE\tVIA\tQUERY\tRESULT\tANSWER\tSITE\tRTT")
	for _, r := range rs {
		switch {
		case r.DNS != nil || r.Kind == api.KindDNS:
			var ans, rc string
			if r.DNS != nil {
				ans, rc = r.DNS.Identity, r.DNS.Rcode
				if r.Query != api.QueryNSID && r.DNS.NSIDText != "" {
					ans += " (nsid " + r.DNS.NSIDText + ")"
				}
			}
			fmt.Fprintf(tw, "  dns\t%s\t%s\t%s %s\t%s\t%s\t%s\n", r.Transport, r.Query, status(r), rc, ans, site(identityOf(r)), ms(r.RTTMicros))
		case r.Ping != nil:
			p := r.Ping
			fmt.Fprintf(tw, "  ping\ticmp\techo\t%s\t%d/%d replies, min/avg/max/sd %s/%s/%s/%s, ttl %d\t\t%s\n", status(r), p.Received, p.Sent,
				ms(p.MinUS), ms(p.AvgUS), ms(p.MaxUS), ms(p.StddevUS), p.ReplyTTL, ms(r.RTTMicros))
		case r.HTTP != nil:
			h := r.HTTP
			fmt.Fprintf(tw, "  http\t%s\t%s\t%s %d\t%s %s\t%s\tconnect %s, first byte %s\n", h.Scheme, r.Query, status(r), h.Status, h.Source, h.Identity,
				site(h.Identity), ms(h.ConnectUS), ms(h.FirstByteUS))
		case r.Session != nil:
			s := r.Session
			var ids []string
			for _, a := range s.Answers {
				if len(ids) == 0 || ids[len(ids)-1] != a.Identity {
					ids = append(ids, a.Identity)
				}
			}
			fmt.Fprintf(tw, "  session\ttcp\t%s\t%s: %s after %s\t%d/%d answers from %s\t\t%s\n", r.Query, status(r), s.End,
				s.ClosedAt.Sub(s.OpenedAt).Round(time.Millisecond), len(s.Answers), s.Queries, strings.Join(ids, " → "), ms(r.RTTMicros))
		case r.Trace != nil:
			t := r.Trace
			fmt.Fprintf(tw, "  trace\t%s\t%s\t%s: %s\t%d hops, flow %s\t\t%s\n", r.Transport, r.Query, status(r), t.Stop, lastTTL(t), t.Flow, ms(r.RTTMicros))
		default:
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t\t\t\n", r.Kind, r.Transport, r.Query, status(r))
		}
	}
	tw.Flush()
	for _, r := range rs {
		if r.Trace != nil {
			printHops(w, r.Trace)
		}
	}
	fmt.Fprintln(w)
}

// printHops lists a trace's hops, the last ones (the site's upstream) last.
func printHops(w io.Writer, t *api.TraceValues) {
	fmt.Fprintf(w, "  trace hops (%s):\n", t.Flow)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, h := range t.Hops {
		if h.Addr == "" {
			fmt.Fprintf(tw, "    %d\t*\t\t\n", h.TTL)
			continue
		}
		extra := fmt.Sprintf("icmp %d/%d", h.ICMPType, h.ICMPCode)
		for _, m := range h.MPLS {
			extra += fmt.Sprintf(" mpls %d", m.Label)
		}
		fmt.Fprintf(tw, "    %d\t%s\t%.1f ms\t%s\n", h.TTL, h.Addr, float64(h.RTTUS)/1000, extra)
	}
	tw.Flush()
}

func lastTTL(t *api.TraceValues) int {
	n := 0
	for _, h := range t.Hops {
		n = max(n, h.TTL)
	}
	return n
}

func identityOf(r api.Result) string {
	if r.DNS != nil {
		return r.DNS.Identity
	}
	return ""
}
