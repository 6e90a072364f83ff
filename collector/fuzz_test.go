package collector_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/collector"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// fuzzNow is the collector's clock in FuzzIngest, fixed so that the seeds'
// measurement times stay inside the accepted window.
var fuzzNow = time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)

// Ways FuzzIngest sends its bytes (the second argument, modulo 3).
const (
	fuzzPlain   = 0 // as a JSON body
	fuzzGzipped = 1 // gzip'd by the fuzz function: JSON through the gzip path
	fuzzRawGzip = 2 // as is, declared Content-Encoding: gzip: the gzip decoder itself
)

// FuzzIngest posts arbitrary bytes to the collector's results endpoint with
// an agent's valid token, through its real handler in front of the real
// store on a test database (wrapped only to count what reaches it), and
// checks what the collector does with them:
//
//   - never a 5xx: the database is up, so a 5xx is a panic or a batch the
//     collector let through that the database refused, which the agent
//     would send again forever;
//   - a refusal is a 4xx with a JSON api.Error saying why, and a request
//     refused for its form (anything but 422) reached no store method;
//   - a 200 acknowledges a batch that decodes and validates on its own,
//     names the agent, lies in the accepted time window, and all of whose
//     results and gaps reached the store; posting it again stores nothing
//     new.
//
// Seeds are in testdata/fuzz/FuzzIngest (hostile inputs, one per file) and
// below (a valid batch of every kind, built from the wire types).
func FuzzIngest(f *testing.F) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DB(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(st.Close)
	_, token, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp1"})
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp2"}); err != nil {
		f.Fatal(err)
	}
	_, err = st.ApplyTargets(ctx, []store.Target{{
		Name:      "example-dns",
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")},
		Probes:    []string{"dns", "ping", "trace", "http", "session"},
		Interval:  30 * time.Second,
		NSIDQName: ".",
	}})
	if err != nil {
		f.Fatal(err)
	}
	rec := &recordingStore{Store: st}
	c, err := collector.New(rec, collector.Options{Now: func() time.Time { return fuzzNow }})
	if err != nil {
		f.Fatal(err)
	}
	h := c.Handler()

	for _, b := range fuzzSeedBatches() {
		body, err := json.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, uint8(fuzzPlain))
		f.Add(body, uint8(fuzzGzipped))
		f.Add(gzipBytes(body), uint8(fuzzRawGzip))
	}

	f.Fuzz(func(t *testing.T, data []byte, how uint8) {
		body, gzipped := data, false
		switch how % 3 {
		case fuzzGzipped:
			body, gzipped = gzipBytes(data), true
		case fuzzRawGzip:
			gzipped = true
		}
		before := *rec
		code, resp := fuzzPost(h, token, body, gzipped)
		switch {
		case code == http.StatusOK:
		case code >= 500:
			t.Fatalf("status %d for a request while the database is up: %s", code, resp)
		case !slices.Contains([]int{400, 403, 413, 415, 422}, code):
			t.Fatalf("status %d: want 200 or 400, 403, 413, 415, 422: %s", code, resp)
		default:
			var ae api.Error
			if err := json.Unmarshal(resp, &ae); err != nil || ae.Error == "" {
				t.Fatalf("status %d with %q: not an api.Error that says why", code, resp)
			}
			if code != http.StatusUnprocessableEntity && *rec != before {
				t.Fatalf("status %d (%s), yet the store was called: %+v, before %+v", code, ae.Error, *rec, before)
			}
			return
		}

		// Accepted: the batch must stand on its own.
		b, err := decodeBatch(body, gzipped)
		if err != nil {
			t.Fatalf("200 for a body that does not decode: %v", err)
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("200 for an invalid batch: %v", err)
		}
		if b.Agent != "vp1" {
			t.Fatalf("200 for a batch of agent %q posted with vp1's token", b.Agent)
		}
		for i, r := range b.Results {
			if r.MeasuredAt.Before(fuzzNow.Add(-collector.DefaultMaxAge)) || r.MeasuredAt.After(fuzzNow.Add(collector.DefaultMaxFuture)) {
				t.Fatalf("200 for results[%d] measured at %s, outside the window", i, r.MeasuredAt)
			}
		}
		ack := decodeAck(t, resp)
		if ack.BatchSeq != b.BatchSeq || ack.Accepted+ack.Duplicates != len(b.Results) || ack.Gaps != len(b.Gaps) {
			t.Fatalf("ack %+v for batch %d of %d results and %d gaps", ack, b.BatchSeq, len(b.Results), len(b.Gaps))
		}
		if got, want := rec.results-before.results, len(b.Results); got != want {
			t.Fatalf("%d results reached the store; the batch holds %d", got, want)
		}
		if got, want := rec.gaps-before.gaps, len(b.Gaps); got != want {
			t.Fatalf("%d gaps reached the store; the batch holds %d", got, want)
		}
		if len(b.Results) > 0 {
			code, resp := fuzzPost(h, token, body, gzipped)
			if code != http.StatusOK {
				t.Fatalf("the same batch again: status %d: %s", code, resp)
			}
			if again := decodeAck(t, resp); again.Accepted != 0 || again.Duplicates != len(b.Results) {
				t.Fatalf("the same batch again stored %d new results (%d duplicates of %d)", again.Accepted, again.Duplicates, len(b.Results))
			}
		}
	})
}

// recordingStore is the real store, counting the results and gaps handed to
// it. FuzzIngest calls the handler from one goroutine.
type recordingStore struct {
	*store.Store
	calls, results, gaps int
}

func (r *recordingStore) Ingest(ctx context.Context, a store.Agent, rs []api.Result) (int, int, error) {
	r.calls++
	r.results += len(rs)
	return r.Store.Ingest(ctx, a, rs)
}

func (r *recordingStore) IngestGaps(ctx context.Context, a store.Agent, gs []api.Gap) (int, int, error) {
	r.calls++
	r.gaps += len(gs)
	return r.Store.IngestGaps(ctx, a, gs)
}

// fuzzPost posts body to h's results endpoint and returns the status and
// the answer.
func fuzzPost(h http.Handler, token string, body []byte, gzipped bool) (int, []byte) {
	req := httptest.NewRequest(http.MethodPost, api.PathResults, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.Bytes()
}

// decodeBatch decodes a body as the wire contract says: one JSON batch,
// gzip'd or not, no unknown field, nothing after it.
func decodeBatch(body []byte, gzipped bool) (*api.Batch, error) {
	var in io.Reader = bytes.NewReader(body)
	if gzipped {
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, err
		}
		in = zr
	}
	dec := json.NewDecoder(in)
	dec.DisallowUnknownFields()
	var b api.Batch
	if err := dec.Decode(&b); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	return &b, nil
}

func decodeAck(t *testing.T, resp []byte) api.Ack {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(resp))
	dec.DisallowUnknownFields()
	var ack api.Ack
	if err := dec.Decode(&ack); err != nil {
		t.Fatalf("200 with %q: not an api.Ack: %v", resp, err)
	}
	return ack
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// fuzzSeedBatches are valid batches of vp1 measured just before fuzzNow: one
// result of every kind, and a batch carrying a gap.
func fuzzSeedBatches() []api.Batch {
	at := fuzzNow.Add(-10 * time.Minute)
	r := func(seq uint64, kind api.Kind, tr api.Transport, query string) api.Result {
		return api.Result{Seq: seq, Round: seq, MeasuredAt: at.Add(time.Duration(seq) * time.Second), Target: "example-dns",
			Address: "192.0.2.53", Kind: kind, Transport: tr, Query: query, RTTMicros: 1200}
	}
	dns := r(1, api.KindDNS, api.TransportUDP, api.QueryNSID)
	dns.DNS = &api.DNSValues{Rcode: "NOERROR", NSIDHex: "616d732d31", NSIDText: "ams-1", Identity: "ams-1", Size: 60}
	chaos := r(2, api.KindDNS, api.TransportTCP, api.QueryHostnameBind)
	chaos.Address = "2001:db8::53"
	chaos.DNS = &api.DNSValues{Rcode: "NOERROR", TXT: []string{"ns1.nl-ams.example"}, Identity: "ns1.nl-ams.example", Size: 80}
	timeout := r(3, api.KindDNS, api.TransportUDP, api.QueryIDServer)
	timeout.RTTMicros, timeout.Failure = 0, api.FailureTimeout
	ping := r(4, api.KindPing, api.TransportICMP, api.QueryEcho)
	ping.Ping = &api.PingValues{Sent: 3, Received: 2, MinUS: 900, AvgUS: 1100, MaxUS: 1300, StddevUS: 150, ReplyTTL: 61}
	trace := r(5, api.KindTrace, api.TransportUDP, api.QueryParis)
	trace.Trace = &api.TraceValues{Flow: "udp sport=33000 dport=33435", Engine: "anyscope", Reached: true, Stop: "reached", Hops: []api.TraceHop{
		{TTL: 1, Addr: "198.51.100.1", RTTUS: 300, ICMPType: 11, ReplyTTL: 64},
		{TTL: 2},
		{TTL: 3, Addr: "203.0.113.9", RTTUS: 800, ICMPType: 11, ReplyTTL: 62, MPLS: []api.MPLS{{Label: 16004, TC: 0, S: true, TTL: 1}}},
		{TTL: 4, Addr: "192.0.2.53", RTTUS: 1200, ICMPType: 3, ICMPCode: 3, ReplyTTL: 61},
	}}
	session := r(6, api.KindSession, api.TransportTCP, api.QuerySessionDNS)
	session.Session = &api.SessionValues{OpenedAt: at, ClosedAt: at.Add(2 * time.Minute), Queries: 2, End: api.EndLifeEnded,
		Answers: []api.SessionAnswer{{At: at, Identity: "ams-1", RTTUS: 1000}, {At: at.Add(time.Minute), Identity: "fra-1", RTTUS: 2000}}}
	web := r(7, api.KindHTTP, api.TransportTCP, api.QueryGet)
	web.HTTP = &api.HTTPValues{Scheme: "http", Host: "www.example.org", Status: 200, Identity: "AMS", Source: "header:X-Served-By",
		ConnectUS: 400, FirstByteUS: 900}
	return []api.Batch{
		{Agent: "vp1", BatchSeq: 1, Results: []api.Result{dns, chaos, timeout, ping, trace, session, web}},
		{Agent: "vp1", BatchSeq: 2, Results: []api.Result{r(20, api.KindDNS, api.TransportUDP, api.QueryHostnameBind)},
			Gaps: []api.Gap{{FirstSeq: 8, LastSeq: 19, Count: 12, LostFrom: at, LostTo: at.Add(time.Minute), Reason: api.GapSpoolFull}}},
		{Agent: "vp1", BatchSeq: 3, Gaps: []api.Gap{{FirstSeq: 21, LastSeq: 30, Count: 10, Reason: api.GapSegmentLost}}},
	}
}
