package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
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
	if len(b.Results) == 0 {
		return fmt.Errorf("%w: batch has no results", ErrInvalid)
	}
	if len(b.Results) > MaxBatchResults {
		return fmt.Errorf("%w: batch has %d results, at most %d allowed", ErrInvalid, len(b.Results), MaxBatchResults)
	}
	for i := range b.Results {
		if err := b.Results[i].Validate(); err != nil {
			return fmt.Errorf("results[%d]: %w", i, err)
		}
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
	switch r.Kind {
	case KindDNS:
		switch r.Query {
		case QueryHostnameBind, QueryIDServer, QueryNSID:
		default:
			return fmt.Errorf("%w: query %q is not a DNS identity query", ErrInvalid, Clip(r.Query))
		}
	default:
		return fmt.Errorf("%w: kind %q", ErrInvalid, Clip(string(r.Kind)))
	}
	switch r.Transport {
	case TransportUDP, TransportTCP:
	default:
		return fmt.Errorf("%w: transport %q", ErrInvalid, Clip(string(r.Transport)))
	}
	if r.RTTMicros < 0 || r.RTTMicros > MaxRTT.Microseconds() {
		return fmt.Errorf("%w: rtt_us %d out of range 0..%d", ErrInvalid, r.RTTMicros, MaxRTT.Microseconds())
	}
	if !r.Failure.Valid() {
		return fmt.Errorf("%w: failure %q is not a classified failure", ErrInvalid, Clip(string(r.Failure)))
	}
	if r.DNS != nil {
		if err := r.DNS.validate(); err != nil {
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
