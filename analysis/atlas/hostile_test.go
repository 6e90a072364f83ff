package atlas

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
)

// repeatReader yields prefix, then n copies of fill, then suffix, without
// holding them.
type repeatReader struct {
	prefix, suffix string
	fill           byte
	n              int64
	pos            int64
}

func (r *repeatReader) Read(b []byte) (int, error) {
	head := int64(len(r.prefix))
	switch {
	case r.pos < head:
		n := copy(b, r.prefix[r.pos:])
		r.pos += int64(n)
		return n, nil
	case r.pos < head+r.n:
		n := int(min(int64(len(b)), head+r.n-r.pos))
		b = b[:n]
		if n > 0 {
			b[0] = r.fill
			for filled := 1; filled < n; filled *= 2 {
				copy(b[filled:], b[:filled])
			}
		}
		r.pos += int64(n)
		return n, nil
	case r.pos < head+r.n+int64(len(r.suffix)):
		n := copy(b, r.suffix[r.pos-head-r.n:])
		r.pos += int64(n)
		return n, nil
	}
	return 0, io.EOF
}

// TestHostileInputs: whatever a file holds, the parser reports the broken
// records and goes on with the good ones after them.
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	good := krootRecord(7)
	for _, tc := range []struct {
		name    string
		in      io.Reader
		reasons []string
	}{
		{"deep nesting, array", strings.NewReader("[" + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "," + good + "]"), []string{"nested deeper than 64 levels"}},
		{"deep nesting, lines", strings.NewReader(`{"a":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}\n" + good), []string{"exceeded max depth"}},
		{"huge string, array", io.MultiReader(&repeatReader{prefix: `[{"type":"dns","x":"`, fill: 'A', n: 5 << 20, suffix: `"},`}, strings.NewReader(good+"]")), []string{"record larger than 1048576 bytes"}},
		{"huge string, lines", io.MultiReader(&repeatReader{prefix: `{"type":"dns","x":"`, fill: 'A', n: 5 << 20, suffix: "\"}\n"}, strings.NewReader(good)), []string{"record larger than 1048576 bytes"}},
		{"raw NUL bytes", strings.NewReader("[\x00\x00,{\"type\":\"dns\x00\"}," + good + "]"), []string{"not a JSON object", "invalid character '\\x00' in string literal"}},
		{"raw NUL in a line", strings.NewReader("{\"type\":\"dns\x00\"}\n" + good), []string{"invalid JSON"}},
		{"an empty object", strings.NewReader("[{}," + good + "]"), []string{"no type"}},
		{"many answers", strings.NewReader(strings.Replace(krootRecord(8), `"answers":[`, `"answers":[`+strings.Repeat(`{"TYPE":"TXT","NAME":"hostname.bind","RDATA":["x"]},`, 10000), 1) + "\n" + `{"type":"dns"}` + "\n" + good), []string{"no msm_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := parse(t, tc.in, Options{})
			if got.err != nil {
				t.Fatal(got.err)
			}
			if len(got.malformed) != len(tc.reasons) {
				t.Fatalf("malformed %v, want %q", got.malformed, tc.reasons)
			}
			for i, m := range got.malformed {
				if !strings.Contains(m.Reason, tc.reasons[i]) {
					t.Errorf("malformed %v, want %q", m, tc.reasons[i])
				}
			}
			last := got.records[len(got.records)-1]
			if last.ProbeID != 7 || len(last.Results) != 1 || last.Results[0].DNS.Identity != "ns1.fi-hel.k.ripe.net" {
				t.Errorf("the good record after it: %+v", last)
			}
			checkResults(t, got.records)
		})
	}
}

// TestBoundedMemory streams records far larger than the record limit and
// checks that what the parser allocates stays near the limit. (Not
// parallel: it reads the process's allocation counter.)
func TestBoundedMemory(t *testing.T) {
	const size = 128 << 20
	in := io.MultiReader(
		&repeatReader{prefix: `[{"type":"dns","RDATA":"`, fill: 'x', n: size, suffix: `"},`},
		&repeatReader{prefix: `{"a":`, fill: '[', n: size / 32},
		&repeatReader{fill: ']', n: size / 32, suffix: `},`},
		strings.NewReader(krootRecord(9)+"]"),
	)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got := parse(t, in, Options{})
	runtime.ReadMemStats(&after)
	if got.err != nil || len(got.malformed) != 2 || len(got.records) != 1 {
		t.Fatalf("error %v, malformed %v, %d records", got.err, got.malformed, len(got.records))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("parsing %d MiB allocated %d MiB, want well under the input (records are bounded to 1 MiB)", (size+size/16)>>20, alloc>>20)
	}
}

// TestManyRecords reads a long stream record by record.
func TestManyRecords(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	const n = 20000
	for i := range n {
		b.WriteString(krootRecord(i + 1))
		b.WriteByte('\n')
	}
	p, err := NewParser(&b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for {
		rec, err := p.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.ProbeID != int64(count+1) {
			t.Fatalf("record %d is of probe %d", count, rec.ProbeID)
		}
		count++
	}
	if count != n || p.Stats().Records != n {
		t.Errorf("%d records, stats %+v, want %d", count, p.Stats(), n)
	}
}

// BenchmarkParse measures parsing DNS records with resultsets (JSON lines).
func BenchmarkParse(b *testing.B) {
	rec := `{"lts":81,"from":"203.0.113.7","msm_id":9181945,"fw":4790,"timestamp":1499702566,"resultset":[` +
		`{"lts":81,"src_addr":"192.168.1.171","af":4,"submax":2,"proto":"UDP","subid":1,"result":{"abuf":"jeWBhAABAAAAAAAACGhvc3RuYW1lBGJpbmQAABAAAw==","rt":62.61,"NSCOUNT":0,"QDCOUNT":1,"ANCOUNT":0,"ARCOUNT":0,"ID":36325,"size":31},"time":1499702566,"dst_addr":"192.168.1.1"},` +
		`{"lts":34,"src_addr":"200.0.21.151","af":4,"submax":2,"proto":"UDP","subid":2,"result":{"abuf":"yIKFgAABAAEAAQAACGhvc3RuYW1lBGJpbmQAABAAA8AMABAAAwAAAAAABANuczHADAACAAMAAAAAAALADA==","rt":210.566,"NSCOUNT":1,"QDCOUNT":1,"answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":["ns1"]}],"ANCOUNT":1,"ARCOUNT":0,"ID":51330,"size":58},"time":1499702567,"dst_addr":"200.0.16.1"}` +
		`],"prb_id":1,"group_id":9181945,"type":"dns","msm_name":"Tdig"}` + "\n"
	var in bytes.Buffer
	const n = 1000
	for range n {
		in.WriteString(rec)
	}
	b.SetBytes(int64(in.Len()))
	b.ReportAllocs()
	for b.Loop() {
		p, err := NewParser(bytes.NewReader(in.Bytes()), Options{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := p.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
