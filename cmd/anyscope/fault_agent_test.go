package main

import (
	"context"
	le "encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
)

// The agent is killed with SIGKILL again and again while it measures real
// DNS servers and ships to a real collector, and restarted on the same
// spool: every other time at a random moment of its first 3 seconds
// (starting, recovering its spool, measuring, shipping), the others right
// after its first or second write of results to its spool, before
// that write's fsync had completed as often as not (the agent spaces its
// fsyncs by 200 ms). Between two lives the
// spool is damaged as a crash of the machine or a clumsy operator would: a
// torn record at the end of its last segment, and later a segment lost from
// the middle, its results measured while the collector was down and so
// never delivered. Every life starts cleanly and measures; a last run with
// --once ships the rest. Then every sequence number from 1 to the last is
// stored exactly once, except exactly those of the lost segment, which
// arrive as a segment_lost gap; the spool holds nothing more.
func TestAgentKilledAndRestarted(t *testing.T) {
	t.Parallel()
	const agentName = "fault-vp2"
	kills := scaled(t, "agent kills", 20, 60)
	// The damage, each followed by a life that must reach a spool write.
	tornAfter := kills / 3 &^ 1
	lostLife := 2 * kills / 3 &^ 1
	rng := faultRand(t)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(t, "time limit", 3*time.Minute, 10*time.Minute))
	defer cancel()
	dsn := pgtest.DB(t)
	// Each address about once a second: three spool writes a second.
	st, token := faultStore(t, ctx, dsn, agentName, faultTarget(time.Second))

	port := freePortOn(t, faultHosts)
	for i, h := range faultHosts {
		code := []string{"ams", "fra", "lhr"}[i]
		s := &demoSite{
			addr:    net.JoinHostPort(h, strconv.Itoa(port)),
			servers: []string{fmt.Sprintf("ns1.xx-%s.fault.example", code)},
			nsids:   []string{code + "-1"},
		}
		if err := s.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.stop)
	}

	ps := newProcs(t)
	collAddr := freeTCPAddr(t)
	coll, _ := ps.collector(dsn, collAddr)
	dir := t.TempDir()
	tokenFile, spoolDir, cfgFile := filepath.Join(dir, "token"), filepath.Join(dir, "spool"), filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`name: %s
collector: http://%s
token_file: %s
spool_dir: %s
allow: [127.0.0.0/8]
dns_port: %d
timeout: 1s
max_rate: 1000
`, agentName, collAddr, tokenFile, spoolDir, port)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	var lost [2]uint64 // the seqs of the lost segment
	var tornLife string
	start := time.Now()
	for i := 1; i <= kills; i++ {
		var next0 uint64
		if i == lostLife {
			if !coll.kill() {
				t.Fatalf("%s was not killed by SIGKILL: %v", coll.name, coll.err)
			}
			next0, _ = spoolState(t, spoolDir)
		}
		began := time.Now()
		ag := ps.start("agent", "agent", "--config", cfgFile)
		var how string
		switch {
		case i == lostLife:
			// Long enough to measure a few rounds and fail to ship them.
			waitSpoolWrites(t, ag, spoolDir, began, 3)
			how = fmt.Sprintf("with the collector down, %s after it started", time.Since(began).Round(time.Millisecond))
		case i%2 == 0:
			// It starts measuring about 2 s after it started.
			life := time.Duration(rng.Int64N(int64(3 * time.Second)))
			select {
			case <-ag.done:
				t.Fatalf("%s exited on its own: %v", ag.name, ag.err)
			case <-time.After(life):
			}
			how = fmt.Sprintf("at a random moment, %s after it started", life.Round(time.Millisecond))
		default:
			n := 1 + rng.IntN(2)
			waitSpoolWrites(t, ag, spoolDir, began, n)
			how = fmt.Sprintf("right after its spool write #%d, %s after it started", n, time.Since(began).Round(time.Millisecond))
		}
		if !ag.kill() {
			t.Fatalf("%s was not killed by SIGKILL: %v", ag.name, ag.err)
		}
		damage := ""
		switch i {
		case tornAfter:
			damage = "; left a torn record at the end of the spool's last segment"
			tearTail(t, spoolDir)
			tornLife = fmt.Sprintf("agent #%d", i+1)
		case lostLife:
			next1, _ := spoolState(t, spoolDir)
			if next1-next0 < 2 {
				t.Fatalf("%s measured %d results in its life without a collector; want 2 or more", ag.name, next1-next0)
			}
			// The first half of them is lost: measured, never delivered.
			m := next0 + (next1-next0)/2
			loseSegment(t, spoolDir, next0, m)
			lost = [2]uint64{next0, m - 1}
			damage = fmt.Sprintf("; deleted the spool segment of its results %d..%d, keeping %d..%d", next0, m-1, m, next1-1)
			coll, _ = ps.collector(dsn, collAddr)
		}
		count, maxSeq, err := st.AgentSeqStats(ctx, agentName)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kill %d (%s) %s: collector holds %d results up to seq %d%s", i, ag.name, how, count, maxSeq, damage)
	}
	next, _ := spoolState(t, spoolDir)
	t.Logf("the agent numbered %d results in %s between %d kills", next-1, time.Since(start).Round(time.Millisecond), kills)

	once := ps.start("agent", "agent", "--config", cfgFile, "--once")
	select {
	case <-once.done:
		if once.err != nil {
			t.Fatalf("%s: %v", once.name, once.err)
		}
	case <-ctx.Done():
		t.Fatalf("%s did not finish", once.name)
	}
	for _, p := range ps.all {
		if p.name == tornLife && !strings.Contains(p.out.String(), "torn or corrupt tail") {
			t.Errorf("%s, started on the torn segment, did not report cutting its tail", p.name)
		}
	}

	// Every seq 1..last is a stored result or in the lost segment's gap.
	acc, err := st.SeqAccounting(ctx, agentName)
	if err != nil {
		t.Fatal(err)
	}
	gaps := storedGaps(t, ctx, dsn, agentName)
	t.Logf("collector holds %d results and gaps %+v, up to seq %d, after %d kills and a run with --once", acc.Stored, gaps, acc.Highest, kills)
	if acc.Rows != acc.Stored {
		t.Errorf("%d rows hold only %d distinct seqs: a seq was given to two measurements", acc.Rows, acc.Stored)
	}
	if acc.Holes != 0 {
		t.Errorf("%d of the seqs 1..%d are neither stored nor in a gap: %+v", acc.Holes, acc.Highest, acc)
	}
	wantGap := api.Gap{FirstSeq: lost[0], LastSeq: lost[1], Count: lost[1] - lost[0] + 1, Reason: api.GapSegmentLost}
	if len(gaps) != 1 || gaps[0].FirstSeq != wantGap.FirstSeq || gaps[0].LastSeq != wantGap.LastSeq ||
		gaps[0].Count != wantGap.Count || gaps[0].Reason != wantGap.Reason {
		t.Errorf("gaps stored: %+v; want exactly the lost segment's %d..%d (%d results, %s)",
			gaps, wantGap.FirstSeq, wantGap.LastSeq, wantGap.Count, wantGap.Reason)
	} else if g := gaps[0]; !g.LostFrom.IsZero() || !g.LostTo.IsZero() {
		// Bounded by the neighbouring results, which arrived.
		before, after := measuredAt(t, ctx, dsn, agentName, lost[0]-1), measuredAt(t, ctx, dsn, agentName, lost[1]+1)
		if !g.LostFrom.IsZero() && g.LostFrom.Before(before) || !g.LostTo.IsZero() && g.LostTo.After(after) {
			t.Errorf("the gap says its results were measured %s..%s; its neighbours were measured %s and %s",
				g.LostFrom.Format(time.RFC3339Nano), g.LostTo.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
		}
	}
	if inLost := storedBetween(t, ctx, dsn, agentName, lost[0], lost[1]); inLost > 0 {
		t.Errorf("%d results of the lost segment %d..%d are stored", inLost, lost[0], lost[1])
	}
	if acc.Stored == 0 || acc.InGaps != int64(wantGap.Count) {
		t.Errorf("%d results stored and %d seqs in gaps; want results, and exactly the lost segment's %d in gaps", acc.Stored, acc.InGaps, wantGap.Count)
	}
	if next, pending := spoolState(t, spoolDir); pending != 0 || next != uint64(acc.Highest)+1 {
		t.Errorf("the spool holds %d unshipped results and numbers the next %d, the collector's last seq is %d: want 0 and %d",
			pending, next, acc.Highest, acc.Highest+1)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var failed int64
	var examples []string
	err = conn.QueryRow(ctx, `
		SELECT count(*), coalesce((array_agg(r.seq || ' ' || host(r.address) || ' ' || r.transport || ' ' || r.query || ': ' || r.failure ORDER BY r.seq))[1:5], '{}')
		FROM results r JOIN agents a ON a.id = r.agent_id
		WHERE a.name = $1 AND r.failure <> ''`, agentName).Scan(&failed, &examples)
	if err != nil {
		t.Fatal(err)
	}
	if failed > 0 {
		t.Errorf("%d results failed although every DNS server was up, e.g. %v", failed, examples)
	}
}

// spoolState opens the spool an agent left behind and returns the seq its
// next result would get and how many results it still holds unshipped.
// Opening it recovers it, as the agent would.
func spoolState(t *testing.T, dir string) (next uint64, pending int) {
	t.Helper()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	pending, _, _ = sp.Stats()
	return sp.NextSeq(), pending
}

// waitSpoolWrites waits until the agent p, started at began, has written to
// its spool n times: the segment files grew beyond the smallest size seen
// (its recovery may cut them first), n times.
func waitSpoolWrites(t *testing.T, p *proc, dir string, began time.Time, n int) {
	t.Helper()
	low := int64(-1)
	for seen := 0; seen < n; {
		if p.exited() {
			t.Fatalf("%s exited on its own: %v", p.name, p.err)
		}
		if time.Since(began) > 30*time.Second {
			t.Fatalf("%s wrote to its spool %d times in 30s; want %d", p.name, seen, n)
		}
		size := segmentBytes(t, dir)
		switch {
		case low < 0 || size < low:
			low = size
		case size > low:
			seen++
			low = size
		}
		time.Sleep(time.Millisecond)
	}
}

// segments returns the spool's segment files in sequence order (their
// names are zero-padded first sequence numbers).
func segments(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(segs)
	return segs
}

// segmentBytes is the size of the spool's segment files together.
func segmentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, s := range segments(t, dir) {
		if fi, err := os.Stat(s); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// spoolRecord is a record of a segment file, framed as the spool package
// documents: [u32 length][u32 CRC-32C of the payload][payload: JSON of
// api.Result], little-endian.
type spoolRecord struct {
	seq      uint64
	off, end int64
}

// readSegment returns the records of a segment file up to the first that
// does not read back.
func readSegment(t *testing.T, path string) []spoolRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rs []spoolRecord
	for off := int64(0); off+8 <= int64(len(b)); {
		n := int64(le.LittleEndian.Uint32(b[off:]))
		end := off + 8 + n
		if n == 0 || end > int64(len(b)) {
			break
		}
		payload := b[off+8 : end]
		if crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)) != le.LittleEndian.Uint32(b[off+4:]) {
			break
		}
		var r api.Result
		if err := json.Unmarshal(payload, &r); err != nil {
			break
		}
		rs = append(rs, spoolRecord{seq: r.Seq, off: off, end: end})
		off = end
	}
	return rs
}

// tearTail appends to the spool's last segment the start of a record, as a
// write cut short by a crash of the machine leaves it: a header announcing
// more payload than follows.
func tearTail(t *testing.T, dir string) {
	t.Helper()
	segs := segments(t, dir)
	if len(segs) == 0 {
		t.Fatal("no spool segment to tear")
	}
	payload := []byte(`{"seq":999999,"measured_at":"2026-01-01T00:00:00Z","target":"fault-dns","address":"127.0.0.21","kind":"dns","transport":"udp","query":"hostname.bind","rtt_us":`)
	var rec []byte
	rec = le.LittleEndian.AppendUint32(rec, uint32(len(payload)+40))
	rec = le.LittleEndian.AppendUint32(rec, crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)))
	rec = append(rec, payload...)
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// loseSegment rewrites the spool so that the results first..keep-1 were in
// a segment of their own that is now lost: the segment holding them is cut
// before first, and its records from keep on become the segment that
// follows the lost one (keep.seg), as if the spool had rotated segments at
// first and at keep and the middle one had been deleted.
func loseSegment(t *testing.T, dir string, first, keep uint64) {
	t.Helper()
	var path string
	var rs []spoolRecord
	for _, s := range segments(t, dir) {
		if r := readSegment(t, s); len(r) > 0 && r[0].seq <= first && r[len(r)-1].seq >= keep {
			path, rs = s, r
		}
	}
	if path == "" {
		t.Fatalf("no spool segment holds the results %d..%d", first, keep)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := func(seq uint64) int64 { return rs[seq-rs[0].seq].off }
	name := fmt.Sprintf("%020d.seg", keep)
	if err := os.WriteFile(filepath.Join(dir, name), b[at(keep):rs[len(rs)-1].end], 0o600); err != nil {
		t.Fatal(err)
	}
	if rs[0].seq == first {
		err = os.Remove(path)
	} else {
		err = os.Truncate(path, at(first))
	}
	if err != nil {
		t.Fatal(err)
	}
}

// storedGaps returns the gaps the collector holds for agent.
func storedGaps(t *testing.T, ctx context.Context, dsn, agent string) []api.Gap {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT g.first_seq, g.last_seq, g.count, g.lost_from, g.lost_to, g.reason
		FROM agent_gaps g JOIN agents a ON a.id = g.agent_id
		WHERE a.name = $1 ORDER BY g.first_seq`, agent)
	if err != nil {
		t.Fatal(err)
	}
	gaps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (api.Gap, error) {
		var g api.Gap
		var first, last, count int64
		var from, to *time.Time
		err := r.Scan(&first, &last, &count, &from, &to, &g.Reason)
		g.FirstSeq, g.LastSeq, g.Count = uint64(first), uint64(last), uint64(count)
		if from != nil {
			g.LostFrom = *from
		}
		if to != nil {
			g.LostTo = *to
		}
		return g, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return gaps
}

// measuredAt returns when agent's result seq was measured, as stored.
func measuredAt(t *testing.T, ctx context.Context, dsn, agent string, seq uint64) time.Time {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var at time.Time
	err = conn.QueryRow(ctx, `
		SELECT r.measured_at FROM results r JOIN agents a ON a.id = r.agent_id
		WHERE a.name = $1 AND r.seq = $2`, agent, int64(seq)).Scan(&at)
	if err != nil {
		t.Fatalf("result %d of %s: %v", seq, agent, err)
	}
	return at
}

// storedBetween counts agent's stored results with a seq in first..last.
func storedBetween(t *testing.T, ctx context.Context, dsn, agent string, first, last uint64) int64 {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	err = conn.QueryRow(ctx, `
		SELECT count(*) FROM results r JOIN agents a ON a.id = r.agent_id
		WHERE a.name = $1 AND r.seq BETWEEN $2 AND $3`, agent, int64(first), int64(last)).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
