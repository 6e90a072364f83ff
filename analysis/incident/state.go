package incident

import (
	"net/netip"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

// stream is one kind of question asked over one transport by one vantage
// point of one address.
type stream struct {
	kind      api.Kind
	transport api.Transport
	query     string
	seen      bool
	fails     uint16 // consecutive failures (any answer of the pair resets)
	last      int64  // latest observation (ns)
	interval  int64  // learned spacing (ns), 0 until two observations
	// The last nGaps spacings, in milliseconds, a ring at next.
	gaps        [nGaps]int32
	ngaps, next uint8
}

// nGaps is how many spacings a stream remembers to learn its interval.
const nGaps = 16

// observe learns the stream's interval from the spacing to t: the mean of
// its last nGaps spacings, leaving out pauses (an upload gap, an agent
// restart: more than eight times their lower median) and bursts (less than
// a twentieth of it). Poisson schedules (gaps up to four times the mean)
// keep their long gaps; a changed schedule is adopted once it makes most of
// the ring.
func (s *stream) observe(t int64) {
	if s.seen {
		if gap := min(t-s.last, maxInterval); gap > 0 {
			s.gaps[s.next] = int32(max(gap/int64(time.Millisecond), 1))
			s.next = (s.next + 1) % nGaps
			if s.ngaps < nGaps {
				s.ngaps++
			}
			if s.ngaps < nGaps || s.next%4 == 0 { // it moves slowly once full
				s.interval = estimate(s.gaps[:s.ngaps])
			}
		}
	}
	s.seen, s.last = true, t
}

// estimate is the mean of gaps (ms) within [median/20, 8·median] of their
// lower median, in ns.
func estimate(gaps []int32) int64 {
	var b [nGaps]int32
	n := copy(b[:], gaps)
	for i := 1; i < n; i++ { // insertion sort: n ≤ nGaps
		for j := i; j > 0 && b[j] < b[j-1]; j-- {
			b[j], b[j-1] = b[j-1], b[j]
		}
	}
	med := int64(b[(n-1)/2])
	var sum, k int64
	for _, g := range b[:n] {
		if g := int64(g); g <= 8*med && g >= med/20 {
			sum += g
			k++
		}
	}
	return sum * int64(time.Millisecond) / k
}

// pstate is the health of a (vantage point, target, address).
type pstate uint8

const (
	healthy pstate = iota // its last decisive observation answered (or none yet)
	suspect               // failures since its last answer, not yet enough
	failing               // MinFailures consecutive failures on every stream
)

// pair is the state of one (vantage point, target, address).
type pair struct {
	vp      int32
	target  int32
	g       *group
	streams []stream

	lastSeen  int64 // latest health observation
	lastOK    int64 // latest answer
	state     pstate
	failStart int64 // first failure since the last answer (0 when healthy)
	failingAt int64 // when it became failing (0 unless failing)
	counts    []uint32

	site        int32  // last site that answered (group index, 0: none)
	siteName    string // its name, to skip the lookup when unchanged
	streak      uint16 // consecutive answers from site
	movedFrom   int32  // site left on the last move (0: none)
	movedAt     int64
	movedStreak uint16 // answers from movedFrom before the move

	trace *traceState // nil until a traceroute arrives
	inc   *incident   // open black hole or outage it belongs to
}

func (p *pair) stream(k api.Kind, tr api.Transport, q string) *stream {
	for i := range p.streams {
		if s := &p.streams[i]; s.kind == k && s.transport == tr && s.query == q {
			return s
		}
	}
	if len(p.streams) == maxStreams {
		return nil
	}
	p.streams = append(p.streams, stream{kind: k, transport: tr, query: q})
	return &p.streams[len(p.streams)-1]
}

// traceState holds what the pair's traceroutes showed.
type traceState struct {
	// ok: the last path end confirmed healthy (an answer came after it);
	// cand: a path end seen while healthy, not confirmed yet; bad: the last
	// path end seen while failing.
	ok, cand, bad    [analysis.MaxPathEnd]netip.Addr
	nOK, nCand, nBad uint8
	badSeen          bool // a trace arrived while failing
}

// verdict of the traces during a failure.
type verdict uint8

const (
	traceUnknown verdict = iota
	traceReaches         // still ends at the hops where healthy traces ended
	traceDies            // ends elsewhere (or nowhere): cut before the upstream
)

func (ts *traceState) verdict() verdict {
	if ts == nil || !ts.badSeen || ts.nOK == 0 {
		return traceUnknown
	}
	for _, a := range ts.bad[:ts.nBad] {
		for _, b := range ts.ok[:ts.nOK] {
			if a == b {
				return traceReaches
			}
		}
	}
	return traceDies
}

func storeEnds(dst *[analysis.MaxPathEnd]netip.Addr, ends []netip.Addr) uint8 {
	n := copy(dst[:], ends)
	return uint8(n)
}

// vantage is the state of one vantage point.
type vantage struct {
	id       int32
	name     string
	pairs    []*pair
	lastSeen int64
	failing  int // pairs in state failing
	// everywhere: every recent pair is failing (checkVP).
	everywhere bool
	nextCheck  int64
	// down: in a vantage_point incident (inc); its pairs are left out of
	// catchments meanwhile.
	down bool
	inc  *incident
	// pending: its verdict waits for others of its sites (stamp: when
	// judged).
	pending bool
	stamp   uint64
}

// group is one (target, address).
type group struct {
	target   string
	addr     netip.Addr
	pairs    []*pair
	siteIdx  map[string]int32
	sites    []site // index 0: no site known
	now      int64  // latest observation
	nextEval int64
	dirty    bool
	interval int64 // mean interval of its recent pairs
	open     int   // open incidents (outage and black holes)
	outage   *incident
	// tally of the last evaluation (recent pairs, vantage_point incidents
	// left out).
	tallied                   int64
	recent, failing, suspects int
}

// site is one site of a group: its open black hole and its tally.
type site struct {
	name      string
	blackhole *incident

	members, failing, suspect, healthy, pending int
	lastOK                                      int64 // latest answer of a healthy member
	minFailingAt                                int64 // earliest time a member became failing
}

func (g *group) intern(name string) int32 {
	if i, ok := g.siteIdx[name]; ok {
		return i
	}
	i := int32(len(g.sites))
	g.siteIdx[name] = i
	g.sites = append(g.sites, site{name: name})
	return i
}

// iv is the stream's interval, or the configured one until learned.
func (d *Detector) iv(s *stream) int64 {
	if s.interval > 0 {
		return s.interval
	}
	return d.interval
}

// pairInterval is the shortest interval of the pair's current streams.
func (d *Detector) pairInterval(p *pair) int64 {
	best := int64(0)
	for i := range p.streams {
		s := &p.streams[i]
		iv := d.iv(s)
		if p.lastSeen-s.last > recentIntervals*iv {
			continue
		}
		if best == 0 || iv < best {
			best = iv
		}
	}
	if best == 0 {
		return d.interval
	}
	return best
}

// recent reports whether p reported within its recent window of now.
func (d *Detector) recent(p *pair, now int64) bool {
	return p.lastSeen > 0 && now-p.lastSeen <= recentIntervals*d.pairInterval(p)
}

// answered applies an answer of p at t from site ("" when unresolved).
func (d *Detector) answered(p *pair, v *vantage, t int64, siteName string) {
	for i := range p.streams {
		p.streams[i].fails = 0
	}
	newest := t >= p.lastOK // an older answer of another stream names no site
	p.lastOK = max(p.lastOK, t)
	g := p.g
	if siteName != "" && newest {
		if siteName == p.siteName {
			if p.streak < ^uint16(0) {
				p.streak++
			}
		} else {
			i := g.intern(siteName)
			if p.site != 0 {
				p.movedFrom, p.movedAt, p.movedStreak = p.site, t, p.streak
			}
			p.site, p.siteName, p.streak = i, g.sites[i].name, 1
			g.dirty = true
		}
	}
	if ts := p.trace; ts != nil && ts.nCand > 0 {
		ts.ok, ts.nOK, ts.nCand = ts.cand, ts.nCand, 0
	}
	if p.state == healthy {
		return
	}
	if p.state == failing {
		v.failing--
	}
	p.state, p.failStart, p.failingAt = healthy, 0, 0
	clear(p.counts)
	if ts := p.trace; ts != nil {
		ts.nBad, ts.badSeen = 0, false
	}
	g.dirty = true
	v.everywhere = false
	if in := p.inc; in != nil {
		p.inc = nil
		d.recover(in, t)
	}
	if v.inc != nil {
		d.endVP(v, t)
	}
}

// failed applies a failure of class c of stream s of p at t.
func (d *Detector) failed(p *pair, s *stream, v *vantage, t int64, c int) {
	if p.counts == nil {
		p.counts = make([]uint32, nClass)
	}
	p.counts[c]++
	if p.inc != nil {
		p.inc.counts[c]++
		p.inc.tail[c]++
	}
	if v.inc != nil {
		v.inc.counts[c]++
	}
	if s.fails < ^uint16(0) {
		s.fails++
	}
	if p.state == healthy {
		p.state, p.failStart = suspect, t
		p.g.dirty = true
		if ts := p.trace; ts != nil {
			ts.nCand = 0 // measured before or after the failure began: unknown
		}
	}
	if p.state == suspect && d.established(p, t) {
		p.state, p.failingAt = failing, t
		v.failing++
		p.g.dirty = true
		d.checkVP(v)
	} else if v.failing > 0 && t >= v.nextCheck {
		d.checkVP(v)
	}
}

// established reports whether p's failure is more than a blip. Every
// observation since it began failed (an answer resets it); it is
// established when one stream failed MinFailures times in a row, or when
// failures of at least two streams span most of a probe interval (the
// fastest stream's): two rounds in a row went unanswered, whichever
// questions they asked. With many streams probed at Poisson-spaced times
// the second rule decides within about one interval, where waiting for
// every stream's second failure would take several.
func (d *Detector) established(p *pair, t int64) bool {
	fastest := int64(0)
	streams := 0
	for i := range p.streams {
		s := &p.streams[i]
		if s.last < p.failStart {
			continue
		}
		streams++
		if int(s.fails) >= d.cfg.MinFailures {
			return true
		}
		if iv := d.iv(s); fastest == 0 || iv < fastest {
			fastest = iv
		}
	}
	return streams >= 2 && t-p.failStart >= fastest*4/5
}

// checkVP updates v.everywhere: every pair of v recent on v's own clock is
// failing. When it becomes true, the groups of its failing pairs are
// marked for evaluation.
func (d *Detector) checkVP(v *vantage) {
	was := v.everywhere
	v.everywhere = false
	next := int64(0)
	if v.failing > 0 {
		all, n := true, 0
		for _, q := range v.pairs {
			iv := d.pairInterval(q)
			if next == 0 || iv < next {
				next = iv
			}
			if q.lastSeen == 0 || v.lastSeen-q.lastSeen > recentIntervals*iv {
				continue
			}
			n++
			if q.state != failing {
				all = false
			}
		}
		v.everywhere = all && n > 0
	}
	v.nextCheck = v.lastSeen + max(next/2, minEval)
	if v.everywhere && !was {
		for _, q := range v.pairs {
			if q.state == failing {
				q.g.dirty = true
			}
		}
	}
}

// traced applies a traceroute of p that ended at ends.
func (d *Detector) traced(p *pair, ends []netip.Addr) {
	ts := p.trace
	if ts == nil {
		ts = new(traceState)
		p.trace = ts
	}
	if p.state == healthy {
		if len(ends) > 0 {
			ts.nCand = storeEnds(&ts.cand, ends)
		}
		return
	}
	ts.nBad, ts.badSeen = storeEnds(&ts.bad, ends), true
	if p.inc != nil {
		p.inc.addEnds(ends)
	}
	if v := d.vps[p.vp]; v.inc != nil {
		v.inc.addEnds(ends)
	}
}
