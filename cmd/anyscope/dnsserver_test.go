package main

import (
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// demoSite is one DNS server of the loopback demo: it answers CHAOS TXT
// hostname.bind and id.server with a server name, and NSID with a short id,
// the way anycast DNS operators do. Servers alternate between the given server
// names, as a site with several machines behind a load balancer does.
type demoSite struct {
	addr string // host:port

	mu      sync.Mutex
	servers []string // identities, e.g. ns1.nl-ams.demo.example
	nsids   []string
	n       atomic.Uint64

	udp, tcp *dns.Server
}

// setIdentity changes who answers (used to show a switch).
func (s *demoSite) setIdentity(servers, nsids []string) {
	s.mu.Lock()
	s.servers, s.nsids = servers, nsids
	s.mu.Unlock()
}

func (s *demoSite) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	i := int(s.n.Add(1))
	s.mu.Lock()
	server := s.servers[i%len(s.servers)]
	nsid := s.nsids[i%len(s.nsids)]
	s.mu.Unlock()
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	qq := q.Question[0]
	switch {
	case qq.Qclass == dns.ClassCHAOS && qq.Qtype == dns.TypeTXT &&
		(strings.EqualFold(qq.Name, "hostname.bind.") || strings.EqualFold(qq.Name, "id.server.")):
		m.Answer = append(m.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS},
			Txt: []string{server},
		})
	case qq.Qclass == dns.ClassINET && qq.Qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, &dns.SOA{
			Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
			Ns:  "ns.demo.example.", Mbox: "hostmaster.demo.example.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 300,
		})
	default:
		m.Rcode = dns.RcodeRefused
	}
	if opt := q.IsEdns0(); opt != nil {
		ro := new(dns.OPT)
		ro.Hdr.Name = "."
		ro.Hdr.Rrtype = dns.TypeOPT
		ro.SetUDPSize(1232)
		for _, o := range opt.Option {
			if o.Option() == dns.EDNS0NSID {
				ro.Option = append(ro.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: hex.EncodeToString([]byte(nsid))})
			}
		}
		m.Extra = append(m.Extra, ro)
	}
	w.WriteMsg(m)
}

// start serves UDP and TCP on s.addr.
func (s *demoSite) start() error {
	pc, err := net.ListenPacket("udp", s.addr)
	if err != nil {
		return fmt.Errorf("demo DNS server on %s/udp: %w", s.addr, err)
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("demo DNS server on %s/tcp: %w", s.addr, err)
	}
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	return nil
}

func (s *demoSite) stop() {
	if s.udp != nil {
		s.udp.Shutdown()
	}
	if s.tcp != nil {
		s.tcp.Shutdown()
	}
}
