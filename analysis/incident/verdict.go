package incident

import (
	"net/netip"

	"github.com/anyscope/anyscope/analysis"
)

// incident is an incident being built.
type incident struct {
	kind    analysis.IncidentKind
	g       *group   // address of a black hole or an outage
	siteIdx int32    // black hole's site in g
	v       *vantage // vantage_point incidents
	target  string   // as reported
	addr    netip.Addr
	site    string

	start, end int64
	interval   int64 // of its address or vantage point when opened
	members    map[int32]struct{}

	active       int // members (pairs, or the vantage point) still failing
	recovered    int
	lastRecovery int64
	reopened     bool
	dropped      bool // absorbed into an outage

	counts     [nClass]int
	tail       [nClass]int // of counts, since the last recovery
	healthy    int
	healthyNow int
	catchment  int
	ends       []netip.Addr

	// For the note.
	recentAtOpen, sitesDown, addresses int
	reaches, dies                      int
	why                                vpVerdict
}

// lastKey names an incident across flaps: kind and address and site, or
// the vantage point.
type lastKey struct {
	kind analysis.IncidentKind
	g    *group
	site int32
	vp   int32
}

func (in *incident) addEnds(ends []netip.Addr) {
	for _, a := range ends {
		if len(in.ends) == MaxPathEnds {
			return
		}
		dup := false
		for _, b := range in.ends {
			if a == b {
				dup = true
				break
			}
		}
		if !dup {
			in.ends = append(in.ends, a)
		}
	}
}

// evaluate re-judges g: its catchments, the vantage points failing
// everywhere among its pairs, its open incidents and new ones.
func (d *Detector) evaluate(g *group) {
	d.stamp++
	d.tally(g)
	if g.open > 0 {
		d.maintain(g) // members first: an incident explains their failures
	}
	if d.judgeVPs(g) {
		d.tally(g)
	}
	d.judge(g)
	g.nextEval = g.now + max(g.interval/2, minEval)
	g.dirty = g.open > 0 || g.failing+g.suspects > 0
}

// tally counts g's recent pairs per site and state, leaving out vantage
// points in a vantage_point incident.
func (d *Detector) tally(g *group) {
	for i := range g.sites {
		s := &g.sites[i]
		s.members, s.failing, s.suspect, s.healthy = 0, 0, 0, 0
		s.lastOK, s.minFailingAt = 0, 0
	}
	g.recent, g.failing, g.suspects = 0, 0, 0
	var sum int64
	for _, p := range g.pairs {
		if p.lastSeen == 0 || d.vps[p.vp].down {
			continue
		}
		iv := d.pairInterval(p)
		if g.now-p.lastSeen > recentIntervals*iv {
			continue
		}
		sum += iv
		s := &g.sites[p.site]
		s.members++
		g.recent++
		switch p.state {
		case failing:
			s.failing++
			g.failing++
			if s.minFailingAt == 0 || p.failingAt < s.minFailingAt {
				s.minFailingAt = p.failingAt
			}
		case suspect:
			s.suspect++
			g.suspects++
		default:
			s.healthy++
			s.lastOK = max(s.lastOK, p.lastOK)
		}
	}
	if g.recent > 0 {
		g.interval = sum / int64(g.recent)
	}
	g.tallied = g.now
}

// freshTally re-tallies g when its tally is older than half an interval.
func (d *Detector) freshTally(g *group) {
	if g.tallied == 0 || g.now-g.tallied > g.interval/2 {
		d.tally(g)
	}
}

// vpVerdict is what a vantage point failing everywhere is.
type vpVerdict uint8

const (
	vpSite      vpVerdict = iota // its sites' or target's failure, not its own
	vpPending                    // others of its sites have not reported since
	vpBroken                     // contradicted: others of its sites answer
	vpAlone                      // alone at several sites that nobody else sees fail
	vpTraceDies                  // alone at one site, traces cut before the upstream
)

// judgeVPs judges the vantage points of g's failing pairs that fail
// everywhere, opens vantage_point incidents and counts postponed verdicts
// per site. It reports whether an incident was opened.
func (d *Detector) judgeVPs(g *group) bool {
	for i := range g.sites {
		g.sites[i].pending = 0
	}
	opened := false
	for _, p := range g.pairs {
		if p.state != failing || p.inc != nil {
			continue
		}
		v := d.vps[p.vp]
		if v.down || !d.recent(p, g.now) {
			continue
		}
		if v.stamp != d.stamp {
			v.stamp = d.stamp
			d.checkVP(v)
			if !v.everywhere {
				v.pending = false
				continue
			}
			why := d.judgeVP(v)
			v.pending = why == vpPending
			if why >= vpBroken {
				d.openVP(v, why)
				opened = true
				continue
			}
		}
		if v.pending && !v.down {
			g.sites[p.site].pending++
		}
	}
	return opened
}

// current reports whether q is recent on its vantage point's clock.
func (d *Detector) current(v *vantage, q *pair) bool {
	return q.lastSeen > 0 && v.lastSeen-q.lastSeen <= recentIntervals*d.pairInterval(q)
}

// judgeVP applies the vantage_point rule (package documentation) to v,
// whose every current pair is failing.
func (d *Detector) judgeVP(v *vantage) vpVerdict {
	var contradicted, corroborated, undecided, othersFail, reaches, dies, waitTrace bool
	var first *pair
	combos := 0
	for _, q := range v.pairs {
		if !d.current(v, q) {
			continue
		}
		if q.state != failing || q.inc != nil {
			return vpSite // not failing everywhere, or explained by an incident
		}
		h := q.g
		d.freshTally(h)
		self := 0
		if d.recent(q, h.now) {
			self = 1
		}
		if q.site != 0 {
			st := &h.sites[q.site]
			switch {
			case st.healthy > 0 && st.lastOK >= q.failingAt:
				contradicted = true
			case st.failing+st.suspect-self > 0:
				corroborated = true
			case st.members-self > 0:
				undecided = true
			}
		}
		if h.failing+h.suspects-self > 0 {
			othersFail = true
		}
		switch {
		case first == nil:
			first, combos = q, 1
		case q.g.target != first.g.target || q.site == 0 || q.siteName != first.siteName:
			combos = 2
		}
		switch q.trace.verdict() {
		case traceReaches:
			reaches = true
		case traceDies:
			dies = true
		}
		if ts := q.trace; ts != nil && ts.nOK > 0 && !ts.badSeen && v.lastSeen-q.failStart <= recentIntervals*d.pairInterval(q) {
			waitTrace = true // it traces: wait a little for one during the failure
		}
	}
	switch {
	case first == nil:
		return vpSite
	case contradicted:
		return vpBroken
	case corroborated:
		return vpSite
	case undecided:
		return vpPending
	case combos >= 2 && !othersFail:
		return vpAlone
	case combos == 1 && dies && !reaches:
		return vpTraceDies
	case combos == 1 && !dies && !reaches && waitTrace:
		return vpPending
	}
	return vpSite
}

// openVP opens (or re-opens) the vantage_point incident of v.
func (d *Detector) openVP(v *vantage, why vpVerdict) {
	start, n, shortest := int64(0), 0, int64(0)
	var target string
	var addr netip.Addr
	oneTarget, oneAddr := true, true
	for _, q := range v.pairs {
		iv := d.pairInterval(q)
		if q.lastSeen == 0 || v.lastSeen-q.lastSeen > 2*recentIntervals*iv {
			continue // named only if it measured it lately
		}
		if q.state == failing && (start == 0 || q.failStart < start) {
			start = q.failStart
		}
		if shortest == 0 || iv < shortest {
			shortest = iv
		}
		if n == 0 {
			target, addr = q.g.target, q.g.addr
		} else {
			oneTarget = oneTarget && q.g.target == target
			oneAddr = oneAddr && q.g.target == target && q.g.addr == addr
		}
		n++
	}
	in := d.open(lastKey{kind: analysis.IncidentVantagePoint, vp: v.id}, start, shortest)
	if !in.reopened {
		in.v, in.why, in.addresses = v, why, n
		if oneTarget {
			in.target = target
		}
		if oneAddr {
			in.addr = addr
		}
	}
	in.members[v.id] = struct{}{}
	in.active = 1
	for _, q := range v.pairs {
		q.g.dirty = true
		if !d.current(v, q) {
			continue
		}
		for c, k := range q.counts {
			in.counts[c] += int(k)
		}
		if ts := q.trace; ts != nil && ts.badSeen {
			in.addEnds(ts.bad[:ts.nBad])
			switch ts.verdict() {
			case traceReaches:
				in.reaches++
			case traceDies:
				in.dies++
			}
		}
		if q.site != 0 {
			in.healthy = max(in.healthy, q.g.sites[q.site].healthy)
		}
	}
	v.down, v.inc = true, in
}

// endVP ends v's vantage_point incident at t (its first answer).
func (d *Detector) endVP(v *vantage, t int64) {
	d.finish(v.inc, t)
}

// open returns a new incident named key, or the previous one of that name
// when it ended less than mergeIntervals before start (flapping).
func (d *Detector) open(key lastKey, start, interval int64) *incident {
	if prev := d.last[key]; prev != nil && !prev.dropped && prev.end != 0 &&
		start >= prev.end && start-prev.end < mergeIntervals*prev.interval {
		prev.end, prev.reopened = 0, true
		return prev
	}
	in := &incident{kind: key.kind, start: start, interval: interval, members: make(map[int32]struct{})}
	d.incidents = append(d.incidents, in)
	d.last[key] = in
	return in
}

// openGroup opens a black hole (site > 0) or an outage of g.
func (d *Detector) openGroup(kind analysis.IncidentKind, g *group, si int32, start int64) *incident {
	in := d.open(lastKey{kind: kind, g: g, site: si}, start, g.interval)
	in.g, in.siteIdx, in.target, in.addr = g, si, g.target, g.addr
	if kind == analysis.IncidentBlackhole {
		in.site = g.sites[si].name
		g.sites[si].blackhole = in
	} else {
		g.outage = in
	}
	g.open++
	return in
}

// join makes the failing pair p a member of in.
func (d *Detector) join(in *incident, p *pair) {
	p.inc = in
	in.active++
	in.members[p.vp] = struct{}{}
	if p.failStart < in.start && p.failStart >= in.start-recentIntervals*in.interval {
		in.start = p.failStart // failed with the founders, confirmed later
	}
	if p.failStart >= in.start { // a chronic failer's past is not the incident's
		for c, k := range p.counts {
			in.counts[c] += int(k)
		}
	}
	if ts := p.trace; ts != nil && ts.badSeen {
		in.addEnds(ts.bad[:ts.nBad])
		switch ts.verdict() {
		case traceReaches:
			in.reaches++
		case traceDies:
			in.dies++
		}
	}
}

// recover records that a member of in answered at t.
func (d *Detector) recover(in *incident, t int64) {
	in.active--
	in.recovered++
	in.lastRecovery = max(in.lastRecovery, t)
	in.tail = [nClass]int{}
	if in.active <= 0 {
		d.finish(in, t)
	}
}

// finish ends in at t and lets its remaining members go.
func (d *Detector) finish(in *incident, t int64) {
	if in.end != 0 {
		return
	}
	in.end = t
	switch in.kind {
	case analysis.IncidentVantagePoint:
		in.v.inc, in.v.down = nil, false
		for _, q := range in.v.pairs {
			q.g.dirty = true
		}
	case analysis.IncidentOutage:
		in.g.outage = nil
		in.g.open--
	case analysis.IncidentBlackhole:
		in.g.sites[in.siteIdx].blackhole = nil
		in.g.open--
	}
	if in.g != nil && in.active > 0 {
		for _, p := range in.g.pairs {
			if p.inc == in {
				p.inc = nil
			}
		}
	}
	in.active = 0
}

// eligible reports whether p may found or join an incident of g.
func (d *Detector) eligible(g *group, p *pair) bool {
	return p.state == failing && p.inc == nil && !d.vps[p.vp].down && d.recent(p, g.now)
}

// maintain lets failing pairs join g's open incidents, updates their
// evidence and ends those whose remaining members, silent or still failing,
// linger long after the last one recovered.
func (d *Detector) maintain(g *group) {
	var buf [8]*incident
	open := buf[:0]
	if g.outage != nil {
		open = append(open, g.outage)
	}
	for i := range g.sites {
		if b := g.sites[i].blackhole; b != nil {
			open = append(open, b)
		}
	}
	for _, in := range open {
		in.healthyNow = 0
	}
	for _, p := range g.pairs {
		if p.inc != nil || d.vps[p.vp].down || !d.recent(p, g.now) {
			continue
		}
		switch p.state {
		case failing:
			if b := g.sites[p.site].blackhole; b != nil {
				d.join(b, p)
			} else if g.outage != nil {
				d.join(g.outage, p)
			}
		case healthy:
			for _, in := range open {
				if p.lastOK >= in.start && (in.kind == analysis.IncidentOutage || p.site != in.siteIdx) {
					in.healthyNow++
				}
			}
		}
	}
	for _, in := range open {
		if in.recovered == 0 {
			in.healthy = in.healthyNow
		}
		in.catchment = max(in.catchment, len(in.members))
		if in.kind == analysis.IncidentOutage {
			in.catchment = 0
		}
		if in.recovered > 0 && g.now-in.lastRecovery > lingerIntervals*g.interval {
			for c, k := range in.tail { // failures after its end
				in.counts[c] -= k
			}
			d.finish(in, in.lastRecovery)
		}
	}
}

// siteDown reports whether enough of s's catchment fails.
func (d *Detector) siteDown(s *site) bool {
	return s.failing >= d.cfg.MinVantagePoints && float64(s.failing) >= d.cfg.CatchmentShare*float64(s.members)
}

// judge opens g's new incidents: an outage, else black holes.
func (d *Detector) judge(g *group) {
	if g.failing < d.cfg.MinVantagePoints {
		return
	}
	down, known := 0, 0
	for i := 1; i < len(g.sites); i++ {
		s := &g.sites[i]
		if s.members == 0 {
			continue
		}
		known++
		if d.siteDown(s) {
			down++
		}
	}
	if g.outage == nil && float64(g.failing) >= d.cfg.OutageShare*float64(g.recent) && (down >= 2 || down == known) {
		d.openOutage(g, down)
	}
	if g.outage != nil {
		return
	}
	for i := 1; i < len(g.sites); i++ {
		s := &g.sites[i]
		if s.blackhole != nil || s.pending > 0 || !d.siteDown(s) {
			continue
		}
		start := d.onset(g, int32(i))
		if !othersAnswered(g, int32(i), max(s.minFailingAt, start)) || d.withdrawn(g, int32(i), s, start) {
			continue
		}
		d.openBlackhole(g, int32(i), start)
	}
}

// onset is when the eligible pairs of site si (of any site when si < 0)
// began failing: the earliest start of a failure no more than
// recentIntervals before the latest one, so that a vantage point failing
// there for its own reasons long before does not date the incident.
func (d *Detector) onset(g *group, si int32) int64 {
	latest := int64(0)
	for _, p := range g.pairs {
		if (si < 0 || p.site == si) && d.eligible(g, p) {
			latest = max(latest, p.failStart)
		}
	}
	start := latest
	for _, p := range g.pairs {
		if (si < 0 || p.site == si) && d.eligible(g, p) && p.failStart >= latest-recentIntervals*g.interval {
			start = min(start, p.failStart)
		}
	}
	return start
}

// othersAnswered reports whether a vantage point of another site than si
// (or of none known) answered at or after since.
func othersAnswered(g *group, si int32, since int64) bool {
	for j := range g.sites {
		if s := &g.sites[j]; int32(j) != si && s.healthy > 0 && s.lastOK >= since {
			return true
		}
	}
	return false
}

// withdrawn reports whether at least as many vantage points left site si
// for another (after answering from it minStreak times) since shortly
// before its failures began as are failing there: the site went away and a
// few stragglers did not follow.
func (d *Detector) withdrawn(g *group, si int32, s *site, start int64) bool {
	from := start - departIntervals*g.interval
	n := 0
	for _, p := range g.pairs {
		if p.movedFrom == si && p.site != si && p.movedAt >= from && p.movedStreak >= minStreak && d.recent(p, g.now) {
			n++
		}
	}
	return n > 0 && n >= s.failing
}

func (d *Detector) openBlackhole(g *group, si int32, start int64) {
	s := &g.sites[si]
	in := d.openGroup(analysis.IncidentBlackhole, g, si, start)
	in.catchment = max(in.catchment, s.members)
	for _, p := range g.pairs {
		if p.site == si && d.eligible(g, p) {
			d.join(in, p)
		}
	}
	in.healthy = d.countHealthy(g, in)
}

// countHealthy counts the recent pairs of g that answered at or after in's
// start: of other sites for a black hole, of any for an outage.
func (d *Detector) countHealthy(g *group, in *incident) int {
	n := 0
	for _, p := range g.pairs {
		if p.state == healthy && p.lastOK >= in.start && (in.kind == analysis.IncidentOutage || p.site != in.siteIdx) &&
			!d.vps[p.vp].down && d.recent(p, g.now) {
			n++
		}
	}
	return n
}

func (d *Detector) openOutage(g *group, down int) {
	start := d.onset(g, -1)
	if start == 0 {
		return // every failing pair is in a black hole already
	}
	in := d.openGroup(analysis.IncidentOutage, g, 0, start)
	if !in.reopened {
		in.recentAtOpen, in.sitesDown = g.recent, down
	}
	for _, p := range g.pairs {
		if d.eligible(g, p) {
			d.join(in, p)
		}
	}
	in.healthy = d.countHealthy(g, in)
	// A black hole that began shortly before was the outage's first sign.
	for i := range g.sites {
		b := g.sites[i].blackhole
		if b == nil || b.reopened || b.start < start-absorbIntervals*g.interval {
			continue
		}
		for _, p := range g.pairs {
			if p.inc == b {
				p.inc = in
			}
		}
		in.active += b.active
		in.recovered += b.recovered
		in.lastRecovery = max(in.lastRecovery, b.lastRecovery)
		in.start = min(in.start, b.start)
		for vp := range b.members {
			in.members[vp] = struct{}{}
		}
		for c, k := range b.counts {
			in.counts[c] += k
		}
		in.addEnds(b.ends)
		in.reaches += b.reaches
		in.dies += b.dies
		b.dropped, b.active = true, 0
		g.sites[i].blackhole = nil
		g.open--
		delete(d.last, lastKey{kind: analysis.IncidentBlackhole, g: g, site: int32(i)})
	}
}
