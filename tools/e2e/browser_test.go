package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, which make test installs when it is missing.
const chromiumPath = "/usr/bin/chromium"

// pageStats is what the camview page's window.camview.stats() reports.
type pageStats struct {
	FramesDecoded   int    `json:"framesDecoded"`
	FrameWidth      int    `json:"frameWidth"`
	FrameHeight     int    `json:"frameHeight"`
	ConnectionState string `json:"connectionState"`
	Error           string `json:"error"`
	// Distinct is how many distinct colours a 32x24 sample of the playing video has: a
	// decoded test pattern has many, a black or frozen-blank element one.
	Distinct int `json:"distinct"`
}

// browser is a headless Chromium driven over the DevTools protocol.
type browser struct {
	ctx context.Context
}

// startChromium starts Debian's headless Chromium, confined to loopback: no background
// networking (this machine refuses every outside connection), WebRTC allowed to use the
// loopback interface and to show real host addresses rather than mDNS names (the camera,
// like these tests, resolves no mDNS), and autoplay without a gesture.
func startChromium(t *testing.T) *browser {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Fatalf("%s not found: install Debian's chromium (make test does: apt-get install chromium)", chromiumPath)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI; the page is our own
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(800, 600),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser, which lives as long as that run's context: it must
	// not carry a timeout, so a watchdog cancels it instead if Chromium never comes up.
	started := make(chan struct{})
	go func() {
		select {
		case <-started:
		case <-time.After(60 * time.Second):
			cancel()
		}
	}()
	err := chromedp.Do(ctx)
	close(started)
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return &browser{ctx: ctx}
}

// statsJS asks the page for its WebRTC stats and samples the video's pixels.
const statsJS = `(async () => {
  const s = await window.camview.stats();
  const v = document.querySelector('video');
  let distinct = 0;
  if (v && v.videoWidth > 0) {
    const c = document.createElement('canvas');
    c.width = 32; c.height = 24;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 32, 24);
    const d = g.getImageData(0, 0, 32, 24).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) seen.add((d[i] >> 4) << 8 | (d[i+1] >> 4) << 4 | (d[i+2] >> 4));
    distinct = seen.size;
  }
  return JSON.stringify(Object.assign({}, s, {distinct}));
})()`

// until opens pageURL and reads the page's stats every 250 ms until done says they are what
// the caller waits for, and returns them; after timeout it fails the test, saying what it
// waited for.
func (b *browser) until(t *testing.T, pageURL string, timeout time.Duration, what string, done func(pageStats) bool) pageStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL), chromedp.WaitReady("video")); err != nil {
		t.Fatalf("opening the camview page: %v", err)
	}
	var st pageStats
	for {
		js, err := chromedp.Run(ctx, chromedp.Evaluate[string](statsJS, chromedp.EvalAwaitPromise, chromedp.EvalAsValue))
		if err == nil {
			err = json.Unmarshal([]byte(js), &st)
		}
		if err == nil && done(st) {
			return st
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: last stats %+v (err %v)", what, st, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// watch opens pageURL and waits until the page has decoded frames of the given size,
// returning its last stats and the path of a screenshot saved under the test's temp dir.
func (b *browser) watch(t *testing.T, pageURL string, width, height int) (pageStats, string) {
	t.Helper()
	st := b.until(t, pageURL, 90*time.Second, "the browser decoded no live video", func(st pageStats) bool {
		return st.FramesDecoded >= 30 && st.FrameWidth == width && st.FrameHeight == height && st.Distinct > 8
	})
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.TempDir(), "camview.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("CAMAGENT_ARTIFACTS"); dir != "" {
		// CI keeps the screenshot when asked to: the temp dir goes with the test.
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s.png", filepath.Base(t.Name()))), png, 0o644); err != nil {
			t.Log(err)
		}
	}
	return st, path
}

// A person watches a camera in an ordinary browser: headless Chromium opens the camview page
// with a grant in its fragment, the page negotiates over WHEP, camview relays over MQTT as a
// viewer identity, and the camera streams H.264 that Chromium decodes (issue 4).
func TestChromiumPlaysTheCameraThroughCamview(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		_, grant := camviewCamera(t, e)
		srv := startCamviewServe(t, e)
		b := startChromium(t)
		st, shot := b.watch(t, srv.url+"/#device=cam-0001&grant="+grantText(grant), 320, 240)
		t.Logf("Chromium decoded %d frames of %dx%d (%d colours sampled); screenshot %s", st.FramesDecoded, st.FrameWidth, st.FrameHeight, st.Distinct, shot)
		if st.ConnectionState != "connected" {
			t.Fatalf("page connection state %q", st.ConnectionState)
		}
	})
}
