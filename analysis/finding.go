package analysis

import (
	"net/netip"
	"time"
)

// Cause is why a vantage point moved from one site to another.
type Cause string

// Switch causes.
const (
	// CauseWithdrawal: the site's whole catchment moved at about the same
	// time (the site stopped announcing, or its routes were withdrawn).
	CauseWithdrawal Cause = "withdrawal"
	// CauseRouting: this vantage point moved and stayed; the rest of the
	// site's catchment did not.
	CauseRouting Cause = "routing"
	// CauseLoadBalancing: the vantage point alternates between a fixed set
	// of sites while single flows (sessions) stay put.
	CauseLoadBalancing Cause = "load_balancing"
	// CauseUnknown: none of the above could be shown (for example the
	// window ends right after the switch).
	CauseUnknown Cause = "unknown"
)

// IncidentKind says what failed.
type IncidentKind string

// Incident kinds (the incidents table's CHECK constraint lists the same).
const (
	// IncidentBlackhole: the vantage points whose last site was Site fail
	// together while the others are fine: the site still attracts traffic
	// but does not answer.
	IncidentBlackhole IncidentKind = "blackhole"
	// IncidentOutage: (nearly) every vantage point of the target fails.
	IncidentOutage IncidentKind = "outage"
	// IncidentVantagePoint: one vantage point fails towards everything it
	// measures: its own network, not the service.
	IncidentVantagePoint IncidentKind = "vantage_point"
)

// Incident is a period during which something failed, with who saw it.
type Incident struct {
	Kind   IncidentKind
	Target string
	// Address is the anycast address concerned; invalid (zero) when the
	// incident spans every address of the target (vantage_point incidents
	// span every target and leave Target empty).
	Address netip.Addr
	// Site is the black-holed site ("" for other kinds).
	Site string
	// Start is the first failed observation; End the first observation
	// after it that succeeded again (zero while the incident is open).
	Start, End time.Time
	// VantagePoints lists the affected vantage points, sorted.
	VantagePoints []string
	Evidence      Evidence
}

// Open reports whether the incident has not ended.
func (i Incident) Open() bool { return i.End.IsZero() }

// Evidence is what an incident was inferred from.
type Evidence struct {
	// Failed counts failed observations of the affected vantage points
	// during the incident, by classified failure.
	Failed map[string]int `json:"failed,omitempty"`
	// Healthy counts vantage points that kept succeeding meanwhile (those
	// of other sites for a black hole).
	Healthy int `json:"healthy"`
	// CatchmentSize is how many vantage points the site served before
	// (black holes).
	CatchmentSize int `json:"catchment_size,omitempty"`
	// PathEnds are the last responding traceroute hops seen from affected
	// vantage points during the incident (a black hole's traces still end
	// in the site's upstream; a broken vantage point's die at its edge).
	PathEnds []netip.Addr `json:"path_ends,omitempty"`
	// Note explains the verdict in one sentence.
	Note string `json:"note,omitempty"`
}
