package report_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
)

// Two adjacent half hours of the fixture: AMS is withdrawn for vp-ams-1 at
// 12:30, so between the windows it moves to HEL and the shares swap.
func TestCompareWindows(t *testing.T) {
	t.Parallel()
	earlier := build(t, fixture(), report.Options{Since: start, Until: start.Add(30 * time.Minute)})
	r := build(t, fixture(), report.Options{Since: start.Add(30 * time.Minute), Until: start.Add(time.Hour)})
	report.Compare(r, earlier)

	k := r.Targets[1]
	if k.Name != "k-root" || k.Changes == nil {
		t.Fatalf("target %q changes %v", k.Name, k.Changes)
	}
	c := k.Changes
	if !c.Since.Equal(start) || !c.Until.Equal(start.Add(30*time.Minute)) {
		t.Errorf("earlier window %s..%s", c.Since, c.Until)
	}
	wantMoved := []report.Move{{VantagePoint: "vp-ams-1", Address: kV4, Before: "AMS", After: "HEL"}}
	if !reflect.DeepEqual(c.Moved, wantMoved) {
		t.Errorf("moved = %+v, want %+v", c.Moved, wantMoved)
	}
	if c.Appeared != 0 || c.Gone != 0 {
		t.Errorf("appeared %d gone %d, want 0 0", c.Appeared, c.Gone)
	}
	// Before: vp-hel-1 at HEL, vp-ams-1 and vp-fra-1 at AMS. After: vp-hel-1
	// and vp-ams-1 at HEL, vp-fra-1 at AMS. STO served nobody either time.
	wantShares := []report.ShareChange{
		{Site: "HEL", ShareBefore: 0.3333, ShareAfter: 0.6667, Delta: 0.3334, VantagePointsBefore: 1, VantagePointsAfter: 2},
		{Site: "AMS", ShareBefore: 0.6667, ShareAfter: 0.3333, Delta: -0.3334, VantagePointsBefore: 2, VantagePointsAfter: 1},
	}
	if !reflect.DeepEqual(c.Shares, wantShares) {
		t.Errorf("shares = %+v\nwant %+v", c.Shares, wantShares)
	}
	if len(c.NewIncidents) != 0 {
		t.Errorf("new incidents %+v", c.NewIncidents)
	}

	i := r.Targets[0]
	if i.Changes == nil || len(i.Changes.Moved) != 0 || len(i.Changes.Shares) != 2 || i.Changes.Shares[0].Delta != 0 {
		t.Errorf("i-root changes = %+v, want nothing moved", i.Changes)
	}

	// The JSON carries it additively; the Markdown shows it.
	var j, m bytes.Buffer
	if err := report.WriteJSON(&j, r); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Targets []struct {
			Name    string         `json:"name"`
			Changes map[string]any `json:"changes"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(j.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"since", "until", "moved", "appeared", "gone", "shares", "new_incidents"} {
		if _, ok := doc.Targets[1].Changes[key]; !ok {
			t.Errorf("changes has no %q: %v", key, doc.Targets[1].Changes)
		}
	}
	if err := report.WriteMarkdown(&m, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### Changes since the earlier window", "| vp-ams-1 | 192.0.2.53 | AMS | HEL |", "| HEL | 1 | 2 | 33.3% | 66.7% | +33.3 pp |", "| AMS | 2 | 1 | 66.7% | 33.3% | -33.3 pp |"} {
		if !bytes.Contains(m.Bytes(), []byte(want)) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

// The located fixture's incident (vp-hel-1 fails from 12:40) starts in the
// report's window: it is new against the half hour before, and the golden
// Markdown shows the whole comparison. Which kind the detector calls it is
// the incident package's business, not the report's.
func TestCompareGolden(t *testing.T) {
	t.Parallel()
	r := comparedReport(t)
	k := r.Targets[1]
	if len(k.Changes.NewIncidents) != 1 || !reflect.DeepEqual(k.Changes.NewIncidents[0].VantagePoints, []string{"vp-hel-1"}) ||
		!k.Changes.NewIncidents[0].Start.Equal(start.Add(40*time.Minute)) || k.Changes.NewIncidents[0].End != nil {
		t.Errorf("new incidents = %+v, want vp-hel-1's, open since 12:40", k.Changes.NewIncidents)
	}
	_, m := render(t, r)
	golden(t, "compare.md.golden", m)
}

// comparedReport is the located fixture's hour compared with the hour that
// ends half-way through it.
func comparedReport(t *testing.T) *report.Report {
	t.Helper()
	r := build(t, located(), report.Options{Since: start, Until: start.Add(time.Hour)})
	earlier := build(t, located(), report.Options{Since: start.Add(-30 * time.Minute), Until: start.Add(30 * time.Minute)})
	report.Compare(r, earlier)
	return r
}

func TestCompareIncidents(t *testing.T) {
	t.Parallel()
	t0 := start
	at := func(m int) *time.Time { x := t0.Add(time.Duration(m) * time.Minute); return &x }
	a1 := netip.MustParseAddr("192.0.2.1")
	a2 := netip.MustParseAddr("192.0.2.2")
	bh := func(site string, addr netip.Addr, startMin int, end *time.Time) report.Incident {
		return report.Incident{Kind: analysis.IncidentBlackhole, Site: site, Address: &addr, Start: t0.Add(time.Duration(startMin) * time.Minute), End: end, VantagePoints: []string{"vp-1"}}
	}
	vpInc := func(vp string, end *time.Time) report.Incident {
		return report.Incident{Kind: analysis.IncidentVantagePoint, Start: t0.Add(50 * time.Minute), End: end, VantagePoints: []string{vp}}
	}
	tests := []struct {
		name    string
		before  []report.Incident
		now     report.Incident
		wantNew bool
	}{
		{"none-before", nil, bh("AMS", a1, 70, nil), true},
		{"open-at-the-end-before", []report.Incident{bh("AMS", a1, 50, nil)}, bh("AMS", a1, 60, nil), false},
		{"ended-before", []report.Incident{bh("AMS", a1, 10, at(20))}, bh("AMS", a1, 70, nil), true},
		{"same-start-overlapping-windows", []report.Incident{bh("AMS", a1, 50, at(55))}, bh("AMS", a1, 50, at(55)), false},
		{"other-site", []report.Incident{bh("HEL", a1, 50, nil)}, bh("AMS", a1, 60, nil), true},
		{"other-address", []report.Incident{bh("AMS", a2, 50, nil)}, bh("AMS", a1, 60, nil), true},
		{"other-kind", []report.Incident{{Kind: analysis.IncidentOutage, Address: &a1, Start: t0, VantagePoints: []string{"vp-1"}}}, bh("AMS", a1, 60, nil), true},
		{"same-vantage-point", []report.Incident{vpInc("vp-1", nil)}, vpInc("vp-1", nil), false},
		{"other-vantage-point", []report.Incident{vpInc("vp-2", nil)}, vpInc("vp-1", nil), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			earlier := &report.Report{Since: t0, Until: t0.Add(time.Hour), Targets: []report.Target{{Name: "x", Incidents: tt.before}}}
			r := &report.Report{Since: t0.Add(time.Hour), Until: t0.Add(2 * time.Hour), Targets: []report.Target{{Name: "x", Incidents: []report.Incident{tt.now}}}}
			report.Compare(r, earlier)
			if got := len(r.Targets[0].Changes.NewIncidents) == 1; got != tt.wantNew {
				t.Errorf("new = %v, want %v", got, tt.wantNew)
			}
		})
	}
}

// A target the earlier report does not have: every pair appeared, every
// share is new.
func TestCompareNewTarget(t *testing.T) {
	t.Parallel()
	r := build(t, fixture(), report.Options{Since: start, Until: start.Add(time.Hour)})
	report.Compare(r, &report.Report{Since: start.Add(-time.Hour), Until: start})
	c := r.Targets[1].Changes
	if c.Appeared != len(r.Targets[1].Catchment) || c.Gone != 0 || len(c.Moved) != 0 {
		t.Errorf("appeared %d gone %d moved %v", c.Appeared, c.Gone, c.Moved)
	}
	for _, s := range c.Shares {
		if s.ShareBefore != 0 || s.VantagePointsBefore != 0 || s.Delta != s.ShareAfter {
			t.Errorf("share %+v", s)
		}
	}
	// And the other way round: everything is gone.
	earlier := build(t, fixture(), report.Options{Since: start, Until: start.Add(time.Hour)})
	empty := &report.Report{Since: start.Add(time.Hour), Until: start.Add(2 * time.Hour), Targets: []report.Target{{Name: "k-root"}}}
	report.Compare(empty, earlier)
	if c := empty.Targets[0].Changes; c.Gone != len(earlier.Targets[1].Catchment) || len(c.Shares) != 2 || c.Shares[0].ShareAfter != 0 {
		t.Errorf("changes = %+v", c)
	}
}
