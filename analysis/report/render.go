package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteMarkdown writes r as a Markdown document for people. Every string
// that comes from probes or agents is escaped, so a hostile identity renders
// as inert text inside its table cell.
func WriteMarkdown(w io.Writer, r *Report) error {
	m := &mdWriter{w: bufio.NewWriter(w)}
	m.line("# Anycast catchment report")
	m.line("")
	m.linef("- Generated: %s", stamp(r.GeneratedAt))
	m.linef("- Window: %s to %s", stamp(r.Since), stamp(r.Until))
	m.linef("- Targets: %d", len(r.Targets))
	if len(r.Gaps) > 0 {
		m.gaps(r.Gaps)
	}
	for i := range r.Targets {
		m.target(&r.Targets[i])
	}
	if m.err != nil {
		return fmt.Errorf("write report: %w", m.err)
	}
	if err := m.w.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

type mdWriter struct {
	w   *bufio.Writer
	err error
}

func (m *mdWriter) line(s string) {
	if m.err == nil {
		_, m.err = m.w.WriteString(s + "\n")
	}
}

func (m *mdWriter) linef(format string, args ...any) { m.line(fmt.Sprintf(format, args...)) }

// row writes one table row of already escaped cells.
func (m *mdWriter) row(cells ...string) { m.line("| " + strings.Join(cells, " | ") + " |") }

func (m *mdWriter) table(header []string, align string) {
	m.row(header...)
	seps := make([]string, len(header))
	for i := range header {
		seps[i] = "---"
		if i < len(align) && align[i] == 'r' {
			seps[i] = "---:"
		}
	}
	m.line("|" + strings.Join(seps, "|") + "|")
}

func (m *mdWriter) target(t *Target) {
	m.line("")
	m.linef("## Target %s", esc(t.Name))
	m.line("")
	failed := 0
	for _, n := range t.Failures {
		failed += n
	}
	unresolved := t.UnresolvedOther
	for _, u := range t.Unresolved {
		unresolved += u.Observations
	}
	m.linef("Observations: %d (%d failed, %d with an unresolved identity). Vantage points with a resolved site: %d.",
		t.Observations, failed, unresolved, t.VantagePoints)

	if t.Changes != nil {
		m.changes(t.Changes)
	}

	m.line("")
	m.line("### Sites")
	m.line("")
	if len(t.Sites) == 0 {
		m.line("None.")
	} else {
		m.table([]string{"Site", "Name", "Declared", "Vantage points", "Share"}, "...rr")
		for _, s := range t.Sites {
			declared := "no"
			if s.Declared {
				declared = "yes"
			}
			m.row(esc(s.Site), esc(s.Name), declared, strconv.Itoa(s.VantagePoints), percent(s.Share))
		}
	}

	if len(t.SiteLatency) > 0 {
		m.line("")
		m.line("### Latency by site")
		m.line("")
		m.line("RTTs of the answers that named each site, from every vantage point.")
		m.line("")
		m.table([]string{"Site", "Answers", "Median RTT (ms)", "Fastest RTT (ms)"}, ".rrr")
		for _, l := range t.SiteLatency {
			m.row(site(l.Site), strconv.Itoa(l.Observations), strconv.FormatFloat(l.MedianRTTMs, 'f', 1, 64), strconv.FormatFloat(l.MinRTTMs, 'f', 1, 64))
		}
		if t.SiteLatencyOther > 0 {
			m.row("(other sites)", strconv.Itoa(t.SiteLatencyOther), "", "")
		}
	}

	m.line("")
	m.line("### Catchment")
	m.line("")
	if len(t.Catchment) == 0 {
		m.line("None.")
	} else {
		m.table([]string{"Vantage point", "Address", "Site", "Observations", "Confidence", "Per transport and query", "Other sites", "Unresolved", "Failures"}, "...rr..rr")
		for _, c := range t.Catchment {
			siteCell := site(c.Site)
			if c.Method != "" {
				siteCell += " (inferred from " + esc(c.Method) + ")"
			}
			m.row(esc(c.VantagePoint), c.Address.String(), siteCell, strconv.Itoa(c.Observations),
				percent(c.Confidence), streams(c.Transports), others(c), strconv.Itoa(c.Unresolved), strconv.Itoa(c.Failures))
		}
	}

	m.line("")
	m.line("### Switches")
	m.line("")
	if len(t.Switches) == 0 {
		m.line("None.")
	} else {
		m.table([]string{"At", "Vantage point", "Address", "Transport", "Query", "From", "To", "Last at old site", "Failures between", "Cause", "TCP session broke"}, "........r..")
		for _, s := range t.Switches {
			broke := ""
			if s.TCPBroke {
				broke = "yes"
			}
			m.row(stamp(s.At), esc(s.VantagePoint), s.Address.String(), esc(string(s.Transport)), esc(s.Query),
				site(s.From), site(s.To), stamp(s.LastFrom), strconv.Itoa(s.FailuresBetween), esc(string(s.Cause)), broke)
		}
	}

	m.line("")
	m.line("### Incidents")
	m.line("")
	m.incidents(t.Incidents)

	if len(t.Instability) > 0 {
		m.line("")
		m.line("### Instability")
		m.line("")
		m.table([]string{"Vantage point", "Switches", "Flips per day", "Sites"}, ".rr.")
		for _, x := range t.Instability {
			sites := make([]string, len(x.Sites))
			for i, s := range x.Sites {
				sites[i] = esc(s)
			}
			m.row(esc(x.VantagePoint), strconv.Itoa(x.Switches), strconv.FormatFloat(x.FlipsPerDay, 'f', 1, 64), strings.Join(sites, ", "))
		}
	}

	if len(t.ImpossibleRTTs) > 0 {
		m.line("")
		m.line("### Impossible RTTs")
		m.line("")
		m.line("Answers faster than light in fibre allows from where the site is said to be: a wrong identity rule or site location, or a vantage point that is not where it says.")
		m.line("")
		m.table([]string{"Vantage point", "Site", "Distance (km)", "Minimum possible RTT (ms)", "Fastest RTT (ms)", "Impossible", "Checked"}, "..rrrrr")
		for _, l := range t.ImpossibleRTTs {
			m.row(esc(l.VantagePoint), site(l.Site), strconv.FormatFloat(l.DistanceKm, 'f', 0, 64),
				strconv.FormatFloat(l.MinPossibleMs, 'f', 3, 64), strconv.FormatFloat(l.MinRTTMs, 'f', 3, 64),
				strconv.Itoa(l.Impossible), strconv.Itoa(l.Checked))
		}
	}

	if len(t.Inflation) > 0 {
		m.line("")
		m.line("### Path inflation")
		m.line("")
		m.table([]string{"Vantage point", "Served by", "Distance (km)", "Nearest site", "Distance (km)", "Factor"}, "..r.rr")
		for _, x := range t.Inflation {
			m.row(esc(x.VantagePoint), site(x.Site), strconv.FormatFloat(x.DistanceKm, 'f', 0, 64), site(x.Nearest),
				strconv.FormatFloat(x.NearestDistanceKm, 'f', 0, 64), strconv.FormatFloat(x.Factor, 'f', 1, 64))
		}
	}

	m.line("")
	m.line("### Disagreements")
	m.line("")
	if len(t.Disagreements) == 0 {
		m.line("None.")
	} else {
		m.line("Answers of one round that named different sites.")
		m.line("")
		m.table([]string{"Vantage point", "Address", "Answer", "Other answer", "Rounds", "First", "Last"}, "....r..")
		for _, d := range t.Disagreements {
			m.row(esc(d.VantagePoint), d.Address.String(), answer(d.A), answer(d.B),
				strconv.Itoa(d.Rounds), stamp(d.First), stamp(d.Last))
		}
	}

	m.line("")
	m.line("### Unresolved identities")
	m.line("")
	if len(t.Unresolved) == 0 && t.UnresolvedOther == 0 {
		m.line("None.")
	} else {
		m.table([]string{"Identity", "Observations"}, ".r")
		for _, u := range t.Unresolved {
			m.row(identityCell(u.Identity), strconv.Itoa(u.Observations))
		}
		if t.UnresolvedOther > 0 {
			m.row("(other identities)", strconv.Itoa(t.UnresolvedOther))
		}
	}

	m.line("")
	m.line("### Failures")
	m.line("")
	if len(t.Failures) == 0 {
		m.line("None.")
	} else {
		m.table([]string{"Failure", "Count"}, ".r")
		names := make([]string, 0, len(t.Failures))
		for f := range t.Failures {
			names = append(names, f)
		}
		slices.Sort(names)
		for _, f := range names {
			m.row(failure(f), strconv.Itoa(t.Failures[f]))
		}
	}
}

// gaps lists the results vantage points lost before upload.
func (m *mdWriter) gaps(gs []Gap) {
	var lost uint64
	for _, g := range gs {
		lost += g.Results
	}
	m.line("")
	m.line("## Data lost at agents")
	m.line("")
	m.linef("%d result%s in %d gap%s were measured and lost before they reached the collector (the agent's spool was full or damaged). "+
		"They are missing data, not failures: no incident is built from them.", lost, plural(int(min(lost, 2))), len(gs), plural(len(gs)))
	m.line("")
	m.table([]string{"Vantage point", "Lost from", "Lost to", "Results", "Sequence numbers", "Reason"}, "...r..")
	for _, g := range gs {
		m.row(esc(g.VantagePoint), stampOr(g.LostFrom), stampOr(g.LostTo), strconv.FormatUint(g.Results, 10),
			fmt.Sprintf("%d–%d", g.FirstSeq, g.LastSeq), esc(string(g.Reason)))
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// stampOr is a time, or "unknown".
func stampOr(t *time.Time) string {
	if t == nil {
		return "unknown"
	}
	return stamp(*t)
}

func (m *mdWriter) incidents(ins []Incident) {
	if len(ins) == 0 {
		m.line("None.")
		return
	}
	m.table([]string{"Kind", "Site", "Address", "Start", "End", "Vantage points", "Evidence"}, ".......")
	for _, in := range ins {
		addr, end := "all", "open"
		if in.Address != nil {
			addr = in.Address.String()
		}
		if in.End != nil {
			end = stamp(*in.End)
		}
		vps := make([]string, len(in.VantagePoints))
		for i, vp := range in.VantagePoints {
			vps[i] = esc(vp)
		}
		m.row(esc(string(in.Kind)), site(in.Site), addr, stamp(in.Start), end, strings.Join(vps, ", "), esc(in.Evidence.Note))
	}
}

func (m *mdWriter) changes(c *Changes) {
	m.line("")
	m.line("### Changes since the earlier window")
	m.line("")
	m.linef("Compared with %s to %s: %d vantage point and address pairs changed site, %d appeared, %d were gone.",
		stamp(c.Since), stamp(c.Until), len(c.Moved), c.Appeared, c.Gone)
	if len(c.Moved) > 0 {
		m.line("")
		m.table([]string{"Vantage point", "Address", "Before", "After"}, "....")
		for _, x := range c.Moved {
			m.row(esc(x.VantagePoint), x.Address.String(), site(x.Before), site(x.After))
		}
	}
	if len(c.Shares) > 0 {
		m.line("")
		m.table([]string{"Site", "Vantage points before", "Vantage points after", "Share before", "Share after", "Change"}, ".rrrrr")
		for _, s := range c.Shares {
			m.row(site(s.Site), strconv.Itoa(s.VantagePointsBefore), strconv.Itoa(s.VantagePointsAfter),
				percent(s.ShareBefore), percent(s.ShareAfter), points(s.Delta))
		}
	}
	m.line("")
	m.line("New incidents:")
	m.line("")
	m.incidents(c.NewIncidents)
}

// points is a share difference in percentage points, signed.
func points(d float64) string {
	v := strconv.FormatFloat(100*d, 'f', 1, 64)
	switch {
	case v == "0.0" || v == "-0.0":
		v = "0.0"
	case d > 0:
		v = "+" + v
	}
	return v + " pp"
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func percent(x float64) string { return strconv.FormatFloat(100*x, 'f', 1, 64) + "%" }

func site(s string) string {
	if s == "" {
		return "—"
	}
	return esc(s)
}

func identityCell(s string) string {
	if s == "" {
		return "(empty)"
	}
	return esc(s)
}

// failure shows a classified failure as is, anything else escaped.
func failure(f string) string {
	if api.Failure(f).Valid() {
		return f
	}
	return esc(f)
}

func streams(ss []Stream) string {
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		result := "—"
		if s.Site != "" {
			result = site(s.Site) + " " + percent(s.Confidence)
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", esc(string(s.Transport)), esc(s.Query), result))
	}
	return strings.Join(parts, "; ")
}

func others(c Catchment) string {
	var parts []string
	for _, s := range c.Sites {
		if s.Site != c.Site {
			parts = append(parts, fmt.Sprintf("%s (%d)", esc(s.Site), s.Observations))
		}
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

func answer(a Answer) string {
	return fmt.Sprintf("%s %s → %s", esc(string(a.Transport)), esc(a.Query), site(a.Site))
}

// maxCell bounds the runes of an untrusted string shown in a table cell.
const maxCell = 100

// esc makes untrusted text inert in a Markdown table cell: HTML-significant
// characters and the pipe become entities; Markdown punctuation that could
// start emphasis, code, links, images, math or autolinks is backslash-escaped;
// line breaks, other control characters and invisible or bidirectional
// formatting characters are shown as \uXXXX; invalid UTF-8 becomes U+FFFD;
// long text is cut.
func esc(s string) string {
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n == maxCell {
			b.WriteString("…")
			break
		}
		n++
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&#39;")
		case '|':
			b.WriteString("&#124;")
		case '\\', '`', '*', '_', '[', ']', '(', ')', '{', '}', '#', '!', '~', '$', ':', '@', '^', '=', '+':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '.':
			// "www." starts an extended autolink.
			if i >= 3 && strings.EqualFold(s[i-3:i], "www") {
				b.WriteByte('\\')
			}
			b.WriteByte('.')
		case utf8.RuneError:
			b.WriteRune(utf8.RuneError)
		default:
			if invisible(r) {
				fmt.Fprintf(&b, `\\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}

// invisible reports whether r is a control character, a line or paragraph
// separator, or a zero-width or bidirectional formatting character.
func invisible(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x00ad, r == 0xfeff:
		return true
	case r >= 0x200b && r <= 0x200f, r >= 0x2028 && r <= 0x202e, r >= 0x2060 && r <= 0x206f:
		return true
	}
	return false
}
