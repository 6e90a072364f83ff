package geomap

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
)

func TestColor(t *testing.T) {
	t.Run("fixed colours", func(t *testing.T) {
		// Reports compare maps over time: a code's colour must never
		// change between versions without this test changing too.
		golden := map[string]string{"AMS": "#88ccee", "LHR": "#44aa99", "FRA": "#ee3377", "SIN": "#d55e00", "NRT": "#aa4499", "": NoSite}
		for code, want := range golden {
			if got := Color(code); got != want {
				t.Errorf("Color(%q) = %s, want %s", code, got, want)
			}
		}
	})
	t.Run("form and palette", func(t *testing.T) {
		hex := regexp.MustCompile(`^#[0-9a-f]{6}$`)
		used := map[string]bool{}
		for i := range 500 {
			c := Color("S" + strconv.Itoa(i))
			if !hex.MatchString(c) || !slices.Contains(palette[:], c) {
				t.Fatalf("Color = %q: not a palette colour", c)
			}
			used[c] = true
		}
		if len(used) != len(palette) {
			t.Errorf("500 codes used %d of %d colours", len(used), len(palette))
		}
	})
	t.Run("grey is for no site only", func(t *testing.T) {
		if slices.Contains(palette[:], NoSite) {
			t.Error("the palette contains the no-site grey")
		}
		seen := map[string]bool{}
		for _, c := range palette {
			if seen[c] {
				t.Errorf("%s twice in the palette", c)
			}
			seen[c] = true
		}
	})
}
