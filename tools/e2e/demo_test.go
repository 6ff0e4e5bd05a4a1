package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/logtest"
)

// `make demo` does what the README says, as a person runs it: tools/demo/demo.sh with the
// real binaries makes a fleet, starts the embedded broker, the signer, a camera streaming the
// sample clip and a viewer relay, pings the camera, breaches, and prints a link that plays in
// a browser, while the link it printed before the breach no longer does. Ctrl-C stops
// everything it started.
func TestMakeDemoPlaysInABrowserAndStopsOnCtrlC(t *testing.T) {
	camviewBinary(t)
	if _, err := fleetctlBin(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Dir(camagentBin) // camagent, camview and fleetctl, built by this package
	script, err := filepath.Abs(filepath.Join("..", "demo", "demo.sh"))
	if err != nil {
		t.Fatal(err)
	}
	demo := filepath.Join(t.TempDir(), "demo")
	view := stableAddr(t)
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "BIN="+bin, "DEMO_DIR="+demo,
		"DEMO_PORT="+strings.TrimPrefix(stableAddr(t), "127.0.0.1:"), "DEMO_VIEW_ADDR="+view)
	// Its own process group, as a terminal gives a foreground job: Ctrl-C reaches all of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(logtest.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	// Its output, line by line, until it says it keeps running.
	var (
		mu    sync.Mutex
		lines []string
	)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		closed := false
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if !closed && strings.HasPrefix(sc.Text(), "Press Ctrl-C to stop.") {
				close(ready)
				closed = true
			}
		}
		exited <- cmd.Wait()
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		logs, _ := filepath.Glob(filepath.Join(demo, "*.log"))
		s := strings.Join(lines, "\n") + "\n-- stderr:\n" + stderr.String()
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			s += "\n-- " + filepath.Base(l) + ":\n" + string(b)
		}
		return s
	}
	select {
	case <-ready:
	case err := <-exited:
		exited <- err
		t.Fatalf("the demo stopped before it was ready: %v\n%s", err, output())
	case <-time.After(4 * time.Minute):
		t.Fatalf("the demo was not ready within 4 minutes:\n%s", output())
	}

	var links []string
	mu.Lock()
	for _, l := range lines {
		if _, link, ok := strings.Cut(l, "watch the camera live: "); ok {
			links = append(links, link)
		}
	}
	mu.Unlock()
	if len(links) != 2 || !strings.HasPrefix(links[1], "http://"+view+"/#") {
		t.Fatalf("want the link from before the breach and the one after, on http://%s/: got %q\n%s", view, links, output())
	}

	b := startChromium(t)
	st, shot := b.watch(t, links[1], 320, 240)
	t.Logf("the link after the breach: Chromium decoded %d frames of %dx%d; screenshot %s", st.FramesDecoded, st.FrameWidth, st.FrameHeight, shot)
	if st.ConnectionState != "connected" {
		t.Errorf("page connection state %q", st.ConnectionState)
	}
	before := b.refused(t, links[0])
	t.Logf("the link from before the breach: %q", before.Error)

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("the demo exited with %v after Ctrl-C", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the demo did not stop within 30 s of Ctrl-C:\n%s", output())
	}
	if !strings.Contains(output(), "stopped; logs are in") {
		t.Errorf("the demo did not say it stopped:\n%s", output())
	}
	// Nothing it started is left: no process of its group.
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-cmd.Process.Pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the demo still run 10 s after Ctrl-C")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// refused opens pageURL and waits until the page shows an error, without having decoded a
// frame, and returns its stats.
func (b *browser) refused(t *testing.T, pageURL string) pageStats {
	t.Helper()
	return b.until(t, pageURL, 60*time.Second, "the page showed no error", func(st pageStats) bool {
		if st.FramesDecoded > 0 {
			t.Fatalf("the page played video with a grant it should have been refused: %+v", st)
		}
		return st.Error != ""
	})
}
