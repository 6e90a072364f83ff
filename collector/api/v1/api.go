// Package api is version 1 of the wire contract between anyscope agents and
// the collector. It is a leaf package: agents import it without linking the
// collector's database code.
//
// An agent numbers every result it ever produces with a contiguous sequence
// number (1, 2, 3, … for its whole life, persisted across restarts) and
// uploads them in batches:
//
//	POST /api/v1/hello     body: Hello                          → Welcome
//	POST /api/v1/results   body: Batch (JSON, optionally gzip)  → Ack
//	GET  /api/v1/schedule                                       → Schedule
//
// Both carry "Authorization: Bearer <token>". The collector acknowledges a
// batch only after the results are committed; re-delivering a batch (or any
// result in it) is a no-op that is answered with success, so an agent simply
// re-sends whatever it has not seen acknowledged.
package api

import (
	"time"
)

// Paths served by the collector.
const (
	PathHello    = "/api/v1/hello"
	PathResults  = "/api/v1/results"
	PathSchedule = "/api/v1/schedule"
)

// Limits the collector enforces and agents respect when batching.
const (
	// MaxBatchResults is the largest number of results in one batch.
	MaxBatchResults = 5000
	// MaxBodyBytes caps a request body after decompression.
	MaxBodyBytes = 16 << 20
	// MaxStringLen caps names, identities and other free text fields.
	MaxStringLen = 255
	// MaxTXTStrings caps the number of TXT strings kept from one answer.
	MaxTXTStrings = 16
	// MaxNSIDBytes caps a decoded NSID (the EDNS option payload).
	MaxNSIDBytes = 255
)

// Batch is one upload from an agent.
type Batch struct {
	// Agent is the agent's name; it must match the token's agent.
	Agent string `json:"agent"`
	// BatchSeq numbers the agent's upload attempts (informational, for logs).
	BatchSeq uint64 `json:"batch_seq"`
	// Results, in any order; each carries its own sequence number.
	Results []Result `json:"results"`
}

// Kind is the probe kind that produced a result.
type Kind string

// Probe kinds. Later kinds (ping, trace, tcp, http) are added here.
const (
	KindDNS Kind = "dns"
)

// Transport is the protocol a probe used to reach the target.
type Transport string

// Transports.
const (
	TransportUDP Transport = "udp"
	TransportTCP Transport = "tcp"
)

// DNS identity queries.
const (
	QueryHostnameBind = "hostname.bind" // CH TXT hostname.bind.
	QueryIDServer     = "id.server"     // CH TXT id.server.
	QueryNSID         = "nsid"          // an IN query carrying an empty EDNS NSID option
)

// Result is one measurement: one probe transaction from one agent to one
// address of one target.
type Result struct {
	// Seq is the agent's contiguous sequence number, starting at 1.
	Seq uint64 `json:"seq"`
	// Round groups the results measured together in one probe round (one
	// target address, every transport and query): it is the Seq of the
	// round's first result, or 0 when unknown. Analysis compares answers of
	// one round (e.g. CHAOS against NSID) only within it.
	Round uint64 `json:"round,omitempty"`
	// MeasuredAt is when the probe was sent (UTC).
	MeasuredAt time.Time `json:"measured_at"`
	// Target is the target's name as given in the schedule.
	Target string `json:"target"`
	// Address is the anycast address probed (IPv4 or IPv6, no zone).
	Address string `json:"address"`
	// Kind and Transport say which probe ran and how.
	Kind      Kind      `json:"kind"`
	Transport Transport `json:"transport"`
	// Query names the variant within a kind (for DNS: QueryHostnameBind,
	// QueryIDServer or QueryNSID).
	Query string `json:"query"`
	// RTTMicros is the round-trip time in microseconds; 0 when the probe failed
	// before an answer arrived.
	RTTMicros int64 `json:"rtt_us,omitempty"`
	// Failure is empty on success, otherwise one of the classified failures.
	Failure Failure `json:"failure,omitempty"`
	// DNS holds what a DNS probe measured (nil for other kinds, and may be nil
	// when the probe failed before any answer).
	DNS *DNSValues `json:"dns,omitempty"`
}

// DNSValues is what one DNS identity transaction measured.
type DNSValues struct {
	// Rcode is the response code mnemonic, e.g. "NOERROR", "REFUSED".
	Rcode string `json:"rcode,omitempty"`
	// TXT holds the TXT strings of the answer, in order.
	TXT []string `json:"txt,omitempty"`
	// NSID is the raw NSID option payload, hex-encoded exactly as received
	// on the wire (decoded from miekg/dns's representation).
	NSIDHex string `json:"nsid_hex,omitempty"`
	// NSIDText is the NSID payload as text when it is printable, else empty.
	NSIDText string `json:"nsid_text,omitempty"`
	// Identity is the string that names the server: the first TXT string for
	// CHAOS queries, NSIDText (or NSIDHex) for NSID queries.
	Identity string `json:"identity,omitempty"`
	// Size is the size of the response in bytes.
	Size int `json:"size,omitempty"`
}

// Ack answers a successful POST of a batch. Duplicates are results the
// collector already had; both counts together equal len(Batch.Results).
type Ack struct {
	BatchSeq   uint64 `json:"batch_seq"`
	Accepted   int    `json:"accepted"`
	Duplicates int    `json:"duplicates"`
}

// Hello is what an agent says when it starts: who it is and, when its
// configuration says so, where it stands (the collector records it).
type Hello struct {
	Agent    string    `json:"agent"`
	Version  string    `json:"version,omitempty"`
	Location *Location `json:"location,omitempty"`
}

// Location places a vantage point.
type Location struct {
	Latitude  float64 `json:"lat"`
	Longitude float64 `json:"lon"`
	Provider  string  `json:"provider,omitempty"`
	Region    string  `json:"region,omitempty"`
}

// Welcome answers Hello. LastSeq is the highest sequence number the
// collector holds for the agent: an agent whose spool was lost continues
// after it instead of numbering two measurements alike.
type Welcome struct {
	Agent   string `json:"agent"`
	LastSeq uint64 `json:"last_seq"`
}

// Error is the body of every non-2xx answer from the collector.
type Error struct {
	Error string `json:"error"`
}

// Schedule is what an agent measures: its targets, probes and intervals.
type Schedule struct {
	Agent       string           `json:"agent"`
	GeneratedAt time.Time        `json:"generated_at"`
	Targets     []ScheduleTarget `json:"targets"`
}

// ScheduleTarget is one target in a schedule.
type ScheduleTarget struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
	Probes    []Kind   `json:"probes"`
	// IntervalSeconds is the mean time between two rounds of each probe.
	IntervalSeconds float64 `json:"interval_s"`
	// NSIDQName is the name asked (class IN, type SOA) to elicit an NSID;
	// "." when empty.
	NSIDQName string `json:"nsid_qname,omitempty"`
}
