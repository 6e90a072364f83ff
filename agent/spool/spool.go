// Package spool is the agent's crash-safe on-disk queue of results: every
// result gets the agent's next sequence number and is fsynced before anyone
// sees it, and stays on disk until the collector has acknowledged it, across
// crashes, kill -9 and restarts.
//
// Appends share fsyncs (group commit): an Append writes its records at once,
// then waits for an fsync that covers them, which may cover appends made by
// other goroutines meanwhile; Options.CommitWindow spaces the fsyncs so that
// more appends share each. An Append returns, and its results become
// visible to Pending, only after that fsync. Records written but not yet
// fsynced when the process dies are still in the file (the kernel has them)
// and are found by Open like any other; after a machine crash they may be
// gone, but nobody has seen them, so their numbers may be handed out again.
//
// The spool directory holds append-only segment files named after the
// sequence number of their first record (00000000000000000001.seg), and the
// acknowledged watermark in the file "acked". A record is framed as
//
//	[u32 length][u32 CRC-32C of the payload][payload: JSON of api.Result]
//
// with both integers little-endian. Other files in the directory (the agent
// caches its schedule there) are left alone. On Open, a torn or corrupt tail is cut
// off at the last good record, and numbering continues after the highest
// sequence number that was ever durable, so numbers are neither reused nor
// skipped.
//
// Results the spool loses become gaps (api.Gap), kept in the file "gaps"
// until the collector has acknowledged them: when Options.MaxBytes would be
// exceeded, the oldest segments are dropped, whole (api.GapSpoolFull); a
// segment missing from the middle of the sequence, or unreadable from its
// start, is found by Open (api.GapSegmentLost); a record that no longer
// reads back is found by Pending (api.GapRecordCorrupt). The acknowledged
// watermark then means: every result up to it was acknowledged by the
// collector or is recorded in a gap. A damaged spool is never a reason for
// Open to fail: what can be read is kept, the rest is a gap.
package spool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// DefaultSegmentBytes is the size at which a segment is closed and a new one
// started.
const DefaultSegmentBytes = 4 << 20

const (
	headerBytes    = 8
	maxRecordBytes = 1 << 20 // far above any valid result; guards against garbage lengths
	ackName        = "acked"
	lockName       = "lock"
	segSuffix      = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors callers branch on.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrLocked means another process has the spool directory open.
	ErrLocked = errors.New("spool: directory is in use by another process")
	// ErrBroken means a failed fsync left the spool's on-disk state unknown.
	// The spool refuses further appends; reopening it (after a restart)
	// recovers everything that is durable.
	ErrBroken = errors.New("spool: unusable after a failed write")
)

// Options tune a spool. Zero values take the defaults.
type Options struct {
	// SegmentBytes is the size at which segments are rotated.
	SegmentBytes int64
	// CommitWindow is the shortest time between two fsyncs of appends: an
	// Append made sooner after the last fsync waits for the rest of the
	// window, and appends made meanwhile share its fsync. Zero fsyncs at
	// once (appends made during an fsync still share the next one).
	CommitWindow time.Duration
	// MaxBytes caps the size of the segment files together; zero means no
	// cap. When an append would exceed it, the oldest segments are dropped,
	// whole, and their unacknowledged results recorded as a gap; the
	// segment being written is never dropped, so one append larger than
	// what the other segments free may overshoot. At least twice
	// SegmentBytes.
	MaxBytes int64
	// Logger receives recovery reports; nil discards them.
	Logger *slog.Logger
}

// segment is the in-memory index of one segment file.
type segment struct {
	first uint64  // seq of record 0
	path  string  // file
	offs  []int64 // offset of each record
	at    []int64 // MeasuredAt of each record, Unix nanoseconds
	end   int64   // offset after the last record
}

// last is the seq of the last record; first-1 for an empty segment.
func (g *segment) last() uint64 { return g.first + uint64(len(g.offs)) - 1 }

// size returns the framed size of record i.
func (g *segment) size(i int) int64 {
	if i+1 < len(g.offs) {
		return g.offs[i+1] - g.offs[i]
	}
	return g.end - g.offs[i]
}

// Spool is an on-disk queue of results. It is safe for any number of
// goroutines calling Append concurrently with one calling Pending and Ack
// (and any number calling Stats and NextSeq).
//
// Locks are taken in the order wmu, rmu, gmu, cmu, mu, never the other
// way. An append that must drop segments to stay under MaxBytes takes rmu
// too, so that no Pending reads a segment while it is dropped.
type Spool struct {
	dir      string
	segBytes int64
	maxBytes int64
	window   time.Duration
	log      *slog.Logger
	lock     *os.File

	wmu      sync.Mutex // serialises writes; guards the fields below
	w        *os.File   // the last segment, open for appending; nil until needed
	wend     int64      // offset after the last record written to w
	unsynced []write    // written and not yet visible, oldest first
	writes   uint64     // writes so far: the number of the last one

	rmu sync.Mutex // serialises Pending, Ack and dropping segments

	gmu       sync.Mutex // guards the gap list, its file and the fields below
	gaps      []gapEntry // by FirstSeq, disjoint
	gapsDirty bool       // the file is behind the list
	maxGaps   int        // gaps awaiting the collector before they are merged
	losses    map[api.GapReason]Loss

	cmu        sync.Mutex // guards the commit state below
	commit     *sync.Cond // on cmu: signalled when durable or broken changes
	committing bool       // an Append is waiting to fsync for everyone
	durable    uint64     // the writes up to this number are fsynced and visible
	lastSync   time.Time

	// Seams for tests: fsync of a segment, and the wait for the commit
	// window.
	syncFile func(*os.File) error
	sleep    func(time.Duration)

	mu     sync.Mutex // guards the fields below
	segs   []*segment
	next   uint64 // the seq after the last visible result
	wnext  uint64 // the seq the next written result gets; also guarded by wmu
	acked  uint64
	closed bool
	broken error
}

// write is one Append's records: written, not yet fsynced or not yet
// visible.
type write struct {
	n     uint64   // the write's number
	g     *segment // written to
	offs  []int64  // offset of each record
	at    []int64  // MeasuredAt of each record
	end   int64    // offset after the last record
	first uint64   // seq of the first record
}

// Open opens the spool in dir, creating it if needed, and recovers from
// whatever a crash left behind: missing or damaged files become gaps, not
// errors. Only one process may have a spool open.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CommitWindow < 0 {
		return nil, fmt.Errorf("spool: negative commit window %v", opts.CommitWindow)
	}
	if opts.MaxBytes < 0 || (opts.MaxBytes > 0 && opts.MaxBytes < 2*opts.SegmentBytes) {
		return nil, fmt.Errorf("spool: max bytes %d: want 0 (no cap) or at least two segments (%d bytes)", opts.MaxBytes, 2*opts.SegmentBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: dir, segBytes: opts.SegmentBytes, maxBytes: opts.MaxBytes, window: opts.CommitWindow,
		log: opts.Logger.With("spool", dir), maxGaps: defaultMaxGaps, losses: map[api.GapReason]Loss{}}
	s.commit = sync.NewCond(&s.cmu)
	s.syncFile, s.sleep = (*os.File).Sync, time.Sleep
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("spool: locking %s: %w", dir, err)
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		s.unlock()
		return nil, err
	}
	return s, nil
}

// recover rebuilds the index from the directory. Only a directory that
// cannot be listed is an error: a damaged spool loses what is damaged,
// recorded as gaps, and works on.
func (s *Spool) recover() error {
	acked, haveAck := s.readAck()
	s.readGaps()
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var segs []*segment
	for _, e := range names {
		name := e.Name()
		if name == ackName+".tmp" || name == gapsName+".tmp" {
			_ = os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !strings.HasSuffix(name, segSuffix) || !e.Type().IsRegular() {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil || first == 0 || first > 1<<62 {
			s.log.Warn("spool: ignoring a file that is not a segment", "file", name)
			continue
		}
		segs = append(segs, &segment{first: first, path: filepath.Join(s.dir, name)})
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmpSeq(a.first, b.first) })

	changed, sealed := false, false
	var prev *segment
	for _, g := range segs {
		if prev != nil && g.first <= prev.last() {
			s.log.Error("spool: segment overlaps the previous one; moving it aside",
				"segment", g.path, "first", g.first, "previous_last", prev.last())
			s.moveAside(g.path)
			changed = true
			continue
		}
		kept, clean := s.scan(g)
		if !kept {
			changed = true
			continue
		}
		s.segs = append(s.segs, g)
		prev = g
		sealed = !clean // the last segment is appended to only if its tail is clean
	}
	switch {
	case !haveAck && len(s.segs) > 0 && s.segs[0].first > 1:
		// Segments are deleted only after their results were acknowledged
		// or recorded in a gap.
		acked = s.segs[0].first - 1
		s.log.Warn("spool: acknowledged watermark missing; assuming everything before the first segment was acknowledged",
			"acked", acked)
	case !haveAck && len(s.segs) == 0 && len(s.gaps) > 0:
		// Without segments, the gaps still say how far numbering went.
		acked = s.gaps[len(s.gaps)-1].LastSeq
	}
	ackChanged := false
	// Segments dropped for space whose deletion a crash interrupted: their
	// results are in a gap already.
	for len(s.segs) > 0 && s.droppedBefore(s.segs[0], acked) {
		g := s.segs[0]
		s.log.Warn("spool: finishing the drop of a segment recorded in a gap", "segment", g.path, "last_seq", g.last())
		acked, ackChanged = max(acked, g.last()), true
		s.removeSegment(g.path)
		s.segs = s.segs[1:]
		changed = true
	}
	s.acked = acked
	s.findHoles()
	s.next = acked + 1
	if len(s.segs) > 0 {
		s.next = max(s.next, s.segs[len(s.segs)-1].last()+1)
	}
	s.wnext = s.next
	// Segments that were acknowledged but not yet deleted when the agent
	// stopped.
	for len(s.segs) > 0 && s.segs[0].last() <= acked {
		s.removeSegment(s.segs[0].path)
		s.segs = s.segs[1:]
		changed = true
	}
	if ackChanged {
		if err := writeFileAtomic(filepath.Join(s.dir, ackName), []byte(strconv.FormatUint(acked, 10)+"\n")); err != nil {
			s.log.Error("spool: cannot write the acknowledged watermark", "err", err)
		}
	}
	if changed {
		if err := syncDir(s.dir); err != nil {
			s.log.Error("spool: cannot make the recovery durable", "err", err)
		}
	}
	s.gmu.Lock()
	if s.pruneLocked(acked) || s.gapsDirty {
		_ = s.saveGapsLocked()
	}
	s.gmu.Unlock()
	if n := len(s.segs); n > 0 && s.segs[n-1].end < s.segBytes && !sealed {
		f, err := os.OpenFile(s.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			s.log.Error("spool: cannot append to the last segment; starting a new one", "segment", s.segs[n-1].path, "err", err)
		} else {
			s.w = f
			s.wend = s.segs[n-1].end
		}
	}
	s.log.Debug("spool: opened", "next_seq", s.next, "acked", s.acked, "segments", len(s.segs), "gaps", len(s.gaps))
	return nil
}

// droppedBefore reports whether g's unacknowledged results are all inside a
// gap of a full spool: the drop wrote the gap, then was interrupted before
// it deleted g. Only a gap that lost every result it covers counts (one
// merged by compactLocked may span results still here).
func (s *Spool) droppedBefore(g *segment, acked uint64) bool {
	from := max(g.first, acked+1)
	for _, e := range s.gaps {
		if e.Reason == api.GapSpoolFull && e.Count == e.LastSeq-e.FirstSeq+1 && e.FirstSeq <= from && g.last() <= e.LastSeq {
			return true
		}
	}
	return false
}

// findHoles records as lost the results missing before the first segment
// (after the watermark) and between segments: deleted, or moved aside as
// unreadable. Their measurement times are bounded by the neighbouring
// records.
func (s *Spool) findHoles() {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	added := false
	for i, g := range s.segs {
		var from, to uint64
		var after time.Time
		if i == 0 {
			from, to = s.acked+1, g.first-1
			if from <= to {
				s.log.Error("spool: results lost before the first segment", "from_seq", from, "to_seq", to)
			}
		} else {
			p := s.segs[i-1]
			from, to = p.last()+1, g.first-1
			after = unixTime(p.at[len(p.at)-1])
			if from <= to {
				s.log.Error("spool: results lost between segments", "from_seq", from, "to_seq", to)
			}
		}
		if from <= to && s.addGapLocked(api.GapSegmentLost, from, to, after, unixTime(g.at[0])) > 0 {
			added = true
		}
	}
	if added {
		s.compactLocked()
		_ = s.saveGapsLocked()
	}
}

// removeSegment deletes a segment file that is no longer needed; a failure
// is logged (the next Open tries again).
func (s *Spool) removeSegment(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: cannot delete a segment", "segment", path, "err", err)
	}
}

// readAck reads the acknowledged watermark and reports whether there was
// one. A missing or unreadable file is not fatal: recover infers the
// watermark from the segments.
func (s *Spool) readAck() (uint64, bool) {
	path := filepath.Join(s.dir, ackName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false
	}
	var v uint64
	if err == nil {
		v, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	if err != nil {
		s.log.Error("spool: acknowledged watermark is unreadable; ignoring it", "file", path, "err", err)
		s.moveAside(path)
		return 0, false
	}
	return v, true
}

// scan indexes g's records, truncating the file at the first bad one. It
// reports whether the segment is kept: a segment without a single good
// record is removed when empty and moved aside otherwise (its results are
// lost). clean is false when a bad tail could not be cut off: the segment
// is kept for reading, and nothing more is appended to it.
func (s *Spool) scan(g *segment) (kept, clean bool) {
	b, err := os.ReadFile(g.path)
	if err != nil {
		s.log.Error("spool: segment cannot be read; moving it aside", "segment", g.path, "err", err)
		s.moveAside(g.path)
		return false, false
	}
	var bad string
	off := int64(0)
	for off < int64(len(b)) {
		r, n, why := parse(b[off:])
		if why != "" {
			bad = why
			break
		}
		if want := g.first + uint64(len(g.offs)); r.Seq != want {
			bad = fmt.Sprintf("record has seq %d, want %d", r.Seq, want)
			break
		}
		g.offs = append(g.offs, off)
		g.at = append(g.at, r.MeasuredAt.UnixNano())
		off += n
	}
	g.end = off
	switch {
	case len(g.offs) == 0 && len(b) == 0:
		s.removeSegment(g.path)
		return false, false
	case len(g.offs) == 0:
		s.log.Error("spool: segment holds no readable record; moving it aside",
			"segment", g.path, "bytes", len(b), "reason", bad)
		s.moveAside(g.path)
		return false, false
	case bad != "":
		s.log.Warn("spool: cutting a torn or corrupt tail",
			"segment", g.path, "last_good_seq", g.last(), "kept_bytes", off, "dropped_bytes", int64(len(b))-off, "reason", bad)
		if err := truncate(g.path, off); err != nil {
			s.log.Error("spool: cannot cut the tail; the segment is only read from now on", "segment", g.path, "err", err)
			return true, false
		}
	}
	return true, true
}

// parse decodes the record at the start of b and returns its framed size, or
// why it cannot.
func parse(b []byte) (api.Result, int64, string) {
	var r api.Result
	if len(b) < headerBytes {
		return r, 0, "short record header"
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > maxRecordBytes {
		return r, 0, fmt.Sprintf("bad record length %d", n)
	}
	if int64(len(b)) < headerBytes+int64(n) {
		return r, 0, "short record"
	}
	payload := b[headerBytes : headerBytes+n]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return r, 0, "bad checksum"
	}
	if err := json.Unmarshal(payload, &r); err != nil {
		return r, 0, "bad JSON: " + err.Error()
	}
	return r, headerBytes + int64(n), ""
}

// Append numbers results with the next sequence numbers, writes them and
// waits for an fsync covering them (one for the whole call, maybe shared
// with other appends), and returns the numbered copies. Only then are they
// visible to Pending. Results appended together were measured together:
// those without a Round get the Seq of the call's first result. Every result
// must pass api.Result.Validate once numbered; otherwise nothing is written.
func (s *Spool) Append(results []api.Result) ([]api.Result, error) {
	if len(results) == 0 {
		return nil, nil
	}
	out, n, err := s.write(results)
	if err != nil {
		return nil, err
	}
	if err := s.waitDurable(n); err != nil {
		return nil, err
	}
	return out, nil
}

// write numbers and writes results, and returns the numbered copies and
// the write's number.
func (s *Spool) write(results []api.Result) ([]api.Result, uint64, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	next, closed, broken := s.wnext, s.closed, s.broken
	s.mu.Unlock()
	switch {
	case closed:
		return nil, 0, ErrClosed
	case broken != nil:
		return nil, 0, broken
	}

	out := make([]api.Result, len(results))
	var buf []byte
	offs := make([]int64, len(results))
	at := make([]int64, len(results))
	for i, r := range results {
		r.Seq = next + uint64(i)
		if r.Round == 0 {
			r.Round = next
		}
		if err := r.Validate(); err != nil {
			return nil, 0, fmt.Errorf("spool: result %d: %w", i, err)
		}
		payload, err := json.Marshal(r)
		if err != nil {
			return nil, 0, fmt.Errorf("spool: result %d: %w", i, err)
		}
		if len(payload) > maxRecordBytes {
			return nil, 0, fmt.Errorf("spool: result %d: %d bytes of JSON", i, len(payload))
		}
		offs[i] = int64(len(buf))
		at[i] = r.MeasuredAt.UnixNano()
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(payload)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(payload, castagnoli))
		buf = append(buf, payload...)
		out[i] = r
	}

	g, err := s.writable()
	if err != nil {
		return nil, 0, err
	}
	if s.maxBytes > 0 {
		s.makeRoom(int64(len(buf)))
	}
	base := s.wend
	if _, err := s.w.Write(buf); err != nil {
		// Not fsynced: cut the partial write off and carry on.
		if terr := s.w.Truncate(base); terr != nil {
			return nil, 0, s.breakDown(fmt.Errorf("writing %s: %w; truncating it: %w", g.path, err, terr))
		}
		return nil, 0, fmt.Errorf("spool: writing %s: %w", g.path, err)
	}
	for i := range offs {
		offs[i] += base
	}
	s.wend = base + int64(len(buf))
	s.writes++
	s.unsynced = append(s.unsynced, write{n: s.writes, g: g, offs: offs, at: at, end: s.wend, first: next})
	s.mu.Lock()
	s.wnext = next + uint64(len(results))
	s.mu.Unlock()
	return out, s.writes, nil
}

// waitDurable returns once write n is fsynced and visible. One waiting
// Append at a time fsyncs for all, when the commit window allows; the others
// wait for it.
func (s *Spool) waitDurable(n uint64) error {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for s.durable < n {
		s.mu.Lock()
		broken := s.broken
		s.mu.Unlock()
		if broken != nil {
			return broken
		}
		if s.committing {
			s.commit.Wait()
			continue
		}
		s.committing = true
		wait := time.Until(s.lastSync.Add(s.window))
		s.cmu.Unlock()
		if wait > 0 {
			s.sleep(wait)
		}
		s.wmu.Lock()
		s.syncLocked()
		s.wmu.Unlock()
		s.cmu.Lock()
		s.committing = false
		s.commit.Broadcast()
	}
	return nil
}

// syncLocked fsyncs the writes not yet durable and makes them visible, or
// breaks the spool when the fsync fails. The caller holds wmu.
func (s *Spool) syncLocked() {
	if len(s.unsynced) == 0 {
		return
	}
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	if broken == nil {
		// Writes to an earlier segment were fsynced when it was rotated.
		if err := s.syncFile(s.w); err != nil {
			// After a failed fsync the kernel may have dropped the dirty
			// pages: what is on disk is unknown until the file is read
			// again.
			last := s.unsynced[len(s.unsynced)-1].g
			for _, w := range s.unsynced {
				if w.g == last {
					_ = s.w.Truncate(w.offs[0])
					break
				}
			}
			s.breakDown(fmt.Errorf("fsync %s: %w", last.path, err))
		} else {
			s.publishLocked()
		}
	}
	s.cmu.Lock()
	s.lastSync = time.Now()
	s.commit.Broadcast()
	s.cmu.Unlock()
}

// publishLocked makes the fsynced writes visible. The caller holds wmu.
func (s *Spool) publishLocked() {
	s.mu.Lock()
	for _, w := range s.unsynced {
		w.g.offs = append(w.g.offs, w.offs...)
		w.g.at = append(w.g.at, w.at...)
		w.g.end = w.end
		s.next = w.first + uint64(len(w.offs))
	}
	s.mu.Unlock()
	n := s.unsynced[len(s.unsynced)-1].n
	s.unsynced = s.unsynced[:0]
	s.cmu.Lock()
	s.durable = n
	s.cmu.Unlock()
}

// breakDown marks the spool unusable.
func (s *Spool) breakDown(err error) error {
	err = fmt.Errorf("%w: %w", ErrBroken, err)
	s.log.Error("spool: write failed; appends refused until the agent restarts", "err", err)
	s.mu.Lock()
	s.broken = err
	s.mu.Unlock()
	return err
}

// writable returns the segment to append to, rotating when the current one
// is full: the writes to the full one are fsynced first. The caller holds
// wmu.
func (s *Spool) writable() (*segment, error) {
	s.mu.Lock()
	var g *segment
	if n := len(s.segs); n > 0 {
		g = s.segs[n-1]
	}
	next := s.wnext
	s.mu.Unlock()
	if s.w != nil && g != nil && s.wend < s.segBytes {
		return g, nil
	}
	if s.w != nil {
		s.syncLocked()
		s.mu.Lock()
		broken := s.broken
		s.mu.Unlock()
		if broken != nil {
			return nil, broken
		}
		if err := s.w.Close(); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.w = nil
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%020d%s", next, segSuffix))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The new name must be durable before anything in it is reported so.
	if err := syncDir(s.dir); err != nil {
		f.Close()
		_ = os.Remove(path)
		return nil, err
	}
	s.w = f
	s.wend = 0
	g = &segment{first: next, path: path}
	s.mu.Lock()
	s.segs = append(s.segs, g)
	victims := s.collectLocked()
	s.mu.Unlock()
	s.remove(victims)
	return g, nil
}

// makeRoom drops the oldest segments, whole, until need more bytes fit
// under MaxBytes, recording their unacknowledged results as a gap; the
// segment being written is never dropped. The caller holds wmu; makeRoom
// takes rmu while it drops, so that Pending never reads a dropped segment.
func (s *Spool) makeRoom(need int64) {
	if s.oldestOver(need) == nil {
		return
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for g := s.oldestOver(need); g != nil; g = s.oldestOver(need) {
		s.drop(g)
	}
}

// oldestOver returns the oldest segment when the segment files and need
// more bytes exceed MaxBytes, nil when they fit or only the segment being
// written is left. The caller holds wmu.
func (s *Spool) oldestOver(need int64) *segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.segs)
	if n < 2 {
		return nil
	}
	total := s.wend + need // the segment being written, with what is not yet fsynced
	for _, g := range s.segs[:n-1] {
		total += g.end
	}
	if total <= s.maxBytes {
		return nil
	}
	return s.segs[0]
}

// drop removes the oldest segment g to make room: its unacknowledged
// results are recorded as a gap (durably, before anything is deleted), the
// watermark moves past it (so that a restart does not find the hole again),
// then the file goes. A crash in between is finished by Open. Failures to
// write are logged: the gap stays in memory and the space is freed anyway.
// The caller holds wmu and rmu. Segments other than the last were fsynced
// and published when the spool rotated past them.
func (s *Spool) drop(g *segment) {
	s.mu.Lock()
	acked := s.acked
	s.mu.Unlock()
	if from := max(g.first, acked+1); from <= g.last() {
		lo, hi := spanTimes(g.at[from-g.first:])
		lost := s.addGap(api.GapSpoolFull, from, g.last(), lo, hi)
		s.log.Warn("spool: full; dropped its oldest results, recorded as a gap",
			"from_seq", from, "to_seq", g.last(), "results", lost, "measured_from", lo, "measured_to", hi, "max_bytes", s.maxBytes)
	}
	if g.last() > acked {
		if err := writeFileAtomic(filepath.Join(s.dir, ackName), []byte(strconv.FormatUint(g.last(), 10)+"\n")); err != nil {
			s.log.Error("spool: cannot move the watermark past a dropped segment", "err", err)
		} else {
			s.mu.Lock()
			s.acked = max(s.acked, g.last())
			acked = s.acked
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	if len(s.segs) > 0 && s.segs[0] == g {
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	s.removeSegment(g.path)
	s.gmu.Lock()
	if s.pruneLocked(acked) {
		_ = s.saveGapsLocked()
	}
	s.gmu.Unlock()
}

// Pending returns the oldest unacknowledged results in seq order: at most
// maxResults, and at most maxBytes of spooled JSON (but always at least one
// result when any is pending). A record that no longer reads back correctly
// is logged, recorded as a gap and skipped: it is lost.
func (s *Spool) Pending(maxResults, maxBytes int) ([]api.Result, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()

	// span is a run of records of one segment: their seqs from first on,
	// offsets, measurement times, and where the last one ends. offs and at
	// share the index's arrays: appends never touch what is already there.
	type span struct {
		path  string
		first uint64
		offs  []int64
		at    []int64
		end   int64
	}
	var plan []span
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	count, bytes := 0, int64(0)
	for _, g := range s.segs {
		if count >= maxResults {
			break
		}
		i := 0
		if g.first <= s.acked {
			i = int(s.acked - g.first + 1)
		}
		if i >= len(g.offs) {
			continue
		}
		j := i
		for ; j < len(g.offs) && count < maxResults; j++ {
			n := g.size(j)
			if count > 0 && bytes+n > int64(maxBytes) {
				maxResults = count // stop here
				break
			}
			bytes += n
			count++
		}
		if j > i {
			end := g.end
			if j < len(g.offs) {
				end = g.offs[j]
			}
			plan = append(plan, span{path: g.path, first: g.first + uint64(i), offs: g.offs[i:j], at: g.at[i:j], end: end})
		}
	}
	s.mu.Unlock()

	results := make([]api.Result, 0, count)
	for _, sp := range plan {
		start := sp.offs[0]
		b, err := readRange(sp.path, start, sp.end)
		if err != nil {
			return nil, err
		}
		bad := -1 // first of a run of unreadable records
		for k, off := range sp.offs {
			next := sp.end
			if k+1 < len(sp.offs) {
				next = sp.offs[k+1]
			}
			r, _, why := parse(b[off-start : next-start])
			if why == "" && r.Seq != sp.first+uint64(k) {
				why = fmt.Sprintf("record has seq %d, want %d", r.Seq, sp.first+uint64(k))
			}
			if why != "" {
				s.log.Error("spool: record unreadable; it is lost", "segment", sp.path, "offset", off, "seq", sp.first+uint64(k), "reason", why)
				if bad < 0 {
					bad = k
				}
				continue
			}
			if bad >= 0 {
				s.lostRecords(sp.first, sp.at, bad, k)
				bad = -1
			}
			results = append(results, r)
		}
		if bad >= 0 {
			s.lostRecords(sp.first, sp.at, bad, len(sp.offs))
		}
	}
	return results, nil
}

// lostRecords records the records [i, j) of a span starting at seq first
// as a gap. The caller holds rmu.
func (s *Spool) lostRecords(first uint64, at []int64, i, j int) {
	lo, hi := spanTimes(at[i:j])
	s.addGap(api.GapRecordCorrupt, first+uint64(i), first+uint64(j-1), lo, hi)
}

func readRange(path string, start, end int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	b := make([]byte, end-start)
	if n, err := f.ReadAt(b, start); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("spool: reading %s: %w", path, err)
	}
	return b, nil
}

// Ack records that every result up to and including seq upTo has been
// acknowledged by the collector (or is in a gap): the watermark is
// persisted atomically, then segments holding only acknowledged results are
// deleted.
func (s *Spool) Ack(upTo uint64) error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.mu.Lock()
	acked, next, closed := s.acked, s.next, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case upTo <= acked:
		return nil
	case upTo >= next:
		return fmt.Errorf("spool: ack of seq %d, but the last appended is %d", upTo, next-1)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, ackName), []byte(strconv.FormatUint(upTo, 10)+"\n")); err != nil {
		return err
	}
	s.mu.Lock()
	s.acked = upTo
	victims := s.collectLocked()
	s.mu.Unlock()
	s.remove(victims)
	s.gmu.Lock()
	if s.pruneLocked(upTo) {
		_ = s.saveGapsLocked()
	}
	s.gmu.Unlock()
	return nil
}

// collectLocked unlinks from the index the segments holding only
// acknowledged results, except the last one (the writer's), and returns
// them. The caller holds mu.
func (s *Spool) collectLocked() []*segment {
	var victims []*segment
	for len(s.segs) > 1 && s.segs[0].last() <= s.acked {
		victims = append(victims, s.segs[0])
		s.segs = s.segs[1:]
	}
	return victims
}

// remove deletes acknowledged segment files. A failure is harmless: Open
// deletes acknowledged segments it finds.
func (s *Spool) remove(victims []*segment) {
	for _, g := range victims {
		if err := os.Remove(g.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("spool: cannot delete acknowledged segment", "segment", g.path, "err", err)
		}
	}
}

// Stats reports the number and framed size of unacknowledged results, and
// when the oldest of them was measured (zero when none is pending).
func (s *Spool) Stats() (pendingResults int, pendingBytes int64, oldest time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		i := 0
		if g.first <= s.acked {
			i = int(s.acked - g.first + 1)
		}
		if i >= len(g.offs) {
			continue
		}
		if pendingResults == 0 {
			oldest = time.Unix(0, g.at[i]).UTC()
		}
		pendingResults += len(g.offs) - i
		pendingBytes += g.end - g.offs[i]
	}
	return pendingResults, pendingBytes, oldest
}

// Fresh reports whether the spool has never held a result: no segment, no
// acknowledgement, numbering at 1. A fresh spool of an agent that already
// delivered results means its spool directory was lost.
func (s *Spool) Fresh() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next == 1 && s.acked == 0 && len(s.segs) == 0
}

// Reseed continues the numbering of a fresh spool after lastSeq, the highest
// sequence number the collector holds for this agent, so that an agent whose
// spool directory was lost never numbers two measurements alike. It records
// lastSeq as acknowledged (durably) and fails on a spool that is not fresh.
func (s *Spool) Reseed(lastSeq uint64) error {
	if lastSeq == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if !s.Fresh() {
		return fmt.Errorf("spool: reseed after %d: the spool is not fresh (next seq %d)", lastSeq, s.NextSeq())
	}
	if lastSeq >= 1<<62 {
		return fmt.Errorf("spool: reseed after %d: out of range", lastSeq)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, ackName), []byte(strconv.FormatUint(lastSeq, 10)+"\n")); err != nil {
		return err
	}
	s.mu.Lock()
	s.acked, s.next, s.wnext = lastSeq, lastSeq+1, lastSeq+1
	s.mu.Unlock()
	return nil
}

// NextSeq is the sequence number the next appended result will get.
func (s *Spool) NextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wnext
}

// Close releases the spool. Appends still waiting for their fsync get it
// first; everything Append returned was durable already.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.syncLocked()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.gmu.Lock()
	if s.gapsDirty && !s.isClosed() {
		_ = s.saveGapsLocked()
	}
	s.gmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.w != nil {
		err = s.w.Close()
		s.w = nil
	}
	s.unlock()
	return err
}

func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Spool) unlock() {
	if s.w != nil {
		s.w.Close()
		s.w = nil
	}
	_ = syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
	s.lock.Close()
}

// moveAside renames a corrupt file so that it is kept for inspection but no
// longer read.
func (s *Spool) moveAside(path string) {
	to := fmt.Sprintf("%s.%d.corrupt", path, time.Now().UnixNano())
	if err := os.Rename(path, to); err != nil {
		s.log.Error("spool: cannot move corrupt file aside", "file", path, "err", err)
		return
	}
	s.log.Error("spool: moved corrupt file aside", "file", to)
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// syncDir makes the directory's entries (creations, renames, removals)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: fsync %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: write a temporary file, fsync it, rename it over
// path, fsync the directory.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("spool: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("spool: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return syncDir(filepath.Dir(path))
}
