package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyscope/anyscope/agent/spool"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// bigResult is a valid result of about 16 KiB (16 TXT strings of 1 KiB).
func bigResult(i int) api.Result {
	txt := make([]string, api.MaxTXTStrings)
	for k := range txt {
		txt[k] = strings.Repeat(fmt.Sprintf("%x", (i+k)%16), 4*api.MaxStringLen)
	}
	return api.Result{
		MeasuredAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		Target:     "example-dns", Address: "192.0.2.53", Kind: api.KindDNS, Transport: api.TransportUDP,
		Query: api.QueryHostnameBind, RTTMicros: 1000,
		DNS: &api.DNSValues{Rcode: "NOERROR", TXT: txt, Identity: txt[0], Size: 512},
	}
}

// An agent whose spool lost a segment starts, counts the loss and has a
// gap for the collector, instead of failing (and being restarted, and
// failing again).
func TestDamagedSpoolIsAGap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if _, err := sp.Append([]api.Result{bigResult(i)}); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(segs)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	var from, next uint64
	fmt.Sscanf(filepath.Base(segs[1]), "%d.seg", &from)
	fmt.Sscanf(filepath.Base(segs[2]), "%d.seg", &next)
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gaps"), []byte("\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}

	a, reg, logs := newAgent(t, "http://127.0.0.1:1", dir, 53, true)
	defer a.Close()
	if got, want := metric(t, reg, "anyscope_agent_spool_dropped_results_total", "reason", "segment_lost"), float64(next-from); got != want {
		t.Errorf("dropped results (segment_lost) = %v, want %v", got, want)
	}
	if got := metric(t, reg, "anyscope_agent_spool_gaps_total", "reason", "segment_lost"); got != 1 {
		t.Errorf("gaps (segment_lost) = %v, want 1", got)
	}
	if got := metric(t, reg, "anyscope_agent_spool_dropped_results_total", "reason", "spool_full"); got != 0 {
		t.Errorf("dropped results (spool_full) = %v", got)
	}
	if got := metric(t, reg, "anyscope_agent_spool_pending_gaps"); got != 1 {
		t.Errorf("pending gaps = %v, want 1", got)
	}
	for _, msg := range []string{"results lost between segments", "gap list is unreadable"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, logs)
		}
	}
}

// spool_max_bytes caps the spool: with nobody shipping, the oldest results
// are dropped, counted, and kept as a gap for the collector.
func TestSpoolCap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := &Config{Collector: "http://127.0.0.1:1", Token: token, Name: "vp-test", SpoolDir: dir, Allow: allow,
		SpoolMaxBytes: minSpoolMaxBytes}
	reg := prometheus.NewPedanticRegistry()
	a, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	total := 0
	for total < 2*minSpoolMaxBytes/(16<<10) {
		rs := make([]api.Result, 10) // a round smaller than a segment
		for k := range rs {
			rs[k] = bigResult(total + k)
		}
		a.record(rs)
		total += len(rs)
	}
	dropped := metric(t, reg, "anyscope_agent_spool_dropped_results_total", "reason", "spool_full")
	if dropped == 0 || dropped >= float64(total) {
		t.Fatalf("%v of %d results dropped", dropped, total)
	}
	if got := metric(t, reg, "anyscope_agent_spool_gaps_total", "reason", "spool_full"); got != 1 {
		t.Errorf("gaps = %v, want 1 (consecutive drops extend one gap)", got)
	}
	if got := metric(t, reg, "anyscope_agent_results_dropped_total", "reason", "spool"); got != 0 {
		t.Errorf("results refused by the spool: %v", got)
	}
	gs := a.spool.PendingGaps(10)
	if len(gs) != 1 || gs[0].FirstSeq != 1 || float64(gs[0].Count) != dropped || gs[0].Reason != api.GapSpoolFull {
		t.Errorf("gaps %+v, want one from seq 1 of %v results", gs, dropped)
	}
	var onDisk int64
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, p := range segs {
		if fi, err := os.Stat(p); err == nil {
			onDisk += fi.Size()
		}
	}
	if onDisk > minSpoolMaxBytes {
		t.Errorf("segments hold %d bytes, cap %d", onDisk, minSpoolMaxBytes)
	}
}

func TestSpoolMaxBytesConfig(t *testing.T) {
	t.Parallel()
	base := "collector: https://collector.example.org\ntoken: s3cret\nname: vp1\nspool_dir: /var/lib/anyscope/spool\nallow: [192.0.2.0/24]\n"
	c, err := parseConfig([]byte(base), "/")
	if err != nil {
		t.Fatal(err)
	}
	if c.SpoolMaxBytes != DefaultSpoolMaxBytes {
		t.Errorf("default spool_max_bytes %d, want %d", c.SpoolMaxBytes, DefaultSpoolMaxBytes)
	}
	c, err = parseConfig([]byte(base+"spool_max_bytes: 104857600\n"), "/")
	if err != nil || c.SpoolMaxBytes != 100<<20 {
		t.Errorf("spool_max_bytes 100 MiB: %v, %+v", err, c)
	}
	for _, v := range []string{"1048575", "-5"} {
		_, err := parseConfig([]byte(base+"spool_max_bytes: "+v+"\n"), "/")
		if want := "line 6: spool_max_bytes " + v + ": want at least 1048576 (1 MiB)"; err == nil || err.Error() != want {
			t.Errorf("spool_max_bytes %s: %v, want %q", v, err, want)
		}
	}
}
