package atlas

import (
	"bufio"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Options configure a Parser. The zero value takes the defaults.
type Options struct {
	// MaxRecordBytes bounds one record (DefaultMaxRecordBytes when 0).
	MaxRecordBytes int
	// Query is the DNS query assumed for results that do not say what they
	// asked (an error without abuf, qbuf or answers, outside the built-in
	// hostname.bind measurements): api.QueryHostnameBind, api.QueryIDServer
	// or api.QueryNSID. Empty: such results are skipped.
	Query string
	// Now is the clock that bounds plausible timestamps (time.Now when nil):
	// a record more than a day in its future is malformed.
	Now func() time.Time
}

// Stats say how far a Parser got.
type Stats struct {
	// Records read, malformed ones included.
	Records int64
	// Bytes read from the input as given (compressed when it is), which
	// runs ahead of the records by up to 64 KiB.
	Bytes int64
}

// Parser streams records from one input. It is not safe for concurrent use.
type Parser struct {
	opts  Options
	src   *countingReader
	sp    *splitter
	err   error // sticky: the input failed or ended
	count int64
	// learned holds the query of each DNS measurement seen (one
	// measurement asks one question).
	learned map[int64]dnsPrep
}

// earliest is before the first RIPE Atlas result.
var earliest = time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

// NewParser validates o and returns a parser reading r, which may hold a
// JSON array or JSON lines, plain or compressed with gzip or bzip2.
func NewParser(r io.Reader, o Options) (*Parser, error) {
	switch {
	case o.MaxRecordBytes == 0:
		o.MaxRecordBytes = DefaultMaxRecordBytes
	case o.MaxRecordBytes < 64 || o.MaxRecordBytes > 64<<20:
		return nil, fmt.Errorf("atlas: max record size %d out of range 64..%d", o.MaxRecordBytes, 64<<20)
	}
	switch o.Query {
	case "", api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID:
	default:
		return nil, fmt.Errorf("atlas: query %q: want %s, %s or %s", api.Clip(o.Query), api.QueryHostnameBind, api.QueryIDServer, api.QueryNSID)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Parser{opts: o, src: &countingReader{r: r}}, nil
}

// Stats returns the records and bytes read so far.
func (p *Parser) Stats() Stats {
	return Stats{Records: p.count, Bytes: p.src.n}
}

// Next returns the next record. The error is a *MalformedError (wrapping
// ErrMalformed) when the record could not be read: call Next again for the
// following one. It is io.EOF at the end of the input, and any other error
// means the input itself failed (a read error, a corrupt compressed stream);
// Next then returns it again.
func (p *Parser) Next() (Record, error) {
	if p.err != nil {
		return Record{}, p.err
	}
	if p.sp == nil {
		if err := p.open(); err != nil {
			p.err = err
			return Record{}, err
		}
	}
	el, err := p.sp.next()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			err = fmt.Errorf("atlas: reading input: %w", err)
		}
		p.err = err
		return Record{}, err
	}
	p.count++
	if el.problem != "" {
		return Record{Position: el.pos}, &MalformedError{Position: el.pos, Reason: el.problem}
	}
	rec := Record{Position: el.pos}
	if err := p.convert(el.data, &rec); err != nil {
		return Record{Position: el.pos}, &MalformedError{Position: el.pos, Reason: err.Error()}
	}
	return rec, nil
}

// open detects compression from the first bytes.
func (p *Parser) open() error {
	r, err := decompress(p.src)
	if err != nil {
		return err
	}
	p.sp = newSplitter(r, p.opts.MaxRecordBytes)
	return nil
}

// decompress returns r buffered, and decompressed when its first bytes say
// gzip or bzip2.
func decompress(src io.Reader) (*bufio.Reader, error) {
	br := bufio.NewReaderSize(src, 64<<10)
	magic, err := br.Peek(3)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("atlas: reading input: %w", err)
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("atlas: gzip input: %w", err)
		}
		return bufio.NewReaderSize(zr, 64<<10), nil
	case len(magic) == 3 && string(magic) == "BZh":
		return bufio.NewReaderSize(bzip2.NewReader(br), 64<<10), nil
	}
	return br, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// header holds the fields every record must have.
type header struct {
	Type      *string `json:"type"`
	MsmID     *int64  `json:"msm_id"`
	PrbID     *int64  `json:"prb_id"`
	Timestamp *int64  `json:"timestamp"`
	DstName   string  `json:"dst_name"`
}

// convert decodes one record into rec.
func (p *Parser) convert(data []byte, rec *Record) error {
	if len(data) == 0 || data[0] != '{' {
		return errors.New("not a JSON object")
	}
	var h header
	if err := json.Unmarshal(data, &h); err != nil {
		return jsonError(err)
	}
	switch {
	case h.Type == nil:
		return errors.New("no type")
	case h.MsmID == nil:
		return errors.New("no msm_id")
	case h.PrbID == nil:
		return errors.New("no prb_id")
	case h.Timestamp == nil:
		return errors.New("no timestamp")
	case *h.MsmID < 0 || *h.PrbID <= 0:
		return fmt.Errorf("msm_id %d or prb_id %d out of range", *h.MsmID, *h.PrbID)
	}
	at, err := p.time(*h.Timestamp)
	if err != nil {
		return err
	}
	rec.Type, rec.MsmID, rec.ProbeID, rec.Time = *h.Type, *h.MsmID, *h.PrbID, at
	rec.DstName = h.DstName
	c := converter{p: p, rec: rec}
	switch rec.Type {
	case "dns":
		err = c.dns(data)
	case "traceroute":
		err = c.trace(data)
	case "ping":
		err = c.ping(data)
	default:
		rec.Type = api.Clip(rec.Type)
		rec.Skipped = append(rec.Skipped, SkipType)
		return nil
	}
	if err != nil {
		return err
	}
	return finish(rec)
}

// time checks an Atlas timestamp (seconds since the epoch).
func (p *Parser) time(ts int64) (time.Time, error) {
	latest := p.opts.Now().Add(24 * time.Hour)
	if ts < earliest.Unix() || ts > latest.Unix() {
		return time.Time{}, fmt.Errorf("timestamp %d out of range (%s to a day from now)", ts, earliest.Format(time.DateOnly))
	}
	return time.Unix(ts, 0).UTC(), nil
}

// finish gives the record's results their round and checks each one against
// the wire contract (with a stand-in target: the importer names the real
// one).
func finish(rec *Record) error {
	if len(rec.Results) == 0 {
		return nil
	}
	round := rec.Results[0].Seq
	for _, r := range rec.Results {
		round = min(round, r.Seq)
	}
	for i := range rec.Results {
		r := &rec.Results[i]
		r.Round = round
		check := *r
		check.Target = "atlas-import"
		if err := check.Validate(); err != nil {
			return fmt.Errorf("result %d: %w", i, err)
		}
	}
	// Two results of one record with one sequence number would store one.
	seqs := make([]uint64, len(rec.Results))
	for i, r := range rec.Results {
		seqs[i] = r.Seq
	}
	slices.Sort(seqs)
	if len(slices.Compact(seqs)) != len(rec.Results) {
		return errors.New("two results of the record share a sequence number")
	}
	return nil
}

// Seq is the sequence number of the result of an Atlas record: a 62-bit
// hash (1..2^62-1) of the measurement, the probe, the record's timestamp,
// the result's index in the record (resultset entry; 0 otherwise), its kind
// and its query. A re-imported record gets the numbers it had.
func Seq(msmID, probeID, timestamp int64, index int, kind api.Kind, query string) uint64 {
	h := sha256.New()
	h.Write([]byte("anyscope/atlas/v1"))
	for _, n := range []int64{msmID, probeID, timestamp, int64(index)} {
		h.Write(strconv.AppendInt(nil, n, 10))
		h.Write([]byte{0})
	}
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(query))
	v := binary.BigEndian.Uint64(h.Sum(nil)) & (1<<62 - 1)
	if v == 0 {
		v = 1
	}
	return v
}

// converter turns one decoded record into results.
type converter struct {
	p   *Parser
	rec *Record
}

func (c *converter) add(r api.Result, index int) {
	r.Seq = Seq(c.rec.MsmID, c.rec.ProbeID, c.rec.Time.Unix(), index, r.Kind, r.Query)
	c.rec.Results = append(c.rec.Results, r)
}

func (c *converter) skip(reason string) { c.rec.Skipped = append(c.rec.Skipped, reason) }

// jsonError describes a decoding error without echoing input.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("invalid JSON at byte %d of the record: %w", se.Offset, err)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(record)"
		}
		return fmt.Errorf("%s: a JSON %s where %s is wanted", api.Clip(field), te.Value, te.Type)
	}
	return err // an Unmarshaler's own error, e.g. of RDATA
}

// ms converts Atlas milliseconds to microseconds, refusing what the wire
// contract would refuse.
func ms(field string, v float64) (int64, error) {
	us := v * 1000
	if us != us || us < 0 || us > float64(api.MaxRTT.Microseconds()) {
		return 0, fmt.Errorf("%s %g ms out of range", field, v)
	}
	return int64(us + 0.5), nil
}
