package collector_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Gaps travel in batches, alone or with results; re-delivering them is a
// no-op answered like the first delivery, and the accounting of the
// agent's sequence numbers adds up.
func TestPostGaps(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["vp1"]
	now := time.Now().UTC()
	gap := api.Gap{FirstSeq: 1, LastSeq: 50, Count: 50, LostFrom: now.Add(-2 * time.Hour), LostTo: now.Add(-time.Hour), Reason: api.GapSpoolFull}

	for i, b := range []api.Batch{
		{Agent: "vp1", BatchSeq: 1, Results: results(10, 51, now.Add(-time.Minute)), Gaps: []api.Gap{gap}},
		{Agent: "vp1", BatchSeq: 2, Results: []api.Result{}, Gaps: []api.Gap{gap}},
	} {
		code, body := e.post(t, tok, mustJSON(t, b), nil)
		if code != 200 {
			t.Fatalf("post %d: %d %s", i, code, body)
		}
		var ack api.Ack
		if err := json.Unmarshal([]byte(body), &ack); err != nil {
			t.Fatal(err)
		}
		if want := (api.Ack{BatchSeq: b.BatchSeq, Accepted: len(b.Results), Gaps: 1}); ack != want {
			t.Errorf("post %d: ack %+v, want %+v", i, ack, want)
		}
	}
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if m := string(mb); !strings.Contains(m, "anyscope_collector_gaps_stored_total 1\n") {
		t.Errorf("metrics do not count one stored gap (two deliveries of it):\n%s", grepLines(m, "gaps"))
	}
	acc, err := e.st.SeqAccounting(t.Context(), "vp1")
	if err != nil {
		t.Fatal(err)
	}
	if acc.Highest != 60 || acc.Stored != 10 || acc.InGaps != 50 || acc.Holes != 0 || acc.Gaps != 1 {
		t.Errorf("accounting %+v: want 60 = 10 stored + 50 in a gap, no holes", acc)
	}
	gs, err := e.st.Gaps(t.Context(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].VantagePoint != "vp1" || gs[0].Count != 50 || !gs[0].LostTo.Equal(gap.LostTo.Truncate(time.Microsecond)) {
		t.Errorf("stored gaps %+v", gs)
	}
}

func TestPostBadGaps(t *testing.T) {
	e := newEnv(t)
	tok := e.tokens["vp1"]
	now := time.Now().UTC()
	batch := func(gs ...api.Gap) []byte { return mustJSON(t, api.Batch{Agent: "vp1", Gaps: gs}) }
	for _, tt := range []struct {
		name string
		body []byte
		code int
		msg  string
	}{
		{"future", batch(api.Gap{FirstSeq: 1, LastSeq: 1, Count: 1, LostTo: now.Add(time.Hour), Reason: api.GapSpoolFull}), 422, "gaps[0]: lost results measured at"},
		{"reason", batch(api.Gap{FirstSeq: 1, LastSeq: 1, Count: 1, Reason: "meteor"}), 422, `gap reason \"meteor\"`},
		{"count", batch(api.Gap{FirstSeq: 1, LastSeq: 1, Count: 2, Reason: api.GapSpoolFull}), 422, "gap count 2"},
		{"overlap", batch(api.Gap{FirstSeq: 1, LastSeq: 5, Count: 5, Reason: api.GapSpoolFull},
			api.Gap{FirstSeq: 5, LastSeq: 6, Count: 2, Reason: api.GapSpoolFull}), 422, "overlaps"},
		{"wrong type", []byte(`{"agent":"vp1","gaps":[{"first_seq":"one"}]}`), 400, "wrong JSON type"},
		{"unknown field", []byte(`{"agent":"vp1","gaps":[{"first_seq":1,"last_seq":1,"count":1,"reason":"spool_full","why":"x"}]}`), 400, "unknown field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := e.post(t, tok, tt.body, nil)
			if code != tt.code || !strings.Contains(body, tt.msg) {
				t.Errorf("%d %s; want %d with %q", code, body, tt.code, tt.msg)
			}
		})
	}
	// Old lost results are fine: they are lost, not stored.
	old := batch(api.Gap{FirstSeq: 1, LastSeq: 1, Count: 1, LostFrom: now.AddDate(-1, 0, 0), LostTo: now.AddDate(-1, 0, 0), Reason: api.GapSpoolFull})
	if code, body := e.post(t, tok, old, nil); code != 200 {
		t.Errorf("a gap of a year ago: %d %s", code, body)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
