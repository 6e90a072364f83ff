package geomap

import (
	"errors"
	"math"
	"testing"
)

func TestEmbeddedWorld(t *testing.T) {
	w, err := loadWorld()
	if err != nil {
		t.Fatal(err)
	}
	// Natural Earth 1:110m: 128 land rings once cut at the antimeridian
	// (Fiji, Chukotka and Wrangel Island in two), and the borders between
	// its 177 countries.
	if len(w.land) < 100 || len(w.borders) < 200 {
		t.Errorf("%d land rings and %d borders: too few", len(w.land), len(w.borders))
	}
	for name, shapes := range map[string][][]float64{"land": w.land, "borders": w.borders} {
		for _, s := range shapes {
			for i := 0; i+3 < len(s); i += 2 {
				x0, y0, x1, y1 := s[i], s[i+1], s[i+2], s[i+3]
				if x0 < 0 || x0 > 1 || y0 < 0 || y0 > aspect {
					t.Fatalf("%s point %g, %g off the map", name, x0, y0)
				}
				// No edge may cross the map, except along the south pole's
				// line, which Antarctica's ring follows.
				if math.Abs(x1-x0) > 0.25 && !(near(y0, aspect, 1e-9) && near(y1, aspect, 1e-9)) {
					t.Errorf("%s edge from %g, %g to %g, %g crosses the map", name, x0, y0, x1, y1)
				}
			}
		}
	}
}

func TestParseWorldErrors(t *testing.T) {
	for _, tc := range []struct{ name, data string }{
		{"unknown kind", "X 0 0 1 1\n"},
		{"odd coordinates", "L 0 0 1\n"},
		{"one point", "B 0 0\n"},
		{"not a number", "L 0 0 a 1\n"},
		{"off the globe", "L 17999 0 2 0 0 1\n"},
		{"no land", "# only a comment\nB 0 0 1 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseWorld(tc.data); !errors.Is(err, ErrWorldData) {
				t.Errorf("err = %v, want ErrWorldData", err)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		w, err := parseWorld("# c\nL 0 0 100 0 0 100\nB 0 0 -100 -100\n")
		if err != nil {
			t.Fatal(err)
		}
		if len(w.land) != 1 || len(w.land[0]) != 6 || len(w.borders) != 1 {
			t.Errorf("parsed %v", w)
		}
	})
}
