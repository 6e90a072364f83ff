package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/shipper"
	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster"
	"github.com/anyscope/anyscope/collector/store"
)

// The fault tests kill real anyscope processes with SIGKILL at random moments
// and check that the results arrive in PostgreSQL exactly once: every
// sequence number from 1 to the last, none twice. Set ANYSCOPE_FAULT_SEED to
// replay the kill moments of a logged run.

// faultHosts are the loopback addresses of the fault tests' DNS servers,
// apart from the demo's 127.0.0.11-13.
var faultHosts = []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"}

// faultTarget is the target the tests measure: faultHosts, probed for DNS
// identity every interval.
func faultTarget(interval time.Duration) store.Target {
	t := store.Target{Name: "fault-dns", Probes: []string{string(api.KindDNS)}, Interval: interval}
	for _, h := range faultHosts {
		t.Addresses = append(t.Addresses, netip.MustParseAddr(h))
	}
	return t
}

// faultRand returns the random source of a test, seeded from
// ANYSCOPE_FAULT_SEED or the clock, and logs the seed.
func faultRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ANYSCOPE_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ANYSCOPE_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with ANYSCOPE_FAULT_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// faultStore opens the test's database, registers agent and applies
// target, returning the store and the agent's token.
func faultStore(t *testing.T, ctx context.Context, dsn, agent string, target store.Target) (*store.Store, string) {
	t.Helper()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	lat, lon := 52.37, 4.90
	_, token, err := st.AddAgent(ctx, store.AgentSpec{Name: agent, Latitude: &lat, Longitude: &lon, Region: "loopback"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApplyTargets(ctx, []store.Target{target}); err != nil {
		t.Fatal(err)
	}
	return st, token
}

// freeTCPAddr returns a loopback address whose port was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// freePortOn finds a port free for UDP and TCP on every one of hosts.
func freePortOn(t *testing.T, hosts []string) int {
	t.Helper()
	for try := 0; try < 20; try++ {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		ok := true
		for _, h := range hosts {
			addr := net.JoinHostPort(h, strconv.Itoa(port))
			u, err1 := net.ListenPacket("udp", addr)
			l, err2 := net.Listen("tcp", addr)
			if u != nil {
				u.Close()
			}
			if l != nil {
				l.Close()
			}
			if err1 != nil || err2 != nil {
				ok = false
			}
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", hosts)
	return 0
}

// waitUntil polls cond until it holds or timeout passes, then fails the test
// naming what it waited for.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer a process writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one run of the anyscope binary.
type proc struct {
	name string // e.g. "collector #3"
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{} // closed once the process has exited
	err  error         // what Wait returned; read after done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL unless the process has exited, waits for it, and
// reports whether the signal killed it.
func (p *proc) kill() bool {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// procs starts the processes of one test. When the test ends it kills those
// still running; it prints everything they wrote when the test failed, and
// fails it when the race detector spoke in any of them.
type procs struct {
	t   *testing.T
	dir string
	mu  sync.Mutex
	all []*proc
	n   map[string]int
}

func newProcs(t *testing.T) *procs {
	ps := &procs{t: t, dir: t.TempDir(), n: map[string]int{}}
	t.Cleanup(func() {
		ps.mu.Lock()
		all := ps.all
		ps.mu.Unlock()
		for _, p := range all {
			p.kill()
		}
		for _, p := range all {
			if out := p.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
				t.Errorf("%s reported a data race", p.name)
			}
		}
		if t.Failed() {
			for _, p := range all {
				t.Logf("=== output of %s (%v) ===\n%s", p.name, p.err, p.out.String())
			}
		}
	})
	return ps
}

// start runs the binary with args; kind names it in logs.
func (ps *procs) start(kind string, args ...string) *proc {
	ps.t.Helper()
	ps.mu.Lock()
	ps.n[kind]++
	p := &proc{name: fmt.Sprintf("%s #%d", kind, ps.n[kind]), done: make(chan struct{})}
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		close(p.done)
		ps.t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// collector starts a collector on listen and waits until it serves; it
// returns the process and the address it listens on.
func (ps *procs) collector(dsn, listen string) (*proc, string) {
	ps.t.Helper()
	ready := filepath.Join(ps.dir, fmt.Sprintf("collector-%d.addr", ps.n["collector"]+1))
	p := ps.start("collector", "collector", "--db", dsn, "--listen", listen, "--ready-file", ready)
	var addr string
	waitUntil(ps.t, 30*time.Second, p.name+" to serve", func() bool {
		if p.exited() {
			ps.t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
		}
		b, err := os.ReadFile(ready)
		addr = strings.TrimSpace(string(b))
		return err == nil && addr != ""
	})
	return p, addr
}

// watchTransport counts the uploads in flight: from the request until the
// collector's answer has been read and closed. Armed with loseAck, it calls
// the function once the collector has answered an upload, then loses the
// answer, as when the collector dies between its commit and the agent
// reading the acknowledgement.
type watchTransport struct {
	base     http.RoundTripper
	inFlight atomic.Int64
	lastTook atomic.Int64 // duration of the last upload that got an answer
	// unavailable counts the uploads answered 503 Service Unavailable.
	unavailable atomic.Int64
	loseAck     atomic.Pointer[func()]
}

func (w *watchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost {
		return w.base.RoundTrip(r)
	}
	w.inFlight.Add(1)
	start := time.Now()
	resp, err := w.base.RoundTrip(r)
	if err != nil {
		w.inFlight.Add(-1)
		return nil, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		w.unavailable.Add(1)
	}
	if lose := w.loseAck.Swap(nil); lose != nil && resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		(*lose)()
		w.inFlight.Add(-1)
		return nil, fmt.Errorf("fault test: the collector answered %s and died before the answer was read", resp.Status)
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, done: func() {
		w.lastTook.Store(int64(time.Since(start)))
		w.inFlight.Add(-1)
	}}
	return resp, nil
}

type watchedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// counter reads a counter from reg (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// syntheticSweep returns one sweep of the fault target as an agent measures
// it: every address over UDP and TCP, with the three identity queries, each
// answered by the address's site.
func syntheticSweep(at time.Time) []api.Result {
	sites := []struct{ server, nsid string }{
		{"ns1.nl-ams.fault.example", "ams-1"},
		{"ns1.de-fra.fault.example", "fra-1"},
		{"ns1.gb-lhr.fault.example", "lhr-1"},
	}
	var rs []api.Result
	for i, h := range faultHosts {
		for _, tr := range []api.Transport{api.TransportUDP, api.TransportTCP} {
			for _, q := range []string{api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID} {
				r := api.Result{
					MeasuredAt: at.Add(time.Duration(len(rs)) * 700 * time.Microsecond),
					Target:     "fault-dns", Address: h, Kind: api.KindDNS, Transport: tr, Query: q,
					RTTMicros: int64(180 + 37*len(rs)),
				}
				if q == api.QueryNSID {
					r.DNS = &api.DNSValues{Rcode: "NOERROR", NSIDHex: fmt.Sprintf("%x", sites[i].nsid),
						NSIDText: sites[i].nsid, Identity: sites[i].nsid, Size: 52}
				} else {
					r.DNS = &api.DNSValues{Rcode: "NOERROR", TXT: []string{sites[i].server},
						Identity: sites[i].server, Size: 70 + len(sites[i].server)}
				}
				rs = append(rs, r)
			}
		}
	}
	return rs
}

// checkStored compares what the database holds for agent with want, the
// results in seq order: nothing missing, nothing twice, nothing changed.
func checkStored(t *testing.T, ctx context.Context, dsn, agent string, want []api.Result) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT r.seq, coalesce(r.round, 0), r.measured_at, host(r.address), r.transport, r.query, coalesce(r.identity, '')
		FROM results r JOIN agents a ON a.id = r.agent_id
		WHERE a.name = $1 ORDER BY r.seq, r.measured_at`, agent)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n, bad int
	for rows.Next() {
		var (
			seq, round                    int64
			at                            time.Time
			addr, transport, query, ident string
		)
		if err := rows.Scan(&seq, &round, &at, &addr, &transport, &query, &ident); err != nil {
			t.Fatal(err)
		}
		n++
		if seq != int64(n) {
			t.Fatalf("row %d has seq %d: a result is missing or stored twice", n, seq)
		}
		w := want[seq-1]
		if uint64(round) != w.Round || !at.Equal(w.MeasuredAt) || addr != w.Address ||
			transport != string(w.Transport) || query != w.Query || ident != w.DNS.Identity {
			if bad++; bad <= 5 {
				t.Errorf("seq %d stored as round %d %s %s %s %s %q, spooled as round %d %s %s %s %s %q",
					seq, round, at.UTC().Format(time.RFC3339Nano), addr, transport, query, ident,
					w.Round, w.MeasuredAt.Format(time.RFC3339Nano), w.Address, w.Transport, w.Query, w.DNS.Identity)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Errorf("%d rows stored, want %d", n, len(want))
	}
	if bad > 0 {
		t.Errorf("%d stored results differ from what was spooled", bad)
	}
}

// checkPartitionsAhead checks that the collector created the coming week's
// results partitions on start, before any result needed them.
func checkPartitionsAhead(t *testing.T, ctx context.Context, dsn string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for d := 0; d <= 6; d++ {
		name := "results_" + time.Now().UTC().AddDate(0, 0, d).Format("20060102")
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if !exists {
			t.Errorf("partition %s was not created ahead", name)
		}
	}
}

// The collector is killed with SIGKILL at random moments while batches are
// in flight and restarted on the same port, and the PostgreSQL under it is
// restarted, alternately shut down (fast: sessions cut, open transactions
// rolled back) and crashed (every server process SIGKILLed), at random
// moments too. Nobody steps in: the agent's shipper retries what was not
// acknowledged, and the collector answers 503 while the database is down and
// finds it again by itself. Every result arrives exactly once: a batch
// committed just before a kill comes again and is stored as duplicates.
func TestCollectorKilledDuringIngest(t *testing.T) {
	t.Parallel()
	const agentName = "fault-vp1"
	kills := scaled(t, "collector kills", 10, 40)
	restarts := scaled(t, "PostgreSQL restarts", 2, 8)
	// Every fourth kill falls between a commit and the agent reading the
	// acknowledgement; at least half of the others must hit a batch in
	// flight, or more kills follow.
	lostAckKill := func(kill int) bool { return kill%4 == 1 }
	minInFlight := (kills - (kills+2)/4) / 2
	rng := faultRand(t)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(t, "time limit", 4*time.Minute, 20*time.Minute))
	defer cancel()
	cl, dsn := privateCluster(t, ctx)
	_, token := faultStore(t, ctx, dsn, agentName, faultTarget(5*time.Second))

	// The spool of an agent that was cut off for a while and keeps
	// measuring: one sweep per Append, so the spool numbers each sweep's
	// round. topUp spools more sweeps until n results are pending, so that
	// there is always an upload to kill, and few are left to drain at the
	// end.
	start := time.Now()
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	pending := func() int { n, _, _ := sp.Stats(); return n }
	var want []api.Result
	sweeps := 0
	first := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
	topUp := func(n int) {
		t.Helper()
		for pending() < n {
			out, err := sp.Append(syntheticSweep(first.Add(time.Duration(sweeps) * 100 * time.Millisecond)))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, out...)
			sweeps++
		}
	}
	const minPending = 10000 // five batches
	topUp(2 * minPending)
	t.Logf("spooled %d results in %s", len(want), time.Since(start).Round(time.Millisecond))

	ps := newProcs(t)
	addr := freeTCPAddr(t)
	coll, _ := ps.collector(dsn, addr)

	tr := &watchTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	client, err := shipper.NewClient(shipper.ClientOptions{
		URL: "http://" + addr, Token: token, Agent: agentName, Timeout: 30 * time.Second,
		HTTPClient: &http.Client{Transport: tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sh, err := shipper.New(sp, client, shipper.Options{
		MaxBatchResults: 2000, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	shipCtx, stopShipping := context.WithCancel(ctx)
	shipped := make(chan error, 1)
	go func() { shipped <- sh.Run(shipCtx, make(chan struct{})) }()
	t.Cleanup(func() {
		stopShipping()
		<-shipped
	})

	// The faults in random order: the kills, and the restarts of the
	// database, the first a fast shutdown and the next a crash, and so on.
	var faults []string
	for range kills {
		faults = append(faults, "collector")
	}
	for range restarts {
		faults = append(faults, "database")
	}
	rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })

	// atRandomMoment waits for an upload in flight, then for a random part
	// of a typical upload's time, and reports whether one is still in
	// flight.
	atRandomMoment := func(after string) bool {
		waitUntil(t, time.Minute, "an upload in flight", func() bool {
			if pending() == 0 {
				t.Fatalf("the spool drained after %s: top it up with more results", after)
			}
			return tr.inFlight.Load() > 0
		})
		took := max(time.Duration(tr.lastTook.Load()), 10*time.Millisecond)
		time.Sleep(time.Duration(rng.Int64N(int64(took))))
		return tr.inFlight.Load() > 0
	}
	start = time.Now()
	killed, inFlight, lostAcks, dbStops := 0, 0, 0, 0
	for i := 0; i < len(faults) || inFlight < minInFlight; i++ {
		fault := "collector"
		if i < len(faults) {
			fault = faults[i]
		} else if i >= 2*len(faults) {
			t.Fatalf("only %d of %d kills at random moments hit a batch in flight; want %d", inFlight, killed-lostAcks, minInFlight)
		}
		topUp(minPending)
		// Some progress since the last fault.
		before := pending()
		done := fmt.Sprintf("%d kills and %d database restarts", killed, dbStops)
		waitUntil(t, time.Minute, "progress after "+done, func() bool {
			if coll.exited() {
				t.Fatalf("%s exited on its own: %v", coll.name, coll.err)
			}
			return pending() < before
		})
		what := ""
		switch {
		case fault == "database":
			hit := atRandomMoment(done)
			unavailable := tr.unavailable.Load()
			how := "shut down (fast)"
			if dbStops%2 == 1 {
				how = "crashed (every process SIGKILLed)"
				if err := cl.Kill(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := cl.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			dbStops++
			// The collector stays up and tells the agent to come back.
			waitUntil(t, time.Minute, "a 503 from the collector while PostgreSQL is down", func() bool {
				return tr.unavailable.Load() > unavailable
			})
			if coll.exited() {
				t.Fatalf("%s exited while PostgreSQL was down: %v", coll.name, coll.err)
			}
			if cl, err = pgcluster.Start(ctx, cl.Options()); err != nil {
				t.Fatal(err)
			}
			if hit {
				how += " with a batch in flight"
			}
			t.Logf("PostgreSQL restart %d after %s: %s; the collector answered 503 meanwhile; %d results still spooled",
				dbStops, time.Since(start).Round(time.Millisecond), how, pending())
			continue
		case lostAckKill(killed + 1):
			// Kill it after it committed a batch, before the agent has
			// read the acknowledgement: the batch comes again.
			answered, dead := make(chan struct{}), make(chan struct{})
			lose := func() {
				close(answered)
				<-dead
			}
			release := sync.OnceFunc(func() { close(dead) })
			t.Cleanup(release) // never leave the shipper waiting, even on failure
			tr.loseAck.Store(&lose)
			select {
			case <-answered:
			case <-time.After(time.Minute):
				t.Fatalf("no upload was answered within a minute after %s", done)
			}
			ok := coll.kill()
			release()
			if !ok {
				t.Fatalf("%s was not killed by SIGKILL: %v", coll.name, coll.err)
			}
			lostAcks++
			what = "after committing a batch, before the agent read the acknowledgement"
		default:
			hit := atRandomMoment(done)
			if !coll.kill() {
				t.Fatalf("%s was not killed by SIGKILL: %v", coll.name, coll.err)
			}
			what = "between uploads"
			if hit {
				inFlight++
				what = "with a batch in flight"
			}
		}
		killed++
		t.Logf("kill %d (%s) after %s %s; %d results still spooled",
			killed, coll.name, time.Since(start).Round(time.Millisecond), what, pending())
		coll, _ = ps.collector(dsn, addr)
	}

	waitUntil(t, 2*time.Minute, "the spool to drain", func() bool { return pending() == 0 })
	dups := counter(t, reg, "anyscope_shipper_results_duplicate_total")
	t.Logf("drained %d results in %s with %d kills (%d with a batch in flight, %d losing an acknowledgement) and %d PostgreSQL restarts; acknowledged %.0f accepted, %.0f duplicates; %d answers 503",
		len(want), time.Since(start).Round(time.Millisecond), killed, inFlight, lostAcks, dbStops,
		counter(t, reg, "anyscope_shipper_results_accepted_total"), dups, tr.unavailable.Load())
	if dups == 0 {
		t.Errorf("no duplicates acknowledged although %d acknowledgements were lost: were the batches not stored?", lostAcks)
	}
	if coll.exited() {
		t.Errorf("%s exited: %v", coll.name, coll.err)
	}

	st, err := store.Open(ctx, dsn) // the first store's connections died with the server
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	acc, err := st.SeqAccounting(ctx, agentName)
	if err != nil {
		t.Fatal(err)
	}
	if total := int64(len(want)); acc.Stored != total || acc.Highest != total || acc.Holes != 0 || acc.Gaps != 0 {
		t.Errorf("stored %d results up to seq %d (%d holes, %d gaps); want %d up to %d, no hole, no gap",
			acc.Stored, acc.Highest, acc.Holes, acc.Gaps, total, total)
	}
	if acc.Rows != acc.Stored {
		t.Errorf("%d rows hold only %d distinct seqs", acc.Rows, acc.Stored)
	}
	checkStored(t, ctx, dsn, agentName, want)
	checkPartitionsAhead(t, ctx, dsn)
}

// privateCluster starts a PostgreSQL cluster of the test's own, which it
// may stop and crash (the shared pgtest cluster serves the other tests), and
// returns it and the DSN of its migrated anyscope database. It keeps
// PostgreSQL's durability settings: with synchronous_commit off, as in
// pgtest's clusters, a crash may lose commits the collector has already
// acknowledged. The cluster is stopped and removed when the test ends.
func privateCluster(t *testing.T, ctx context.Context) (*pgcluster.Cluster, string) {
	t.Helper()
	base := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm" // fsync costs nothing there
	}
	tmp, err := os.MkdirTemp(base, "anyscope-fault-pg-")
	if err != nil {
		t.Fatal(err)
	}
	// PostgreSQL runs as the postgres user when we are root.
	if err := os.Chmod(tmp, 0o711); err != nil {
		t.Fatal(err)
	}
	opts := pgcluster.Options{Dir: filepath.Join(tmp, "pg"), Fsync: true}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pgcluster.Stop(ctx, opts); err != nil {
			t.Errorf("stopping the test's PostgreSQL: %v", err)
		}
		os.RemoveAll(tmp)
	})
	cl, err := pgcluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	dsn := cl.ConnString(pgcluster.Database)
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return cl, dsn
}
