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
//
// Results an agent loses before upload (its spool full, a segment damaged)
// travel as gaps in the same batches: every sequence number from 1 to the
// highest is either a stored result or inside a stored gap.
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
	// MaxBatchGaps is the largest number of gaps in one batch.
	MaxBatchGaps = 1000
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
	// Gaps are runs of sequence numbers whose results the agent lost
	// before it could upload them (see Gap). A batch may carry gaps and no
	// results.
	Gaps []Gap `json:"gaps,omitempty"`
}

// GapReason says why an agent lost results before uploading them. The set
// is closed and part of the stored data.
type GapReason string

// Gap reasons.
const (
	// GapSpoolFull: the spool reached its size limit and its oldest
	// results were dropped to make room for new ones.
	GapSpoolFull GapReason = "spool_full"
	// GapSegmentLost: a spool segment was missing or unreadable when the
	// agent started (deleted, or damaged from its start).
	GapSegmentLost GapReason = "segment_lost"
	// GapRecordCorrupt: a spooled result no longer read back correctly
	// when the agent went to upload it.
	GapRecordCorrupt GapReason = "record_corrupt"
)

// GapReasons lists every gap reason.
var GapReasons = []GapReason{GapSpoolFull, GapSegmentLost, GapRecordCorrupt}

// Valid reports whether r is one of GapReasons.
func (r GapReason) Valid() bool {
	switch r {
	case GapSpoolFull, GapSegmentLost, GapRecordCorrupt:
		return true
	}
	return false
}

// Gap is a run of an agent's sequence numbers, FirstSeq to LastSeq, whose
// results were lost at the agent and will never arrive: Count of them (at
// most the length of the run; less when the run also covers results that
// were delivered). Lost data is missing data, never a failure of the
// measured service. LostFrom and LostTo bound when the lost results were
// measured: exactly for a full spool, from the neighbouring results for a
// lost segment; either is zero when unknown. The collector stores a gap
// once per (agent, FirstSeq); re-delivering it is a no-op, and a wider gap
// with the same FirstSeq (the agent kept dropping before the first one was
// acknowledged) replaces a narrower one.
type Gap struct {
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Count    uint64    `json:"count"`
	LostFrom time.Time `json:"lost_from,omitzero"`
	LostTo   time.Time `json:"lost_to,omitzero"`
	Reason   GapReason `json:"reason"`
}

// Kind is the probe kind that produced a result.
type Kind string

// Probe kinds.
const (
	// KindDNS: one DNS identity transaction (CHAOS TXT or NSID).
	KindDNS Kind = "dns"
	// KindPing: a series of ICMP echo requests; Ping holds the summary.
	KindPing Kind = "ping"
	// KindTrace: a Paris traceroute (constant flow identifier); Trace holds
	// the hops.
	KindTrace Kind = "trace"
	// KindSession: one long-lived connection (DNS over TCP, or HTTP
	// keep-alive) carrying identity queries at a fixed interval until it ends;
	// Session holds its life.
	KindSession Kind = "session"
	// KindHTTP: one HTTP(S) request whose answer names the serving site
	// (a header or body pattern); HTTP holds status, identity and timings.
	KindHTTP Kind = "http"
)

// Kinds lists every probe kind.
var Kinds = []Kind{KindDNS, KindPing, KindTrace, KindSession, KindHTTP}

// Transport is the protocol a probe used to reach the target.
type Transport string

// Transports.
const (
	TransportUDP  Transport = "udp"
	TransportTCP  Transport = "tcp"
	TransportICMP Transport = "icmp"
)

// Queries: the variant of a probe kind.
const (
	// DNS identity queries.
	QueryHostnameBind = "hostname.bind" // CH TXT hostname.bind.
	QueryIDServer     = "id.server"     // CH TXT id.server.
	QueryNSID         = "nsid"          // an IN query carrying an empty EDNS NSID option

	QueryEcho = "echo" // ping

	// Traceroute methods; the transport says which packets probe.
	QueryParis = "paris" // constant flow identifier for every TTL

	// Session protocols.
	QuerySessionDNS  = "dns"  // DNS over TCP (RFC 7766, keepalive RFC 7828), CHAOS+NSID queries
	QuerySessionHTTP = "http" // HTTP/1.1 keep-alive, identity from the configured header

	// HTTP methods.
	QueryGet  = "GET"
	QueryHead = "HEAD"
)

// validQueries are the (kind, transport, query) combinations a result may carry.
var validQueries = map[Kind]map[Transport][]string{
	KindDNS:     {TransportUDP: {QueryHostnameBind, QueryIDServer, QueryNSID}, TransportTCP: {QueryHostnameBind, QueryIDServer, QueryNSID}},
	KindPing:    {TransportICMP: {QueryEcho}},
	KindTrace:   {TransportUDP: {QueryParis}, TransportICMP: {QueryParis}, TransportTCP: {QueryParis}},
	KindSession: {TransportTCP: {QuerySessionDNS, QuerySessionHTTP}},
	KindHTTP:    {TransportTCP: {QueryGet, QueryHead}},
}

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
	// when the probe failed before any answer). Exactly the field of the
	// result's kind may be set.
	DNS     *DNSValues     `json:"dns,omitempty"`
	Ping    *PingValues    `json:"ping,omitempty"`
	Trace   *TraceValues   `json:"trace,omitempty"`
	Session *SessionValues `json:"session,omitempty"`
	HTTP    *HTTPValues    `json:"http,omitempty"`
}

// PingValues summarise one ping series. RTTs are in microseconds.
type PingValues struct {
	Sent     int   `json:"sent"`
	Received int   `json:"received"`
	MinUS    int64 `json:"min_us,omitempty"`
	AvgUS    int64 `json:"avg_us,omitempty"`
	MaxUS    int64 `json:"max_us,omitempty"`
	StddevUS int64 `json:"stddev_us,omitempty"`
	// ReplyTTL is the TTL (hop limit) of the last reply: it hints at how
	// many hops away the answering site is.
	ReplyTTL int `json:"reply_ttl,omitempty"`
	// Privileged says whether a raw socket was used (else an unprivileged
	// ICMP datagram socket).
	Privileged bool `json:"privileged,omitempty"`
}

// TraceValues is one Paris traceroute.
type TraceValues struct {
	// Flow is the flow identifier held constant for every TTL, e.g.
	// "udp sport=33000 dport=33435" or "icmp id=4242 checksum=0xbeef".
	Flow string `json:"flow"`
	// Engine is the implementation ("anyscope" or "scamper").
	Engine string `json:"engine,omitempty"`
	// Hops, one per probe sent, ordered by TTL then attempt.
	Hops []TraceHop `json:"hops"`
	// Reached is true when the destination itself answered.
	Reached bool `json:"reached"`
	// Stop says why the trace ended: "reached", "unreachable", "gap_limit",
	// "max_ttl", "timeout".
	Stop string `json:"stop"`
}

// TraceHop is one probe of a traceroute and its answer.
type TraceHop struct {
	TTL     int `json:"ttl"`
	Attempt int `json:"attempt,omitempty"`
	// Addr is the address that answered; empty for a star (no answer:
	// rate-limited or filtered, not a black hole).
	Addr     string `json:"addr,omitempty"`
	RTTUS    int64  `json:"rtt_us,omitempty"`
	ICMPType int    `json:"icmp_type,omitempty"`
	ICMPCode int    `json:"icmp_code,omitempty"`
	ReplyTTL int    `json:"reply_ttl,omitempty"`
	MPLS     []MPLS `json:"mpls,omitempty"`
}

// MPLS is one label stack entry from an ICMP extension (RFC 4950).
type MPLS struct {
	Label uint32 `json:"label"`
	TC    uint8  `json:"tc"`
	S     bool   `json:"s"`
	TTL   uint8  `json:"ttl"`
}

// Session ends.
const (
	EndServerClose     = "server_close"     // orderly close (FIN) by the server: not a switch
	EndReset           = "reset"            // RST: typical when packets reach a site without state
	EndTimeout         = "timeout"          // answers stopped: silently dropped or black-holed
	EndIdentityChanged = "identity_changed" // another server answered on the same connection
	EndLifeEnded       = "life_ended"       // the agent closed it at the end of its configured life
	EndConnectFailed   = "connect_failed"   // no connection at all (see Failure)
	EndError           = "error"            // a malformed answer or another error (see Failure)
)

// SessionValues describe one long-lived connection, from connect to end.
type SessionValues struct {
	OpenedAt time.Time `json:"opened_at"`
	ClosedAt time.Time `json:"closed_at"`
	// Queries sent and Answers received on this connection, in order.
	Queries int             `json:"queries"`
	Answers []SessionAnswer `json:"answers,omitempty"`
	// End says how the connection ended (End* constants).
	End string `json:"end"`
}

// SessionAnswer is one identity answer on a session.
type SessionAnswer struct {
	At       time.Time `json:"at"`
	Identity string    `json:"identity"`
	RTTUS    int64     `json:"rtt_us,omitempty"`
}

// HTTPValues is what one HTTP identity request saw.
type HTTPValues struct {
	Scheme string `json:"scheme"` // http or https
	Host   string `json:"host,omitempty"`
	Status int    `json:"status,omitempty"`
	// Identity is the site-naming string extracted (by the target's header
	// or body rule); Source says where it came from, e.g. "header:CF-Ray".
	Identity string `json:"identity,omitempty"`
	Source   string `json:"source,omitempty"`
	// Timings from the start of the request, in microseconds.
	ConnectUS   int64 `json:"connect_us,omitempty"`
	TLSUS       int64 `json:"tls_us,omitempty"`
	FirstByteUS int64 `json:"first_byte_us,omitempty"`
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
// Gaps counts the batch's gaps the collector holds (new or already known):
// len(Batch.Gaps).
type Ack struct {
	BatchSeq   uint64 `json:"batch_seq"`
	Accepted   int    `json:"accepted"`
	Duplicates int    `json:"duplicates"`
	Gaps       int    `json:"gaps,omitempty"`
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
	// HTTP says how to ask an HTTP target who it is (for the http and
	// session probes); nil for DNS-only targets.
	HTTP *HTTPSpec `json:"http,omitempty"`
	// SessionLifeSeconds is how long a long-lived session is kept open
	// before the agent closes it and reconnects (0: the agent's default).
	SessionLifeSeconds float64 `json:"session_life_s,omitempty"`
}

// HTTPSpec tells the HTTP probes how to reach a target and where its site is.
type HTTPSpec struct {
	Scheme string `json:"scheme"`           // http or https
	Port   int    `json:"port,omitempty"`   // 0: 80 or 443
	Host   string `json:"host,omitempty"`   // Host header and TLS SNI
	Path   string `json:"path,omitempty"`   // default "/"
	Method string `json:"method,omitempty"` // GET (default) or HEAD
	// Headers to read the identity from, in order (e.g. "X-Served-By",
	// "CF-Ray"); BodyPattern is a regexp with one group applied to the
	// body's first 64 KiB when no header matched (e.g. "(?m)^colo=(\w+)$").
	Headers     []string `json:"headers,omitempty"`
	BodyPattern string   `json:"body_pattern,omitempty"`
}
