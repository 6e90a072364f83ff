package spool

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Gaps: results the spool lost (dropped when full, found missing or
// unreadable) are recorded as gaps, runs of sequence numbers that will never
// be uploaded. The gap list lives in the file "gaps" (JSON, replaced
// atomically) until the collector has acknowledged each gap, and, for gaps
// inside the unacknowledged range, until the acknowledged watermark passes
// them, so that a hole found again after a restart is not recorded twice.
// Gaps never overlap one another.

const (
	gapsName = "gaps"
	// defaultMaxGaps bounds the gaps awaiting the collector; beyond it the
	// oldest are merged (see compactLocked).
	defaultMaxGaps = 10_000
)

// gapEntry is a gap and whether the collector has acknowledged it.
type gapEntry struct {
	api.Gap
	Delivered bool `json:"delivered,omitempty"`
}

// Loss counts results the spool lost and the gaps that record them.
type Loss struct {
	// Results lost.
	Results uint64
	// Gaps recorded (a gap that grows, as a full spool keeps dropping,
	// counts once).
	Gaps uint64
}

// readGaps loads the gap list. A missing file is an empty list; an
// unreadable one is moved aside (its gaps are lost, the spool is not).
func (s *Spool) readGaps() {
	path := filepath.Join(s.dir, gapsName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var es []gapEntry
	if err == nil {
		err = json.Unmarshal(b, &es)
	}
	if err != nil {
		s.log.Error("spool: gap list is unreadable; gaps not yet delivered are lost", "file", path, "err", err)
		s.moveAside(path)
		return
	}
	slices.SortFunc(es, func(x, y gapEntry) int { return cmp.Compare(x.FirstSeq, y.FirstSeq) })
	for _, e := range es {
		if err := e.Validate(); err != nil {
			s.log.Error("spool: ignoring an invalid gap", "file", path, "err", err)
			continue
		}
		if n := len(s.gaps); n > 0 && e.FirstSeq <= s.gaps[n-1].LastSeq {
			s.log.Error("spool: ignoring a gap that overlaps another", "first_seq", e.FirstSeq, "last_seq", e.LastSeq)
			continue
		}
		s.gaps = append(s.gaps, e)
	}
}

// saveGapsLocked writes the gap list. A failure (a full disk, say) is
// logged and the list is written again at the next change or the next
// PendingGaps; meanwhile the gaps live in memory. The caller holds gmu.
func (s *Spool) saveGapsLocked() error {
	b, err := json.Marshal(s.gaps)
	if err == nil {
		err = writeFileAtomic(filepath.Join(s.dir, gapsName), b)
	}
	if err != nil {
		s.gapsDirty = true
		s.log.Error("spool: cannot write the gap list; keeping it in memory", "err", err)
		return err
	}
	s.gapsDirty = false
	return nil
}

// addGap records that the results first..last (measured from..to; zero
// when unknown) are lost for reason, leaving out seqs an earlier gap
// already covers, and writes the list. A new run right after a gap of the
// same reason that the collector has not acknowledged extends it. It
// returns how many results were newly recorded lost.
func (s *Spool) addGap(reason api.GapReason, first, last uint64, from, to time.Time) uint64 {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	added := s.addGapLocked(reason, first, last, from, to)
	if added > 0 {
		s.compactLocked()
		_ = s.saveGapsLocked()
	}
	return added
}

// addGapLocked is addGap without writing the list. The caller holds gmu.
func (s *Spool) addGapLocked(reason api.GapReason, first, last uint64, from, to time.Time) uint64 {
	var added uint64
	for _, r := range s.uncoveredLocked(first, last) {
		added += r[1] - r[0] + 1
		l := s.losses[reason]
		l.Results += r[1] - r[0] + 1
		i, _ := slices.BinarySearchFunc(s.gaps, r[0], func(e gapEntry, seq uint64) int { return cmp.Compare(e.FirstSeq, seq) })
		if i > 0 {
			if p := &s.gaps[i-1]; !p.Delivered && p.Reason == reason && p.LastSeq+1 == r[0] {
				p.LastSeq = r[1]
				p.Count += r[1] - r[0] + 1
				p.LostFrom, p.LostTo = earliest(p.LostFrom, from), latest(p.LostTo, to)
				s.losses[reason] = l
				continue
			}
		}
		l.Gaps++
		s.losses[reason] = l
		s.gaps = slices.Insert(s.gaps, i, gapEntry{Gap: api.Gap{
			FirstSeq: r[0], LastSeq: r[1], Count: r[1] - r[0] + 1, LostFrom: from, LostTo: to, Reason: reason,
		}})
	}
	return added
}

// uncoveredLocked returns the runs of first..last that no gap covers.
func (s *Spool) uncoveredLocked(first, last uint64) [][2]uint64 {
	var out [][2]uint64
	at := first
	for _, e := range s.gaps {
		if e.LastSeq < at {
			continue
		}
		if e.FirstSeq > last {
			break
		}
		if e.FirstSeq > at {
			out = append(out, [2]uint64{at, e.FirstSeq - 1})
		}
		at = e.LastSeq + 1
		if at > last || at == 0 {
			return out
		}
	}
	return append(out, [2]uint64{at, last})
}

// compactLocked merges the oldest gaps awaiting the collector while there
// are more than maxGaps of them: a merged gap covers both runs and what lay
// between (results delivered, or gaps already acknowledged) and counts the
// lost results of both. The caller holds gmu.
func (s *Spool) compactLocked() {
	for {
		var waiting []int
		for i, e := range s.gaps {
			if !e.Delivered {
				waiting = append(waiting, i)
			}
		}
		if len(waiting) <= s.maxGaps || len(waiting) < 2 {
			return
		}
		i, j := waiting[0], waiting[1]
		a, b := s.gaps[i], s.gaps[j]
		m := a
		m.LastSeq = b.LastSeq
		m.Count = a.Count + b.Count
		m.LostFrom, m.LostTo = earliest(a.LostFrom, b.LostFrom), latest(a.LostTo, b.LostTo)
		if b.Count > a.Count {
			m.Reason = b.Reason
		}
		s.gaps[i] = m
		s.gaps = slices.Delete(s.gaps, i+1, j+1)
	}
}

// pruneLocked forgets the gaps the collector acknowledged that lie at or
// below the acknowledged watermark: no hole there can be found again. It
// reports whether it forgot any. The caller holds gmu.
func (s *Spool) pruneLocked(acked uint64) bool {
	n := len(s.gaps)
	s.gaps = slices.DeleteFunc(s.gaps, func(e gapEntry) bool { return e.Delivered && e.LastSeq <= acked })
	return len(s.gaps) != n
}

// PendingGaps returns at most max gaps the collector has not acknowledged,
// lowest sequence numbers first.
func (s *Spool) PendingGaps(max int) []api.Gap {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	if s.isClosed() {
		return nil
	}
	if s.gapsDirty {
		_ = s.saveGapsLocked()
	}
	var out []api.Gap
	for _, e := range s.gaps {
		if len(out) >= max {
			break
		}
		if !e.Delivered {
			out = append(out, e.Gap)
		}
	}
	return out
}

// AckGaps records that the collector has stored gaps (as PendingGaps
// returned them). A gap that grew since is kept: the collector has only
// its smaller self, and gets it again.
func (s *Spool) AckGaps(gaps []api.Gap) error {
	if len(gaps) == 0 {
		return nil
	}
	s.gmu.Lock()
	defer s.gmu.Unlock()
	s.mu.Lock()
	acked, closed := s.acked, s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	changed := false
	for _, g := range gaps {
		i, ok := slices.BinarySearchFunc(s.gaps, g.FirstSeq, func(e gapEntry, seq uint64) int { return cmp.Compare(e.FirstSeq, seq) })
		if ok && !s.gaps[i].Delivered && sameGap(s.gaps[i].Gap, g) {
			s.gaps[i].Delivered = true
			changed = true
		}
	}
	s.pruneLocked(acked)
	if !changed && !s.gapsDirty {
		return nil
	}
	if err := s.saveGapsLocked(); err != nil {
		return fmt.Errorf("spool: recording acknowledged gaps: %w", err)
	}
	return nil
}

// Losses reports, by reason, what the spool lost since it was opened
// (including what Open found lost), and how many gaps await the
// collector's acknowledgement.
func (s *Spool) Losses() (byReason map[api.GapReason]Loss, pendingGaps int) {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	byReason = make(map[api.GapReason]Loss, len(api.GapReasons))
	for _, r := range api.GapReasons {
		byReason[r] = s.losses[r]
	}
	for _, e := range s.gaps {
		if !e.Delivered {
			pendingGaps++
		}
	}
	return byReason, pendingGaps
}

func sameGap(a, b api.Gap) bool {
	return a.FirstSeq == b.FirstSeq && a.LastSeq == b.LastSeq && a.Count == b.Count && a.Reason == b.Reason &&
		a.LostFrom.Equal(b.LostFrom) && a.LostTo.Equal(b.LostTo)
}

// earliest and latest combine the time bounds of two runs; zero (unknown)
// in either leaves the bound unknown.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if b.After(a) {
		return b
	}
	return a
}

// unixTime converts an index time (Unix nanoseconds) to UTC.
func unixTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// spanTimes returns the earliest and latest of index times.
func spanTimes(at []int64) (time.Time, time.Time) {
	if len(at) == 0 {
		return time.Time{}, time.Time{}
	}
	lo, hi := at[0], at[0]
	for _, t := range at[1:] {
		lo, hi = min(lo, t), max(hi, t)
	}
	return unixTime(lo), unixTime(hi)
}
