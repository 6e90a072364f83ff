package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

// The page templates and the two static assets, embedded: the dashboard
// needs no CDN and works offline.
var (
	//go:embed templates/*.html
	templateFiles embed.FS
	//go:embed static/dashboard.css static/dashboard.js
	staticFiles embed.FS
)

// asset is an embedded static file.
type asset struct {
	body        []byte
	contentType string
	version     string // a digest of the body, for cache busting
}

var assets = func() map[string]asset {
	m := map[string]asset{}
	for name, ct := range map[string]string{
		"dashboard.css": "text/css; charset=utf-8",
		"dashboard.js":  "text/javascript; charset=utf-8",
	} {
		b, err := fs.ReadFile(staticFiles, "static/"+name)
		if err != nil {
			panic("dashboard: embedded asset: " + err.Error()) // a build bug
		}
		sum := sha256.Sum256(b)
		m[name] = asset{b, ct, hex.EncodeToString(sum[:6])}
	}
	return m
}()

// assetURL is the URL of an embedded asset, with its version.
func assetURL(name string) (string, error) {
	a, ok := assets[name]
	if !ok {
		return "", fmt.Errorf("no asset %q", name)
	}
	return "/static/" + name + "?v=" + a.version, nil
}

func serveStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := assets[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.contentType)
	if r.URL.Query().Get("v") == a.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+a.version+`"`)
	if strings.Contains(r.Header.Get("If-None-Match"), `"`+a.version+`"`) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(a.body)
}

// pageNames are the page templates, each rendered inside layout.html.
var pageNames = []string{"overview", "catchment", "diff", "timeline", "incidents", "vantagepoint", "agents", "error"}

var funcs = template.FuncMap{
	"asset": assetURL,
	"stamp": stamp,
	"stampp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return stamp(*t)
	},
	"pct":   func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) },
	"f1":    func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"f2":    func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"color": color,
	"secs":  func(f float64) string { return human(time.Duration(f * float64(time.Second))) },
	"coord": func(lat, lon *float64) string {
		if lat == nil || lon == nil {
			return ""
		}
		return fmt.Sprintf("%.2f, %.2f", *lat, *lon)
	},
	"orNone": func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	},
	"bar": bar,
	// vps counts vantage points in words: "1 vantage point", "2 vantage points".
	"vps": func(n int) string {
		if n == 1 {
			return "1 vantage point"
		}
		return fmt.Sprintf("%d vantage points", n)
	},
	"add": func(a, b int) int { return a + b },
	"sub": func(a, b float64) float64 { return a - b },
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/parts.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, p := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(templateFiles, "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: template %s: %w", p, err)
		}
		pages[p] = t
	}
	return pages, nil
}

// barSegment is one site's part of a share bar, 1000 units wide.
type barSegment struct {
	SiteShare
	Offset, Width float64
}

func bar(ss []SiteShare) []barSegment {
	var out []barSegment
	x := 0.0
	for _, s := range ss {
		if s.VantagePoints == 0 {
			continue
		}
		w := 1000 * s.Share
		out = append(out, barSegment{s, x, w})
		x += w
	}
	return out
}
