// Package incident finds, in one streaming pass over observations, the
// periods during which an anycast service stopped answering some of its
// vantage points, and says why: a black-holed site, a global outage, or a
// vantage point whose own network broke.
//
// A site that keeps announcing the prefix while its service is dead swallows
// the traffic of its whole catchment ("heartbeat" failure, RFC 4786): the
// vantage points whose last known site was S all fail at about the same
// time, the others keep answering, and traceroutes from the victims still
// reach S's upstream. A site that withdraws its route is not an incident:
// its vantage points answer from other sites. A vantage point that stops
// reporting (an upload gap) is neither: no observation is not a failure.
//
// # What is a failure
//
// Only DNS, HTTP and session observations decide health. A success is any
// answer (api.Failure.Responsive: an error rcode such as REFUSED proves the
// server alive; a session counts as answered when it got a first answer,
// however it ended later). A failure is a non-response: timeout, host or
// network unreachable, connection refused, reset or closed before an answer,
// garbage (dns_bogus_answer). Agent-side faults (not_allowed,
// permission_denied, probe_panic, unknown_failure) say nothing about the
// network and are ignored, like ping observations. Traceroute observations
// only contribute their PathEnd.
//
// # Per (vantage point, target, address): healthy, suspect, failing
//
// Each stream (kind, transport, query) learns its probe interval: the mean
// of its last 16 spacings, leaving out pauses (more than 8 times their lower
// median: upload gaps, restarts) and bursts, so anyscope agents (10 s,
// Poisson-scheduled) and RIPE Atlas probes (240 s) are judged on their own
// clocks; Config.Interval serves until a stream has two observations. Any
// answer on any stream makes the pair healthy and resets every stream's
// count of consecutive failures; the first failure after an answer makes it
// suspect and starts its failure. It becomes failing once every stream that
// reported since that start has failed MinFailures times in a row (a stream
// probed at least twice as slowly as the fastest: once), so a round half
// failed (UDP lost, TCP answering) never counts. The pair keeps the site of
// its last answer that named one. It is recent while its last observation
// is no older than six of its intervals on the clock of its address (the
// latest observation of that target and address), so silence freezes state
// instead of changing it.
//
// # Verdicts
//
// Each (target, address) is re-evaluated at most every half interval while
// something in it is suspect, failing or in an incident, and when Incidents
// is called; an incident is reported about MinFailures intervals after its
// first failure (with the default MinFailures, within three). The catchment of site S is the recent pairs
// whose last site is S, vantage points in a vantage_point incident left out.
// Site S is down when at least MinVantagePoints and CatchmentShare of its
// catchment are failing.
//
//   - vantage_point: every pair of the vantage point recent on its own clock
//     is failing, and the failure is its own. For each pair, the other
//     vantage points of the same site and address contradict (one answered
//     at or after the pair became failing), corroborate (one is suspect or
//     failing), have not reported since (undecided), or do not exist
//     (alone). Any contradiction makes it a vantage_point incident; else any
//     corroboration makes it a site or target failure; else an undecided
//     pair postpones the verdict, and any black hole of that site with it.
//     When every pair is alone: pairs at two or more (target, site)
//     combinations make it a vantage_point incident unless another vantage
//     point of those addresses is failing too; pairs at one (target, site)
//     are told apart by traceroutes: if those taken during the failure no
//     longer end at any hop where healthy ones ended (or end nowhere), it is
//     a vantage_point incident; if they still do (the site's upstream is
//     reached) or there are none, it is a one-vantage-point catchment that
//     may be a black hole, whose note says the vantage point's own network
//     cannot be ruled out (a vantage point that traces waits up to six
//     intervals for a trace taken during the failure). Pairs already in a
//     black hole or an outage are explained by it and are not judged. The
//     incident names the target, and the address, when the vantage point
//     measured only one lately. A vantage point failing towards some of its
//     addresses only (one address family, say) while its site answers others
//     is not reported.
//   - outage: at least MinVantagePoints and OutageShare of the recent pairs
//     of the address are failing and at least two sites (or every site seen,
//     or the only one) are down: one incident, Site "". A black hole of the
//     address that began at most three intervals earlier is merged into it
//     (it was the outage's first sign); while it is open, no black hole of
//     the address opens.
//   - blackhole: site S is down, no outage of the address is open, a vantage
//     point of another site (or of none known) answered at or after the
//     moment S's first pair became failing, no verdict on a member is
//     postponed, and S was not withdrawn: fewer vantage points left S for
//     another site (after at least three answers from S), from two intervals
//     before the start on, than are failing at S — a withdrawal with a few
//     stragglers is not a black hole. One incident per site.
//
// # Life of an incident
//
// Start is the first failed observation of its members, ignoring failures
// that began more than six intervals before the latest founding member's
// (a vantage point that had been failing there for reasons of its own does
// not date the incident; its earlier failures are not counted either). A
// failing pair of the site (black hole) or address (outage) joins the open
// incident. A member leaves when it answers, from any site; the incident
// ends when its last member answers, End being that answer's time. Members
// still failing or silent six intervals after the last answer are let go:
// the incident ends at that answer and they are judged anew. A
// vantage_point incident ends at the vantage point's first answer. An
// incident that re-opens less than two intervals after it ended is the same
// incident (flapping).
//
// Evidence: Failed counts the members' failed observations since their
// failures began (a member failing since before Start: from when it joined),
// up to End; Healthy counts the recent
// vantage points (of other sites, for a black hole) that answered at or after
// Start, as last evaluated before the first member recovered (for a
// vantage_point incident: the most of any of its sites); CatchmentSize is the
// site's catchment when the black hole opened (or its members, if more);
// PathEnds holds at most MaxPathEnds traceroute path ends seen from members
// while failing.
//
// State is kept per (vantage point, target, address) and per stream, never
// per observation; names are interned to integers.
package incident
