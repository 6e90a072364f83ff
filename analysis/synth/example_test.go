package synth_test

import (
	"fmt"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/synth"
)

func Example() {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	w, err := synth.New(synth.Config{
		Seed: 1, Sites: 4, VantagePoints: 2, Targets: 1,
		Start: start, Duration: 3 * time.Minute, Interval: time.Minute,
		// vp1's network breaks during the second round.
		Events: []synth.Event{synth.VantagePointDown{VantagePoint: "vp1", From: start.Add(time.Minute), Until: start.Add(2 * time.Minute)}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range w.Sites() {
		fmt.Printf("site %s %s\n", s.Code, s.Name)
	}
	err = w.Observations(func(o analysis.Observation) error {
		what := o.Identity
		if o.Failure != "" {
			what = string(o.Failure)
		}
		site, ok := w.Truth(o.Target, o.VantagePoint, o.At)
		fmt.Printf("%s %s %s: truth %q %v\n", o.At.Format("15:04:05"), o.VantagePoint, what, site, ok)
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Two servers of one site (ns1, ns2 at DAR) answer vp2 in turn: not a
	// switch.

	// Output:
	// site DAR Dar es Salaam
	// site PEK Beijing
	// site SDQ Santo Domingo
	// site SCL Santiago
	// 12:00:18 vp2 ns2.tz-dar.synth.example: truth "DAR" true
	// 12:00:35 vp1 ns1.cn-pek.synth.example: truth "PEK" true
	// 12:01:18 vp2 ns1.tz-dar.synth.example: truth "DAR" true
	// 12:01:35 vp1 generic_timeout_error: truth "" false
	// 12:02:18 vp2 ns2.tz-dar.synth.example: truth "DAR" true
	// 12:02:35 vp1 ns1.cn-pek.synth.example: truth "PEK" true
}
