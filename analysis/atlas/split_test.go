package atlas

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// a valid record of the built-in K-root hostname.bind measurement; %d is its
// probe.
const kroot = `{"type":"dns","msm_id":10301,"prb_id":%d,"timestamp":1443691516,"proto":"UDP","dst_addr":"193.0.14.129","result":{"rt":1.5,"size":79,"answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":["ns1.fi-hel.k.ripe.net"]}]}}`

func krootRecord(probe int) string {
	return strings.Replace(kroot, "%d", strconv.Itoa(probe), 1)
}

func TestFormats(t *testing.T) {
	t.Parallel()
	r1, r2 := krootRecord(1), krootRecord(2)
	type rec struct {
		probe int64
		pos   Position
	}
	for _, tc := range []struct {
		name      string
		in        string
		want      []rec
		malformed []Position
	}{
		{"empty", "", nil, nil},
		{"only space", " \n\t\n", nil, nil},
		{"json lines", r1 + "\n" + r2 + "\n", []rec{{1, Position{0, 0, 1}}, {2, Position{1, int64(len(r1) + 1), 2}}}, nil},
		{"json lines without final newline", r1 + "\n" + r2, []rec{{1, Position{0, 0, 1}}, {2, Position{1, int64(len(r1) + 1), 2}}}, nil},
		{"json lines with blank lines and CRLF", "\n" + r1 + "\r\n\r\n  " + r2 + "\r\n", []rec{{1, Position{0, 1, 2}}, {2, Position{1, int64(len(r1) + 7), 4}}}, nil},
		{"array on one line", "[" + r1 + "," + r2 + "]", []rec{{1, Position{0, 1, 1}}, {2, Position{1, int64(len(r1) + 2), 1}}}, nil},
		{"array pretty", "[\n  " + r1 + ",\n  " + r2 + "\n]\n", []rec{{1, Position{0, 4, 2}}, {2, Position{1, int64(len(r1) + 8), 3}}}, nil},
		{"empty array", "[]", nil, nil},
		{"two arrays one after the other", "[" + r1 + "]\n[" + r2 + "]", []rec{{1, Position{0, 1, 1}}, {2, Position{1, int64(len(r1) + 4), 2}}}, nil},
		{"byte order mark", "\xef\xbb\xbf[" + r1 + "]", []rec{{1, Position{0, 4, 1}}}, nil},
		{"stray commas", "[," + r1 + ",," + r2 + ",]", []rec{{1, Position{0, 2, 1}}, {2, Position{1, int64(len(r1) + 4), 1}}}, nil},
		{"missing comma", "[" + r1 + " " + r2 + "]", []rec{{1, Position{0, 1, 1}}, {2, Position{1, int64(len(r1) + 2), 1}}}, nil},
		{"unclosed array", "[" + r1 + ",", []rec{{1, Position{0, 1, 1}}}, nil},
		{"truncated last element", "[" + r1 + "," + r2[:40], []rec{{1, Position{0, 1, 1}}}, []Position{{1, int64(len(r1) + 2), 1}}},
		{"scalars in an array", `[1, "x", null, ` + r1 + `]`, []rec{{1, Position{3, 15, 1}}}, []Position{{0, 1, 1}, {1, 4, 1}, {2, 9, 1}}},
		{"garbage after the array", "[" + r1 + "] trailing", []rec{{1, Position{0, 1, 1}}}, []Position{{1, int64(len(r1) + 3), 1}}},
		{"a brace closing a bracket ends the record", "[\n" + `{"a":[}` + ",\n" + r1 + "\n]",
			[]rec{{1, Position{1, 11, 3}}}, []Position{{0, 2, 2}}},
		{"a stray closing bracket", "[" + `{"a":1]}` + "," + r1 + "]",
			[]rec{{1, Position{1, 10, 1}}}, []Position{{0, 1, 1}}},
		{"a missing closing brace runs into the next records", "[" + `{"a":{"b":1}` + "," + r1 + "," + r2 + "]",
			nil, []Position{{0, 1, 1}}},
		{"json lines isolate a missing brace", `{"a":{"b":1}` + "\n" + r1 + "\n",
			[]rec{{1, Position{1, 13, 2}}}, []Position{{0, 0, 1}}},
		{"line feed inside a string", "[\n" + `{"type":"dns` + "\n" + `"},` + "\n" + r1 + "\n]",
			[]rec{{1, Position{1, 19, 4}}}, []Position{{0, 2, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := parse(t, strings.NewReader(tc.in), Options{})
			if got.err != nil {
				t.Fatal(got.err)
			}
			var recs []rec
			for _, r := range got.records {
				recs = append(recs, rec{r.ProbeID, r.Position})
			}
			var bad []Position
			for _, m := range got.malformed {
				bad = append(bad, m.Position)
			}
			if !equal(recs, tc.want) || !equal(bad, tc.malformed) {
				t.Errorf("records %+v, malformed %+v (%v)\nwant %+v, %+v", recs, bad, got.malformed, tc.want, tc.malformed)
			}
		})
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCompressed(t *testing.T) {
	t.Parallel()
	plain, err := os.ReadFile(filepath.Join("testdata", "dns-rdata-string.json"))
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(plain)
	w.Close()
	bz, err := os.ReadFile(filepath.Join("testdata", "dns-rdata-string.json.bz2"))
	if err != nil {
		t.Fatal(err)
	}
	want := parse(t, bytes.NewReader(plain), Options{})
	for name, in := range map[string][]byte{"gzip": gz.Bytes(), "bzip2": bz} {
		t.Run(name, func(t *testing.T) {
			p, err := NewParser(bytes.NewReader(in), Options{})
			if err != nil {
				t.Fatal(err)
			}
			rec, err := p.Next()
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Results) != 1 || line(rec.Results[0]) != line(want.records[0].Results[0]) || rec.Position != want.records[0].Position {
				t.Errorf("got %+v, want %+v", rec, want.records[0])
			}
			if _, err := p.Next(); !errors.Is(err, io.EOF) {
				t.Errorf("then %v, want io.EOF", err)
			}
			if s := p.Stats(); s.Records != 1 || s.Bytes != int64(len(in)) {
				t.Errorf("stats %+v, want 1 record and %d bytes (compressed)", s, len(in))
			}
		})
	}
	t.Run("corrupt gzip", func(t *testing.T) {
		bad := append([]byte{}, gz.Bytes()...)
		bad = bad[:len(bad)/2]
		got := parse(t, bytes.NewReader(bad), Options{})
		if got.err == nil || errors.Is(got.err, ErrMalformed) {
			t.Errorf("error %v, want a read error", got.err)
		}
	})
}

// TestReadError: a failing reader ends the input with its error, after the
// records read before it.
func TestReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk on fire")
	in := io.MultiReader(strings.NewReader(krootRecord(1)+"\n"), iotest.ErrReader(boom))
	p, err := NewParser(in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := p.Next(); err != nil || rec.ProbeID != 1 {
		t.Fatalf("first: %+v, %v", rec, err)
	}
	for range 2 { // and again: the error sticks
		if _, err := p.Next(); !errors.Is(err, boom) || errors.Is(err, ErrMalformed) {
			t.Fatalf("then %v, want %v", err, boom)
		}
	}
}
