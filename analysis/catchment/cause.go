package catchment

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Thresholds of the cause rules (documented on Accumulator.Switches).
const (
	// withdrawalShare, as a fraction num/den, is the least share of a
	// site's catchment that must leave together for a withdrawal.
	withdrawalNum, withdrawalDen = 4, 5
	// spanIntervals is the withdrawal span in typical probe intervals when
	// Config.WithdrawalSpan is zero.
	spanIntervals = 3
	// witnessSpans is how far back, in spans, a balancer's visit to a site
	// still witnesses that the site was there.
	witnessSpans = 3
	// minReturns and maxAlternating bound load balancing: returns to a site
	// already visited, among at most this many sites.
	minReturns     = 2
	maxAlternating = 4
	// minStay is how many resolved observations at To after the switch
	// show that a vantage point stayed (one suffices on the stream's last
	// switch).
	minStay = 2
)

// famKey names a stream family: the streams of every vantage point asking
// one question of one address of a target. Catchments move together within
// a family; the cause pass compares vantage points within one.
type famKey struct {
	target    string
	addr      netip.Addr
	kind      api.Kind
	transport api.Transport
	query     string
}

func familyOf(k StreamKey) famKey {
	return famKey{k.Target, k.Address, k.Kind, k.Transport, k.Query}
}

type siteKey struct {
	fam  famKey
	site string
}

// family is what the cause pass knows of one stream family.
type family struct {
	intervals []time.Duration // streams' mean probe intervals
	span      int64           // withdrawal span, nanoseconds
	end       int64           // the family's last observation, Unix nanoseconds
}

// timeline holds the stays of a family's vantage points at one site. A stay
// runs from a stream's first resolved observation at the site to its last
// one before it moves (or the data ends): the site was seen at both ends
// and, every probe interval, in between. Times are Unix nanoseconds.
type timeline struct {
	starts []int64 // stay starts, sorted
	maxEnd []int64 // maxEnd[i] is the latest end among the stays of starts[:i+1]
	ends   []int64 // stay ends, sorted
	stays  []stay  // collected, sorted by seal
}

type stay struct{ start, end int64 }

// openStay is a stream's latest stay at a site, while its stays are added.
type openStay struct {
	site string
	i    int // index in the site's timeline's stays
}

// addStay adds one stay of a stream at site to tl (nil: a site no switch
// concerns), or extends the stream's previous stay there when it left the
// site less than span before: a vantage point that comes back soon is one
// vantage point at the site, not two. open holds the stream's latest stay
// per site and is returned updated.
func addStay(open []openStay, tl *timeline, site string, start, end time.Time, span int64) []openStay {
	if tl == nil {
		return open
	}
	s, e := start.UnixNano(), end.UnixNano()
	for k := range open {
		if open[k].site != site {
			continue
		}
		if prev := &tl.stays[open[k].i]; s-prev.end < span {
			prev.end = e
		} else {
			tl.stays = append(tl.stays, stay{s, e})
			open[k].i = len(tl.stays) - 1
		}
		return open
	}
	tl.stays = append(tl.stays, stay{s, e})
	return append(open, openStay{site, len(tl.stays) - 1})
}

func (tl *timeline) seal() {
	slices.SortFunc(tl.stays, func(x, y stay) int { return cmp.Compare(x.start, y.start) })
	tl.starts = make([]int64, len(tl.stays))
	tl.maxEnd = make([]int64, len(tl.stays))
	tl.ends = make([]int64, len(tl.stays))
	var m int64
	for i, s := range tl.stays {
		if i == 0 || s.end > m {
			m = s.end
		}
		tl.starts[i], tl.maxEnd[i], tl.ends[i] = s.start, m, s.end
	}
	slices.Sort(tl.ends)
	tl.stays = nil
}

// seen reports whether some vantage point of the family was at the site at
// some time in [from, to].
func (tl *timeline) seen(from, to int64) bool {
	if from > to {
		return false
	}
	n, _ := slices.BinarySearch(tl.starts, to+1) // stays started by to
	return n > 0 && tl.maxEnd[n-1] >= from
}

// active counts the vantage points at the site at t: stays that started by
// t and were last seen no earlier than span before t (a vantage point that
// stopped answering a while ago no longer counts).
func (tl *timeline) active(t, span int64) int {
	started, _ := slices.BinarySearch(tl.starts, t+1)
	gone, _ := slices.BinarySearch(tl.ends, t-span)
	return started - gone
}

// startsIn counts the stays that started in [from, to].
func (tl *timeline) startsIn(from, to int64) int {
	lo, _ := slices.BinarySearch(tl.starts, from)
	hi, _ := slices.BinarySearch(tl.starts, to+1)
	return hi - lo
}

// lastBefore returns the last time before t the site was seen.
func (tl *timeline) lastBefore(t int64) (int64, bool) {
	n, _ := slices.BinarySearch(tl.ends, t)
	if n == 0 {
		return 0, false
	}
	return tl.ends[n-1], true
}

// verdict is what the cause pass found for one switch.
type verdict struct {
	fam                *family
	cohort, moved      int
	withdrawal, single bool
	witnessed          bool  // single: others (balancers) reached the site too
	inherited          bool  // the site's withdrawal (or return) was shown by another family
	lastLeft, after    int64 // last departure in the span; how long From stayed unseen after it (checked)
	restore            bool
	arrivals           int
	gap                int64 // how long To had been unseen before a restore
	returns, sites     int   // the stream's returns to visited sites, sites visited
	// balancer: the stream alternates among a few sites (per-flow load
	// balancing); it is no member of any one site's catchment, but still
	// a witness of whether a site answers.
	balancer bool
	// pairBalanced: some stream of the same vantage point and address is
	// a balancer.
	pairBalanced bool
	// explained counts the pair's broken sessions a withdrawal (or its
	// end) broke.
	explained int
}

// classify decides every switch's cause, FromCatchment, Moved and Evidence
// (rules on Switches). It costs O(S log S + streams) for S switches and
// runs again only when observations were added since.
func (a *Accumulator) classify() {
	if a.classifiedAt == a.stats.Added {
		return
	}
	a.classifiedAt = a.stats.Added
	if len(a.switches) == 0 {
		return
	}
	v := make([]verdict, len(a.switches))

	// The families and sites switches concern.
	fams := make(map[famKey]*family)
	lines := make(map[siteKey]*timeline)  // every stream's stays: is the site seen at all?
	cohort := make(map[siteKey]*timeline) // stays of streams that do not alternate: the site's catchment
	for i := range a.switches {
		sw := &a.switches[i]
		fk := familyOf(sw.stream.key)
		f := fams[fk]
		if f == nil {
			f = &family{}
			fams[fk] = f
		}
		v[i].fam = f
		for _, site := range [2]string{sw.From, sw.To} {
			if k := (siteKey{fk, site}); lines[k] == nil {
				lines[k], cohort[k] = &timeline{}, &timeline{}
			}
		}
	}

	// Each stream's switches, in stream creation order then time (a
	// stream's switches were appended in its time order).
	order := make([]int, len(a.switches))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int {
		if c := cmp.Compare(a.switches[x].stream.idx, a.switches[y].stream.idx); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	})

	// The families' probe intervals, hence their withdrawal spans, and
	// where their data ends.
	for _, s := range a.list {
		f := fams[familyOf(s.key)]
		if f == nil || !s.started {
			continue
		}
		f.end = max(f.end, s.last.UnixNano())
		if iv := s.interval(); iv > 0 && s.cur != "" {
			f.intervals = append(f.intervals, iv)
		}
	}
	for _, f := range fams {
		f.span = int64(a.withdrawalSpan(f.intervals))
	}

	// Stays of every stream of those families at those sites, and each
	// stream's alternation.
	var (
		visited       []string
		open, openAll []openStay
	)
	j := 0
	for _, s := range a.list {
		run := order[j : j+s.switches]
		j += s.switches
		if s.cur == "" {
			continue
		}
		fk := familyOf(s.key)
		f := fams[fk]
		if f == nil {
			continue
		}
		start, site := s.firstRes, s.cur
		if len(run) > 0 {
			site = a.switches[run[0]].From
		}
		// The stream's alternation first: it decides whether its stays
		// count in the catchments.
		visited = append(visited[:0], site)
		returns := 0
		for _, i := range run {
			if to := a.switches[i].To; slices.Contains(visited, to) {
				returns++
			} else {
				visited = append(visited, to)
			}
		}
		balancer := returns >= minReturns && len(visited) <= maxAlternating
		for _, i := range run {
			v[i].returns, v[i].sites, v[i].balancer = returns, len(visited), balancer
		}
		openAll, open = openAll[:0], open[:0]
		for _, i := range run {
			sw := &a.switches[i]
			openAll = addStay(openAll, lines[siteKey{fk, site}], site, start, sw.LastFrom, f.span)
			if !balancer {
				open = addStay(open, cohort[siteKey{fk, site}], site, start, sw.LastFrom, f.span)
			}
			start, site = sw.At, sw.To
		}
		addStay(openAll, lines[siteKey{fk, site}], site, start, s.curLast, f.span)
		if !balancer {
			addStay(open, cohort[siteKey{fk, site}], site, start, s.curLast, f.span)
		}
	}
	// A vantage point balanced per flow shows it on its frequent streams;
	// its rare ones (a session is one flow, one observation per
	// connection) switch too seldom to show it themselves.
	balancedPairs := map[*pair]bool{}
	for i := range a.switches {
		if v[i].balancer {
			balancedPairs[a.switches[i].stream.pair] = true
		}
	}
	for i := range a.switches {
		v[i].pairBalanced = balancedPairs[a.switches[i].stream.pair]
	}
	for _, tl := range lines {
		tl.seal()
	}
	for _, tl := range cohort {
		tl.seal()
	}

	// Departures from and arrivals at each site, per family, in time order.
	from := make(map[siteKey][]int)
	to := make(map[siteKey][]int)
	for i := range a.switches {
		if v[i].balancer {
			continue // its moves say nothing of the site's catchment
		}
		sw := &a.switches[i]
		fk := familyOf(sw.stream.key)
		from[siteKey{fk, sw.From}] = append(from[siteKey{fk, sw.From}], i)
		to[siteKey{fk, sw.To}] = append(to[siteKey{fk, sw.To}], i)
	}
	inWin := make(map[*stream]int)
	for k, idx := range from {
		a.sortByTime(idx)
		a.departures(idx, cohort[k], lines[k], v, inWin)
	}
	for k, idx := range to {
		a.sortByTime(idx)
		a.arrivals(idx, cohort[k], lines[k], v, inWin)
	}

	// A withdrawal is an event of the site: a vantage point's move away
	// from (or back to) a site that one family shows withdrawn (or back)
	// at the same time, for the same target, has that cause too, even where
	// its own family had nobody to witness it (the other address family,
	// another question).
	type siteEvent struct {
		target, site string
		back         bool
	}
	evTimes := map[siteEvent][]int64{}
	for i := range a.switches {
		sw := &a.switches[i]
		switch {
		case v[i].withdrawal:
			k := siteEvent{sw.stream.key.Target, sw.From, false}
			evTimes[k] = append(evTimes[k], sw.At.UnixNano())
		case v[i].restore:
			k := siteEvent{sw.stream.key.Target, sw.To, true}
			evTimes[k] = append(evTimes[k], sw.At.UnixNano())
		}
	}
	for _, ts := range evTimes {
		slices.Sort(ts)
	}
	near := func(k siteEvent, t, span int64) bool {
		ts := evTimes[k]
		n, _ := slices.BinarySearch(ts, t-2*span)
		return n < len(ts) && ts[n] <= t+2*span
	}
	for i := range a.switches {
		vi := &v[i]
		if vi.balancer || vi.withdrawal || vi.restore {
			continue
		}
		sw := &a.switches[i]
		span, t := vi.fam.span, sw.At.UnixNano()
		switch {
		case near(siteEvent{sw.stream.key.Target, sw.From, false}, t, span):
			vi.withdrawal, vi.inherited, vi.after = true, true, span
		case near(siteEvent{sw.stream.key.Target, sw.To, true}, t, span):
			vi.restore, vi.inherited, vi.arrivals = true, true, 1
		}
	}

	// Sessions a withdrawal broke (or its end: the return resets
	// connections too) say nothing of how flows are balanced. A withdrawal
	// is seen in the moves of the site's catchment; the sessions it broke
	// may be those of balanced vantage points of the same address.
	type lifeKey struct {
		p *pair
		i int
	}
	type addrKey struct {
		target string
		addr   netip.Addr
	}
	events := map[addrKey][]*switchRec{}
	for i := range a.switches {
		if v[i].withdrawal || v[i].restore {
			sw := &a.switches[i]
			k := addrKey{sw.stream.key.Target, sw.stream.key.Address}
			events[k] = append(events[k], sw)
		}
	}
	explained := map[lifeKey]bool{}
	if len(events) > 0 {
		for _, p := range a.pairs {
			evs := events[addrKey{p.key.target, p.key.addr}]
			for k, l := range p.lives {
				for _, sw := range evs {
					if l.covers(sw.At, sw.interval) {
						explained[lifeKey{p, k}] = true
						break
					}
				}
			}
		}
	}
	explainedCount := map[*pair]int{}
	for k := range explained {
		explainedCount[k.p]++
	}
	for i := range a.switches {
		v[i].explained = explainedCount[a.switches[i].stream.pair]
		a.decide(&a.switches[i], &v[i])
	}
}

// withdrawalSpan is Config.WithdrawalSpan, or three times the median of a
// family's probe intervals, at least DefaultWithdrawalSpan.
func (a *Accumulator) withdrawalSpan(intervals []time.Duration) time.Duration {
	if a.cfg.WithdrawalSpan > 0 {
		return a.cfg.WithdrawalSpan
	}
	span := DefaultWithdrawalSpan
	if len(intervals) > 0 {
		slices.Sort(intervals)
		span = max(span, spanIntervals*intervals[len(intervals)/2])
	}
	return span
}

func (a *Accumulator) sortByTime(idx []int) {
	slices.SortFunc(idx, func(x, y int) int {
		if c := a.switches[x].At.Compare(a.switches[y].At); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	})
}

// window slides over idx (switches sorted by time): for each k it calls fn
// with the bounds [lo, hi) of the switches within span of idx[k]; inWin
// then counts them per stream, so len(inWin) is how many vantage points
// they are.
func (a *Accumulator) window(idx []int, span int64, inWin map[*stream]int, fn func(k, lo, hi int)) {
	clear(inWin)
	at := func(k int) int64 { return a.switches[idx[k]].At.UnixNano() }
	lo, hi := 0, 0
	for k := range idx {
		t := at(k)
		for ; hi < len(idx) && at(hi) <= t+span; hi++ {
			inWin[a.switches[idx[hi]].stream]++
		}
		for ; at(lo) < t-span; lo++ {
			s := a.switches[idx[lo]].stream
			if inWin[s]--; inWin[s] == 0 {
				delete(inWin, s)
			}
		}
		fn(k, lo, hi)
	}
}

// departures tests the switches leaving one site of one family for a
// withdrawal; tl is the site's catchment (streams that do not alternate) and
// all every stream's stays there, balancers included: they are witnesses of
// whether anyone still reaches the site.
func (a *Accumulator) departures(idx []int, tl, all *timeline, v []verdict, inWin map[*stream]int) {
	span, end := v[idx[0]].fam.span, v[idx[0]].fam.end
	a.window(idx, span, inWin, func(k, lo, hi int) {
		i := idx[k]
		sw, vi := &a.switches[i], &v[i]
		at := sw.At.UnixNano()
		vi.cohort = max(1, tl.active(sw.LastFrom.UnixNano(), span))
		vi.moved = len(inWin)
		switch {
		case vi.moved >= 2:
			last := a.switches[idx[hi-1]].At.UnixNano()
			until := min(last+span, end)
			vi.withdrawal = vi.moved*withdrawalDen >= vi.cohort*withdrawalNum && !all.seen(last+1, until)
			vi.lastLeft, vi.after = last, max(0, until-last)
		case vi.cohort <= 1:
			vi.single, vi.lastLeft = true, at
			// Witnesses: others (balancers) reached the site in the few
			// spans before; a balancer visits each of its sites only now
			// and then.
			if all.active(sw.LastFrom.UnixNano(), witnessSpans*span) >= 2 {
				// Others reached the site too (balancers): if none of them
				// does for a span after, the site went, not this path.
				vi.witnessed = true
				vi.withdrawal = end-at >= span && !all.seen(at+1, at+span)
				vi.after = span
			} else {
				vi.withdrawal = end-at >= span && !all.seen(at+1, end)
				vi.after = end - at
			}
		}
	})
}

// arrivals tests the switches reaching one site of one family for the end
// of a withdrawal: the site unseen by anyone for a span, then most of its
// former catchment back together (a lone vantage point counts when others,
// balancers, reach the site again with it).
func (a *Accumulator) arrivals(idx []int, tl, all *timeline, v []verdict, inWin map[*stream]int) {
	span := v[idx[0]].fam.span
	a.window(idx, span, inWin, func(k, lo, hi int) {
		vi := &v[idx[k]]
		vi.arrivals = len(inWin)
		first := a.switches[idx[lo]].At.UnixNano()
		if vi.arrivals < 2 && all.startsIn(first-2*span, first+span) < 2 {
			return // alone, and no balancer came back with it
		}
		// The site reappeared when a stay began after a span in which
		// nobody saw it: balancers may have reached it a little before
		// (they sample more flows), or the family's other address family
		// converged later.
		n, _ := slices.BinarySearch(all.starts, first-2*span)
		back := false
		for ; n < len(all.starts) && all.starts[n] <= first; n++ {
			if r := all.starts[n]; !all.seen(r-span, r-1) {
				first, back = r, true
				break
			}
		}
		if !back {
			return
		}
		prev, ok := all.lastBefore(first)
		if !ok {
			return // never seen before: a site appearing, not one returning
		}
		if vi.arrivals*withdrawalDen >= tl.active(prev, span)*withdrawalNum {
			vi.restore, vi.gap = true, first-prev
		}
	})
}

// decide applies the precedence and writes the switch's cause fields.
func (a *Accumulator) decide(sw *switchRec, vi *verdict) {
	p := sw.stream.pair
	span := time.Duration(vi.fam.span)
	sw.FromCatchment, sw.Moved = vi.cohort, vi.moved
	alternates := vi.returns >= minReturns && vi.sites <= maxAlternating || vi.pairBalanced
	broken := p.broken - vi.explained
	flowsStay := p.sessions == 0 || broken*2 < p.sessions
	stayed := sw.stay >= minStay || sw.stay >= 1 && !sw.followed
	switch {
	case vi.inherited && vi.withdrawal:
		sw.Cause = analysis.CauseWithdrawal
		sw.Evidence = fmt.Sprintf("%s was withdrawn for this target at the same time (shown by another address or question)", sw.From)
	case vi.inherited && vi.restore:
		sw.Cause = analysis.CauseWithdrawal
		sw.Evidence = fmt.Sprintf("%s came back for this target at the same time (shown by another address or question): a withdrawal ended", sw.To)
	case vi.restore: // first: a return is better told as the end of the withdrawal
		sw.Cause = analysis.CauseWithdrawal
		sw.Evidence = fmt.Sprintf("%d vantage points arrived at %s within %s after none had seen it for %s: a withdrawal ended",
			vi.arrivals, sw.To, span, time.Duration(vi.gap))
	case vi.withdrawal && vi.single && vi.witnessed:
		sw.Cause = analysis.CauseWithdrawal
		sw.Evidence = fmt.Sprintf("the only vantage point that stays at %s left it and none of those balanced onto it reached %s in the %s after",
			sw.From, sw.From, time.Duration(vi.after))
	case vi.withdrawal && vi.single:
		sw.Cause = analysis.CauseWithdrawal
		sw.Evidence = fmt.Sprintf("the only vantage point at %s left it and none saw %s again in the %s of data left "+
			"(with one vantage point a withdrawal cannot be told from a routing change)", sw.From, sw.From, time.Duration(vi.after))
	case vi.withdrawal:
		sw.Cause = analysis.CauseWithdrawal
		after := fmt.Sprintf("in the %s after", time.Duration(vi.after))
		if vi.lastLeft+int64(span) >= vi.fam.end {
			after = "until the data ends"
		}
		sw.Evidence = fmt.Sprintf("%d of %d vantage points at %s left it within %s and none saw %s %s",
			vi.moved, vi.cohort, sw.From, span, sw.From, after)
	case alternates && flowsStay:
		sw.Cause = analysis.CauseLoadBalancing
		if !vi.balancer && vi.returns < minReturns {
			sw.Evidence = fmt.Sprintf("this vantage point's other streams to %s alternate among sites (per-flow load balancing); %d of %d sessions broke other than by a withdrawal",
				sw.stream.key.Address, broken, p.sessions)
			break
		}
		if p.sessions == 0 {
			sw.Evidence = fmt.Sprintf("alternates among %d sites (%d returns); no session shows whether single flows stay put",
				vi.sites, vi.returns)
		} else {
			sw.Evidence = fmt.Sprintf("alternates among %d sites (%d returns) while %d of %d sessions broke other than by a withdrawal",
				vi.sites, vi.returns, broken, p.sessions)
		}
	case stayed:
		sw.Cause = analysis.CauseRouting
		sw.Evidence = fmt.Sprintf("stayed at %s for %s; %d of %d vantage points at %s moved within %s",
			sw.To, more(sw.stay), vi.moved, vi.cohort, sw.From, span)
	default:
		sw.Cause = analysis.CauseUnknown
		sw.Evidence = fmt.Sprintf("%s at %s: too few to show it stayed", more(sw.stay), sw.To)
	}
	if alternates && !flowsStay {
		sw.Evidence += fmt.Sprintf("; alternates among %d sites but %d of %d sessions broke other than by a withdrawal (per-packet balancing or flapping routes)",
			vi.sites, broken, p.sessions)
	}
}

func more(n int) string {
	if n == 1 {
		return "1 more observation"
	}
	return fmt.Sprintf("%d more observations", n)
}
