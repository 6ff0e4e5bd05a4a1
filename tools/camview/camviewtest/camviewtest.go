// Package camviewtest gives camview's tests a real camera to watch: a fleet directory, the
// real `fleetctl broker` on loopback, and an enrolled camagent running in the test process
// that streams the committed test clip (320x240, 30 fps, a keyframe every second) with ICE
// confined to 127.0.0.1.
//
// It is test support: it must never be imported by non-test code. Every wait in it has a
// deadline and none sleeps.
package camviewtest

import (
	"context"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
)

// Timeout bounds every wait of this package and of the tests that use it.
const Timeout = 20 * time.Second

// Clip facts: the committed clip's picture size and frame rate.
const (
	ClipWidth, ClipHeight = 320, 240
	ClipFPS               = 30
)

// ClipPath returns the path of the committed test clip, device/camera/testdata/clip.h264.
func ClipPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "device", "camera", "testdata", "clip.h264")
}

// Options tunes Start.
type Options struct {
	// ID is the camera's device id; "" means "cam-0001".
	ID string
	// MaxViewers caps the camera's live viewers; 0 means the agent's default.
	MaxViewers int
	// Guard is the agent's egress guard; nil means the agent's own, empty.
	Guard *egress.Guard
}

// Camera is a running camera in a fleet of its own.
type Camera struct {
	// Fleet is the fleet; URL its broker.
	Fleet *fleet.Fleet
	URL   string
	// ID is the camera's device id.
	ID    string
	Agent *agent.Agent
	// Log is the agent's log, shown when the test fails.
	Log *logtest.Recorder

	signer sync.Once
}

// Start makes a fleet, runs its broker and an enrolled camera streaming the clip, and returns
// once the camera is connected. Everything stops when the test ends.
func Start(t testing.TB, o Options) *Camera {
	t.Helper()
	if o.ID == "" {
		o.ID = "cam-0001"
	}
	f, _ := fleettest.NewFleet(t)
	url := fleettest.StartBroker(t, f)
	dev := fleettest.Enroll(t, f, o.ID)
	src, err := camera.NewFileSource(camera.FileConfig{Path: ClipPath()})
	if err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	a, err := agent.New(agent.Config{
		StateDir: dev.StateDir, BrokerURL: url, Logger: log,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Video: src, VideoLoopbackOnly: true, MaxViewers: o.MaxViewers, Guard: o.Guard,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
		RequestTimeout: 10 * time.Second, SwitchTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent Run: %v", err)
			}
		})
		if t.Failed() && testing.Verbose() {
			t.Logf("camera %s log:\n%s", o.ID, rec.Text())
		}
	})
	select {
	case <-a.Connected():
	case <-time.After(Timeout):
		t.Fatalf("camera did not connect; log:\n%s", rec.Text())
	}
	return &Camera{Fleet: f, URL: url, ID: o.ID, Agent: a, Log: rec}
}

// Grant signs a view grant for the camera at its current epoch, valid from an hour ago for
// an hour; edit, if not nil, changes it before it is signed.
func (c *Camera) Grant(t testing.TB, edit func(*certs.Grant)) []byte {
	t.Helper()
	now := time.Now()
	g := certs.Grant{
		Device: c.ID, Epoch: c.Agent.Epoch(), Scope: certs.ScopeView, Subject: "camview-test",
		IssuedAt: now.Add(-time.Hour).Unix(), ExpiresAt: now.Add(time.Hour).Unix(),
	}
	if edit != nil {
		edit(&g)
	}
	b, err := c.Fleet.SignGrant(g)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ExpiredGrant returns a grant that expired an hour ago (well beyond the clock skew the
// camera allows).
func (c *Camera) ExpiredGrant(t testing.TB) []byte {
	t.Helper()
	return c.Grant(t, func(g *certs.Grant) {
		now := time.Now()
		g.IssuedAt, g.ExpiresAt = now.Add(-3*time.Hour).Unix(), now.Add(-time.Hour).Unix()
	})
}

// Relay dials a relay to the camera's broker as viewer:<name>, closed when the test ends.
func (c *Camera) Relay(t testing.TB, name string) *relay.Relay {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	r, err := relay.DialFleet(ctx, c.Fleet, name, c.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("relay Close: %v", err)
		}
	})
	return r
}

// Rotate makes the camera rotate its credentials and raise its grant epoch, as `fleetctl
// rotate` does (with a signer started for it on first use), and waits until the rotation is
// committed: every live session has ended with "revoked" and every grant signed before is
// void.
func (c *Camera) Rotate(t testing.TB) {
	t.Helper()
	c.signer.Do(func() { fleettest.StartSigner(t, c.Fleet, c.URL, "--log-level", "warn") })
	before := c.Agent.Epoch()
	fleettest.Run(t, "rotate", "--dir", c.Fleet.Dir, "--broker", c.URL, "--device", c.ID)
	deadline := time.Now().Add(Timeout)
	for c.Agent.Epoch() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("the camera's epoch stayed at %d; log:\n%s", before, c.Log.Text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
