package store_test

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/anyscope/anyscope/analysis"
	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

func names(ts []store.Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

func TestApplyTargets(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	ctx := t.Context()
	froot := store.Target{
		Name:      "f-root",
		Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.6")},
		Probes:    []string{"dns"},
		Interval:  90 * time.Second,
		NSIDQName: "example.org.",
	}
	apply := func(t *testing.T, ts []store.Target, want store.ApplyResult) {
		t.Helper()
		got, err := st.ApplyTargets(ctx, ts)
		if err != nil {
			t.Fatalf("ApplyTargets: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ApplyTargets = %+v, want %+v", got, want)
		}
	}

	t.Run("create", func(t *testing.T) {
		apply(t, []store.Target{kroot, froot}, store.ApplyResult{Created: []string{"k-root", "f-root"}})
		ts, err := st.ActiveTargets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.Target{froot, kroot}
		want[1].NSIDQName = "." // the default
		if !reflect.DeepEqual(ts, want) {
			t.Errorf("ActiveTargets =\n%+v\nwant\n%+v", ts, want)
		}
	})

	t.Run("unchanged", func(t *testing.T) {
		apply(t, []store.Target{kroot, froot}, store.ApplyResult{Unchanged: []string{"k-root", "f-root"}})
	})

	t.Run("update", func(t *testing.T) {
		k := kroot
		k.Interval = 45 * time.Second
		apply(t, []store.Target{k, froot}, store.ApplyResult{Updated: []string{"k-root"}, Unchanged: []string{"f-root"}})
		apply(t, []store.Target{kroot, froot}, store.ApplyResult{Updated: []string{"k-root"}, Unchanged: []string{"f-root"}})
	})

	t.Run("sites replaced", func(t *testing.T) {
		k := kroot
		k.Sites = []analysis.Site{
			{Code: "NL-AMS", Name: "Amsterdam", Latitude: 52.37, Longitude: 4.9, HasCoords: true},
			{Code: "JP-NRT", Name: "Tokyo"},
		}
		apply(t, []store.Target{k, froot}, store.ApplyResult{Updated: []string{"k-root"}, Unchanged: []string{"f-root"}})
		ts, err := st.ActiveTargets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ts[1].Sites, k.Sites) {
			t.Errorf("sites = %+v, want %+v", ts[1].Sites, k.Sites)
		}
		var n int
		sqlScan(t, dsn, `SELECT count(*) FROM sites`, &n)
		if n != 2 {
			t.Errorf("%d rows in sites, want the 2 declared now", n)
		}
		apply(t, []store.Target{kroot, froot}, store.ApplyResult{Updated: []string{"k-root"}, Unchanged: []string{"f-root"}})
	})

	t.Run("retire", func(t *testing.T) {
		apply(t, []store.Target{kroot}, store.ApplyResult{Unchanged: []string{"k-root"}, Retired: []string{"f-root"}})
		ts, err := st.ActiveTargets(ctx)
		if err != nil || !slices.Equal(names(ts), []string{"k-root"}) {
			t.Fatalf("ActiveTargets = %v, %v; want k-root only", names(ts), err)
		}
		all, err := st.Targets(ctx)
		if err != nil || len(all) != 2 || all[0].Name != "f-root" {
			t.Fatalf("Targets = %+v, %v; want retired f-root too", all, err)
		}
		apply(t, []store.Target{kroot}, store.ApplyResult{Unchanged: []string{"k-root"}})
		apply(t, nil, store.ApplyResult{Retired: []string{"k-root"}})
	})

	t.Run("un-retire", func(t *testing.T) {
		apply(t, []store.Target{kroot, froot}, store.ApplyResult{Updated: []string{"k-root", "f-root"}})
		ts, err := st.ActiveTargets(ctx)
		if err != nil || !slices.Equal(names(ts), []string{"f-root", "k-root"}) {
			t.Fatalf("ActiveTargets = %v, %v; want both", names(ts), err)
		}
	})

	t.Run("analysis view", func(t *testing.T) {
		sql(t, dsn, `INSERT INTO sites (target_id, code, name, latitude, longitude) VALUES
			(NULL, 'FI-HEL', 'global Helsinki', 0, 0), (NULL, 'SE-STO', 'Stockholm', 59.33, 18.07)`).Close()
		all, err := st.Targets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := analysis.Target{
			Name: "k-root", Addresses: kroot.Addresses, Rules: kroot.Rules,
			Sites: append(slices.Clone(kroot.Sites), analysis.Site{Code: "SE-STO", Name: "Stockholm", Latitude: 59.33, Longitude: 18.07, HasCoords: true}),
		}
		if !reflect.DeepEqual(all[1], want) {
			t.Errorf("Targets()[1] =\n%+v\nwant (own sites win over global ones)\n%+v", all[1], want)
		}
	})

	t.Run("invalid lists change nothing", func(t *testing.T) {
		noAddr := froot
		noAddr.Addresses = nil
		badSite := froot
		badSite.Sites = []analysis.Site{{Code: "X", Latitude: 100, HasCoords: true}}
		dupSite := froot
		dupSite.Sites = []analysis.Site{{Code: "X"}, {Code: "X"}}
		for name, ts := range map[string][]store.Target{
			"declared twice":  {kroot, kroot},
			"no addresses":    {kroot, noAddr},
			"bad coordinates": {kroot, badSite},
			"site twice":      {kroot, dupSite},
			"bad name":        {{Name: "a b", Addresses: kroot.Addresses, Probes: kroot.Probes, Interval: time.Second}},
		} {
			if _, err := st.ApplyTargets(ctx, ts); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", name, err)
			}
		}
		ts, err := st.ActiveTargets(ctx)
		if err != nil || !slices.Equal(names(ts), []string{"f-root", "k-root"}) {
			t.Fatalf("ActiveTargets = %v, %v; want both, untouched", names(ts), err)
		}
	})
}

// TestApplyTargetsHTTP: an HTTP spec and a session life survive the round
// trip, and changing only them is an update.
func TestApplyTargetsHTTP(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := t.Context()
	cdn := store.Target{
		Name: "cdn", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.80")},
		Probes: []string{"http", "session"}, Interval: time.Minute, NSIDQName: ".",
		HTTP:        &api.HTTPSpec{Scheme: "https", Host: "cdn.example.org", Path: "/", Method: "GET", Headers: []string{"CF-Ray"}},
		SessionLife: 10 * time.Minute,
	}
	if _, err := st.ApplyTargets(ctx, []store.Target{cdn}); err != nil {
		t.Fatal(err)
	}
	got, err := st.ActiveTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0].HTTP, cdn.HTTP) || got[0].SessionLife != cdn.SessionLife {
		t.Fatalf("round trip: %+v (http %+v)", got, got[0].HTTP)
	}
	cdn.HTTP = &api.HTTPSpec{Scheme: "https", Host: "cdn.example.org", Path: "/", Method: "HEAD", Headers: []string{"CF-Ray"}}
	res, err := st.ApplyTargets(ctx, []store.Target{cdn})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Updated) != 1 {
		t.Errorf("changing the HTTP method: %+v, want an update", res)
	}
}
