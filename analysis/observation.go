// Package analysis turns stored measurements into answers: which site serves
// each vantage point (catchment), who moved and when (switches). Its
// subpackages are pure functions over the plain structs defined here; the
// store implements Source, so analysis is table-tested without a database.
package analysis

import (
	"context"
	"net/netip"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Observation is one stored result as analysis sees it.
type Observation struct {
	VantagePoint string // agent name
	Target       string
	Address      netip.Addr
	Kind         api.Kind
	Transport    api.Transport
	Query        string
	At           time.Time
	// Round is non-zero when the source knows which results were measured
	// together (an anyscope agent's probe round); 0 means unknown.
	Round    uint64
	Failure  api.Failure
	Identity string // untrusted text from the network; empty when none
	RTT      time.Duration
	// PathEnd lists, for traceroute observations, the addresses of the last
	// responding hops before the destination (at most MaxPathEnd, nearest
	// the destination last); nil for other kinds or when none answered.
	PathEnd []netip.Addr
	// Session is set for session observations (one long-lived connection).
	Session *Session
}

// MaxPathEnd is the most hops an Observation's PathEnd keeps.
const MaxPathEnd = 3

// Session is how one long-lived connection to an anycast address lived.
// Observation.Identity holds the identity of its first answer.
type Session struct {
	ClosedAt time.Time
	// End is one of the api.End* constants (reset, timeout, server_close…).
	End string
	// LastIdentity is the identity of its last answer ("" when none).
	LastIdentity string
}

// Broke reports whether the connection ended the way a connection whose
// packets reached a site without its state ends: reset, silent timeout, or
// another server answering on it. A normal close is not a break.
func (s *Session) Broke() bool {
	return s != nil && (s.End == api.EndReset || s.End == api.EndTimeout || s.End == api.EndIdentityChanged)
}

// VantagePoint is where measurements come from: an anyscope agent or an
// imported probe (RIPE Atlas "atlas-<id>").
type VantagePoint struct {
	Name      string
	Latitude  float64
	Longitude float64
	HasCoords bool
	ASN       int    // 0 when unknown
	Country   string // ISO 3166 alpha-2, "" when unknown
}

// VantagePointSource is implemented by sources that know where their
// vantage points are (latency geography needs it).
type VantagePointSource interface {
	VantagePoints(ctx context.Context) ([]VantagePoint, error)
}

// Target is what analysis needs to know of a target: its operator-declared
// identity rules and site list, which win over built-in guesses.
type Target struct {
	Name      string
	Addresses []netip.Addr
	Rules     []Rule
	Sites     []Site
}

// Rule maps identity strings to a site code: Pattern is a regular expression
// matched against the identity; Site is a template expanded with its
// submatches (e.g. "${site}").
type Rule struct {
	Pattern string
	Site    string
}

// Site is a point of presence of an anycast service.
type Site struct {
	Code      string
	Name      string
	Latitude  float64
	Longitude float64
	HasCoords bool
}

// Source yields observations. Implementations call fn in ascending time order
// for each (vantage point, target, address, kind, transport, query) stream;
// fn returning an error stops the iteration and that error is returned.
type Source interface {
	Targets(ctx context.Context) ([]Target, error)
	Observations(ctx context.Context, since, until time.Time, target string, fn func(Observation) error) error
}
