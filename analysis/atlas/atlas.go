// Package atlas imports RIPE Atlas measurement results, so that the same
// analysis (catchments, switches, black holes) runs over Atlas probes as over
// anyscope's own agents.
//
// RIPE Atlas publishes every result as one JSON object: the API returns a
// JSON array of them, the daily dumps hold one object per line (JSON lines).
// Each object names its measurement (msm_id), its probe (prb_id), when it
// ran (timestamp) and its type:
//
//   - "dns": a DNS query, with either a "result" (rt in ms, size, abuf: the
//     answer in wire format, base64; answers: [{TYPE, NAME, RDATA}] where
//     RDATA is a string before firmware 4750 and a list of strings from 4750
//     on) or an "error" ({"timeout": 5000}, {"socket": "connect failed …"}).
//     Some measurements (those asking the probe's own resolvers) put one such
//     result per server in "resultset" instead. The CHAOS TXT answer to
//     hostname.bind names the server; the EDNS NSID option (RFC 5001) is
//     only in abuf, so abuf is decoded with miekg/dns.
//   - "traceroute": "result" lists hops, each with the replies to its probe
//     packets: {from, rtt, size, ttl} or {"x": "*"} for no reply; paris_id is
//     the flow identifier of a Paris traceroute (0: classic traceroute).
//   - "ping": sent, rcvd, min/avg/max in ms and one entry per packet.
//
// A Parser streams such a file (array or JSON lines, detected by the first
// byte, plain, gzip or bzip2) without holding more than one bounded record in
// memory and turns each record into collector/api/v1 results, exactly as an
// anyscope agent would have reported the same transaction: DNS results carry
// the TXT identity, the NSID (hex and text) and the rcode; a CHAOS answer
// that also carries an NSID yields a second result for the NSID query, in
// the same round. Everything from the file is untrusted: identities are
// escaped and bounded like the agent's, every result passes
// api.Result.Validate, and records that do not parse (bad JSON, wrong types,
// missing fields, bad abuf) are reported with their position and skipped
// without stopping the rest.
//
// Which identity query a DNS result answers (api.QueryHostnameBind or
// api.QueryIDServer for CHAOS TXT, api.QueryNSID for any question of another
// class) is read from abuf's or qbuf's question or the answer's name; a
// result that shows none (an error) takes the question its measurement
// showed earlier in the input (one measurement asks one question), that of
// the built-in hostname.bind measurements (msm 103xx, 113xx), or
// Options.Query, and is skipped otherwise. Other CHAOS questions
// (version.bind) and classic (non-Paris) traceroutes are skipped, and
// counted.
//
// Sequence numbers are a hash of what identifies a result (measurement,
// probe, time, position in the record, query), so importing the same file
// twice stores nothing twice. An Importer feeds the results to a Store per
// vantage point ("atlas-<prb_id>") and target, in batches.
package atlas

import (
	"errors"
	"fmt"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Limits of the parser (Options.MaxRecordBytes changes the first).
const (
	// DefaultMaxRecordBytes bounds one record: Atlas records are a few
	// kilobytes (a long traceroute some tens), anything larger is reported as
	// malformed without being held in memory.
	DefaultMaxRecordBytes = 1 << 20
	// maxDepth bounds the nesting of a record: Atlas records nest about six
	// levels deep.
	maxDepth = 64
	// maxAbufBytes bounds a decoded DNS message.
	maxAbufBytes = 65535
	// maxResultset bounds the entries of a DNS resultset.
	maxResultset = 256
)

// Errors callers branch on.
var (
	// ErrMalformed is wrapped by the error of every record that could not be
	// read; parsing goes on with the next record.
	ErrMalformed = errors.New("malformed record")
)

// Position says where a record starts in its input.
type Position struct {
	// Record is the record's index in the input, from 0.
	Record int64
	// Offset is the byte offset of its first byte in the (decompressed)
	// input, from 0.
	Offset int64
	// Line is the line its first byte is on, from 1.
	Line int64
}

func (p Position) String() string {
	return fmt.Sprintf("record %d (line %d, byte %d)", p.Record, p.Line, p.Offset)
}

// MalformedError reports a record that could not be read.
type MalformedError struct {
	// Input names the input the record is in, when the importer knows it.
	Input    string
	Position Position
	// Reason says what is wrong, with any untrusted text quoted and clipped.
	Reason string
}

func (e *MalformedError) Error() string {
	if e.Input != "" {
		return fmt.Sprintf("atlas: %s: %s: %s", e.Input, e.Position, e.Reason)
	}
	return fmt.Sprintf("atlas: %s: %s", e.Position, e.Reason)
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *MalformedError) Unwrap() error { return ErrMalformed }

// Record is one Atlas result and what it became.
type Record struct {
	Position Position
	// Type is the Atlas result type ("dns", "traceroute", "ping", or another
	// one that was skipped).
	Type    string
	MsmID   int64
	ProbeID int64
	// Time is the record's timestamp (UTC).
	Time time.Time
	// DstName is the destination's name as Atlas gave it (untrusted, may be
	// empty).
	DstName string
	// Results are the record's results, all of one round, valid except that
	// their Target is empty: the importer names it (see TargetName).
	Results []api.Result
	// Skipped says why the record, or a part of it (e.g. one entry of a DNS
	// resultset), gave no result. Reasons are short fixed strings, fit to
	// count by.
	Skipped []string
}

// Skip reasons.
const (
	SkipType          = "result type not imported"
	SkipQueryUnknown  = "dns: query not known (no abuf, qbuf or answer names it)"
	SkipQueryChaos    = "dns: CHAOS query other than hostname.bind or id.server"
	SkipNoAddress     = "no destination address (the probe reported an error)"
	SkipProto         = "protocol not imported"
	SkipNotParis      = "traceroute: not Paris (paris_id 0 or missing)"
	SkipEmptyResponse = "dns: resultset entry with neither result nor error"
)

// VantagePointName is the name of the anyscope vantage point standing for
// an Atlas probe.
func VantagePointName(probeID int64) string {
	return fmt.Sprintf("atlas-%d", probeID)
}
