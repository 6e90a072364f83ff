package probe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

var sessionTarget = api.ScheduleTarget{Name: "lab-dns", Addresses: []string{"127.0.0.1"}, Probes: []api.Kind{api.KindSession}, IntervalSeconds: 60}

var sessionLoopback = netip.MustParseAddr("127.0.0.1")

func newSessionProber(t *testing.T, o SessionOptions) *Session {
	t.Helper()
	s, err := NewSession(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveSessionDNS runs a miekg/dns TCP server with h on sessionLoopback; cfg may
// change the server before it starts. It returns the port.
func serveSessionDNS(t *testing.T, h dns.Handler, cfg func(*dns.Server)) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: l, Handler: h}
	if cfg != nil {
		cfg(srv)
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// serveSessionRaw runs a hand-written TCP server on sessionLoopback: serve gets
// every accepted connection. It returns the port.
func serveSessionRaw(t *testing.T, serve func(c *net.TCPConn)) uint16 {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// sessionAnswerQuery reads one query from c and answers it as s would.
func sessionAnswerQuery(c net.Conn, s site) error {
	b, err := readTCPQuery(c)
	if err != nil {
		return err
	}
	q := new(dns.Msg)
	if err := q.Unpack(b); err != nil {
		return err
	}
	w := &sessionBufWriter{}
	s.ServeDNS(w, q)
	_, err = c.Write(frame(w.b))
	return err
}

// sessionBufWriter is a dns.ResponseWriter that keeps what is written.
type sessionBufWriter struct {
	dns.ResponseWriter
	b []byte
}

func (w *sessionBufWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	w.b = b
	return err
}

// checkSession fails the test unless r is one valid session result with
// the given end and failure.
func checkSession(t *testing.T, r api.Result, end string, f api.Failure) {
	t.Helper()
	r.Seq = 1
	if err := r.Validate(); err != nil {
		t.Errorf("invalid result: %v\n%+v", err, r)
	}
	if r.Kind != api.KindSession || r.Transport != api.TransportTCP || r.Session == nil {
		t.Fatalf("not a session result: %+v", r)
	}
	if r.Session.End != end || r.Failure != f {
		t.Errorf("end %q failure %q, want %q %q (%d queries, %d answers)", r.Session.End, r.Failure, end, f, r.Session.Queries, len(r.Session.Answers))
	}
	if !r.MeasuredAt.Equal(r.Session.OpenedAt) {
		t.Errorf("measured at %s, opened at %s", r.MeasuredAt, r.Session.OpenedAt)
	}
	if len(r.Session.Answers) > 0 && r.RTTMicros != r.Session.Answers[0].RTTUS {
		t.Errorf("rtt %dµs, first answer's %dµs", r.RTTMicros, r.Session.Answers[0].RTTUS)
	}
}

func sessionIdentities(r api.Result) []string {
	var ids []string
	for _, a := range r.Session.Answers {
		ids = append(ids, a.Identity)
	}
	return ids
}

func TestNewSession(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		o    SessionOptions
		ok   bool
	}{
		{"defaults", SessionOptions{}, true},
		{"negative interval", SessionOptions{Interval: -time.Second}, false},
		{"negative life", SessionOptions{Life: -time.Second}, false},
		{"negative timeout", SessionOptions{Timeout: -time.Second}, false},
		{"timeout over max rtt", SessionOptions{Timeout: api.MaxRTT + time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSession(tc.o)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if tc.ok && (s.opts.Interval != DefaultSessionInterval || s.opts.Timeout != DefaultSessionInterval || s.opts.Life != DefaultSessionLife || s.opts.Port != 53) {
				t.Errorf("defaults %+v", s.opts)
			}
		})
	}
}

func TestSessionDNS(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	ams := site{hostname: "ns1.nl-ams.lab.example", nsid: []byte("ams-1")}

	t.Run("life ends", func(t *testing.T) {
		t.Parallel()
		port := serveSessionDNS(t, ams, nil)
		s := newSessionProber(t, SessionOptions{Interval: interval, Life: time.Second, Port: port})
		start := time.Now()
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if n := len(r.Session.Answers); n < 9 || n > 11 {
			t.Errorf("%d answers in a 1s life at 100ms, want 10±1", n)
		}
		for _, id := range sessionIdentities(r) {
			if id != "ams-1" {
				t.Errorf("identity %q, want the NSID ams-1", id)
			}
		}
		if d := time.Since(start); d < time.Second || d > 2500*time.Millisecond {
			t.Errorf("session took %s, want its 1s life", d)
		}
		if life := r.Session.ClosedAt.Sub(r.Session.OpenedAt); life < time.Second || life > 1100*time.Millisecond {
			t.Errorf("recorded life %s", life)
		}
		for i, a := range r.Session.Answers {
			if want := r.Session.OpenedAt.Add(time.Duration(i) * interval); a.At.Sub(want).Abs() > 50*time.Millisecond {
				t.Errorf("answer %d at +%s, want about +%s", i, a.At.Sub(r.Session.OpenedAt), want.Sub(r.Session.OpenedAt))
			}
		}
	})

	t.Run("target life overrides", func(t *testing.T) {
		t.Parallel()
		port := serveSessionDNS(t, site{hostname: "ns1"}, nil)
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: time.Hour, Port: port})
		tg := sessionTarget
		tg.SessionLifeSeconds = 0.3
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if n := len(r.Session.Answers); n < 5 || n > 7 {
			t.Errorf("%d answers, want 6±1", n)
		}
		if id := sessionIdentities(r)[0]; id != "ns1" {
			t.Errorf("identity %q, want the TXT without NSID", id)
		}
	})

	t.Run("server closes after N queries", func(t *testing.T) {
		t.Parallel()
		port := serveSessionDNS(t, ams, func(s *dns.Server) { s.MaxTCPQueries = 4 })
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndServerClose, api.FailureNone)
		if r.Session.Queries != 4 || len(r.Session.Answers) != 4 {
			t.Errorf("%d queries, %d answers; want 4 and 4", r.Session.Queries, len(r.Session.Answers))
		}
	})

	t.Run("server closes while idle", func(t *testing.T) {
		t.Parallel()
		// miekg/dns closes a connection idle for IdleTimeout (8s by default).
		port := serveSessionDNS(t, ams, func(s *dns.Server) {
			s.IdleTimeout = func() time.Duration { return 150 * time.Millisecond }
		})
		s := newSessionProber(t, SessionOptions{Interval: 2 * time.Second, Life: 10 * time.Second, Port: port})
		start := time.Now()
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndServerClose, api.FailureNone)
		if len(r.Session.Answers) != 1 || time.Since(start) > 1500*time.Millisecond {
			t.Errorf("%d answers after %s: want the FIN seen while idle, before the next query", len(r.Session.Answers), time.Since(start))
		}
	})

	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			for range 3 {
				if sessionAnswerQuery(c, ams) != nil {
					return
				}
			}
			_, _ = readTCPQuery(c)
			_ = c.SetLinger(0) // close sends a RST
		})
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndReset, api.FailureConnectionReset)
		if r.Session.Queries != 4 || len(r.Session.Answers) != 3 {
			t.Errorf("%d queries, %d answers; want 4 and 3", r.Session.Queries, len(r.Session.Answers))
		}
	})

	t.Run("reset while idle", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			if sessionAnswerQuery(c, ams) != nil {
				return
			}
			_ = c.SetLinger(0)
		})
		s := newSessionProber(t, SessionOptions{Interval: time.Second, Life: 10 * time.Second, Port: port})
		start := time.Now()
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndReset, api.FailureConnectionReset)
		if d := time.Since(start); d > 800*time.Millisecond {
			t.Errorf("reset noticed after %s, want at once (well before the next query)", d)
		}
	})

	t.Run("answers stop", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			for range 2 {
				if sessionAnswerQuery(c, ams) != nil {
					return
				}
			}
			// Black hole: read on, answer nothing.
			_, _ = sessionDrain(c)
		})
		const timeout = 150 * time.Millisecond
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Timeout: timeout, Life: 10 * time.Second, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndTimeout, api.FailureTimeout)
		if r.Session.Queries != 3 || len(r.Session.Answers) != 2 {
			t.Fatalf("%d queries, %d answers; want 3 and 2", r.Session.Queries, len(r.Session.Answers))
		}
		// The third query went out one interval after the second; the end
		// follows Timeout later.
		sent := r.Session.OpenedAt.Add(2 * 50 * time.Millisecond)
		if d := r.Session.ClosedAt.Sub(sent); d < timeout-10*time.Millisecond || d > timeout+500*time.Millisecond {
			t.Errorf("ended %s after the unanswered query, want %s", d, timeout)
		}
	})

	t.Run("identity changes", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		fra := site{hostname: "ns1.de-fra.lab.example", nsid: []byte("fra-1")}
		port := serveSessionDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
			if n.Add(1) <= 3 {
				ams.ServeDNS(w, m)
			} else {
				fra.ServeDNS(w, m)
			}
		}), nil)
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndIdentityChanged, api.FailureNone)
		if got, want := fmt.Sprint(sessionIdentities(r)), "[ams-1 ams-1 ams-1 fra-1]"; got != want {
			t.Errorf("sessionIdentities %s, want %s", got, want)
		}
	})

	t.Run("answers without identity are not a change", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		port := serveSessionDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
			if n.Add(1) == 2 {
				site{rcode: dns.RcodeRefused}.ServeDNS(w, m)
			} else {
				ams.ServeDNS(w, m)
			}
		}), nil)
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 220 * time.Millisecond, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if got := fmt.Sprint(sessionIdentities(r)); got != "[ams-1  ams-1 ams-1 ams-1]" {
			t.Errorf("sessionIdentities %s", got)
		}
	})

	t.Run("hostile identity is cleaned", func(t *testing.T) {
		t.Parallel()
		port := serveSessionDNS(t, site{hostname: "bad\x00\nname\xff", nsid: []byte{0, 1, 0xff}}, nil)
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 120 * time.Millisecond, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if id := sessionIdentities(r)[0]; id != `bad\000\010name\255` {
			t.Errorf("identity %q: want the TXT, escaped, over an unprintable NSID", id)
		}
	})

	t.Run("malformed answer", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			if sessionAnswerQuery(c, ams) != nil {
				return
			}
			if _, err := readTCPQuery(c); err != nil {
				return
			}
			_, _ = c.Write(frame([]byte("garbage, not DNS")))
			_, _ = sessionDrain(c)
		})
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndError, api.FailureDNSBogus)
		if len(r.Session.Answers) != 1 {
			t.Errorf("%d answers, want the one before the garbage", len(r.Session.Answers))
		}
	})

	t.Run("wrong message id", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			b, err := readTCPQuery(c)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			_ = q.Unpack(b)
			q.Id++
			w := &sessionBufWriter{}
			ams.ServeDNS(w, q)
			_, _ = c.Write(frame(w.b))
			_, _ = sessionDrain(c)
		})
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndError, api.FailureDNSBogus)
	})

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Port: port})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndConnectFailed, api.FailureConnectionRefused)
		if r.Session.Queries != 0 || r.RTTMicros != 0 {
			t.Errorf("%+v", r.Session)
		}
	})

	t.Run("query carries NSID and keepalive", func(t *testing.T) {
		t.Parallel()
		got := make(chan *dns.Msg, 1)
		port := serveSessionDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
			select {
			case got <- m:
			default:
			}
			ams.ServeDNS(w, m)
		}), nil)
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 60 * time.Millisecond, Port: port})
		s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		m := <-got
		q := m.Question[0]
		if q.Name != "hostname.bind." || q.Qclass != dns.ClassCHAOS || q.Qtype != dns.TypeTXT {
			t.Errorf("question %v", q)
		}
		var nsid, keepalive bool
		if opt := m.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				switch o.(type) {
				case *dns.EDNS0_NSID:
					nsid = true
				case *dns.EDNS0_TCP_KEEPALIVE:
					keepalive = true
				}
			}
		}
		if !nsid || !keepalive {
			t.Errorf("nsid %v keepalive %v, want both options", nsid, keepalive)
		}
	})

	t.Run("context ends", func(t *testing.T) {
		t.Parallel()
		port := serveSessionDNS(t, ams, nil)
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: time.Hour, Port: port})
		ctx, cancel := context.WithTimeout(context.Background(), 180*time.Millisecond)
		defer cancel()
		r := s.Run(ctx, sessionTarget, sessionLoopback, api.QuerySessionDNS)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if n := len(r.Session.Answers); n < 3 || n > 5 {
			t.Errorf("%d answers, want 4±1", n)
		}
	})

	t.Run("limiter refuses", func(t *testing.T) {
		t.Parallel()
		port := serveSessionDNS(t, ams, nil)
		s := newSessionProber(t, SessionOptions{Interval: 20 * time.Millisecond, Life: time.Hour, Port: port, Limiter: &countingLimiter{}})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, api.QuerySessionDNS)
		// The connect and one query pass; the second query is refused.
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if r.Session.Queries != 1 || len(r.Session.Answers) != 1 {
			t.Errorf("%d queries, %d answers", r.Session.Queries, len(r.Session.Answers))
		}
	})

	t.Run("unknown query", func(t *testing.T) {
		t.Parallel()
		s := newSessionProber(t, SessionOptions{})
		r := s.Run(context.Background(), sessionTarget, sessionLoopback, "smtp")
		if r.Session == nil || r.Session.End != api.EndError || r.Failure != api.FailureUnknown {
			t.Errorf("%+v", r)
		}
	})
}

// sessionDrain reads c until it fails.
func sessionDrain(c net.Conn) (int64, error) {
	buf := make([]byte, 512)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// serveSessionHTTP runs an httptest server answering as site, and counts
// the connections it accepted.
func serveSessionHTTP(t *testing.T, h http.HandlerFunc) (api.ScheduleTarget, *atomic.Int32) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	tg := sessionTarget
	tg.Name = "lab-http"
	tg.HTTP = &api.HTTPSpec{Scheme: "http", Port: port, Host: "cdn.example.org"}
	return tg, &conns
}

func TestSessionHTTP(t *testing.T) {
	t.Parallel()
	served := func(site string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", site)
			fmt.Fprintf(w, "served-by=%s\n", site)
		}
	}

	t.Run("keep-alive until life ends", func(t *testing.T) {
		t.Parallel()
		var hosts sync.Map
		tg, conns := serveSessionHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			hosts.Store(r.Host, true)
			served("ams")(w, r)
		})
		s := newSessionProber(t, SessionOptions{Interval: 100 * time.Millisecond, Life: 600 * time.Millisecond})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if n := len(r.Session.Answers); n < 5 || n > 7 {
			t.Errorf("%d answers, want 6±1", n)
		}
		for _, id := range sessionIdentities(r) {
			if id != "ams" {
				t.Errorf("identity %q", id)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%d connections, want one kept alive", n)
		}
		if _, ok := hosts.Load("cdn.example.org"); !ok {
			t.Error("the configured Host was not sent")
		}
	})

	t.Run("server closes keep-alive", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		tg, _ := serveSessionHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 3 {
				w.Header().Set("Connection", "close")
			}
			served("ams")(w, r)
		})
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndServerClose, api.FailureNone)
		if len(r.Session.Answers) != 3 {
			t.Errorf("%d answers, want 3", len(r.Session.Answers))
		}
	})

	t.Run("server closes idle connection", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewUnstartedServer(served("ams"))
		srv.Config.IdleTimeout = 100 * time.Millisecond
		srv.Start()
		t.Cleanup(srv.Close)
		port := srv.Listener.Addr().(*net.TCPAddr).Port
		tg := sessionTarget
		tg.HTTP = &api.HTTPSpec{Scheme: "http", Port: port}
		s := newSessionProber(t, SessionOptions{Interval: 300 * time.Millisecond, Life: 10 * time.Second})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndServerClose, api.FailureNone)
		if len(r.Session.Answers) != 1 {
			t.Errorf("%d answers, want 1", len(r.Session.Answers))
		}
	})

	t.Run("identity changes", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		tg, _ := serveSessionHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) <= 2 {
				served("ams")(w, r)
			} else {
				served("fra")(w, r)
			}
		})
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndIdentityChanged, api.FailureNone)
		if got := fmt.Sprint(sessionIdentities(r)); got != "[ams ams fra]" {
			t.Errorf("sessionIdentities %s", got)
		}
	})

	t.Run("header order and body pattern", func(t *testing.T) {
		t.Parallel()
		tg, _ := serveSessionHTTP(t, func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "hello\ncolo=LHR\n")
		})
		tg.HTTP.Headers = []string{"CF-Ray", "X-Served-By"}
		tg.HTTP.BodyPattern = `(?m)^colo=(\w+)$`
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 80 * time.Millisecond})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if got := sessionIdentities(r)[0]; got != "LHR" {
			t.Errorf("identity %q, want LHR from the body", got)
		}
	})

	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			buf := make([]byte, 4096)
			if _, err := c.Read(buf); err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nX-Served-By: ams\r\nContent-Length: 0\r\n\r\n"))
			if _, err := c.Read(buf); err != nil {
				return
			}
			_ = c.SetLinger(0)
		})
		tg := sessionTarget
		tg.HTTP = &api.HTTPSpec{Scheme: "http", Port: int(port)}
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndReset, api.FailureConnectionReset)
	})

	t.Run("malformed answer", func(t *testing.T) {
		t.Parallel()
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			buf := make([]byte, 4096)
			if _, err := c.Read(buf); err != nil {
				return
			}
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\r\n"))
			_, _ = sessionDrain(c)
		})
		tg := sessionTarget
		tg.HTTP = &api.HTTPSpec{Scheme: "http", Port: int(port)}
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 10 * time.Second})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndError, api.FailureDNSBogus)
	})

	t.Run("https", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewTLSServer(served("fra"))
		t.Cleanup(srv.Close)
		port := srv.Listener.Addr().(*net.TCPAddr).Port
		tg := sessionTarget
		tg.HTTP = &api.HTTPSpec{Scheme: "https", Port: port, Host: "example.com"}
		tlsConf := srv.Client().Transport.(*http.Transport).TLSClientConfig
		s := newSessionProber(t, SessionOptions{Interval: 50 * time.Millisecond, Life: 160 * time.Millisecond, TLS: tlsConf})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndLifeEnded, api.FailureNone)
		if got := sessionIdentities(r); len(got) < 2 || got[0] != "fra" {
			t.Errorf("sessionIdentities %v", got)
		}
	})

	t.Run("bad spec", func(t *testing.T) {
		t.Parallel()
		tg := sessionTarget
		tg.HTTP = &api.HTTPSpec{Scheme: "gopher"}
		s := newSessionProber(t, SessionOptions{})
		r := s.Run(context.Background(), tg, sessionLoopback, api.QuerySessionHTTP)
		checkSession(t, r, api.EndError, api.FailureUnknown)
	})
}

func TestSessionLoop(t *testing.T) {
	t.Parallel()

	t.Run("reconnects after each close", func(t *testing.T) {
		t.Parallel()
		var conns atomic.Int32
		port := serveSessionRaw(t, func(c *net.TCPConn) {
			conns.Add(1)
			for range 2 {
				if sessionAnswerQuery(c, site{nsid: []byte("ams-1")}) != nil {
					return
				}
			}
		})
		s := newSessionProber(t, SessionOptions{Interval: 30 * time.Millisecond, Life: time.Hour, Port: port})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		var results []api.Result
		s.Loop(ctx, sessionTarget, sessionLoopback, api.QuerySessionDNS, func(r api.Result) { results = append(results, r) })
		if len(results) < 4 {
			t.Fatalf("%d sessions in 500ms, want several", len(results))
		}
		for i, r := range results[:len(results)-1] {
			checkSession(t, r, api.EndServerClose, api.FailureNone)
			if len(r.Session.Answers) != 2 {
				t.Errorf("session %d: %d answers", i, len(r.Session.Answers))
			}
			if next := results[i+1].Session.OpenedAt; next.Before(r.Session.ClosedAt) {
				t.Errorf("session %d opened before %d closed", i+1, i)
			}
		}
		// When ctx ends, the last session may be unaccepted yet (one
		// connection fewer), or accepted but cut short before it produced a
		// result (one more: a connect cut short by ctx is not emitted).
		if n := int(conns.Load()); n < len(results)-1 || n > len(results)+1 {
			t.Errorf("%d connections for %d sessions", n, len(results))
		}
	})

	t.Run("backs off after connect failures", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		s := newSessionProber(t, SessionOptions{Interval: 10 * time.Millisecond, Port: port})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var results []api.Result
		s.Loop(ctx, sessionTarget, sessionLoopback, api.QuerySessionDNS, func(r api.Result) { results = append(results, r) })
		// 200ms doubling with jitter: 0.1-0.2, 0.2-0.4, 0.4-0.8 s… at most
		// 5 attempts in a second, at least 3.
		if len(results) < 3 || len(results) > 5 {
			t.Errorf("%d connect attempts in 1s, want 3-5", len(results))
		}
		for _, r := range results {
			checkSession(t, r, api.EndConnectFailed, api.FailureConnectionRefused)
		}
	})
}
