package geomap

import (
	"errors"
	"io"
	"slices"
	"time"
)

// Timing is how long Render took for one map, over several renders.
type Timing struct {
	Renders                  int
	First                    time.Duration // the first render (it also fills the width's background cache when empty)
	Median, Fastest, Slowest time.Duration // over all renders
	Bytes                    int           // output of one render
}

// Time renders m the given number of times (at least one) into a counting
// discard and reports how long one render takes. It is what `anyscope bench
// map` and BenchmarkRender12000 measure.
func Time(m Map, renders int) (Timing, error) {
	if renders < 1 {
		return Timing{}, errors.New("geomap: Time needs at least one render")
	}
	var ds []time.Duration
	var c counter
	for range renders {
		c.n = 0
		t := time.Now()
		if err := Render(&c, m); err != nil {
			return Timing{}, err
		}
		ds = append(ds, time.Since(t))
	}
	first := ds[0]
	slices.Sort(ds)
	return Timing{Renders: renders, First: first, Median: ds[len(ds)/2], Fastest: ds[0], Slowest: ds[len(ds)-1], Bytes: c.n}, nil
}

// counter counts what is written to it and drops it.
type counter struct{ n int }

func (c *counter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

var _ io.Writer = (*counter)(nil)
