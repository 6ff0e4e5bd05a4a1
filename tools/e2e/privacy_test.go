package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/onboard"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// onboardProc runs `camagent onboard --file -` with the setup payload on standard input, as
// a provisioning script would, and returns what it printed.
func onboardProc(t testing.TB, dir string, s onboard.Setup) string {
	t.Helper()
	payload, err := onboard.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(camagentBin, "onboard", "--state", dir, "--file", "-")
	cmd.Stdin = strings.NewReader(payload + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("camagent onboard: %v\n%s", err, out)
	}
	return string(out)
}

// stopProc stops camagent with SIGTERM and waits for a clean exit.
func stopProc(t testing.TB, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("camagent ended with %v after SIGTERM; log:\n%s", err, p.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("camagent did not stop on SIGTERM; log:\n%s", p.log.String())
	}
}

// ownerGrant signs an owner grant for device at epoch: what only the owner's app obtains.
func ownerGrant(t testing.TB, f *fleet.Fleet, device string, epoch uint64) []byte {
	t.Helper()
	b, err := f.SignGrant(certs.Grant{Device: device, Epoch: epoch, Scope: certs.ScopeOwner, Subject: "owner-app-1", IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// privacyCmd sends the "privacy" command with grant and returns the device's reply.
func privacyCmd(t testing.TB, e *env, device string, on bool, grant []byte) *wire.Reply {
	t.Helper()
	args, err := json.Marshal(map[string]any{"on": on, "grant": grant})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	op, err := e.f.Dial(ctx, fleet.OperatorOptions{Broker: e.url})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	r, _, err := op.Command(ctx, "privacy", device, args)
	if err != nil {
		t.Fatalf("privacy command: %v", err)
	}
	return r
}

// waitState waits for the device's retained state, as a new subscriber gets it and as it is
// updated, to satisfy cond.
func waitState(t testing.TB, e *env, device string, what string, cond func(wire.DeviceState) bool) {
	t.Helper()
	cert, err := e.f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ok := make(chan struct{})
	var once sync.Once
	host, _ := certs.BrokerHost(e.url)
	c, err := mqtt.New(mqtt.Config{
		BrokerURL: e.url, ClientID: fleet.ClientID("operator:" + fleet.DefaultOperator), CleanSession: true,
		TLS:           certs.ClientTLSConfig(e.f.Pool, host, certs.NewHolder(cert)),
		Subscriptions: []mqtt.Subscription{{Filter: topic.State(device), QoS: 1}},
		Handler: func(_ context.Context, m mqtt.Message) {
			var ds wire.DeviceState
			if wire.Decode(m.Payload, &ds) == nil && cond(ds) {
				once.Do(func() { close(ok) })
			}
		},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-ok:
	case <-time.After(20 * time.Second):
		t.Fatalf("the retained device state never showed %s", what)
	}
}

// countingSource is a camera that says whether it is running and how many pictures it took.
type countingSource struct {
	camera.Source
	mu      sync.Mutex
	runs    int
	running bool
	frames  uint64
}

func newCountingSource(t testing.TB) *countingSource {
	t.Helper()
	src, err := camera.NewFileSource(camera.FileConfig{Path: filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264")})
	if err != nil {
		t.Fatal(err)
	}
	return &countingSource{Source: src}
}

func (s *countingSource) Run(ctx context.Context, out func(camera.Frame)) error {
	s.mu.Lock()
	s.runs++
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	return s.Source.Run(ctx, func(f camera.Frame) {
		s.mu.Lock()
		s.frames++
		s.mu.Unlock()
		out(f)
	})
}

// state returns how many times the camera was started, whether it runs, and its frames.
func (s *countingSource) state() (runs int, running bool, frames uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs, s.running, s.frames
}

// refused offers a viewer with grant and returns the camera's refusal.
func refused(t *testing.T, r *relay, device string, grant []byte) signal.RefusalReason {
	t.Helper()
	v := newViewer(t)
	v.offer.Grant = grant
	r.send(t, device, v.offer)
	ref, ok := r.await(t, v.offer.Session).(signal.Refusal)
	if !ok {
		t.Fatalf("offer not refused: %#v", ref)
	}
	return ref.Reason
}

// Privacy mode (issue 5, Build 5): only a command with the owner's grant turns it on; then the
// camera itself stops, live viewers get "privacy", new ones are refused, and the cloud sees
// one boolean. It survives a restart; turned off, viewers watch again.
func TestPrivacyModeStopsTheCameraAndRefusesViewers(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		const id = "cam-0001"
		dir := enroll(t, e.f, id)
		src := newCountingSource(t)
		a := startAgent(t, dir, e.url, func(c *agent.Config) { c.Video, c.VideoLoopbackOnly = src, true })
		a.waitConnected(t)
		r := dialRelay(t, e.f, e.url)
		view := signGrant(t, e.f, id, 0)
		v, _ := watchLive(t, r, id, view)

		// A viewer's grant is not the owner's: refused, and nothing changes.
		if rep := privacyCmd(t, e, id, true, view); rep.OK || rep.Error != wire.ErrCodeGrant {
			t.Fatalf("privacy with a view grant: %+v, want error %q", rep, wire.ErrCodeGrant)
		}
		if rep := privacyCmd(t, e, id, true, ownerGrant(t, e.f, "cam-0002", 0)); rep.OK || rep.Error != wire.ErrCodeGrant {
			t.Fatalf("privacy with another camera's owner grant: %+v", rep)
		}
		if a.Privacy() {
			t.Fatal("privacy mode on without the owner's grant")
		}
		if _, running, _ := src.state(); !running {
			t.Fatal("the camera stopped without the owner's grant")
		}

		// The owner's grant turns it on.
		if rep := privacyCmd(t, e, id, true, ownerGrant(t, e.f, id, 0)); !rep.OK {
			t.Fatalf("privacy with the owner's grant: %+v", rep)
		}
		if bye, ok := r.await(t, v.offer.Session).(signal.Bye); !ok || bye.Reason != signal.ByePrivacy {
			t.Fatalf("live viewer got %#v, want bye privacy", bye)
		}
		waitFor(t, 10*time.Second, "the camera to stop", func() bool { _, running, _ := src.state(); return !running })
		_, _, frames := src.state()
		if got := refused(t, r, id, view); got != signal.RefusePrivacy {
			t.Fatalf("new viewer refused with %q, want privacy", got)
		}
		waitState(t, e, id, "privacy on", func(ds wire.DeviceState) bool { return ds.Privacy })
		if runs, running, n := src.state(); runs != 1 || running || n != frames {
			t.Fatalf("camera in privacy mode: started %d times, running %v, %d frames then %d", runs, running, frames, n)
		}

		// It survives a restart: the camera is never started.
		a.stop(t)
		src2 := newCountingSource(t)
		a2 := startAgent(t, dir, e.url, func(c *agent.Config) { c.Video, c.VideoLoopbackOnly = src2, true })
		a2.waitConnected(t)
		if !a2.Privacy() {
			t.Fatal("privacy mode lost across a restart")
		}
		if got := refused(t, r, id, view); got != signal.RefusePrivacy {
			t.Fatalf("after a restart a viewer was refused with %q, want privacy", got)
		}
		waitState(t, e, id, "privacy on after the restart", func(ds wire.DeviceState) bool { return ds.Privacy })
		if runs, _, n := src2.state(); runs != 0 || n != 0 {
			t.Fatalf("after a restart in privacy mode the camera started %d times and took %d pictures", runs, n)
		}

		// Turned off, the camera starts and a viewer watches again.
		if rep := privacyCmd(t, e, id, false, ownerGrant(t, e.f, id, 0)); !rep.OK {
			t.Fatalf("privacy off with the owner's grant: %+v", rep)
		}
		waitFor(t, 10*time.Second, "the camera to start", func() bool { _, running, _ := src2.state(); return running })
		watchLive(t, r, id, view)
		waitState(t, e, id, "privacy off", func(ds wire.DeviceState) bool { return !ds.Privacy })
	}, "cam-0001")
}

// After `camagent reset --yes` nothing of the device's identity, credentials or settings is
// left in its state directory, and camagent will not run until the device is enrolled again
// (S10, issue 5 Build 4).
func TestResetLeavesNothingAndTheDeviceCannotRunUntilEnrolled(t *testing.T) {
	const id = "cam-reset"
	f, _ := newFleet(t)
	url := fleettest.StartBroker(t, f)
	fleettest.StartSigner(t, f, url, "--log-level", "warn")
	e := &env{name: "embedded", f: f, url: url}
	dir := enroll(t, f, id)
	tag := randHex(t, 4)
	s := onboard.Setup{SSID: "ResetSSID-" + tag, Passphrase: "ResetPass-" + tag, Nickname: "ResetNick-" + tag, Claim: "ResetClaim_" + tag + "_0123"}
	onboardProc(t, dir, s)

	// Run, rotate once (so a second credential generation exists), stop.
	p := startProc(t, dir, url)
	pingOK(t, e, id)
	fleetctl(t, "rotate", "--dir", f.Dir, "--broker", url, "--device", id)
	converged(t, e, id, dir, 1)
	stopProc(t, p)

	// What must not survive: every key, token and certificate, the device secret, the sealed
	// settings, the bundle and the journal.
	var secrets [][]byte
	var before []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		before = append(before, rel)
		if !d.Type().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		switch {
		case strings.HasSuffix(p, ".key"), strings.HasSuffix(p, ".crt"):
			secrets = append(secrets, pemBody(b))
		case strings.HasSuffix(p, ".token"), strings.HasSuffix(p, seal.SecretFile):
			secrets = append(secrets, b, []byte(hex.EncodeToString(b)))
		}
		return nil
	})
	for _, want := range []string{agent.KeyFile, agent.BundleFile, agent.BundleCopyFile, agent.StateFile, agent.BootstrapKey, seal.SecretFile, seal.SettingsFile, "creds"} {
		if !slices.ContainsFunc(before, func(p string) bool { return strings.HasSuffix(p, want) }) {
			t.Fatalf("no %s in the state directory before the reset: %v", want, before)
		}
	}

	reset := func(args ...string) (string, error) {
		out, err := exec.Command(camagentBin, append([]string{"reset", "--state", dir}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := reset(); err == nil || !strings.Contains(out, "--yes") {
		t.Fatalf("reset without --yes: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, seal.SecretFile)); err != nil {
		t.Fatalf("reset without --yes removed the device secret: %v", err)
	}
	out, err := reset("--yes")
	if err != nil || !strings.Contains(out, "wiped") {
		t.Fatalf("reset --yes: %v\n%s", err, out)
	}

	var left []string
	var leftBytes []byte
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		left = append(left, p)
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			leftBytes = append(leftBytes, b...)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("left after the reset: %v", left)
	}
	for _, sec := range secrets {
		if len(sec) > 0 && bytes.Contains(leftBytes, sec) {
			t.Errorf("a key, certificate, token or the device secret survived the reset")
		}
	}
	for _, h := range newCanaryChecker(t, canariesOf(s)...).find(leftBytes) {
		t.Errorf("the %s survived the reset (%s)", h.kind, h.encoding)
	}

	// camagent says the device is not enrolled (and, as a service, waits for a bundle) and
	// never connects.
	q := startProc(t, dir, url)
	waitFor(t, 20*time.Second, "camagent to say the device is not enrolled", func() bool { return strings.Contains(q.log.String(), "not enrolled") })
	if strings.Contains(q.log.String(), "connected to broker") {
		t.Fatalf("camagent connected after the reset:\n%s", q.log.String())
	}
	if _, err := agent.New(agent.Config{StateDir: dir}); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Fatalf("agent.New after reset: %v, want ErrNotEnrolled", err)
	}
}

// pemBody returns the base64 body of the first PEM block in b (so a copy with other line
// breaks or headers is still recognised), or b.
func pemBody(b []byte) []byte {
	lines := bytes.Split(b, []byte("\n"))
	var body []byte
	for _, l := range lines {
		if len(l) > 0 && !bytes.HasPrefix(l, []byte("-----")) && !bytes.Contains(l, []byte(":")) {
			body = append(body, l...)
		}
	}
	if len(body) < 64 {
		return b
	}
	return body[:64]
}
