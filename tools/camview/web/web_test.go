package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/camview/web"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestThePageAndItsFilesAreServedWithAStrictPolicy(t *testing.T) {
	h := web.Handler()
	for _, tc := range []struct {
		path, contentType, mustHold string
	}{
		{"/", "text/html; charset=utf-8", `<video id="video" autoplay muted playsinline>`},
		{"/camview.js", "text/javascript; charset=utf-8", "window.camview = { stats }"},
		{"/camview.css", "text/css; charset=utf-8", "video"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, h, tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s", tc.path, resp.Status)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if got := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(got, "default-src 'self'") {
				t.Errorf("Content-Security-Policy %q", got)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("missing nosniff or no-referrer: %v", resp.Header)
			}
			if !strings.Contains(body, tc.mustHold) {
				t.Errorf("%s does not hold %q", tc.path, tc.mustHold)
			}
			// Nothing from another origin, and nothing inline that the policy would block.
			for _, bad := range []*regexp.Regexp{
				regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`),
				regexp.MustCompile(`(?i)<script>|<script\s+(type="[^"]*"\s*)?>`),
				regexp.MustCompile(`(?i)<style|\sstyle\s*=|\son[a-z]+\s*=`),
				regexp.MustCompile(`(?i)(fetch|import)\(\s*["']https?:`),
			} {
				if m := bad.FindString(body); m != "" {
					t.Errorf("%s holds %q", tc.path, m)
				}
			}
		})
	}
	for _, path := range []string{"/index.html", "/static/camview.js", "/whep/cam-0001", "/favicon.ico"} {
		if resp, _ := get(t, h, path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
}

func TestThePageReadsTheGrantFromTheFragmentOnly(t *testing.T) {
	_, js := get(t, web.Handler(), "/camview.js")
	for _, must := range []string{"location.hash", "'Authorization': 'Bearer ' + grant", "iceGatheringState", "method: 'DELETE'", "'pagehide'", "recvonly"} {
		if !strings.Contains(js, must) {
			t.Errorf("camview.js lacks %q", must)
		}
	}
	for _, never := range []string{"location.search", "console.log(grant", "localStorage", "document.cookie"} {
		if strings.Contains(js, never) {
			t.Errorf("camview.js uses %q", never)
		}
	}
}
