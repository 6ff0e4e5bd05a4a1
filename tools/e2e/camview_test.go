package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/camview/camviewtest"
)

// camviewName is the viewer relay name camview uses here: the Mosquitto fixture's ACL knows
// viewer:test.
const camviewName = "test"

var (
	camviewOnce sync.Once
	camviewPath string
	camviewErr  error
)

// camviewBinary builds the real camview binary once, beside the camagent binary that
// TestMain builds and removes.
func camviewBinary(t *testing.T) string {
	t.Helper()
	camviewOnce.Do(func() {
		camviewPath = filepath.Join(filepath.Dir(camagentBin), "camview")
		out, err := exec.Command("go", "build", "-o", camviewPath, "github.com/camagent/camagent/tools/camview").CombinedOutput()
		if err != nil {
			camviewErr = errors.New("build camview: " + err.Error() + "\n" + string(out))
		}
	})
	if camviewErr != nil {
		t.Fatal(camviewErr)
	}
	return camviewPath
}

// camviewCamera enrolls cam-0001 in e's fleet and runs it streaming the test clip (320x240,
// 30 fps), ICE confined to loopback; it returns a valid view grant for it.
func camviewCamera(t *testing.T, e *env) (a *runningAgent, grant []byte) {
	t.Helper()
	dir := enroll(t, e.f, "cam-0001")
	src, err := camera.NewFileSource(camera.FileConfig{Path: filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264")})
	if err != nil {
		t.Fatal(err)
	}
	a = startAgent(t, dir, e.url, func(c *agent.Config) { c.Video, c.VideoLoopbackOnly = src, true })
	a.waitConnected(t)
	return a, camviewGrant(t, e, a, "cam-0001", time.Hour)
}

// camviewGrant signs a view grant for device at a's epoch, valid from an hour ago until
// now+ttl (a negative ttl makes an expired grant).
func camviewGrant(t *testing.T, e *env, a *runningAgent, device string, ttl time.Duration) []byte {
	t.Helper()
	now := time.Now()
	b, err := e.f.SignGrant(certs.Grant{
		Device: device, Epoch: a.Epoch(), Scope: certs.ScopeView, Subject: "camview-e2e",
		IssuedAt: now.Add(-2 * time.Hour).Unix(), ExpiresAt: now.Add(ttl).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func grantText(grant []byte) string { return base64.RawURLEncoding.EncodeToString(grant) }

// recordFigures are the figures `camview record` prints.
var recordFigures = regexp.MustCompile(`(?m)^time to first frame: (\d+) ms\nframes: (\d+)\nframes per second: ([\d.]+)\nbitrate: ([\d.]+) kb/s\npackets: (\d+)\npacket loss: (\d+) \(([\d.]+)%\)\nresolution: (\d+)x(\d+)$`)

// ffprobeStream is what ffprobe says about the first video stream of a file.
type ffprobeStream struct {
	Width, Height int
	Frames        int
}

func ffprobe(t *testing.T, path string) ffprobeStream {
	t.Helper()
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Fatal("ffprobe not found: install ffmpeg (apt-get install ffmpeg)")
	}
	out, err := exec.Command(bin, "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=width,height,nb_read_frames", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var res struct {
		Streams []struct {
			Width        int    `json:"width"`
			Height       int    `json:"height"`
			NbReadFrames string `json:"nb_read_frames"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Streams) != 1 {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	s := res.Streams[0]
	n, err := strconv.Atoi(s.NbReadFrames)
	if err != nil {
		t.Fatalf("ffprobe frame count %q", s.NbReadFrames)
	}
	return ffprobeStream{Width: s.Width, Height: s.Height, Frames: n}
}

// `camview record`, the real binary, records a real camera's live video over WebRTC: the file
// is H.264 that ffprobe decodes at the clip's size and about seconds×30 frames, and the
// figures it prints say so, with no loss on loopback.
func TestCamviewRecordsLiveVideoThatFFprobeDecodes(t *testing.T) {
	bin := camviewBinary(t)
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Fatal("ffprobe not found: install ffmpeg (apt-get install ffmpeg)")
	}
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		_, grant := camviewCamera(t, e)
		dir := t.TempDir()
		grantFile := filepath.Join(dir, "grant.txt")
		if err := os.WriteFile(grantFile, []byte(grantText(grant)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "cam-0001.h264")
		const seconds = 4
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "record", "--fleet", e.f.Dir, "--broker", e.url, "--name", camviewName,
			"--device", "cam-0001", "--grant-file", grantFile, "--seconds", strconv.Itoa(seconds), "--out", out, "--loopback")
		var stdout, stderr logtest.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("camview record: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		t.Logf("camview record took %v:\n%s", time.Since(start).Round(time.Millisecond), stdout.String())

		m := recordFigures.FindStringSubmatch(stdout.String())
		if m == nil {
			t.Fatalf("the figures are not as expected:\n%s", stdout.String())
		}
		ttff, _ := strconv.Atoi(m[1])
		frames, _ := strconv.Atoi(m[2])
		fps, _ := strconv.ParseFloat(m[3], 64)
		kbps, _ := strconv.ParseFloat(m[4], 64)
		packets, _ := strconv.Atoi(m[5])
		lost, _ := strconv.Atoi(m[6])
		switch {
		case ttff <= 0 || ttff > 20000:
			t.Errorf("time to first frame %d ms", ttff)
		case fps < 27 || fps > 33:
			t.Errorf("%.1f frames per second, want about 30", fps)
		case kbps <= 0 || packets < frames:
			t.Errorf("bitrate %.1f kb/s, %d packets for %d frames", kbps, packets, frames)
		case lost != 0 || m[7] != "0.00":
			t.Errorf("%d packets lost (%s%%) on loopback", lost, m[7])
		case m[8] != "320" || m[9] != "240":
			t.Errorf("resolution %sx%s, want 320x240", m[8], m[9])
		}

		p := ffprobe(t, out)
		want := seconds * camviewtest.ClipFPS
		if p.Width != camviewtest.ClipWidth || p.Height != camviewtest.ClipHeight {
			t.Errorf("ffprobe: %dx%d, want %dx%d", p.Width, p.Height, camviewtest.ClipWidth, camviewtest.ClipHeight)
		}
		if p.Frames < want*7/10 || p.Frames > want*12/10 {
			t.Errorf("ffprobe counts %d frames, want %d (0.7× to 1.2×)", p.Frames, want)
		}
		if p.Frames > frames {
			t.Errorf("the file holds %d frames, camview received %d", p.Frames, frames)
		}
	}, "cam-0001")
}

// camviewServer is a `camview serve` process.
type camviewServer struct {
	cmd    *exec.Cmd
	url    string // http://127.0.0.1:port
	stdout *logtest.Buffer
	done   chan error
}

var servingLine = regexp.MustCompile(`(?m)^camview: serving (http://[0-9.:]+)/$`)

// startCamviewServe runs `camview serve` for e's fleet on a free loopback port and returns
// once it says where it serves. It is stopped (SIGTERM, checked to exit cleanly) when the test
// ends, if the test did not stop it.
//
// The server runs as a viewer relay with an identity of its own, as in a deployment that
// keeps the fleet's keys away from it: `camview enroll` (the real binary) makes its key and
// CSR in a directory of its own, the fleet signs the CSR (fleetctl viewer), and `camview
// enroll --bundle` installs the result; serve then gets that directory and no fleet directory.
func startCamviewServe(t *testing.T, e *env) *camviewServer {
	t.Helper()
	bin := camviewBinary(t)
	idDir := filepath.Join(t.TempDir(), "relay")
	if out, err := exec.Command(bin, "enroll", "--identity", idDir, "--name", camviewName).CombinedOutput(); err != nil {
		t.Fatalf("camview enroll --name: %v\n%s", err, out)
	}
	csr, err := os.ReadFile(filepath.Join(idDir, "viewer.csr"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, _, err := e.f.IssueViewer(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundlePath := filepath.Join(t.TempDir(), "viewer.bundle.json")
	if err := os.WriteFile(bundlePath, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "enroll", "--identity", idDir, "--bundle", bundlePath).CombinedOutput(); err != nil {
		t.Fatalf("camview enroll --bundle: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--identity", idDir, "--broker", e.url,
		"--listen", "127.0.0.1:0", "--answer-timeout", "10s")
	cmd.Dir = t.TempDir() // no ./fleet to fall back on
	s := &camviewServer{cmd: cmd, stdout: &logtest.Buffer{}, done: make(chan error, 1)}
	var stderr logtest.Buffer
	cmd.Stdout, cmd.Stderr = s.stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("camview serve stderr:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingLine.FindStringSubmatch(s.stdout.String()); m != nil {
			s.url = m[1]
			return s
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("camview serve exited: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("camview serve did not start:\n%s", stderr.String())
		}
	}
}

// stop sends SIGTERM and checks that the server shuts down cleanly.
func (s *camviewServer) stop(t *testing.T) {
	t.Helper()
	if s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Errorf("camview serve after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		t.Error("camview serve did not stop on SIGTERM")
	}
}

// post sends a WHEP offer with grant and returns the response with its body read.
func (s *camviewServer) post(t *testing.T, device string, grant []byte, sdp string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/whep/"+device, strings.NewReader(sdp))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+grantText(grant))
	return camviewDo(t, req)
}

func camviewDo(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// `camview serve`, the real binary, answers WHEP: a pion viewer's offer POSTed to
// /whep/cam-0001 gets the camera's answer and then live video; DELETE ends the session; an
// expired grant and another camera's grant get 403; SIGTERM stops it cleanly.
func TestCamviewServeAnswersWHEP(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		a, grant := camviewCamera(t, e)
		srv := startCamviewServe(t, e)

		v := camviewtest.NewViewer(t)
		resp, answer := srv.post(t, "cam-0001", grant, v.SDP)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/sdp" {
			t.Fatalf("POST: %s (%s): %s", resp.Status, resp.Header.Get("Content-Type"), answer)
		}
		loc := resp.Header.Get("Location")
		if !regexp.MustCompile(`^/whep/cam-0001/[0-9a-f]{32}$`).MatchString(loc) {
			t.Fatalf("Location %q", loc)
		}
		v.Accept(t, answer)
		v.WaitFrames(t, 60)

		for name, g := range map[string][]byte{
			"an expired grant":       camviewGrant(t, e, a, "cam-0001", -time.Hour),
			"another camera's grant": camviewGrant(t, e, a, "cam-0002", time.Hour),
		} {
			resp, text := srv.post(t, "cam-0001", g, camviewtest.NewViewer(t).SDP)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(text, "grant") {
				t.Errorf("%s: %s: %s; want 403 naming the grant", name, resp.Status, strings.TrimSpace(text))
			}
		}

		// The relay checks grants with the key set of its viewer bundle before it sends an
		// offer on: a grant no fleet key signed, for a camera that would never answer, gets
		// 403 at once instead of holding a place for the answer timeout (10 s here).
		mallory, err := certs.NewSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		forged, err := certs.SignGrant(mallory, certs.Grant{Device: "cam-0404", Scope: certs.ScopeView, Subject: "mallory",
			IssuedAt: now.Add(-time.Minute).Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		// (Had the offer gone on, cam-0404's silence would have made it a 504.)
		if resp, text := srv.post(t, "cam-0404", forged, camviewtest.NewViewer(t).SDP); resp.StatusCode != http.StatusForbidden || !strings.Contains(text, "unknown key") {
			t.Errorf("a made-up grant: %s: %s; want 403 naming the unknown key", resp.Status, strings.TrimSpace(text))
		}

		req, _ := http.NewRequest(http.MethodDelete, srv.url+loc, nil)
		if resp, _ := camviewDo(t, req); resp.StatusCode != http.StatusOK {
			t.Errorf("DELETE: %s", resp.Status)
		}
		srv.stop(t)
		if !strings.Contains(srv.stdout.String(), "camview: stopped") {
			t.Errorf("camview serve did not say it stopped: %q", srv.stdout.String())
		}
	}, "cam-0001")
}
