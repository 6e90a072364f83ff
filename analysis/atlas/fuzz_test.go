package atlas

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to the parser: it must neither panic nor
// loop, every record it returns must hold valid results of one round, and
// every problem must be a malformed record, the end of the input or (for a
// compressed input) a broken stream.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json*"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil && len(b) < 8<<10 {
			f.Add(b)
		}
	}
	f.Add([]byte(krootRecord(1) + "\n" + krootRecord(2)))
	f.Add([]byte(`[{"type":"traceroute","msm_id":5001,"prb_id":1,"timestamp":1442845198,"dst_addr":"192.0.2.1","proto":"ICMP","paris_id":1,"result":[{"hop":1,"result":[{"from":"192.0.2.1","rtt":1,"ttl":64,"err":"N"},{"x":"*"}]}]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := NewParser(bytes.NewReader(data), Options{
			MaxRecordBytes: 4096,
			Now:            func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
		})
		if err != nil {
			t.Fatal(err)
		}
		// Every record takes at least a byte (of the decompressed input).
		limit := len(data) + 1
		compressed := bytes.HasPrefix(data, []byte("BZh")) || bytes.HasPrefix(data, []byte{0x1f, 0x8b})
		if compressed {
			limit = 1 << 20
		}
		for i := 0; ; i++ {
			if i > limit {
				t.Fatalf("%d records from %d bytes", i, len(data))
			}
			rec, err := p.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if errors.Is(err, ErrMalformed) {
				continue
			}
			if err != nil {
				// Only a compressed stream can fail to read from memory.
				if !compressed {
					t.Fatalf("record %d: %v", i, err)
				}
				return
			}
			for _, r := range rec.Results {
				r.Target = "t"
				if err := r.Validate(); err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if r.Round != rec.Results[0].Round {
					t.Fatalf("record %d: two rounds", i)
				}
			}
		}
	})
}
