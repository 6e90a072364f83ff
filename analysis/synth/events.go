package synth

import (
	"fmt"
	"time"
)

// Event is something scripted to happen in the world during [From, Until):
// Withdraw, Blackhole, Flapper, VantagePointDown, Gap or Outage. A zero
// Until lasts to the end of the world.
type Event interface {
	window() (from, until time.Time)
}

// Withdraw: Site stops announcing Target's prefix. The vantage points it
// served move to their nearest remaining site of the target, and come back
// when it returns (switches, not failures).
type Withdraw struct {
	Target, Site string
	From, Until  time.Time
}

// Blackhole: Site keeps announcing Target's prefix but its service is dead.
// The vantage points it serves get timeouts while the others answer.
type Blackhole struct {
	Target, Site string
	From, Until  time.Time
}

// Flapper: VantagePoint's path to Target is balanced per flow over Sites:
// each observation reaches Sites[round mod len(Sites)], alternating.
type Flapper struct {
	VantagePoint, Target string
	Sites                []string
	From, Until          time.Time
}

// VantagePointDown: VantagePoint's own network is broken: every one of its
// observations, towards every target, times out.
type VantagePointDown struct {
	VantagePoint string
	From, Until  time.Time
}

// Gap: VantagePoint uploads nothing (an agent offline): no observations at
// all. Routing goes on, so Truth still names the site that would serve it.
type Gap struct {
	VantagePoint string
	From, Until  time.Time
}

// Outage: every vantage point's observations of Target time out.
type Outage struct {
	Target      string
	From, Until time.Time
}

func (e Withdraw) window() (time.Time, time.Time)         { return e.From, e.Until }
func (e Blackhole) window() (time.Time, time.Time)        { return e.From, e.Until }
func (e Flapper) window() (time.Time, time.Time)          { return e.From, e.Until }
func (e VantagePointDown) window() (time.Time, time.Time) { return e.From, e.Until }
func (e Gap) window() (time.Time, time.Time)              { return e.From, e.Until }
func (e Outage) window() (time.Time, time.Time)           { return e.From, e.Until }

type eventKind uint8

const (
	evWithdraw eventKind = iota
	evBlackhole
	evFlapper
	evDown
	evGap
	evOutage
)

// event is an Event resolved to indices.
type event struct {
	kind         eventKind
	from, until  int64 // Unix nanoseconds; until is max int64 when open
	target, site int   // -1 when not applicable
	vp           int
	sites        []int // Flapper, world site indices
}

func (e *event) active(at int64) bool { return at >= e.from && at < e.until }

// compile resolves ev's names against w and checks it.
func (w *World) compile(i int, ev Event) (event, error) {
	if ev == nil {
		return event{}, fmt.Errorf("%w: event %d is nil", ErrInvalidConfig, i)
	}
	from, until := ev.window()
	out := event{from: from.UnixNano(), until: until.UnixNano(), target: -1, site: -1, vp: -1}
	if from.IsZero() {
		return event{}, fmt.Errorf("%w: event %d (%T): zero From", ErrInvalidConfig, i, ev)
	}
	if until.IsZero() {
		out.until = 1<<63 - 1
	} else if !until.After(from) {
		return event{}, fmt.Errorf("%w: event %d (%T): Until %v is not after From %v", ErrInvalidConfig, i, ev, until, from)
	}
	var err error
	switch e := ev.(type) {
	case Withdraw:
		out.kind = evWithdraw
		out.target, out.site, err = w.targetSite(e.Target, e.Site)
	case Blackhole:
		out.kind = evBlackhole
		out.target, out.site, err = w.targetSite(e.Target, e.Site)
	case Flapper:
		out.kind = evFlapper
		if out.vp, err = w.vpIndex(e.VantagePoint); err != nil {
			break
		}
		if len(e.Sites) < 2 {
			err = fmt.Errorf("a flapper needs two sites or more, has %d", len(e.Sites))
			break
		}
		for _, code := range e.Sites {
			var s int
			if out.target, s, err = w.targetSite(e.Target, code); err != nil {
				break
			}
			out.sites = append(out.sites, s)
		}
	case VantagePointDown:
		out.kind = evDown
		out.vp, err = w.vpIndex(e.VantagePoint)
	case Gap:
		out.kind = evGap
		out.vp, err = w.vpIndex(e.VantagePoint)
	case Outage:
		out.kind = evOutage
		out.target, err = w.targetIndex(e.Target)
	default:
		err = fmt.Errorf("unknown event type")
	}
	if err != nil {
		return event{}, fmt.Errorf("%w: event %d (%T): %w", ErrInvalidConfig, i, ev, err)
	}
	return out, nil
}

func (w *World) vpIndex(name string) (int, error) {
	if i, ok := w.vpByName[name]; ok {
		return i, nil
	}
	return -1, fmt.Errorf("no vantage point %q", name)
}

func (w *World) targetIndex(name string) (int, error) {
	if i, ok := w.targetByName[name]; ok {
		return i, nil
	}
	return -1, fmt.Errorf("no target %q", name)
}

// targetSite resolves a target name and one of its site codes.
func (w *World) targetSite(target, code string) (int, int, error) {
	t, err := w.targetIndex(target)
	if err != nil {
		return -1, -1, err
	}
	s, ok := w.siteByCode[code]
	if !ok || !w.targets[t].member[s] {
		return -1, -1, fmt.Errorf("target %q has no site %q", target, code)
	}
	return t, s, nil
}
