package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func validGap() Gap {
	return Gap{
		FirstSeq: 101, LastSeq: 200, Count: 100,
		LostFrom: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC), LostTo: time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC),
		Reason: GapSpoolFull,
	}
}

func TestGapValidate(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*Gap)
		want string // "" = valid
	}{
		{"valid", func(*Gap) {}, ""},
		{"one seq", func(g *Gap) { g.FirstSeq, g.LastSeq, g.Count = 7, 7, 1 }, ""},
		{"fewer lost than covered", func(g *Gap) { g.Count = 3 }, ""},
		{"times unknown", func(g *Gap) { g.LostFrom, g.LostTo = time.Time{}, time.Time{} }, ""},
		{"only an upper bound", func(g *Gap) { g.LostFrom = time.Time{}; g.Reason = GapSegmentLost }, ""},
		{"first zero", func(g *Gap) { g.FirstSeq = 0 }, "gap seq 0..200"},
		{"last before first", func(g *Gap) { g.LastSeq = 100 }, "gap seq 101..100"},
		{"last huge", func(g *Gap) { g.LastSeq = 1<<62 + 1 }, "want 1 <= first <= last <= 2^62"},
		{"count zero", func(g *Gap) { g.Count = 0 }, "gap count 0: want 1..100"},
		{"count beyond the run", func(g *Gap) { g.Count = 101 }, "gap count 101: want 1..100"},
		{"times reversed", func(g *Gap) { g.LostFrom, g.LostTo = g.LostTo, g.LostFrom }, "lost_to 2026-01-02T03:00:00Z before lost_from"},
		{"reason empty", func(g *Gap) { g.Reason = "" }, `gap reason ""`},
		{"reason unknown", func(g *Gap) { g.Reason = "disk_on_fire" }, `gap reason "disk_on_fire"`},
		{"reason hostile", func(g *Gap) { g.Reason = GapReason(strings.Repeat("\x00", 1000)) }, "is not one of"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := validGap()
			c.mut(&g)
			err := g.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrInvalid containing %q", err, c.want)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error of %d bytes echoes hostile input", len(err.Error()))
			}
		})
	}
}

func TestBatchWithGaps(t *testing.T) {
	g := validGap()
	later := g
	later.FirstSeq, later.LastSeq, later.Count = 300, 310, 11
	cases := []struct {
		name string
		b    Batch
		want string
	}{
		{"gaps only", Batch{Agent: "vp1", Gaps: []Gap{g}}, ""},
		{"gaps and results", Batch{Agent: "vp1", Results: []Result{valid()}, Gaps: []Gap{later, g}}, ""},
		{"empty", Batch{Agent: "vp1"}, "batch has no results and no gaps"},
		{"bad gap named", Batch{Agent: "vp1", Gaps: []Gap{g, {FirstSeq: 5, LastSeq: 4, Count: 1, Reason: GapSpoolFull}}}, "gaps[1]: "},
		{"overlap", Batch{Agent: "vp1", Gaps: []Gap{later, g, {FirstSeq: 200, LastSeq: 250, Count: 1, Reason: GapSpoolFull}}}, "gaps[2] (seq 200..250) overlaps gaps[1] (seq 101..200)"},
		{"same first", Batch{Agent: "vp1", Gaps: []Gap{g, g}}, "overlaps"},
		{"too many", Batch{Agent: "vp1", Gaps: make([]Gap, MaxBatchGaps+1)}, "1001 gaps, at most 1000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.b.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// Unknown times stay out of the JSON, and a batch without gaps encodes as
// before gaps existed.
func TestGapJSON(t *testing.T) {
	g := Gap{FirstSeq: 1, LastSeq: 2, Count: 2, Reason: GapSegmentLost}
	b, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"first_seq":1,"last_seq":2,"count":2,"reason":"segment_lost"}`; string(b) != want {
		t.Errorf("encoded %s, want %s", b, want)
	}
	b, err = json.Marshal(Batch{Agent: "vp1", BatchSeq: 3, Results: []Result{}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"agent":"vp1","batch_seq":3,"results":[]}`; string(b) != want {
		t.Errorf("encoded %s, want %s", b, want)
	}
	var back Gap
	if err := json.Unmarshal([]byte(`{"first_seq":9,"last_seq":9,"count":1,"lost_to":"2026-01-02T03:04:05Z","reason":"record_corrupt"}`), &back); err != nil {
		t.Fatal(err)
	}
	if !back.LostFrom.IsZero() || back.LostTo.IsZero() || back.Validate() != nil {
		t.Errorf("decoded %+v", back)
	}
}

func TestGapReasons(t *testing.T) {
	seen := map[GapReason]bool{}
	for _, r := range GapReasons {
		if !r.Valid() || seen[r] {
			t.Errorf("reason %q: invalid or listed twice", r)
		}
		seen[r] = true
	}
	if GapReason("spool-full").Valid() {
		t.Error("a string outside the set is valid")
	}
}
