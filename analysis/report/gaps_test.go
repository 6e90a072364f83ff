package report_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// gapSource is a sliceSource that also knows which results its vantage
// points lost, like the store.
type gapSource struct {
	*sliceSource
	gaps []analysis.Gap
}

func (s *gapSource) Gaps(ctx context.Context, since, until time.Time) ([]analysis.Gap, error) {
	var out []analysis.Gap
	for _, g := range s.gaps {
		if (since.IsZero() || !g.LostTo.Before(since)) && (until.IsZero() || g.LostFrom.Before(until)) {
			out = append(out, g)
		}
	}
	return out, ctx.Err()
}

// lossWorld is three hours of k-root seen from five vantage points, three
// at HEL and two at AMS, one round a minute. Nothing goes wrong anywhere,
// except at vp-hel-1 from 13:00 to 14:00: with lost, its spool dropped that
// hour (no observation, and a gap saying so); without, every query it sent
// then timed out.
func lossWorld(lost bool) *gapSource {
	src := &gapSource{sliceSource: &sliceSource{targets: []analysis.Target{{
		Name: "k-root", Addresses: []netip.Addr{kV4},
		Sites: []analysis.Site{{Code: "HEL", Name: "Helsinki"}, {Code: "AMS", Name: "Amsterdam"}},
	}}}}
	t0 := start
	from, to := t0.Add(time.Hour), t0.Add(2*time.Hour)
	vps := map[string]string{
		"vp-hel-1": "ns1.fi-hel.k.ripe.net", "vp-hel-2": "ns2.fi-hel.k.ripe.net", "vp-hel-3": "ns1.fi-hel.k.ripe.net",
		"vp-ams-1": "ns1.nl-ams.k.ripe.net", "vp-ams-2": "ns2.nl-ams.k.ripe.net",
	}
	var missing uint64
	for round := range 180 {
		for _, vp := range slices.Sorted(func(yield func(string) bool) {
			for k := range vps {
				if !yield(k) {
					return
				}
			}
		}) {
			for _, p := range probes {
				o := analysis.Observation{
					VantagePoint: vp, Target: "k-root", Address: kV4, Kind: api.KindDNS,
					Transport: p.transport, Query: p.query,
					At: t0.Add(time.Duration(round)*time.Minute + p.offset), Round: uint64(round + 1),
					Identity: vps[vp], RTT: 10 * time.Millisecond,
				}
				if vp == "vp-hel-1" && !o.At.Before(from) && o.At.Before(to) {
					if lost {
						missing++
						continue
					}
					o.Identity, o.RTT, o.Failure = "", 0, api.FailureTimeout
				}
				src.obs = append(src.obs, o)
			}
		}
	}
	if lost {
		src.gaps = []analysis.Gap{{VantagePoint: "vp-hel-1", FirstSeq: 181, LastSeq: 180 + missing, Count: missing,
			LostFrom: from, LostTo: to.Add(-time.Minute + 4*time.Second), Reason: api.GapSpoolFull, ReceivedAt: to.Add(time.Hour)}}
	}
	return src
}

// An hour a vantage point's spool dropped, while the others saw nothing
// wrong, is no incident; the report lists it, in every format. The same
// hour of timeouts is one (the control: analysis does see failures there).
func TestLostHourIsNoIncident(t *testing.T) {
	t.Parallel()
	opts := report.Options{Since: start, Until: start.Add(3 * time.Hour), Now: func() time.Time { return start.Add(4 * time.Hour) }}

	t.Run("timeouts are an incident", func(t *testing.T) {
		t.Parallel()
		r := build(t, lossWorld(false), opts)
		ins := r.Targets[0].Incidents
		if len(ins) != 1 || ins[0].Kind != analysis.IncidentVantagePoint || !slices.Equal(ins[0].VantagePoints, []string{"vp-hel-1"}) {
			t.Fatalf("incidents %+v, want one vantage_point incident of vp-hel-1", ins)
		}
		if len(r.Gaps) != 0 {
			t.Errorf("gaps %+v in a world without", r.Gaps)
		}
	})

	t.Run("a lost hour is not", func(t *testing.T) {
		t.Parallel()
		src := lossWorld(true)
		r := build(t, src, opts)
		tg := r.Targets[0]
		if len(tg.Incidents) != 0 {
			t.Errorf("incidents %+v, want none: lost data is not a failure", tg.Incidents)
		}
		if len(tg.Switches) != 0 {
			t.Errorf("switches %+v", tg.Switches)
		}
		if n := tg.Failures; len(n) != 0 {
			t.Errorf("failures %v", n)
		}
		g := src.gaps[0]
		want := []report.Gap{{VantagePoint: "vp-hel-1", FirstSeq: g.FirstSeq, LastSeq: g.LastSeq, Results: 180,
			LostFrom: &g.LostFrom, LostTo: &g.LostTo, Reason: api.GapSpoolFull}}
		if !slices.EqualFunc(r.Gaps, want, func(x, y report.Gap) bool {
			return x.VantagePoint == y.VantagePoint && x.FirstSeq == y.FirstSeq && x.LastSeq == y.LastSeq && x.Results == y.Results &&
				x.LostFrom.Equal(*y.LostFrom) && x.LostTo.Equal(*y.LostTo) && x.Reason == y.Reason
		}) {
			t.Errorf("gaps %+v, want %+v", r.Gaps, want)
		}

		var js bytes.Buffer
		if err := report.WriteJSON(&js, r); err != nil {
			t.Fatal(err)
		}
		var back struct {
			Gaps []map[string]any `json:"gaps"`
		}
		if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Gaps) != 1 ||
			back.Gaps[0]["vantage_point"] != "vp-hel-1" || back.Gaps[0]["results"] != 180.0 ||
			back.Gaps[0]["lost_from"] != "2025-03-01T13:00:00Z" || back.Gaps[0]["reason"] != "spool_full" {
			t.Errorf("JSON gaps %v (%v)", back.Gaps, err)
		}
		md := writeMD(t, r)
		for _, s := range []string{"## Data lost at agents", "180 results in 1 gap were", "| vp-hel-1 | 2025-03-01T13:00:00Z | 2025-03-01T13:59:04Z | 180 | 181–360 | spool\\_full |"} {
			if !strings.Contains(md, s) {
				t.Errorf("Markdown lacks %q:\n%s", s, md)
			}
		}
		page := writeHTMLString(t, r)
		for _, s := range []string{`<section id="lost">`, "<td>vp-hel-1</td>", "180 results in 1 gap were", "<td>spool_full</td>"} {
			if !strings.Contains(page, s) {
				t.Errorf("HTML lacks %q", s)
			}
		}
		recs := readCSV(t, r)
		if i := slices.IndexFunc(recs, func(rec []string) bool { return rec[0] == "lost_vantage_point" }); i < 0 || i+1 >= len(recs) ||
			!slices.Equal(recs[i+1], []string{"vp-hel-1", "181", "360", "180", "2025-03-01T13:00:00Z", "2025-03-01T13:59:04Z", "spool_full"}) {
			t.Errorf("CSV %q", recs)
		}
	})
}

// A gap's vantage point name is untrusted text in every format, and an
// unknown time says so.
func TestGapsEscaped(t *testing.T) {
	t.Parallel()
	src := lossWorld(true)
	src.gaps[0].VantagePoint = "=HYPERLINK(\"x\")<script>alert(1)</script>|\n# h"
	src.gaps[0].LostFrom = time.Time{}
	src.gaps[0].LostTo = start.Add(90 * time.Minute)
	r := build(t, src, report.Options{Since: start, Until: start.Add(3 * time.Hour)})
	if len(r.Gaps) != 1 || r.Gaps[0].LostFrom != nil {
		t.Fatalf("gaps %+v", r.Gaps)
	}
	md := writeMD(t, r)
	if strings.Contains(md, "<script>") || strings.Contains(md, "|\n# h") || !strings.Contains(md, "| unknown | 2025-03-01T13:30:00Z |") {
		t.Errorf("Markdown gap row not escaped:\n%s", md)
	}
	page := writeHTMLString(t, r)
	if strings.Contains(page, "<script>") || !strings.Contains(page, "&lt;script&gt;") || !strings.Contains(page, ">unknown<") {
		t.Error("HTML gap row not escaped")
	}
	recs := readCSV(t, r)
	last := recs[len(recs)-1]
	if !strings.HasPrefix(last[0], "'=") || last[4] != "" {
		t.Errorf("CSV gap row %q: want the name defused and no lost_from", last)
	}
}

func writeMD(t *testing.T, r *report.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteMarkdown(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func writeHTMLString(t *testing.T, r *report.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// readCSV parses the CSV report strictly (a fixed number of fields).
func readCSV(t *testing.T, r *report.Report) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(writeCSV(t, r))).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v", err)
	}
	return recs
}
