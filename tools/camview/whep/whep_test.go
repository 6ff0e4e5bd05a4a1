package whep_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/whep"
)

// server is a WHEP handler in front of a real relay and a real camera, on loopback HTTP.
type server struct {
	cam *camviewtest.Camera
	h   *whep.Handler
	url string
	log *logtest.Buffer
}

func startServer(t *testing.T, cam *camviewtest.Camera, cfg whep.Config) *server {
	t.Helper()
	log := &logtest.Buffer{}
	cfg.Relay = cam.Relay(t, "test")
	cfg.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := whep.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		hs.Close()
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("handler log:\n%s", log.String())
		}
	})
	return &server{cam: cam, h: h, url: hs.URL, log: log}
}

func token(grant []byte) string { return base64.RawURLEncoding.EncodeToString(grant) }

// post sends a WHEP offer; auth is the whole Authorization header ("" for none).
func (s *server) post(t *testing.T, device, auth, contentType, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/whep/"+device, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	c := http.Client{Timeout: camviewtest.Timeout}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func body(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (s *server) get(t *testing.T, location string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url+location, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func (s *server) delete(t *testing.T, location string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, s.url+location, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

var locationRe = regexp.MustCompile(`^/whep/cam-0001/[0-9a-f]{32}$`)

func TestAnOfferGetsTheCamerasAnswerAndVideo(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{})
	grant := cam.Grant(t, nil)
	v := camviewtest.NewViewer(t)

	resp := s.post(t, cam.ID, "Bearer "+token(grant), "application/sdp", v.SDP)
	answer := body(resp)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %s: %s", resp.Status, answer)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("Content-Type %q", ct)
	}
	loc := resp.Header.Get("Location")
	if !locationRe.MatchString(loc) {
		t.Errorf("Location %q", loc)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q: an answer with addresses must not be cached", resp.Header.Get("Cache-Control"))
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("the endpoint sends CORS headers")
	}
	v.Accept(t, answer)
	v.WaitFrames(t, 30)
	if s.h.Sessions() != 1 {
		t.Errorf("%d live sessions, want 1", s.h.Sessions())
	}

	// PATCH (trickle, ICE restart) is not supported; DELETE ends the session once.
	req, _ := http.NewRequest(http.MethodPatch, s.url+loc, strings.NewReader("a=end-of-candidates\r\n"))
	req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	if resp := do(t, req); resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "DELETE") || strings.Contains(resp.Header.Get("Allow"), "PATCH") {
		t.Errorf("PATCH: %s, Allow %q; want 405 and Allow: DELETE, GET", resp.Status, resp.Header.Get("Allow"))
	}
	if resp := s.get(t, loc); resp.StatusCode != http.StatusOK || body(resp) != "live\n" {
		t.Errorf("GET of a live session: %s, want 200 live", resp.Status)
	}
	if resp := s.delete(t, loc); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	if resp := s.delete(t, loc); resp.StatusCode != http.StatusNotFound {
		t.Errorf("second DELETE: %s, want 404", resp.Status)
	}
	if s.h.Sessions() != 0 {
		t.Errorf("%d live sessions after DELETE", s.h.Sessions())
	}

	// The log names sessions and statuses, never the grant or the SDP (P2b).
	log := s.log.String()
	for _, secret := range []string{token(grant), "v=0\r", "a=candidate", "a=fingerprint"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	// It names the signaling session, never the resource URL: DELETE takes no grant.
	if !regexp.MustCompile(`session started" session=[0-9a-f]{32} device=cam-0001 status=201`).MatchString(log) || strings.Contains(log, strings.TrimPrefix(loc, "/whep/cam-0001/")) {
		t.Errorf("the log does not say what happened, or holds the resource URL:\n%s", log)
	}
}

func TestErrorsHaveTheirStatus(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{AnswerTimeout: 1500 * time.Millisecond})
	v := camviewtest.NewViewer(t)
	good := "Bearer " + token(cam.Grant(t, nil))
	for _, tc := range []struct {
		name, device, auth, contentType, body string
		status                                int
		header, headerPrefix                  string // a header the response must carry, and its start
		text                                  string // the body must contain it
	}{
		{"no grant is 401 with a Bearer challenge", cam.ID, "", "application/sdp", v.SDP, 401, "WWW-Authenticate", "Bearer", "grant"},
		{"a Basic authorization is 401", cam.ID, "Basic dXNlcjpwYXNz", "application/sdp", v.SDP, 401, "WWW-Authenticate", "Bearer", ""},
		{"a grant that is not base64url is 401", cam.ID, "Bearer not+base64/==", "application/sdp", v.SDP, 401, "WWW-Authenticate", `Bearer realm="camview", error="invalid_token"`, ""},
		{"a padded grant is 401", cam.ID, good + "==", "application/sdp", v.SDP, 401, "WWW-Authenticate", "Bearer", ""},
		{"an expired grant is 403 naming the reason", cam.ID, "Bearer " + token(cam.ExpiredGrant(t)), "application/sdp", v.SDP, 403, "", "", "grant"},
		{"another camera's grant is 403", cam.ID, "Bearer " + token(cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0002" })), "application/sdp", v.SDP, 403, "", "", "grant"},
		{"bytes that are no grant are 403", cam.ID, "Bearer " + token([]byte("not a signed grant")), "application/sdp", v.SDP, 403, "", "", "grant"},
		{"a wrong content type is 415", cam.ID, good, "application/json", v.SDP, 415, "", "", "application/sdp"},
		{"no content type is 415", cam.ID, good, "", v.SDP, 415, "", "", ""},
		{"a body that is no SDP is 400", cam.ID, good, "application/sdp", "hello", 400, "", "", ""},
		{"an offer without H.264 video is 400", cam.ID, good, "application/sdp", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", 400, "", "", "bad_offer"},
		{"an offer over the cap is 413", cam.ID, good, "application/sdp", "v=0\r\n" + strings.Repeat("a=x\r\n", whep.MaxOfferSize/5), 413, "", "", ""},
		{"a device id that cannot be is 404", "CAM_1", good, "application/sdp", v.SDP, 404, "", "", ""},
		{"a camera that does not answer is 504", "cam-0009", "Bearer " + token(cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0009" })), "application/sdp", v.SDP, 504, "", "", "answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := s.post(t, tc.device, tc.auth, tc.contentType, tc.body)
			text := body(resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s (%s), want %d", resp.Status, strings.TrimSpace(text), tc.status)
			}
			if tc.header != "" && !strings.HasPrefix(resp.Header.Get(tc.header), tc.headerPrefix) {
				t.Errorf("%s: %q, want %q…", tc.header, resp.Header.Get(tc.header), tc.headerPrefix)
			}
			if !strings.Contains(text, tc.text) {
				t.Errorf("body %q does not say %q", text, tc.text)
			}
			if resp.Header.Get("Location") != "" {
				t.Error("an error carries a Location")
			}
		})
	}
	if s.h.Sessions() != 0 {
		t.Errorf("%d sessions live after refusals", s.h.Sessions())
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodOptions} {
		req, _ := http.NewRequest(m, s.url+"/whep/"+cam.ID, nil)
		if resp := do(t, req); resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "POST") {
			t.Errorf("%s /whep/%s: %s, Allow %q", m, cam.ID, resp.Status, resp.Header.Get("Allow"))
		}
	}
	log := s.log.String()
	if strings.Contains(log, strings.TrimPrefix(good, "Bearer ")) || strings.Contains(log, "a=") {
		t.Error("the log holds a grant or an SDP")
	}
}

func TestBusyIs503WithRetryAfter(t *testing.T) {
	t.Run("the camera's viewer limit", func(t *testing.T) {
		cam := camviewtest.Start(t, camviewtest.Options{MaxViewers: 1})
		s := startServer(t, cam, whep.Config{})
		auth := "Bearer " + token(cam.Grant(t, nil))
		if resp := s.post(t, cam.ID, auth, "application/sdp", camviewtest.NewViewer(t).SDP); resp.StatusCode != http.StatusCreated {
			t.Fatalf("first POST: %s", resp.Status)
		}
		resp := s.post(t, cam.ID, auth, "application/sdp", camviewtest.NewViewer(t).SDP)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body(resp), "limit") {
			t.Fatalf("second POST: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("the handler's session limit", func(t *testing.T) {
		cam := camviewtest.Start(t, camviewtest.Options{})
		s := startServer(t, cam, whep.Config{MaxSessions: 1})
		auth := "Bearer " + token(cam.Grant(t, nil))
		if resp := s.post(t, cam.ID, auth, "application/sdp", camviewtest.NewViewer(t).SDP); resp.StatusCode != http.StatusCreated {
			t.Fatalf("first POST: %s", resp.Status)
		}
		resp := s.post(t, cam.ID, auth, "application/sdp", camviewtest.NewViewer(t).SDP)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("second POST: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
		}
	})
}

// A session the camera ended is no longer live, and a GET on its resource says why, in words
// a viewer understands, for the page to show when its connection breaks.
func TestASessionTheCameraEndsIsGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, cam *camviewtest.Camera)
		says []string
	}{
		{"after a rotation, the page is told to get a new link", func(t *testing.T, cam *camviewtest.Camera) {
			cam.Rotate(t) // the camera ends every session with "revoked"
		}, []string{"rotated", "new link"}},
		{"after the privacy switch, the page is told the camera is private", func(t *testing.T, cam *camviewtest.Camera) {
			if err := cam.Agent.SetPrivacy(context.Background(), true, "test"); err != nil {
				t.Fatal(err)
			}
		}, []string{"privacy mode on"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cam := camviewtest.Start(t, camviewtest.Options{})
			s := startServer(t, cam, whep.Config{})
			resp := s.post(t, cam.ID, "Bearer "+token(cam.Grant(t, nil)), "application/sdp", camviewtest.NewViewer(t).SDP)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("POST: %s", resp.Status)
			}
			tc.end(t, cam)
			deadline := time.Now().Add(camviewtest.Timeout)
			for s.h.Sessions() != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the session stayed live after the camera ended it")
				}
				time.Sleep(10 * time.Millisecond)
			}
			loc := resp.Header.Get("Location")
			st := s.get(t, loc)
			text := body(st)
			if st.StatusCode != http.StatusGone {
				t.Errorf("GET of a session the camera ended: %s %q, want 410", st.Status, text)
			}
			for _, want := range tc.says {
				if !strings.Contains(text, want) {
					t.Errorf("GET of a session the camera ended: %q does not say %q", text, want)
				}
			}
			if st := s.get(t, strings.Replace(loc, cam.ID, "cam-0002", 1)); st.StatusCode != http.StatusNotFound {
				t.Errorf("GET of the session under another camera: %s, want 404", st.Status)
			}
			if resp := s.delete(t, loc); resp.StatusCode != http.StatusNotFound {
				t.Errorf("DELETE of an ended session: %s, want 404", resp.Status)
			}
			if st := s.get(t, "/whep/"+cam.ID+"/00000000000000000000000000000000"); st.StatusCode != http.StatusNotFound {
				t.Errorf("GET of an unknown session: %s, want 404", st.Status)
			}
		})
	}
}

func TestConfigIsChecked(t *testing.T) {
	if _, err := whep.New(whep.Config{}); err == nil {
		t.Error("New accepted a config without a relay")
	}
}
