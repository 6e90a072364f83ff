package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// csvHeader is the first row WriteCSV writes.
var csvHeader = []string{"target", "vantage_point", "address", "site", "observations", "confidence", "method"}

// csvGapHeader starts the table of lost results.
var csvGapHeader = []string{"lost_vantage_point", "first_seq", "last_seq", "lost_results", "lost_from", "lost_to", "reason"}

func csvTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// WriteCSV writes the catchment table of every target as CSV (RFC 4180,
// CRLF line ends) for spreadsheets: a header row
//
//	target,vantage_point,address,site,observations,confidence,method
//
// then one row per (target, vantage point, address), as in each target's
// Catchment, targets by name, then vantage point and address:
//
//   - site is "" when no observation resolved;
//   - confidence is the share (0..1) of observations that named the site;
//   - method is "" when identities named the site, else "traceroute" or
//     "latency" (the site is then an inferred cluster label).
//
// When vantage points lost results in the window (Report.Gaps), an empty
// line and a second table follow, with as many columns:
//
//	lost_vantage_point,first_seq,last_seq,lost_results,lost_from,lost_to,reason
//
// one row per gap; lost_from and lost_to are RFC 3339 times, "" when
// unknown. Readers that skip empty lines (encoding/csv does) see one more
// header row there.
//
// Text cells are untrusted: a cell that a spreadsheet would read as a
// formula (it starts with = + - @, their full-width forms, a tab or a
// carriage return) gets a leading apostrophe, and invalid UTF-8 becomes
// U+FFFD.
func WriteCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write(csvHeader); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	for _, t := range r.Targets {
		for _, c := range t.Catchment {
			rec := []string{
				cell(t.Name), cell(c.VantagePoint), c.Address.String(), cell(c.Site),
				strconv.Itoa(c.Observations), strconv.FormatFloat(c.Confidence, 'f', -1, 64), cell(c.Method),
			}
			if err := cw.Write(rec); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
		}
	}
	if len(r.Gaps) > 0 {
		cw.Flush()
		if _, err := io.WriteString(w, "\r\n"); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := cw.Write(csvGapHeader); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		for _, g := range r.Gaps {
			rec := []string{
				cell(g.VantagePoint), strconv.FormatUint(g.FirstSeq, 10), strconv.FormatUint(g.LastSeq, 10),
				strconv.FormatUint(g.Results, 10), csvTime(g.LostFrom), csvTime(g.LostTo), cell(string(g.Reason)),
			}
			if err := cw.Write(rec); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// formulaStart lists the first characters that make a spreadsheet read a
// cell as a formula, the full-width forms included.
const formulaStart = "=+-@\t\r\uFF1D\uFF0B\uFF0D\uFF20"

// cell makes untrusted text safe for a spreadsheet cell (CSV injection):
// valid UTF-8, and never read as a formula.
func cell(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if r, _ := utf8.DecodeRuneInString(s); s != "" && strings.ContainsRune(formulaStart, r) {
		return "'" + s
	}
	return s
}
