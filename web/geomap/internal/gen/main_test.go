package main

import (
	"bytes"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func decodeFile(t *testing.T, name string) *Topology {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	topo, err := Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestDecodeQuantisedDeltas(t *testing.T) {
	topo := decodeFile(t, "two-squares.topo.json")
	want := [][]Point{
		{{10, 0}, {10, 10}},
		{{10, 10}, {0, 10}, {0, 0}, {10, 0}},
		{{10, 0}, {20, 0}, {20, 10}, {10, 10}},
	}
	if !slicesEqual(topo.Arcs, want) {
		t.Fatalf("arcs = %v, want %v", topo.Arcs, want)
	}
	t.Run("reversed arc joins", func(t *testing.T) {
		ring, err := topo.Line([]int{-1, 2})
		if err != nil {
			t.Fatal(err)
		}
		if want := []Point{{10, 10}, {10, 0}, {20, 0}, {20, 10}, {10, 10}}; !slices.Equal(ring, want) {
			t.Errorf("ring = %v, want %v", ring, want)
		}
	})
	t.Run("borders are the shared arcs only", func(t *testing.T) {
		b, err := Borders(topo.Objects["countries"])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(b, []int{0}) {
			t.Errorf("borders = %v, want [0]", b)
		}
	})
}

func TestDecodeUnquantised(t *testing.T) {
	topo := decodeFile(t, "island-on-antimeridian.topo.json")
	if got := topo.Arcs[0][1]; got != (Point{-178, -16}) {
		t.Errorf("absolute position read as %v, want {-178 -16}", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"not json", `{"type":`},
		{"not a topology", `{"type":"FeatureCollection","arcs":[]}`},
		{"arc of one position", `{"type":"Topology","arcs":[[[0,0]]],"objects":{}}`},
		{"position of one coordinate", `{"type":"Topology","arcs":[[[0,0],[1]]],"objects":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(strings.NewReader(tc.doc)); !errors.Is(err, ErrTopology) {
				t.Errorf("err = %v, want ErrTopology", err)
			}
		})
	}
	t.Run("arc index out of range", func(t *testing.T) {
		topo := decodeFile(t, "two-squares.topo.json")
		if _, err := topo.Line([]int{0, 3}); !errors.Is(err, ErrTopology) {
			t.Errorf("err = %v, want ErrTopology", err)
		}
		if _, err := topo.Line([]int{-4}); !errors.Is(err, ErrTopology) {
			t.Errorf("err = %v, want ErrTopology", err)
		}
	})
}

func TestWriteGolden(t *testing.T) {
	for _, name := range []string{"two-squares", "island-on-antimeridian"} {
		t.Run(name, func(t *testing.T) {
			topo := decodeFile(t, name+".topo.json")
			var buf bytes.Buffer
			if err := Write(&buf, topo, "fixture"); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".world.golden")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("output differs from %s (go test -update to rewrite):\n%s", golden, buf.Bytes())
			}
		})
	}
}

func TestCutRing(t *testing.T) {
	for _, tc := range []struct {
		name string
		ring []Point
		hole bool
		want [][]Point
	}{
		{
			name: "away from the antimeridian: turned clockwise",
			ring: []Point{{0, 0}, {10, 0}, {10, 10}, {0, 10}},
			want: [][]Point{{{0, 10}, {10, 10}, {10, 0}, {0, 0}}},
		},
		{
			name: "hole stays anticlockwise",
			ring: []Point{{0, 0}, {10, 0}, {10, 10}, {0, 10}, {0, 0}},
			hole: true,
			want: [][]Point{{{0, 0}, {10, 0}, {10, 10}, {0, 10}}},
		},
		{
			name: "island across the antimeridian: two pieces",
			ring: []Point{{178, -16}, {178, -18}, {-178, -18}, {-178, -16}},
			want: [][]Point{
				{{180, -16}, {180, -18}, {178, -18}, {178, -16}},
				{{-180, -16}, {-178, -16}, {-178, -18}, {-180, -18}},
			},
		},
		{
			name: "round the south pole: closed through the pole",
			ring: []Point{{-180, -80}, {-90, -75}, {0, -70}, {90, -75}, {180, -80}},
			want: [][]Point{{{-180, -80}, {-90, -75}, {0, -70}, {90, -75}, {180, -80}, {180, -90}, {-180, -90}}},
		},
		{
			name: "degenerate",
			ring: []Point{{0, 0}, {1, 1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CutRing(tc.ring, tc.hole)
			if !slicesEqual(got, tc.want) {
				t.Errorf("CutRing = %v, want %v", got, tc.want)
			}
			for _, r := range got {
				if a := area(r); (a > 0) != tc.hole {
					t.Errorf("ring %v has area %g: wrong orientation", r, a)
				}
			}
		})
	}
}

func TestCutLine(t *testing.T) {
	got := CutLine([]Point{{170, 10}, {178, 12}, {-178, 14}, {-170, 16}})
	want := [][]Point{{{170, 10}, {178, 12}, {180, 13}}, {{-180, 13}, {-178, 14}, {-170, 16}}}
	if !slicesEqual(got, want) {
		t.Errorf("CutLine = %v, want %v", got, want)
	}
	if got := CutLine([]Point{{0, 0}, {10, 10}}); len(got) != 1 {
		t.Errorf("a line away from the antimeridian was cut: %v", got)
	}
}

// slicesEqual compares nested point lists, allowing for rounding.
func slicesEqual(a, b [][]Point) bool {
	return slices.EqualFunc(a, b, func(x, y []Point) bool {
		return slices.EqualFunc(x, y, func(p, q Point) bool {
			return math.Abs(p.Lon-q.Lon) < 1e-9 && math.Abs(p.Lat-q.Lat) < 1e-9
		})
	})
}
