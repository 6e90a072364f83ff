package main

import (
	"slices"
	"testing"

	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/targets"
)

// TestBenchTargets: the agent bench's targets file is valid for every
// choice of probe kinds, and schedules exactly those.
func TestBenchTargets(t *testing.T) {
	t.Parallel()
	for _, kinds := range [][]api.Kind{
		api.Kinds,
		{api.KindDNS},
		{api.KindPing},
		{api.KindSession},
		{api.KindHTTP, api.KindTrace},
	} {
		t.Run(string(kinds[0])+"+", func(t *testing.T) {
			t.Parallel()
			ts, err := targets.Parse("bench-targets.yaml", []byte(benchTargetsYAML(benchTargets, kinds)))
			if err != nil {
				t.Fatal(err)
			}
			if len(ts) != benchTargets {
				t.Fatalf("%d targets, want %d", len(ts), benchTargets)
			}
			for _, tg := range ts {
				var got []api.Kind
				for _, p := range tg.Probes {
					got = append(got, api.Kind(p))
				}
				if !slices.Equal(got, kinds) || len(tg.Addresses) != 2 || tg.Interval != benchInterval || tg.SessionLife != benchSessionLife {
					t.Errorf("%s: probes %v, %d addresses, interval %v, session life %v; want %v, 2, %v, %v",
						tg.Name, got, len(tg.Addresses), tg.Interval, tg.SessionLife, kinds, benchInterval, benchSessionLife)
				}
			}
		})
	}
}

// TestBenchRates: what the schedule asks of the agent, in results per
// second, by the kinds it runs.
func TestBenchRates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		kinds            []api.Kind
		rounds, sessions float64
	}{
		// 20 targets × 2 addresses every 10s: 6 DNS results, 1 each of
		// ping, trace and http per round; a DNS and an HTTP session per
		// address, each ending every 20s.
		{"all", api.Kinds, 36, 4},
		{"dns", []api.Kind{api.KindDNS}, 24, 0},
		{"sessions over http only", []api.Kind{api.KindSession}, 0, 2},
		{"dns and sessions", []api.Kind{api.KindDNS, api.KindSession}, 24, 4},
		{"ping and trace", []api.Kind{api.KindPing, api.KindTrace}, 8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if r, s := benchRates(tt.kinds); r != tt.rounds || s != tt.sessions {
				t.Errorf("benchRates(%v) = %v, %v; want %v, %v", tt.kinds, r, s, tt.rounds, tt.sessions)
			}
		})
	}
}
