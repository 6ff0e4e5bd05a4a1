// Package web is camview's page: one self-contained HTML file, its script and its style
// sheet, embedded in the binary and served from the same origin as the WHEP endpoint
// (tools/camview/whep). The page reads the camera id and the grant from the URL's fragment
// (#device=ID&grant=G), which browsers never send to a server, so the grant stays out of
// every request line and access log; it hands the grant to the WHEP endpoint as a bearer
// token, plays the video, shows the connection state and a stats line, and deletes its WHEP
// session when the page goes away. When the camera closes the connection, or ICE calls it
// disconnected or failed, the page asks its WHEP session why (the camera's reason: privacy, the
// grant's expiry, a rotation, …) and shows that, with what to do. For automated tests it
// exposes window.camview.stats().
//
// What it must never do: load anything from another origin, or need inline script or style
// (the Content-Security-Policy is default-src 'self').
package web

import (
	"embed"
	"net/http"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is sent with every response: the page loads nothing but its own
// files and may be framed by nobody.
const ContentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// files are the page's files by URL path, with their content types.
var files = map[string]struct{ name, contentType string }{
	"/":            {"static/index.html", "text/html; charset=utf-8"},
	"/camview.js":  {"static/camview.js", "text/javascript; charset=utf-8"},
	"/camview.css": {"static/camview.css", "text/css; charset=utf-8"},
}

// Handler serves the page at GET / and its script and style sheet; every other path is 404.
func Handler() http.Handler {
	mux := http.NewServeMux()
	for path, f := range files {
		pattern := "GET " + path
		if path == "/" {
			pattern = "GET /{$}"
		}
		mux.HandleFunc(pattern, func(w http.ResponseWriter, _ *http.Request) {
			b, err := static.ReadFile(f.name)
			if err != nil { // a build defect, which the tests catch
				http.Error(w, "missing page file", http.StatusInternalServerError)
				return
			}
			h := w.Header()
			h.Set("Content-Type", f.contentType)
			h.Set("Content-Security-Policy", ContentSecurityPolicy)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Cache-Control", "no-cache")
			w.Write(b)
		})
	}
	return mux
}
