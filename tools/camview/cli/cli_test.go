package cli_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/h264"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/cli"
	"github.com/camagent/camagent/tools/camview/receiver"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = cli.Run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

// grantFile writes grant in base64url, as fleetctl grant prints it, and returns its path.
func grantFile(t *testing.T, grant []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "grant.txt")
	if err := os.WriteFile(p, []byte(base64.RawURLEncoding.EncodeToString(grant)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var figureRe = regexp.MustCompile(`(?m)^time to first frame: (\d+) ms\nframes: (\d+)\nframes per second: ([\d.]+)\nbitrate: ([\d.]+) kb/s\npackets: (\d+)\npacket loss: (\d+) \(([\d.]+)%\)\nresolution: (\d+)x(\d+)\n$`)

func TestRecordWritesTheVideoAndPrintsItsFigures(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	out := filepath.Join(t.TempDir(), "cam.h264")
	stdout, stderr, err := run(t, "record", "--fleet", cam.Fleet.Dir, "--broker", cam.URL, "--name", "test",
		"--device", cam.ID, "--grant-file", grantFile(t, cam.Grant(t, nil)), "--seconds", "2", "--out", out, "--loopback")
	if err != nil {
		t.Fatalf("record: %v\n%s", err, stderr)
	}
	m := figureRe.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("figures not printed as expected:\n%s", stdout)
	}
	frames, _ := strconv.Atoi(m[2])
	fps, _ := strconv.ParseFloat(m[3], 64)
	if frames < 2*camviewtest.ClipFPS || frames > 2*camviewtest.ClipFPS+2 || fps < 28 || fps > 32 || m[6] != "0" || m[8] != "320" || m[9] != "240" {
		t.Errorf("implausible figures:\n%s", stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(out)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the recording is %v, want 0600", fi.Mode().Perm())
	}
	au, err := h264.NewSplitter(bytes.NewReader(b), 0).Next()
	if err != nil || !au.Keyframe || !au.HasParams {
		t.Errorf("the file does not start with a keyframe and its parameter sets (%v)", err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".cam.h264.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestRecordSaysWhyTheCameraRefused(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	out := filepath.Join(t.TempDir(), "cam.h264")
	_, _, err := run(t, "record", "--fleet", cam.Fleet.Dir, "--broker", cam.URL, "--name", "test",
		"--device", cam.ID, "--grant-file", grantFile(t, cam.ExpiredGrant(t)), "--seconds", "1", "--out", out, "--loopback")
	if err == nil || !strings.Contains(err.Error(), "refused: grant") {
		t.Fatalf("record with an expired grant: %v, want the refusal and its reason", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("files left after a refusal: %v", entries)
	}
}

// A recording the camera ends (here a rotation, which voids the grant) stops at once, keeps
// what it recorded, and says why in words with what to do, not the receiver's error chain.
func TestRecordSaysWhyTheCameraEndedIt(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	out := filepath.Join(t.TempDir(), "cam.h264")
	type result struct {
		stderr string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		_, stderr, err := run(t, "record", "--fleet", cam.Fleet.Dir, "--broker", cam.URL, "--name", "test",
			"--device", cam.ID, "--grant-file", grantFile(t, cam.Grant(t, nil)), "--seconds", "60", "--out", out, "--loopback")
		done <- result{stderr, err}
	}()
	deadline := time.Now().Add(camviewtest.Timeout)
	for !strings.Contains(cam.Log.Text(), "session started") {
		if time.Now().After(deadline) {
			t.Fatalf("the recording did not start; camera log:\n%s", cam.Log.Text())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cam.Rotate(t)
	var r result
	select {
	case r = <-done:
	case <-time.After(camviewtest.Timeout):
		t.Fatal("record went on after the camera ended the session")
	}
	if r.err == nil {
		t.Fatal("record succeeded after the camera ended the session")
	}
	msg := r.err.Error()
	for _, want := range []string{"ended early", "the camera ended the session", "rotated", "fleetctl grant"} {
		if !strings.Contains(msg, want) {
			t.Errorf("record: %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "receiver:") {
		t.Errorf("record: %q shows the receiver's error chain", msg)
	}
	var bye *receiver.ByeError
	if !errors.As(r.err, &bye) || bye.Reason != signal.ByeRevoked {
		t.Errorf("record: %v does not unwrap to the camera's Bye (revoked)", r.err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("what was recorded before is not kept: %v", err)
	}
}

func TestRecordTimesOutOnACameraThatDoesNotAnswer(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	g := cam.Grant(t, nil)
	_, _, err := run(t, "record", "--fleet", cam.Fleet.Dir, "--broker", cam.URL, "--name", "test",
		"--device", "cam-0009", "--grant-file", grantFile(t, g), "--seconds", "1",
		"--out", filepath.Join(t.TempDir(), "x.h264"), "--loopback", "--timeout", "1s")
	if err == nil || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("record from a camera that is not there: %v", err)
	}
}

func TestBadArgumentsAreRefusedBeforeAnythingHappens(t *testing.T) {
	dir := t.TempDir()
	g := grantFile(t, []byte("grant"))
	base := []string{"record", "--fleet", filepath.Join(dir, "nofleet"), "--device", "cam-0001", "--out", filepath.Join(dir, "x.h264")}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command"},
		{"an unknown command", []string{"play"}, "unknown command"},
		{"no grant", base, "exactly one of --grant-file and --grant"},
		{"two grants", append(base, "--grant-file", g, "--grant", "AAAA"), "exactly one"},
		{"a grant that is not base64url", append(base, "--grant", "a+b/"), "malformed grant"},
		{"no device", []string{"record", "--grant", "AAAA", "--out", "x"}, "--device is required"},
		{"a device id that cannot be", []string{"record", "--grant", "AAAA", "--out", "x", "--device", "CAM_1"}, "--device"},
		{"no output", []string{"record", "--grant", "AAAA", "--device", "cam-0001"}, "--out is required"},
		{"no seconds", append(base, "--grant", "AAAA", "--seconds", "0"), "--seconds"},
		{"a TURN server without credentials", append(base, "--grant", "AAAA", "--ice-server", "turn:127.0.0.1:3478"), "user= and credential="},
		{"five ICE servers", append(base, "--grant", "AAAA", "--ice-server", "stun:127.0.0.1:1", "--ice-server", "stun:127.0.0.1:2",
			"--ice-server", "stun:127.0.0.1:3", "--ice-server", "stun:127.0.0.1:4", "--ice-server", "stun:127.0.0.1:5"), "at most 4"},
		{"a fleet directory that holds no fleet", append(base, "--grant", "AAAA"), "no fleet"},
		{"serve with a bad timeout", []string{"serve", "--answer-timeout", "0s"}, "--answer-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files made by refused commands: %v", entries)
	}
}

func TestICEServerValues(t *testing.T) {
	for _, tc := range []struct {
		in              string
		url, user, cred string
		bad             bool
	}{
		{in: "stun:127.0.0.1:3478", url: "stun:127.0.0.1:3478"},
		{in: "turn:127.0.0.1:3478?user=alice&credential=s3cret", url: "turn:127.0.0.1:3478", user: "alice", cred: "s3cret"},
		{in: "turn:127.0.0.1:3478?transport=tcp&user=a&credential=b%26c", url: "turn:127.0.0.1:3478?transport=tcp", user: "a", cred: "b&c"},
		{in: "turns:turn.example.net:5349?user=a&credential=b", url: "turns:turn.example.net:5349", user: "a", cred: "b"},
		{in: "stun:127.0.0.1:3478?transport=udp", bad: true},
		{in: "turn:127.0.0.1:3478?user=a", bad: true},
		{in: "turn:127.0.0.1:3478?user=a&credential=b&secret=c", bad: true},
		{in: "turn:127.0.0.1:3478?transport=sctp&user=a&credential=b", bad: true},
		{in: "https://turn.example.net", bad: true},
		{in: "turn:?user=a&credential=b", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			s, err := cli.ParseICEServer(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", s)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error quotes the credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := signal.ICEServer{URLs: []string{tc.url}, Username: tc.user, Credential: tc.cred}
			if len(s.URLs) != 1 || s.URLs[0] != want.URLs[0] || s.Username != want.Username || s.Credential != want.Credential {
				t.Fatalf("got %+v (credential %q), want %+v", s, s.Credential, want)
			}
		})
	}
}

func TestServeServesThePageAndStopsOnCancel(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	out := &fleettest.Output{}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		runErr = cli.Run(ctx, []string{"serve", "--fleet", cam.Fleet.Dir, "--broker", cam.URL, "--name", "test", "--listen", "127.0.0.1:0"}, out, io.Discard)
	}()
	defer func() {
		cancel()
		<-finished
	}()
	out.WaitFor(t, "camview: serving http://")
	m := regexp.MustCompile(`camview: serving (http://\S+/)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no address in %q", out.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /: %s, CSP %q", resp.Status, resp.Header.Get("Content-Security-Policy"))
	}
	cancel()
	select {
	case <-finished:
		if runErr != nil {
			t.Fatalf("serve: %v", runErr)
		}
	case <-time.After(camviewtest.Timeout):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(out.String(), "camview: stopped") {
		t.Errorf("output: %q", out.String())
	}
	if _, err := http.Get(m[1]); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("the server still answers after stopping (%v)", err)
	}
}

func TestServeStopsPromptlyWithAnOfferWaiting(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	out, logs := &fleettest.Output{}, &fleettest.Output{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runErr error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		runErr = cli.Run(ctx, []string{"serve", "--fleet", cam.Fleet.Dir, "--broker", cam.URL, "--name", "test",
			"--listen", "127.0.0.1:0", "--answer-timeout", "1m", "--log-level", "debug"}, out, logs)
	}()
	out.WaitFor(t, "camview: serving http://")
	url := regexp.MustCompile(`camview: serving (http://\S+)/`).FindStringSubmatch(out.String())[1]

	// An offer to a camera that is not there waits for its answer...
	grant := cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0009" })
	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url+"/whep/cam-0009", strings.NewReader("v=0\r\n"))
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer "+base64.RawURLEncoding.EncodeToString(grant))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	logs.WaitFor(t, "relay: offer sent")
	// ...and does not hold the shutdown up.
	start := time.Now()
	cancel()
	select {
	case <-finished:
	case <-time.After(camviewtest.Timeout):
		t.Fatal("serve did not stop")
	}
	if runErr != nil {
		t.Fatalf("serve: %v", runErr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if got := <-status; got != http.StatusServiceUnavailable {
		t.Errorf("the waiting offer got %d, want 503", got)
	}
}
