package api

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid")

// ValidName reports whether s can name an agent or a target: 1 to 63
// characters of [A-Za-z0-9._-], the first a letter or digit. (Checked by
// hand: it runs for every result of every batch.)
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// MaxRTT is the largest plausible round-trip time.
const MaxRTT = 10 * time.Minute

// Validate checks a batch's structure and every result in it. It does not
// judge timestamps against the clock; the collector does that.
func (b *Batch) Validate() error {
	if !ValidName(b.Agent) {
		return fmt.Errorf("%w: agent name %q: want 1-63 characters of [A-Za-z0-9._-]", ErrInvalid, Clip(b.Agent))
	}
	if len(b.Results) == 0 && len(b.Gaps) == 0 {
		return fmt.Errorf("%w: batch has no results and no gaps", ErrInvalid)
	}
	if len(b.Results) > MaxBatchResults {
		return fmt.Errorf("%w: batch has %d results, at most %d allowed", ErrInvalid, len(b.Results), MaxBatchResults)
	}
	if len(b.Gaps) > MaxBatchGaps {
		return fmt.Errorf("%w: batch has %d gaps, at most %d allowed", ErrInvalid, len(b.Gaps), MaxBatchGaps)
	}
	for i := range b.Results {
		if err := b.Results[i].Validate(); err != nil {
			return fmt.Errorf("results[%d]: %w", i, err)
		}
	}
	return validateGaps(b.Gaps)
}

// validateGaps checks each gap and that no two overlap.
func validateGaps(gaps []Gap) error {
	if len(gaps) == 0 {
		return nil
	}
	order := make([]int, len(gaps))
	for i := range gaps {
		if err := gaps[i].Validate(); err != nil {
			return fmt.Errorf("gaps[%d]: %w", i, err)
		}
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int { return cmp.Compare(gaps[x].FirstSeq, gaps[y].FirstSeq) })
	for k := 1; k < len(order); k++ {
		prev, cur := gaps[order[k-1]], gaps[order[k]]
		if cur.FirstSeq <= prev.LastSeq {
			return fmt.Errorf("%w: gaps[%d] (seq %d..%d) overlaps gaps[%d] (seq %d..%d)", ErrInvalid,
				order[k], cur.FirstSeq, cur.LastSeq, order[k-1], prev.FirstSeq, prev.LastSeq)
		}
	}
	return nil
}

// Validate checks one gap: a sane run of sequence numbers, a count that fits
// in it, a time range in order and a known reason. Like Batch.Validate, it
// does not judge times against the clock.
func (g *Gap) Validate() error {
	if g.FirstSeq == 0 || g.LastSeq < g.FirstSeq || g.LastSeq > 1<<62 {
		return fmt.Errorf("%w: gap seq %d..%d: want 1 <= first <= last <= 2^62", ErrInvalid, g.FirstSeq, g.LastSeq)
	}
	if g.Count == 0 || g.Count > g.LastSeq-g.FirstSeq+1 {
		return fmt.Errorf("%w: gap count %d: want 1..%d for seq %d..%d", ErrInvalid, g.Count, g.LastSeq-g.FirstSeq+1, g.FirstSeq, g.LastSeq)
	}
	if !g.LostFrom.IsZero() && !g.LostTo.IsZero() && g.LostTo.Before(g.LostFrom) {
		return fmt.Errorf("%w: gap lost_to %s before lost_from %s", ErrInvalid,
			g.LostTo.UTC().Format(time.RFC3339Nano), g.LostFrom.UTC().Format(time.RFC3339Nano))
	}
	if !g.Reason.Valid() {
		return fmt.Errorf("%w: gap reason %q is not one of %v", ErrInvalid, Clip(string(g.Reason)), GapReasons)
	}
	return nil
}

// Validate checks a hello.
func (h *Hello) Validate() error {
	if !ValidName(h.Agent) {
		return fmt.Errorf("%w: agent name %q", ErrInvalid, Clip(h.Agent))
	}
	if err := CheckText("version", h.Version, 64); err != nil {
		return err
	}
	if l := h.Location; l != nil {
		if l.Latitude < -90 || l.Latitude > 90 || l.Longitude < -180 || l.Longitude > 180 {
			return fmt.Errorf("%w: location %g,%g out of range", ErrInvalid, l.Latitude, l.Longitude)
		}
		if err := CheckText("location.provider", l.Provider, 64); err != nil {
			return err
		}
		if err := CheckText("location.region", l.Region, 64); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks one result's fields.
func (r *Result) Validate() error {
	if r.Seq == 0 || r.Seq > 1<<62 {
		return fmt.Errorf("%w: seq %d: want 1..2^62", ErrInvalid, r.Seq)
	}
	if r.Round > r.Seq {
		return fmt.Errorf("%w: round %d after seq %d: a round is numbered by its first result", ErrInvalid, r.Round, r.Seq)
	}
	if r.MeasuredAt.IsZero() {
		return fmt.Errorf("%w: measured_at missing", ErrInvalid)
	}
	if !ValidName(r.Target) {
		return fmt.Errorf("%w: target name %q", ErrInvalid, Clip(r.Target))
	}
	a, err := netip.ParseAddr(r.Address)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%w: address %q: want an IPv4 or IPv6 address without zone", ErrInvalid, Clip(r.Address))
	}
	byTransport, ok := validQueries[r.Kind]
	if !ok {
		return fmt.Errorf("%w: kind %q", ErrInvalid, Clip(string(r.Kind)))
	}
	queries, ok := byTransport[r.Transport]
	if !ok {
		return fmt.Errorf("%w: transport %q for kind %s", ErrInvalid, Clip(string(r.Transport)), r.Kind)
	}
	if !slices.Contains(queries, r.Query) {
		return fmt.Errorf("%w: query %q for kind %s over %s", ErrInvalid, Clip(r.Query), r.Kind, r.Transport)
	}
	if n := r.valueCount(); n > 1 || n == 1 && !r.valuesMatchKind() {
		return fmt.Errorf("%w: values of another kind than %s", ErrInvalid, r.Kind)
	}
	if r.RTTMicros < 0 || r.RTTMicros > MaxRTT.Microseconds() {
		return fmt.Errorf("%w: rtt_us %d out of range 0..%d", ErrInvalid, r.RTTMicros, MaxRTT.Microseconds())
	}
	if !r.Failure.Valid() {
		return fmt.Errorf("%w: failure %q is not a classified failure", ErrInvalid, Clip(string(r.Failure)))
	}
	switch {
	case r.DNS != nil:
		return r.DNS.validate()
	case r.Ping != nil:
		return r.Ping.validate()
	case r.Trace != nil:
		return r.Trace.validate()
	case r.Session != nil:
		return r.Session.validate()
	case r.HTTP != nil:
		return r.HTTP.validate()
	}
	return nil
}

func (r *Result) valueCount() int {
	n := 0
	for _, set := range []bool{r.DNS != nil, r.Ping != nil, r.Trace != nil, r.Session != nil, r.HTTP != nil} {
		if set {
			n++
		}
	}
	return n
}

func (r *Result) valuesMatchKind() bool {
	switch r.Kind {
	case KindDNS:
		return r.DNS != nil
	case KindPing:
		return r.Ping != nil
	case KindTrace:
		return r.Trace != nil
	case KindSession:
		return r.Session != nil
	case KindHTTP:
		return r.HTTP != nil
	}
	return false
}

// Bounds of the non-DNS values.
const (
	MaxTraceHops      = 255 * 4 // TTLs × attempts
	MaxMPLSLabels     = 8
	MaxSessionAnswers = 10000
	maxMicros         = int64(MaxRTT / time.Microsecond)
)

func micros(field string, v int64) error {
	if v < 0 || v > maxMicros {
		return fmt.Errorf("%w: %s %d out of range 0..%d", ErrInvalid, field, v, maxMicros)
	}
	return nil
}

func (p *PingValues) validate() error {
	if p.Sent < 0 || p.Sent > 10000 || p.Received < 0 || p.Received > p.Sent {
		return fmt.Errorf("%w: ping sent %d received %d", ErrInvalid, p.Sent, p.Received)
	}
	for f, v := range map[string]int64{"ping.min_us": p.MinUS, "ping.avg_us": p.AvgUS, "ping.max_us": p.MaxUS, "ping.stddev_us": p.StddevUS} {
		if err := micros(f, v); err != nil {
			return err
		}
	}
	if p.ReplyTTL < 0 || p.ReplyTTL > 255 {
		return fmt.Errorf("%w: ping.reply_ttl %d", ErrInvalid, p.ReplyTTL)
	}
	return nil
}

func (t *TraceValues) validate() error {
	if err := CheckText("trace.flow", t.Flow, 128); err != nil {
		return err
	}
	if err := CheckText("trace.engine", t.Engine, 32); err != nil {
		return err
	}
	switch t.Stop {
	case "reached", "unreachable", "gap_limit", "max_ttl", "timeout", "":
	default:
		return fmt.Errorf("%w: trace.stop %q", ErrInvalid, Clip(t.Stop))
	}
	if len(t.Hops) > MaxTraceHops {
		return fmt.Errorf("%w: trace has %d hops, at most %d", ErrInvalid, len(t.Hops), MaxTraceHops)
	}
	for i, h := range t.Hops {
		if h.TTL < 1 || h.TTL > 255 || h.Attempt < 0 || h.Attempt > 16 {
			return fmt.Errorf("%w: trace.hops[%d]: ttl %d attempt %d", ErrInvalid, i, h.TTL, h.Attempt)
		}
		if h.Addr != "" {
			if a, err := netip.ParseAddr(h.Addr); err != nil || a.Zone() != "" {
				return fmt.Errorf("%w: trace.hops[%d].addr %q", ErrInvalid, i, Clip(h.Addr))
			}
		}
		if err := micros(fmt.Sprintf("trace.hops[%d].rtt_us", i), h.RTTUS); err != nil {
			return err
		}
		if h.ICMPType < 0 || h.ICMPType > 255 || h.ICMPCode < 0 || h.ICMPCode > 255 || h.ReplyTTL < 0 || h.ReplyTTL > 255 {
			return fmt.Errorf("%w: trace.hops[%d]: icmp %d/%d reply ttl %d", ErrInvalid, i, h.ICMPType, h.ICMPCode, h.ReplyTTL)
		}
		if len(h.MPLS) > MaxMPLSLabels {
			return fmt.Errorf("%w: trace.hops[%d] has %d MPLS labels", ErrInvalid, i, len(h.MPLS))
		}
		for _, m := range h.MPLS {
			if m.Label >= 1<<20 || m.TC > 7 {
				return fmt.Errorf("%w: trace.hops[%d]: MPLS label %d tc %d", ErrInvalid, i, m.Label, m.TC)
			}
		}
	}
	return nil
}

func (s *SessionValues) validate() error {
	switch s.End {
	case EndServerClose, EndReset, EndTimeout, EndIdentityChanged, EndLifeEnded, EndConnectFailed, EndError:
	default:
		return fmt.Errorf("%w: session.end %q", ErrInvalid, Clip(s.End))
	}
	if s.OpenedAt.IsZero() || s.ClosedAt.Before(s.OpenedAt) {
		return fmt.Errorf("%w: session opened %s, closed %s", ErrInvalid, s.OpenedAt, s.ClosedAt)
	}
	if s.Queries < 0 || s.Queries > MaxSessionAnswers || len(s.Answers) > s.Queries {
		return fmt.Errorf("%w: session has %d queries and %d answers", ErrInvalid, s.Queries, len(s.Answers))
	}
	for i, a := range s.Answers {
		if err := CheckText(fmt.Sprintf("session.answers[%d].identity", i), a.Identity, 4*MaxStringLen); err != nil {
			return err
		}
		if err := micros(fmt.Sprintf("session.answers[%d].rtt_us", i), a.RTTUS); err != nil {
			return err
		}
	}
	return nil
}

func (h *HTTPValues) validate() error {
	if h.Scheme != "http" && h.Scheme != "https" {
		return fmt.Errorf("%w: http.scheme %q", ErrInvalid, Clip(h.Scheme))
	}
	if h.Status < 0 || h.Status > 999 {
		return fmt.Errorf("%w: http.status %d", ErrInvalid, h.Status)
	}
	for f, v := range map[string]string{"http.host": h.Host, "http.identity": h.Identity, "http.source": h.Source} {
		if err := CheckText(f, v, 4*MaxStringLen); err != nil {
			return err
		}
	}
	for f, v := range map[string]int64{"http.connect_us": h.ConnectUS, "http.tls_us": h.TLSUS, "http.first_byte_us": h.FirstByteUS} {
		if err := micros(f, v); err != nil {
			return err
		}
	}
	return nil
}

func (d *DNSValues) validate() error {
	if len(d.Rcode) > 16 || !printable(d.Rcode) {
		return fmt.Errorf("%w: dns.rcode %q", ErrInvalid, Clip(d.Rcode))
	}
	if len(d.TXT) > MaxTXTStrings {
		return fmt.Errorf("%w: dns.txt has %d strings, at most %d allowed", ErrInvalid, len(d.TXT), MaxTXTStrings)
	}
	for i, s := range d.TXT {
		if err := CheckText("dns.txt["+fmt.Sprint(i)+"]", s, 4*MaxStringLen); err != nil {
			return err
		}
	}
	if len(d.NSIDHex) > 2*MaxNSIDBytes {
		return fmt.Errorf("%w: dns.nsid_hex longer than %d bytes", ErrInvalid, MaxNSIDBytes)
	}
	if _, err := hex.DecodeString(d.NSIDHex); err != nil {
		return fmt.Errorf("%w: dns.nsid_hex is not hex", ErrInvalid)
	}
	if err := CheckText("dns.nsid_text", d.NSIDText, MaxStringLen); err != nil {
		return err
	}
	if err := CheckText("dns.identity", d.Identity, 4*MaxStringLen); err != nil {
		return err
	}
	if d.Size < 0 || d.Size > 65535 {
		return fmt.Errorf("%w: dns.size %d out of range 0..65535", ErrInvalid, d.Size)
	}
	return nil
}

// CheckText checks a free-text field: at most max bytes, valid UTF-8, no NUL
// (PostgreSQL text cannot hold it) and no other control characters.
func CheckText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, field, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	}
	if !printable(s) {
		return fmt.Errorf("%w: %s contains control characters", ErrInvalid, field)
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Clip shortens hostile or long input to at most 64 bytes (plus an ellipsis)
// of valid UTF-8 before it is echoed in an error message.
func Clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
