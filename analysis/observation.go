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
