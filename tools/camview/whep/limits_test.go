package whep_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/whep"
)

// An offer within MaxOfferSize whose signaling message would be over the cap once encoded
// (JSON escapes '<', '>' and line ends) is the client's fault, 413, and never reaches the
// camera: not a 502 that blames the camera's side.
func TestAnOfferTooLargeToSendIs413(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{})
	sdp := "v=0\r\n" + strings.Repeat("a=<>\r\n", (whep.MaxOfferSize-5)/6)
	if len(sdp) > whep.MaxOfferSize {
		t.Fatalf("the offer is %d bytes, over MaxOfferSize", len(sdp))
	}
	resp := s.post(t, cam.ID, "Bearer "+token(cam.Grant(t, nil)), "application/sdp", sdp)
	if text := body(resp); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST: %s (%s), want 413", resp.Status, strings.TrimSpace(text))
	}
	if s.h.Sessions() != 0 {
		t.Errorf("%d sessions live", s.h.Sessions())
	}
}

// The session id is no secret: the handler logs it, and it travels over MQTT to the camera
// and back through the broker, where every viewer identity reads dev/+/up/signal. DELETE
// needs no grant, so the resource URL must not be made of it: knowing a session id must not
// let anyone hang up another client's session.
func TestTheSessionIDDoesNotDeleteTheSession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{})
	resp := s.post(t, cam.ID, "Bearer "+token(cam.Grant(t, nil)), "application/sdp", camviewtest.NewViewer(t).SDP)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %s", resp.Status)
	}
	m := regexp.MustCompile(`msg="whep: session started" session=([0-9a-f]+)`).FindStringSubmatch(s.log.String())
	if m == nil {
		t.Fatalf("no session id in the log:\n%s", s.log.String())
	}
	loc := resp.Header.Get("Location")
	if byID := "/whep/" + cam.ID + "/" + m[1]; byID != loc {
		if resp := s.delete(t, byID); resp.StatusCode != http.StatusNotFound {
			t.Errorf("DELETE by the logged session id: %s, want 404", resp.Status)
		}
	} else {
		t.Errorf("the resource URL %s is made of the session id the log holds", loc)
	}
	if s.h.Sessions() != 1 {
		t.Fatalf("%d live sessions, want 1", s.h.Sessions())
	}
	if strings.Contains(s.log.String(), strings.TrimPrefix(loc, "/whep/"+cam.ID+"/")) {
		t.Error("the log holds the resource URL")
	}
	if resp := s.delete(t, loc); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE %s: %s", loc, resp.Status)
	}
	if s.h.Sessions() != 0 {
		t.Errorf("%d live sessions after DELETE", s.h.Sessions())
	}
}

// A session whose camera never said Bye (it lost power, or the relay was reconnecting when it
// did) is forgotten once its grant has expired, when the camera ends it anyway: otherwise
// such sessions pile up until every POST gets 503.
func TestASessionIsForgottenOnceItsGrantExpired(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	clk := clocktest.New(time.Now())
	s := startServer(t, cam, whep.Config{Clock: clk})
	exp := clk.Now().Add(time.Hour)
	grant := cam.Grant(t, func(g *certs.Grant) { g.ExpiresAt = exp.Unix() })
	resp := s.post(t, cam.ID, "Bearer "+token(grant), "application/sdp", camviewtest.NewViewer(t).SDP)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %s", resp.Status)
	}
	select {
	case <-clk.Waiting():
	case <-time.After(camviewtest.Timeout):
		t.Fatal("the handler set no timer for the session's end")
	}
	clk.Set(exp.Add(certs.ClockSkew + whep.SessionGrace - time.Second))
	if n := s.h.Sessions(); n != 1 {
		t.Fatalf("%d sessions before the grant's end, want 1", n)
	}
	clk.Set(exp.Add(certs.ClockSkew + whep.SessionGrace))
	deadline := time.Now().Add(camviewtest.Timeout)
	for s.h.Sessions() != 0 || !strings.Contains(s.log.String(), "the session outlived its grant") {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions remembered after the grant's end; the log:\n%s", s.h.Sessions(), s.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Its page, asking why its video stopped, is told; after EndedMemory the reason is
	// forgotten too.
	loc := resp.Header.Get("Location")
	if st := s.get(t, loc); st.StatusCode != http.StatusGone || !strings.Contains(body(st), "grant expired") {
		t.Errorf("GET after the grant's end: %s, want 410 saying the grant expired", st.Status)
	}
	clk.Advance(whep.EndedMemory)
	if st := s.get(t, loc); st.StatusCode != http.StatusNotFound {
		t.Errorf("GET after EndedMemory: %s, want 404", st.Status)
	}
}
