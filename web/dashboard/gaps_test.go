package dashboard_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// The agents page lists what agents lost before upload, newest first, and
// nothing older than its horizon.
func TestAgentsPageListsGaps(t *testing.T) {
	t.Parallel()
	w := seed(t)
	srv := server(t, w)

	res, body := get(t, srv, http.MethodGet, "/agents")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "Data lost at agents") || !strings.Contains(body, "None: every result") {
		t.Fatalf("agents page without gaps: %d\n%s", res.StatusCode, body)
	}

	a, err := w.st.AgentByName(t.Context(), "vp2")
	if err != nil {
		t.Fatal(err)
	}
	old := w.now.Add(-8 * 24 * time.Hour)
	if _, _, err := w.st.IngestGaps(t.Context(), a, []api.Gap{
		{FirstSeq: 1, LastSeq: 10, Count: 10, LostFrom: old, LostTo: old.Add(time.Minute), Reason: api.GapSpoolFull},
		{FirstSeq: 101, LastSeq: 400, Count: 300, LostFrom: w.now.Add(-3 * time.Hour), LostTo: w.now.Add(-2 * time.Hour), Reason: api.GapSpoolFull},
		{FirstSeq: 500, LastSeq: 520, Count: 21, LostTo: w.now.Add(-time.Hour), Reason: api.GapSegmentLost},
	}); err != nil {
		t.Fatal(err)
	}

	res, body = get(t, srv, http.MethodGet, "/agents")
	checkHeaders(t, res)
	checkSafe(t, body)
	i300 := strings.Index(body, `<td class="num">300</td><td class="num">101–400</td><td>spool_full</td>`)
	i21 := strings.Index(body, `<td class="num">21</td><td class="num">500–520</td><td>segment_lost</td>`)
	if i300 < 0 || i21 < 0 || i21 > i300 {
		t.Errorf("agents page lacks the two recent gaps, newest first:\n%s", body)
	}
	if strings.Contains(body, "1–10") || !strings.Contains(body, `<span class="none">unknown</span>`) {
		t.Errorf("agents page shows the gap older than the horizon, or no unknown start:\n%s", body)
	}

	_, body = get(t, srv, http.MethodGet, "/data/agents")
	var v struct {
		Gaps []map[string]any `json:"gaps"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Gaps) != 2 || v.Gaps[0]["agent"] != "vp2" || v.Gaps[0]["results"] != 21.0 || v.Gaps[0]["lost_from"] != nil ||
		v.Gaps[1]["reason"] != "spool_full" || v.Gaps[1]["first_seq"] != 101.0 {
		t.Errorf("JSON gaps %v", v.Gaps)
	}
}
