package api

// Failure is a classified probe failure. The set is closed and stored in
// PostgreSQL as text: analysis (black holes, outages, switches) keys on these
// values, never on Go error strings. The empty string means success.
type Failure string

// The closed set of failures.
const (
	FailureNone Failure = ""

	// Transport-level failures.
	FailureTimeout            Failure = "generic_timeout_error" // no answer before the deadline
	FailureConnectionRefused  Failure = "connection_refused"    // TCP RST on connect, ICMP port unreachable
	FailureConnectionReset    Failure = "connection_reset"      // RST on an established connection
	FailureConnectionClosed   Failure = "connection_closed"     // orderly close (EOF) before an answer
	FailureHostUnreachable    Failure = "host_unreachable"
	FailureNetworkUnreachable Failure = "network_unreachable"

	// DNS answers that carry no identity.
	FailureDNSBogus    Failure = "dns_bogus_answer" // unparsable, wrong ID or question, garbage
	FailureDNSRefused  Failure = "dns_refused"
	FailureDNSServfail Failure = "dns_servfail"
	FailureDNSNXDomain Failure = "dns_nxdomain"
	FailureDNSRcode    Failure = "dns_other_rcode" // any other non-NOERROR rcode
	FailureDNSNoAnswer Failure = "dns_no_answer"   // NOERROR but no identity (no TXT, no NSID)

	// Agent-side refusals and faults.
	FailureNotAllowed       Failure = "not_allowed" // address not on the agent's allow-list
	FailurePermissionDenied Failure = "permission_denied"
	FailurePanic            Failure = "probe_panic"
	FailureUnknown          Failure = "unknown_failure"
)

// Failures lists every valid non-empty Failure.
var Failures = []Failure{
	FailureTimeout, FailureConnectionRefused, FailureConnectionReset,
	FailureConnectionClosed, FailureHostUnreachable, FailureNetworkUnreachable,
	FailureDNSBogus, FailureDNSRefused, FailureDNSServfail, FailureDNSNXDomain,
	FailureDNSRcode, FailureDNSNoAnswer,
	FailureNotAllowed, FailurePermissionDenied, FailurePanic, FailureUnknown,
}

// Valid reports whether f is FailureNone or a member of the closed set.
func (f Failure) Valid() bool {
	if f == FailureNone {
		return true
	}
	for _, g := range Failures {
		if f == g {
			return true
		}
	}
	return false
}

// Responsive reports whether the result proves that the service answered at
// the address with a well-formed message (a DNS server that refused or sent an
// empty answer is alive). Black-hole analysis must not count these as "the
// site is dead". A refused connection is not responsive: it is what a site
// whose service stopped while its route stays up looks like.
func (f Failure) Responsive() bool {
	switch f {
	case FailureNone, FailureDNSRefused, FailureDNSServfail, FailureDNSNXDomain,
		FailureDNSRcode, FailureDNSNoAnswer:
		return true
	}
	return false
}
