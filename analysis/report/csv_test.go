package report_test

import (
	"bytes"
	"encoding/csv"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

func writeCSV(t *testing.T, r *report.Report) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteCSV(&b, r); err != nil {
		t.Fatalf("WriteCSV: %v", err)
	}
	return b.Bytes()
}

func TestCSVGolden(t *testing.T) {
	t.Parallel()
	r := build(t, located(), report.Options{Since: start, Until: start.Add(time.Hour)})
	out := writeCSV(t, r)
	golden(t, "report.csv.golden", out)

	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"target", "vantage_point", "address", "site", "observations", "confidence", "method"}; !reflect.DeepEqual(recs[0], want) {
		t.Errorf("header %q", recs[0])
	}
	rows := 0
	for _, tg := range r.Targets {
		rows += len(tg.Catchment)
	}
	if len(recs) != rows+1 {
		t.Errorf("%d records, want a header and %d rows", len(recs), rows)
	}
}

// Identities and names from the network must not become spreadsheet
// formulas: a cell starting with = + - @ (or their full-width forms), a tab
// or a carriage return gets a leading apostrophe.
func TestCSVInjection(t *testing.T) {
	t.Parallel()
	names := []string{
		`=HYPERLINK("http://example.com/x","click")`,
		"+1+cmd|' /C calc'!A0",
		"-2+3",
		"@SUM(1+1)*cmd|' /C calc'!A0",
		"\t=1+1",
		"\r=1+1",
		"\uFF1D1+1",
		"plain-vp",
		"a,b\"c\nd",
		"\xff\xfe",
	}
	src := &sliceSource{targets: []analysis.Target{{Name: "=target()", Rules: []analysis.Rule{{Pattern: "^x$", Site: "AMS"}}}}}
	for i, vp := range names {
		src.obs = append(src.obs, analysis.Observation{
			VantagePoint: vp, Target: "=target()", Address: netip.MustParseAddr("192.0.2.1"),
			Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
			At: start.Add(time.Duration(i) * time.Second), Identity: "x",
		})
	}
	r := build(t, src, report.Options{Since: start, Until: start.Add(time.Hour)})
	recs, err := csv.NewReader(bytes.NewReader(writeCSV(t, r))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, rec := range recs[1:] {
		for i, c := range rec {
			if c != "" && strings.ContainsAny(c[:1], "=+-@\t\r") || strings.HasPrefix(c, "\uFF1D") {
				t.Errorf("cell %d %q starts like a formula", i, c)
			}
		}
		if rec[0] != "'=target()" {
			t.Errorf("target cell %q", rec[0])
		}
		got[rec[1]] = true
	}
	// encoding/csv drops a lone carriage return when it writes CRLF lines:
	// "\r=1+1" comes back as "'=1+1", guarded all the same.
	for _, want := range []string{
		`'=HYPERLINK("http://example.com/x","click")`, "'+1+cmd|' /C calc'!A0", "'-2+3", "'@SUM(1+1)*cmd|' /C calc'!A0",
		"'\t=1+1", "'=1+1", "'\uFF1D1+1", "plain-vp", "a,b\"c\nd", "\uFFFD",
	} {
		if !got[want] {
			t.Errorf("no vantage point cell %q in %v", want, got)
		}
	}
}
