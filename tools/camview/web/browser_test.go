package web_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/camview/web"
	"github.com/camagent/camagent/tools/camview/whep"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// chromiumPath is Debian's Chromium, which make test installs when it is missing.
const chromiumPath = "/usr/bin/chromium"

// pageStats is what the page's window.camview.stats() reports, and its state line.
type pageStats struct {
	FramesDecoded   int    `json:"framesDecoded"`
	ConnectionState string `json:"connectionState"`
	Error           string `json:"error"`
	State           string `json:"state"`
}

const statsJS = `window.camview.stats().then((s) => JSON.stringify(Object.assign({}, s, {state: document.getElementById('state').textContent})))`

// startChromium starts headless Chromium confined to loopback, as tools/e2e does, and
// returns its context, cancelled when the test ends.
func startChromium(t *testing.T) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("a real browser: not in -short")
	}
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Fatalf("%s not found: install Debian's chromium (make test does: apt-get install chromium)", chromiumPath)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// waitPage polls the page's stats until ok accepts them or within passes.
func waitPage(t *testing.T, ctx context.Context, within time.Duration, what string, ok func(pageStats) bool) pageStats {
	t.Helper()
	deadline := time.Now().Add(within)
	var st pageStats
	for {
		js, err := chromedp.Run(ctx, chromedp.Evaluate[string](statsJS, chromedp.EvalAwaitPromise, chromedp.EvalAsValue))
		if err == nil {
			err = json.Unmarshal([]byte(js), &st)
		}
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page did not %s within %v: last stats %+v (err %v)", what, within, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A viewer whose camera ends the session (here a credential rotation, which voids every
// grant) is told at once, in words, why the video stopped and what to do: the page asks its
// WHEP session, which heard the camera's reason, instead of showing, seconds later, that the
// connection failed.
func TestThePageSaysWhyTheCameraEndedTheSession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	h, err := whep.New(whep.Config{Relay: cam.Relay(t, "web")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := playing(t, cam, h)

	cam.Rotate(t) // the camera ends every session with "revoked"
	// ICE takes 5 s to call the connection disconnected and 15 s more to call it failed; the
	// page must not wait for it.
	st := waitPage(t, ctx, 4*time.Second, "say why the video stopped", func(st pageStats) bool { return st.Error != "" })
	for _, want := range []string{"rotated", "new link"} {
		if !strings.Contains(st.Error, want) || !strings.Contains(st.State, want) {
			t.Errorf("the page says %q (error %q), want it to say %q", st.State, st.Error, want)
		}
	}
	if h.Sessions() != 0 {
		t.Errorf("%d WHEP sessions live after the camera ended the only one", h.Sessions())
	}
}

// deafRelay is a relay that never hears the camera's Bye, as when it was lost (the camera lost
// power, or the relay was reconnecting).
type deafRelay struct{ *relay.Relay }

func (deafRelay) Ended(string) <-chan signal.Bye { return nil }

// A page whose connection ends without the relay hearing why says so, and DELETEs its WHEP
// session: otherwise the session would hold its place among the relay's MaxSessions until
// its grant expired, hours or days later.
func TestThePageFreesItsSessionWhenTheConnectionEnds(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	h, err := whep.New(whep.Config{Relay: deafRelay{cam.Relay(t, "web")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := playing(t, cam, h)
	cam.Rotate(t) // the camera closes the connection; its Bye goes unheard
	st := waitPage(t, ctx, 8*time.Second, "say the connection was lost", func(st pageStats) bool { return st.Error != "" })
	if !strings.Contains(st.Error, "lost") || !strings.Contains(st.Error, "reload") {
		t.Errorf("the page says %q, want it to say the connection was lost and to reload", st.Error)
	}
	deadline := time.Now().Add(camviewtest.Timeout)
	for h.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the page left its WHEP session live after its connection ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// playing serves the page and h, opens the page in Chromium with a grant for cam, and waits
// until it plays; it returns the browser's context.
func playing(t *testing.T, cam *camviewtest.Camera, h *whep.Handler) context.Context {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/whep/", h)
	mux.Handle("/", web.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.Close(); h.Close() })
	ctx := startChromium(t)
	link := srv.URL + "/#device=" + cam.ID + "&grant=" + token(cam.Grant(t, nil))
	if _, err := chromedp.Run(ctx, chromedp.Navigate(link)); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	waitPage(t, ctx, camviewtest.Timeout, "play the video", func(st pageStats) bool { return st.FramesDecoded >= 10 })
	return ctx
}

func token(grant []byte) string { return base64.RawURLEncoding.EncodeToString(grant) }
