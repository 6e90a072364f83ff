package geomap

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// hostile is what a DNS server may call itself.
const hostile = `<img src=x onerror=alert(1)>`

// smallWorld is three sites, six vantage points, one of them unanswered.
func smallWorld() Map {
	return Map{
		Title: "k.example: catchment",
		Sites: []Site{
			{Code: "LHR", Name: "London", Latitude: 51.47, Longitude: -0.45, VantagePoints: 1, Share: 1.0 / 6},
			{Code: "AMS", Name: "Amsterdam", Latitude: 52.31, Longitude: 4.76, VantagePoints: 3, Share: 0.5},
			{Code: "SIN", Name: "Singapore", Latitude: 1.36, Longitude: 103.99, VantagePoints: 1, Share: 1.0 / 6},
		},
		VantagePoints: []VantagePoint{
			{Name: "vp-paris", Latitude: 48.86, Longitude: 2.35, Site: "AMS"},
			{Name: "vp-berlin", Latitude: 52.52, Longitude: 13.40, Site: "AMS"},
			{Name: "vp-new-york", Latitude: 40.71, Longitude: -74.01, Site: "AMS"},
			{Name: "vp-dublin", Latitude: 53.35, Longitude: -6.26, Site: "LHR"},
			{Name: "vp-sydney", Latitude: -33.87, Longitude: 151.21, Site: "SIN"},
			{Name: "vp-nairobi", Latitude: -1.29, Longitude: 36.82, Site: ""},
		},
	}
}

// hostileNames puts attacks and garbage in every string a map shows.
func hostileNames() Map {
	return Map{
		Title: hostile + `"title'`,
		Width: 480,
		Lines: true,
		Sites: []Site{
			{Code: hostile, Name: `"><script>alert(1)</script>`, Latitude: 52.31, Longitude: 4.76, VantagePoints: 2, Share: 0.5},
			{Code: "]]>", Name: "ctl\x00\x01\x1b[31m\x7f\u0085end", Latitude: 35.76, Longitude: 140.39, VantagePoints: 1, Share: 0.25},
			{Code: "bad\xff\xfeutf8", Name: "tab\tnew\nline\r", Latitude: 40.64, Longitude: -73.78, VantagePoints: 1, Share: 0.25},
		},
		VantagePoints: []VantagePoint{
			{Name: `vp"' onmouseover="alert(1)`, Latitude: 48.86, Longitude: 2.35, Site: hostile},
			{Name: "vp-<b>", Latitude: 50.11, Longitude: 8.68, Site: hostile},
			{Name: "vp\x00\ufffe\uffff", Latitude: 34.69, Longitude: 135.50, Site: "]]>"},
			{Name: "vp-&amp;", Latitude: 41.88, Longitude: -87.63, Site: "bad\xff\xfeutf8"},
		},
		Link: func(vp string) string {
			switch vp {
			case "vp-<b>":
				return "javascript:alert(1)"
			case "vp\x00\ufffe\uffff":
				return "//evil.example/x"
			case "vp-&amp;":
				return "/vp?name=a&b=\"c\""
			}
			return "https://anyscope.example/vp/" + url.PathEscape(vp)
		},
	}
}

// linesAntimeridian has lines that cross the antimeridian both ways, one
// over the pole's region, and a site and vantage point at the same place.
func linesAntimeridian() Map {
	return Map{
		Width: 480,
		Lines: true,
		Sites: []Site{
			{Code: "LAX", Name: "Los Angeles", Latitude: 33.94, Longitude: -118.41, VantagePoints: 2, Share: 0.4},
			{Code: "NRT", Name: "Tokyo", Latitude: 35.76, Longitude: 140.39, VantagePoints: 2, Share: 0.4},
			{Code: "AKL", Name: "Auckland", Latitude: -37.01, Longitude: 174.79, VantagePoints: 1, Share: 0.2},
		},
		VantagePoints: []VantagePoint{
			{Name: "vp-auckland", Latitude: -36.85, Longitude: 174.76, Site: "LAX"},
			{Name: "vp-anchorage", Latitude: 61.22, Longitude: -149.90, Site: "NRT"},
			{Name: "vp-oslo", Latitude: 59.91, Longitude: 10.75, Site: "NRT"},
			{Name: "vp-fiji", Latitude: -18.14, Longitude: 178.44, Site: "LAX"},
			{Name: "vp-auckland-airport", Latitude: -37.01, Longitude: 174.79, Site: "AKL"},
		},
	}
}

func render(t testing.TB, m Map) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Render(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		m      Map
	}{
		{"small-world.svg.golden", smallWorld()},
		{"hostile-names.svg.golden", hostileNames()},
		{"lines-antimeridian.svg.golden", linesAntimeridian()},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			out := render(t, tc.m)
			checkSafe(t, out)
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("output differs from %s (go test ./web/geomap -update rewrites it; look at the diff)", path)
			}
		})
	}
}

// allowedElements is everything a map may contain.
var allowedElements = map[string]bool{"svg": true, "g": true, "path": true, "circle": true, "rect": true, "text": true, "tspan": true, "title": true, "a": true}

// checkSafe parses the whole output as XML and checks that it is one svg
// element made of the expected elements, with no script, no event handler
// attribute and no link that is not a relative path or http(s) URL.
func checkSafe(t *testing.T, out []byte) {
	t.Helper()
	if bytes.Contains(bytes.ToLower(out), []byte("<script")) {
		t.Error("output contains <script")
	}
	d := xml.NewDecoder(bytes.NewReader(out))
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("output is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if tok.Name.Local != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root element %v, want svg in the SVG namespace", tok.Name)
				}
			}
			depth++
			if !allowedElements[tok.Name.Local] {
				t.Errorf("unexpected element <%s>", tok.Name.Local)
			}
			for _, a := range tok.Attr {
				if strings.HasPrefix(strings.ToLower(a.Name.Local), "on") {
					t.Errorf("event handler attribute %s=%q on <%s>", a.Name.Local, a.Value, tok.Name.Local)
				}
				if a.Name.Local == "href" && !safeURL(a.Value) {
					t.Errorf("unsafe link %q", a.Value)
				}
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(tok)) > 0 {
				t.Errorf("text outside the svg element: %q", tok)
			}
		case xml.ProcInst, xml.Directive:
			t.Errorf("unexpected %T", tok)
		}
	}
	if roots != 1 {
		t.Errorf("%d root elements, want one svg", roots)
	}
}

// element is a parsed element with its attributes and text, for checking
// what the map says.
type element struct {
	name  string
	attrs map[string]string
	text  string
}

// elements parses out and returns every element, with the text directly
// inside it.
func elements(t *testing.T, out []byte) []*element {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(out))
	var all, stack []*element
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return all
		}
		if err != nil {
			t.Fatal(err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := &element{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			all = append(all, e)
			stack = append(stack, e)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tok)
			}
		}
	}
}

func TestHostileNamesShowAsText(t *testing.T) {
	m := hostileNames()
	els := elements(t, render(t, m))
	has := func(name, text string) bool {
		return slices.ContainsFunc(els, func(e *element) bool { return e.name == name && e.text == text })
	}
	t.Run("site code in tooltip", func(t *testing.T) {
		want := `"><script>alert(1)</script> (` + hostile + `): 2 vantage points, 50.0%`
		if !has("title", want) {
			t.Errorf("no <title> %q", want)
		}
	})
	t.Run("data attributes keep the strings", func(t *testing.T) {
		if !slices.ContainsFunc(els, func(e *element) bool {
			return e.name == "circle" && e.attrs["data-vp"] == `vp"' onmouseover="alert(1)` && e.attrs["data-site"] == hostile
		}) {
			t.Error("no circle with the hostile data-vp and data-site")
		}
	})
	t.Run("controls and non-characters replaced", func(t *testing.T) {
		if !has("title", "vp\uFFFD\uFFFD\uFFFD → ]]> (ctl\uFFFD\uFFFD\uFFFD[31m\uFFFD\uFFFDend)") {
			t.Error("the vantage point with control characters has no clean tooltip")
		}
		if !has("tspan", "bad\uFFFD\uFFFDutf…") {
			t.Error("the invalid UTF-8 code is not in the legend with U+FFFD")
		}
		if !has("title", "tab new line  (bad\uFFFD\uFFFDutf8): 1 vantage point, 25.0%") {
			t.Error("tab, newline and carriage return are not spaces")
		}
	})
	t.Run("links", func(t *testing.T) {
		var hrefs []string
		for _, e := range els {
			if e.name == "a" {
				hrefs = append(hrefs, e.attrs["href"])
			}
		}
		want := []string{"https://anyscope.example/vp/" + url.PathEscape(`vp"' onmouseover="alert(1)`), "/vp?name=a&b=\"c\""}
		slices.Sort(hrefs)
		slices.Sort(want)
		if !slices.Equal(hrefs, want) {
			t.Errorf("links %q, want %q (javascript: and //host refused)", hrefs, want)
		}
	})
}

func TestRenderStructure(t *testing.T) {
	m := smallWorld()
	els := elements(t, render(t, m))
	t.Run("every vantage point once, with data attributes", func(t *testing.T) {
		var got []string
		for _, e := range els {
			if e.name == "circle" && e.attrs["data-vp"] != "" {
				got = append(got, e.attrs["data-vp"]+"="+e.attrs["data-site"])
			}
		}
		var want []string
		for _, vp := range m.VantagePoints {
			want = append(want, vp.Name+"="+vp.Site)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("dots %v, want %v", got, want)
		}
	})
	t.Run("legend sorted by share, no answer last", func(t *testing.T) {
		var got []string
		for _, e := range els {
			if e.name == "text" && e.attrs["text-anchor"] == "end" {
				got = append(got, e.text)
			}
		}
		want := []string{"3 · 50.0%", "1 · 16.7%", "1 · 16.7%", "1 · 16.7%"}
		if !slices.Equal(got, want) {
			t.Errorf("legend counts %q, want %q", got, want)
		}
		var codes []string
		for _, e := range els {
			if e.name == "tspan" {
				codes = append(codes, e.text)
			}
		}
		if want := []string{"AMS", "LHR", "SIN"}; !slices.Equal(codes, want) {
			t.Errorf("legend codes %q, want %q (share, then count, then code)", codes, want)
		}
	})
	t.Run("site markers in their colour", func(t *testing.T) {
		for _, s := range m.Sites {
			if !slices.ContainsFunc(els, func(e *element) bool {
				return e.name == "circle" && e.attrs["fill"] == Color(s.Code) && e.attrs["stroke"] == "#fff"
			}) {
				t.Errorf("no marker for %s in %s", s.Code, Color(s.Code))
			}
		}
	})
	t.Run("no lines unless asked", func(t *testing.T) {
		if slices.ContainsFunc(els, func(e *element) bool { return e.attrs["class"] == "lines" }) {
			t.Error("lines drawn with Lines false")
		}
	})
}

func TestRenderDropsWhatCannotBePlaced(t *testing.T) {
	nan := math.NaN()
	m := Map{
		Lines: true,
		Sites: []Site{{Code: "NOWHERE", Latitude: nan, Longitude: 0, VantagePoints: 1, Share: nan}, {Code: "AMS", Latitude: 52.31, Longitude: 4.76}},
		VantagePoints: []VantagePoint{
			{Name: "vp-lost", Latitude: math.Inf(1), Longitude: 0, Site: "AMS"},
			{Name: "vp-ok", Latitude: 48.86, Longitude: 2.35, Site: "NOWHERE"},
			{Name: "vp-unknown-site", Latitude: 48.86, Longitude: 2.35, Site: "XYZ"},
		},
	}
	out := render(t, m)
	checkSafe(t, out)
	s := string(out)
	if strings.Contains(s, `data-vp="vp-lost"`) {
		t.Error("a vantage point with an infinite latitude was drawn")
	}
	if !strings.Contains(s, `data-vp="vp-ok"`) || !strings.Contains(s, `data-vp="vp-unknown-site"`) {
		t.Error("vantage points of sites without a place are missing")
	}
	if strings.Contains(s, `class="site" data-site="NOWHERE"`) {
		t.Error("a site without coordinates got a marker")
	}
	if strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
		t.Error("NaN or Inf in the output")
	}
	if strings.Contains(s, `<path data-site="`) {
		t.Error("a line was drawn although no vantage point has a placed site")
	}
}

func TestRenderWidth(t *testing.T) {
	for _, tc := range []struct {
		width   int
		wantErr bool
		viewBox string
	}{
		{0, false, `viewBox="0 0 960 `},
		{MinWidth, false, `viewBox="0 0 240 `},
		{MaxWidth, false, `viewBox="0 0 8192 `},
		{MinWidth - 1, true, ""},
		{-960, true, ""},
		{MaxWidth + 1, true, ""},
	} {
		t.Run(fmt.Sprintf("width %d", tc.width), func(t *testing.T) {
			var buf bytes.Buffer
			err := Render(&buf, Map{Width: tc.width, VantagePoints: []VantagePoint{{Name: "a", Latitude: 1, Longitude: 2}}})
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidMap) {
					t.Errorf("err = %v, want ErrInvalidMap", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(buf.String(), tc.viewBox) {
				t.Errorf("no %q in %.200s", tc.viewBox, buf.String())
			}
		})
	}
}

func TestBackgroundCache(t *testing.T) {
	a, err := backgroundFor(700)
	if err != nil {
		t.Fatal(err)
	}
	b, err := backgroundFor(700)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("the background of one width was computed twice")
	}
	for w := 300; w < 300+3*maxBackgrounds; w++ {
		if _, err := backgroundFor(w); err != nil {
			t.Fatal(err)
		}
	}
	backgrounds.Lock()
	n := len(backgrounds.m)
	backgrounds.Unlock()
	if n > maxBackgrounds {
		t.Errorf("%d widths cached, want at most %d", n, maxBackgrounds)
	}
}

// failingWriter fails after n bytes.
type failingWriter struct{ n int }

var errWrite = errors.New("disk full")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errWrite
	}
	f.n -= len(p)
	return len(p), nil
}

func TestRenderWriteError(t *testing.T) {
	m := smallWorld()
	for i := range 3000 {
		m.VantagePoints = append(m.VantagePoints, VantagePoint{Name: "vp-" + strconv.Itoa(i), Latitude: float64(i%170 - 85), Longitude: float64(i%360 - 180), Site: "AMS"})
	}
	m.Lines = true
	for _, n := range []int{0, 100_000, 300_000} {
		if err := Render(&failingWriter{n: n}, m); !errors.Is(err, errWrite) {
			t.Errorf("after %d bytes: err = %v, want the writer's error", n, err)
		}
	}
}

func TestRenderEmptyMap(t *testing.T) {
	out := render(t, Map{})
	checkSafe(t, out)
	if bytes.Contains(out, []byte(`class="legend"`)) {
		t.Error("an empty map has a legend")
	}
}

// The dashboard renders maps for many requests at once.
func TestRenderConcurrently(t *testing.T) {
	want := map[int][]byte{}
	for _, w := range []int{480, 960, 1234} {
		m := smallWorld()
		m.Width = w
		want[w] = render(t, m)
	}
	errs := make(chan error, 12)
	for i := range 12 {
		go func() {
			w := []int{480, 960, 1234}[i%3]
			m := smallWorld()
			m.Width = w
			var buf bytes.Buffer
			err := Render(&buf, m)
			if err == nil && !bytes.Equal(buf.Bytes(), want[w]) {
				err = fmt.Errorf("width %d: output differs between renders", w)
			}
			errs <- err
		}()
	}
	for range 12 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
