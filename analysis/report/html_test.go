package report_test

import (
	"bytes"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
	api "github.com/anyscope/anyscope/collector/api/v1"
)

func writeHTML(t *testing.T, r *report.Report) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := report.WriteHTML(&b, r); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	return b.Bytes()
}

// svgElement matches a map: geomap escapes every string it writes, so no
// "</svg>" can hide inside one.
var svgElement = regexp.MustCompile(`(?s)<svg\b.*?</svg>`)

// withoutMaps replaces each map by a placeholder: the golden files hold the
// page around the maps; how a map looks is web/geomap's golden files' job.
func withoutMaps(page []byte) []byte {
	return svgElement.ReplaceAll(page, []byte("<svg><!-- geomap.Render output --></svg>"))
}

// The located fixture's hour compared with the half hour before: the map
// places the four vantage points and the sites, and every section shows.
func TestHTMLGolden(t *testing.T) {
	t.Parallel()
	page := writeHTML(t, comparedReport(t))
	golden(t, "report.html.golden", withoutMaps(page))
	doc := checkSafeHTML(t, page)

	// k-root's map: each located vantage point is a dot of its site (the
	// majority across addresses, as in the sites table); vp-nyc-1 resolved
	// nothing. Sites are placed from declared coordinates (HEL, AMS), the
	// catalog (STO) and a latency cluster's code (~NYC).
	maps := elements(doc, "svg")
	if len(maps) != 2 {
		t.Fatalf("%d maps, want one per target", len(maps))
	}
	dots := map[string]string{}
	sites := map[string]bool{}
	for _, n := range elements(maps[1], "*") {
		if vp := attr(n, "data-vp"); vp != "" {
			dots[vp] = attr(n, "data-site")
		}
		if attr(n, "class") == "site" {
			sites[attr(n, "data-site")] = true
		}
	}
	if want := map[string]string{"vp-ams-1": "HEL", "vp-fra-1": "AMS", "vp-hel-1": "HEL", "vp-nyc-1": ""}; !reflect.DeepEqual(dots, want) {
		t.Errorf("vantage point dots %v, want %v", dots, want)
	}
	if want := map[string]bool{"HEL": true, "AMS": true, "STO": true, "~NYC": true}; !reflect.DeepEqual(sites, want) {
		t.Errorf("site markers %v, want %v", sites, want)
	}

	text := textOf(doc)
	for _, want := range []string{
		"Target k-root", "Target i-root",
		"What changed since the window 2025-03-01T11:30:00Z to 2025-03-01T12:30:00Z",
		"Catchment map", "Latency by site", "Incidents", "Switches", "Unresolved identities",
		"vp-hel-1", "2025-03-01T12:40:00Z", "open",
		"routing", "Helsinki", "Amsterdam",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
}

// hostileHTMLSource is hostileSource with its vantage point placed on the
// map and a declared site whose code and name are markup.
func hostileHTMLSource() *sliceSource {
	src := hostileSource()
	src.targets[0].Sites = append(src.targets[0].Sites, analysis.Site{
		Code: `<svg onload=alert(1)>`, Name: `"><script>alert(2)</script>`, Latitude: 48.85, Longitude: 2.35, HasCoords: true,
	})
	src.vps = []analysis.VantagePoint{{Name: "vp|<i>x</i>", Latitude: 51.5, Longitude: -0.12, HasCoords: true}}
	src.obs = append(src.obs, analysis.Observation{
		VantagePoint: "<img src=x onerror=alert(3)>", Target: "example", Address: netip.MustParseAddr("192.0.2.1"),
		Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
		At: start.Add(40 * time.Minute), Identity: "ams", RTT: 7 * time.Millisecond,
	})
	src.vps = append(src.vps, analysis.VantagePoint{Name: "<img src=x onerror=alert(3)>", Latitude: 52.4, Longitude: 4.9, HasCoords: true})
	return src
}

// Hostile identities, vantage point names and site names show as text:
// no script, no event handler, nothing loaded from elsewhere.
func TestHTMLHostile(t *testing.T) {
	t.Parallel()
	r := build(t, hostileHTMLSource(), report.Options{Since: start, Until: start.Add(time.Hour)})
	earlier := build(t, hostileHTMLSource(), report.Options{Since: start.Add(-30 * time.Minute), Until: start.Add(30 * time.Minute)})
	report.Compare(r, earlier)
	page := writeHTML(t, r)
	golden(t, "hostile.html.golden", withoutMaps(page))
	doc := checkSafeHTML(t, page)

	if bytes.Contains(bytes.ToLower(page), []byte("<script")) {
		t.Errorf("page contains <script")
	}
	// The markup is there, as text a reader sees.
	text := textOf(doc)
	for _, want := range []string{
		"<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "[click](javascript:alert(1))",
		"<img src=x onerror=alert(3)>", "vp|<i>x</i>", `"><script>alert(2)</script>`, `\u202Eevil\u200B\u000D\u000A| --- |`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	for _, bad := range []string{"\u202e", "\u200b", "\r"} {
		if strings.Contains(text, bad) {
			t.Errorf("page text contains %q raw", bad)
		}
	}
}

// checkSafeHTML parses page as a browser would (foreign SVG content
// included) and fails on anything that could run or load: a script, an
// event handler attribute, an embedding or linking element, a URL other than
// a fragment or data: URL, CSS that loads. It checks the content security
// policy and returns the document.
func checkSafeHTML(t *testing.T, page []byte) *html.Node {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	forbidden := map[string]bool{
		"script": true, "iframe": true, "frame": true, "object": true, "embed": true, "img": true, "image": true,
		"link": true, "base": true, "form": true, "input": true, "button": true, "foreignobject": true, "use": true,
		"animate": true, "set": true, "animatemotion": true, "animatetransform": true, "audio": true, "video": true,
		"source": true, "portal": true, "template": true, "noscript": true,
	}
	csp := 0
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			name := strings.ToLower(n.Data)
			if forbidden[name] {
				t.Errorf("element <%s> in the page", n.Data)
			}
			for _, a := range n.Attr {
				key, val := strings.ToLower(a.Key), strings.ToLower(strings.TrimSpace(a.Val))
				switch {
				case strings.HasPrefix(key, "on"):
					t.Errorf("<%s %s=%q>: event handler", n.Data, a.Key, a.Val)
				case key == "href" || key == "src" || key == "action" || key == "formaction" || key == "xlink:href" || key == "srcset" || key == "poster":
					if !strings.HasPrefix(val, "#") && !strings.HasPrefix(val, "data:") {
						t.Errorf("<%s %s=%q>: a URL", n.Data, a.Key, a.Val)
					}
				case key == "style":
					if strings.Contains(val, "url(") || strings.Contains(val, "expression") || strings.Contains(val, "@import") {
						t.Errorf("<%s style=%q>: CSS that loads", n.Data, a.Val)
					}
				}
				if name == "meta" && key == "http-equiv" {
					switch val {
					case "content-security-policy":
						csp++
						if got := attr(n, "content"); got != report.ContentSecurityPolicy {
							t.Errorf("CSP %q, want %q", got, report.ContentSecurityPolicy)
						}
					default:
						t.Errorf("<meta http-equiv=%q>", a.Val)
					}
				}
			}
			if name == "style" && n.FirstChild != nil {
				css := strings.ToLower(n.FirstChild.Data)
				if strings.Contains(css, "url(") || strings.Contains(css, "@import") {
					t.Errorf("style sheet loads something")
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if csp != 1 {
		t.Errorf("%d content security policies, want 1", csp)
	}
	// The CSP must come before anything that could load: in the head,
	// before the style sheet.
	head := bytes.Index(page, []byte("Content-Security-Policy"))
	if style := bytes.Index(page, []byte("<style")); head < 0 || style < head {
		t.Errorf("the CSP does not come first in the head")
	}
	return doc
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// textOf is the page's text as a reader sees it (style sheets left out).
func textOf(doc *html.Node) string {
	var b strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "style" {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte('\n')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return b.String()
}

// elements lists the elements named name ("*": all) under root.
func elements(root *html.Node, name string) []*html.Node {
	var out []*html.Node
	var walk func(x *html.Node)
	walk = func(x *html.Node) {
		if x.Type == html.ElementNode && (name == "*" || x.Data == name) {
			out = append(out, x)
		}
		for c := x.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	return out
}
