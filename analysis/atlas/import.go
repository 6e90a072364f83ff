package atlas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Store is where an Importer puts what it read; *store.Store implements it
// with A = store.Agent.
type Store[A any] interface {
	// EnsureVantagePoint creates the named vantage point if it does not
	// exist and records its location (lat and lon both or neither), AS
	// number (0: unknown) and country ("": unknown) when given.
	EnsureVantagePoint(ctx context.Context, name string, lat, lon *float64, asn int, country string) (A, error)
	// EnsureTarget creates the named target if it does not exist, with the
	// given addresses and probe kinds, and adds those it lacks to an
	// existing one. It never touches other targets.
	EnsureTarget(ctx context.Context, name string, addrs []netip.Addr, probes ...string) error
	// Ingest stores results of one vantage point; results already stored
	// are counted as duplicates.
	Ingest(ctx context.Context, agent A, results []api.Result) (accepted, duplicates int, err error)
}

// ErrStore wraps every error of the Store: the import stopped.
var ErrStore = errors.New("atlas: store failed")

// ImportOptions configure an Importer.
type ImportOptions struct {
	// Parse configures the parser of every input.
	Parse Options
	// Target, when set, receives every result; otherwise each record goes
	// to TargetName's target.
	Target string
	// Probes places the vantage points (from ParseProbes); may be nil.
	Probes map[int64]Probe
	// BatchSize is the most results one Ingest call gets
	// (api.MaxBatchResults when 0).
	BatchSize int
	// MaxPending bounds the results held for all vantage points together:
	// when reached, everything held is stored (100,000 when 0).
	MaxPending int
	// Concurrency is how many Ingest calls run at once (4 when 0).
	Concurrency int
	// Progress, when set, is called every ProgressEvery records and at the
	// end of each input, from the importing goroutine.
	Progress      func(Progress)
	ProgressEvery int64 // 10,000 when 0
	// Logger receives a debug line per malformed record (slog.Default when
	// nil).
	Logger *slog.Logger
}

// Progress is the state of the input being read.
type Progress struct {
	Input string
	Stats
	Done bool
}

// Summary counts what the imports so far did.
type Summary struct {
	Inputs  int
	Records int64 // read, malformed and skipped ones included
	Bytes   int64 // read from the inputs as given
	Results int64 // produced from the records
	// Stored and Duplicates are what the store said of them: a re-imported
	// file has every result a duplicate.
	Stored, Duplicates int64
	Malformed          int64
	// FirstMalformed holds the first MaxMalformedListed malformed records.
	FirstMalformed []MalformedError
	// Skipped counts records (or parts of records) not imported, by reason
	// (at most maxSkipReasons reasons; the rest count as "other").
	Skipped map[string]int64
	// ReadErrors lists inputs that failed while being read (what was read
	// before is imported).
	ReadErrors    []error
	VantagePoints int
	Targets       []string
}

// MaxMalformedListed is how many malformed records a Summary lists.
const MaxMalformedListed = 10

const maxSkipReasons = 32

// Importer reads Atlas inputs into a Store. It is not safe for concurrent
// use; Import calls may follow each other (the same vantage points and
// targets are not ensured twice).
type Importer[A any] struct {
	st   Store[A]
	opts ImportOptions
	log  *slog.Logger

	vps     map[int64]A
	targets map[string]*targetSeen
	pending map[int64][]api.Result // by probe
	held    int

	mu  sync.Mutex // guards sum's counters during a flush
	sum Summary
}

type targetSeen struct {
	addrs  map[netip.Addr]bool
	probes map[string]bool
}

// NewImporter validates o and returns an importer into st.
func NewImporter[A any](st Store[A], o ImportOptions) (*Importer[A], error) {
	if st == nil {
		return nil, errors.New("atlas: importer needs a store")
	}
	if o.Target != "" && !api.ValidName(o.Target) {
		return nil, fmt.Errorf("atlas: target name %q: want 1-63 characters of [A-Za-z0-9._-]", api.Clip(o.Target))
	}
	if _, err := NewParser(nil, o.Parse); err != nil {
		return nil, err
	}
	switch {
	case o.BatchSize == 0:
		o.BatchSize = api.MaxBatchResults
	case o.BatchSize < 1 || o.BatchSize > api.MaxBatchResults:
		return nil, fmt.Errorf("atlas: batch size %d out of range 1..%d", o.BatchSize, api.MaxBatchResults)
	}
	switch {
	case o.MaxPending == 0:
		o.MaxPending = 100_000
	case o.MaxPending < o.BatchSize:
		return nil, fmt.Errorf("atlas: max pending %d below the batch size %d", o.MaxPending, o.BatchSize)
	}
	switch {
	case o.Concurrency == 0:
		o.Concurrency = 4
	case o.Concurrency < 1 || o.Concurrency > 64:
		return nil, fmt.Errorf("atlas: concurrency %d out of range 1..64", o.Concurrency)
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 10_000
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Importer[A]{
		st: st, opts: o, log: log,
		vps: map[int64]A{}, targets: map[string]*targetSeen{}, pending: map[int64][]api.Result{},
		sum: Summary{Skipped: map[string]int64{}},
	}, nil
}

// Summary returns what the imports so far did.
func (im *Importer[A]) Summary() Summary {
	s := im.sum
	s.FirstMalformed = slices.Clone(s.FirstMalformed)
	s.ReadErrors = slices.Clone(s.ReadErrors)
	s.Targets = slices.Clone(s.Targets)
	s.Skipped = maps.Clone(s.Skipped)
	return s
}

// TargetName names the target of a record: its dst_name when that is a
// valid target name (and not an address), else "atlas-<msm_id>".
func TargetName(rec *Record) string {
	if api.ValidName(rec.DstName) {
		if _, err := netip.ParseAddr(rec.DstName); err != nil {
			return rec.DstName
		}
	}
	return "atlas-" + strconv.FormatInt(rec.MsmID, 10)
}

// Import reads one input (name says which, in progress and errors) and
// stores its results: when it returns nil, everything read is stored. It
// returns an error wrapping ErrStore when the store failed and ctx's error
// when ctx ended (results read but not yet stored are then dropped; a
// re-import stores them). A failing input is recorded in the summary's
// ReadErrors, what was read before is stored, and it is not an error.
func (im *Importer[A]) Import(ctx context.Context, r io.Reader, name string) error {
	p, err := NewParser(r, im.opts.Parse)
	if err != nil {
		return err
	}
	im.sum.Inputs++
	defer func() {
		s := p.Stats()
		im.sum.Records += s.Records
		im.sum.Bytes += s.Bytes
		if im.opts.Progress != nil {
			im.opts.Progress(Progress{Input: name, Stats: s, Done: true})
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := p.Next()
		var me *MalformedError
		switch {
		case errors.As(err, &me):
			im.malformed(name, me)
		case errors.Is(err, io.EOF):
			return im.Flush(ctx)
		case err != nil:
			im.sum.ReadErrors = append(im.sum.ReadErrors, fmt.Errorf("%s: %w", name, err))
			return im.Flush(ctx)
		default:
			if err := im.record(ctx, &rec); err != nil {
				return err
			}
		}
		if s := p.Stats(); im.opts.Progress != nil && s.Records%im.opts.ProgressEvery == 0 {
			im.opts.Progress(Progress{Input: name, Stats: s})
		}
	}
}

func (im *Importer[A]) malformed(input string, me *MalformedError) {
	im.sum.Malformed++
	if len(im.sum.FirstMalformed) < MaxMalformedListed {
		m := *me
		m.Input = input
		im.sum.FirstMalformed = append(im.sum.FirstMalformed, m)
	}
	im.log.Debug("malformed Atlas record", "input", input, "record", me.Position.Record,
		"line", me.Position.Line, "offset", me.Position.Offset, "reason", me.Reason)
}

func (im *Importer[A]) skipped(reason string) {
	if _, ok := im.sum.Skipped[reason]; !ok && len(im.sum.Skipped) >= maxSkipReasons {
		reason = "other"
	}
	im.sum.Skipped[reason]++
}

// record ensures the record's vantage point and target and queues its
// results.
func (im *Importer[A]) record(ctx context.Context, rec *Record) error {
	for _, s := range rec.Skipped {
		if s == SkipType {
			s = fmt.Sprintf("type %q not imported", rec.Type)
		}
		im.skipped(s)
	}
	if len(rec.Results) == 0 {
		return nil
	}
	if err := im.ensureVantagePoint(ctx, rec.ProbeID); err != nil {
		return err
	}
	target := im.opts.Target
	if target == "" {
		target = TargetName(rec)
	}
	if err := im.ensureTarget(ctx, target, rec.Results); err != nil {
		return err
	}
	for _, r := range rec.Results {
		r.Target = target
		im.pending[rec.ProbeID] = append(im.pending[rec.ProbeID], r)
	}
	im.held += len(rec.Results)
	im.sum.Results += int64(len(rec.Results))
	if n := len(im.pending[rec.ProbeID]); n >= im.opts.BatchSize {
		batch := im.pending[rec.ProbeID]
		delete(im.pending, rec.ProbeID)
		im.held -= n
		return im.ingest(ctx, []job[A]{{agent: im.vps[rec.ProbeID], results: batch}})
	}
	if im.held >= im.opts.MaxPending {
		return im.Flush(ctx)
	}
	return nil
}

func (im *Importer[A]) ensureVantagePoint(ctx context.Context, probe int64) error {
	if _, ok := im.vps[probe]; ok {
		return nil
	}
	var lat, lon *float64
	var asn int
	var country string
	if p, ok := im.opts.Probes[probe]; ok {
		if p.HasCoords {
			lat, lon = &p.Latitude, &p.Longitude
		}
		asn, country = p.ASN, p.Country
	}
	a, err := im.st.EnsureVantagePoint(ctx, VantagePointName(probe), lat, lon, asn, country)
	if err != nil {
		return fmt.Errorf("%w: vantage point %s: %w", ErrStore, VantagePointName(probe), err)
	}
	im.vps[probe] = a
	im.sum.VantagePoints++
	return nil
}

func (im *Importer[A]) ensureTarget(ctx context.Context, name string, results []api.Result) error {
	seen := im.targets[name]
	var addrs []netip.Addr
	var probes []string
	for _, r := range results {
		a, err := netip.ParseAddr(r.Address)
		if err != nil { // cannot happen: results are validated
			return fmt.Errorf("atlas: result address %q: %w", api.Clip(r.Address), err)
		}
		if (seen == nil || !seen.addrs[a]) && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
		if k := string(r.Kind); (seen == nil || !seen.probes[k]) && !slices.Contains(probes, k) {
			probes = append(probes, k)
		}
	}
	if seen != nil && len(addrs) == 0 && len(probes) == 0 {
		return nil
	}
	if seen == nil {
		seen = &targetSeen{addrs: map[netip.Addr]bool{}, probes: map[string]bool{}}
	}
	if err := im.st.EnsureTarget(ctx, name, addrs, probes...); err != nil {
		return fmt.Errorf("%w: target %s: %w", ErrStore, name, err)
	}
	if _, ok := im.targets[name]; !ok {
		im.targets[name] = seen
		im.sum.Targets = append(im.sum.Targets, name)
	}
	for _, a := range addrs {
		seen.addrs[a] = true
	}
	for _, p := range probes {
		seen.probes[p] = true
	}
	return nil
}

// Flush stores every result held.
func (im *Importer[A]) Flush(ctx context.Context) error {
	if im.held == 0 {
		return nil
	}
	probes := make([]int64, 0, len(im.pending))
	for p := range im.pending {
		probes = append(probes, p)
	}
	slices.Sort(probes)
	jobs := make([]job[A], 0, len(probes))
	for _, p := range probes {
		jobs = append(jobs, job[A]{agent: im.vps[p], results: im.pending[p]})
	}
	clear(im.pending)
	im.held = 0
	return im.ingest(ctx, jobs)
}

type job[A any] struct {
	agent   A
	results []api.Result
}

// ingest stores the jobs, Concurrency at a time, BatchSize results per
// call; one vantage point's results are never stored concurrently.
func (im *Importer[A]) ingest(ctx context.Context, jobs []job[A]) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan job[A])
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(im.opts.Concurrency, len(jobs)) {
		wg.Go(func() {
			for j := range work {
				for start := 0; start < len(j.results); start += im.opts.BatchSize {
					batch := j.results[start:min(start+im.opts.BatchSize, len(j.results))]
					acc, dup, err := im.st.Ingest(ctx, j.agent, batch)
					if err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("%w: ingest: %w", ErrStore, err); cancel() })
						break
					}
					im.mu.Lock()
					im.sum.Stored += int64(acc)
					im.sum.Duplicates += int64(dup)
					im.mu.Unlock()
				}
			}
		})
	}
feed:
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
