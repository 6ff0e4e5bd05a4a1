package cli

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	camgpio "github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// harness runs a service in the test with fake systemd notifications, a log to wait on,
// gpiotest pins and a fake clock for the inputs.
type harness struct {
	t      *testing.T
	s      *service
	notes  *notes
	log    *logBuf
	reload chan os.Signal
	clk    afterClock
	cancel context.CancelFunc
	done   chan error
}

// heldPin is a gpiotest.Pin whose level survives In (gpiotest's In sets the level its pull
// would give): a privacy switch already closed when the service starts.
type heldPin struct{ *gpiotest.Pin }

func (p heldPin) In(pull gpio.Pull, edge gpio.Edge) error {
	l := p.Pin.Read()
	err := p.Pin.In(pull, edge)
	p.Pin.Out(l)
	return err
}

// newPin returns a gpiotest pin with edge detection.
func newPin(name string) *gpiotest.Pin {
	return &gpiotest.Pin{N: name, EdgesChan: make(chan gpio.Level)}
}

// startService runs `camagent run` with args (and --log-level debug) until the test ends.
func startService(t *testing.T, args []string, pins camgpio.Pins, tune func(*agent.Config)) *harness {
	t.Helper()
	h := &harness{t: t, notes: newNotes(), log: newLogBuf(), reload: make(chan os.Signal, 1), clk: newAfterClock(), done: make(chan error, 1)}
	args = append([]string{"--log-level", "debug"}, args...)
	o, err := parseRunArgs("camagent run", args, h.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.s = &service{
		args: args, stderr: h.log, opts: o,
		env:        Env{Notify: h.notes.notify, Watchdog: 200 * time.Millisecond, Reload: h.reload},
		enrollPoll: 20 * time.Millisecond,
		statusPoll: 10 * time.Millisecond,
		pins:       &pins,
		inputClock: h.clk,
		beats:      make(chan chan *agent.Agent), // made here, so the test may use it at once
		tune: func(c *agent.Config) {
			c.MinBackoff, c.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
			if tune != nil {
				tune(c)
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.s.run(ctx) }()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("service log:\n%s", h.log.String())
		}
	})
	return h
}

// stop stops the service as SIGTERM would and checks it said STOPPING=1 and returned nil.
func (h *harness) stop() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("service returned %v", err)
		}
	case <-time.After(waitLimit):
		h.t.Fatal("the service did not stop")
	}
	if h.notes.count(notifyStopping) != 1 {
		h.t.Errorf("STOPPING=1 sent %d times", h.notes.count(notifyStopping))
	}
}

// agentNow returns the agent the service runs, asking its loop as the watchdog does.
func (h *harness) agentNow() *agent.Agent {
	h.t.Helper()
	deadline := time.After(waitLimit)
	for {
		reply := make(chan *agent.Agent, 1)
		select {
		case h.s.beats <- reply:
			if a := <-reply; a != nil {
				return a
			}
		case <-deadline:
			h.t.Fatal("the service runs no agent")
		}
		select {
		case <-time.After(10 * time.Millisecond): // the loop has no agent yet: ask again
		case <-deadline:
			h.t.Fatal("the service runs no agent")
		}
	}
}

// led returns the state the service last set on the LED.
func (h *harness) led() camgpio.State { return h.s.board.led.State() }

// waitLED waits until the LED shows want.
func (h *harness) waitLED(want camgpio.State) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for h.led() != want {
		if time.Now().After(deadline) {
			h.t.Fatalf("LED shows %v, want %v", h.led(), want)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// waitUntil polls cond until it holds, failing the test after waitLimit.
func (h *harness) waitUntil(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("waited %v for %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// edge moves an input pin to l, as a press, release or flip would, and lets the input's
// debounce period pass on the fake clock. The input may not have acted on the level yet
// when edge returns: wait for its effect before the next edge, or the next edge can reach
// the pin first and the input would see a glitch.
func (h *harness) edge(p *gpiotest.Pin, l gpio.Level) {
	h.t.Helper()
	select {
	case p.EdgesChan <- l:
	case <-time.After(waitLimit):
		h.t.Fatalf("%s: nobody waits for an edge", p.N)
	}
	h.clk.fire(h.t, 50*time.Millisecond)
}

// A fresh install must not crash-loop: the service tells systemd it is ready, shows Error,
// says "not enrolled" once, and starts the agent as soon as the bundle is installed.
func TestServiceWaitsWhileNotEnrolledThenStarts(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := filepath.Join(t.TempDir(), "state")
	led := &gpiotest.Pin{N: "GPIO17"}
	h := startService(t, []string{"--state", dir}, camgpio.Pins{LED: led}, nil)

	i := h.notes.waitFor(t, 0, "STATUS=not enrolled: waiting for a bundle in "+dir)
	h.notes.waitFor(t, i, notifyReady)
	h.waitLED(camgpio.Error)
	h.log.waitFor(t, "the device is not enrolled")
	// It keeps looking, and keeps the watchdog fed, without exiting or logging again.
	h.notes.waitFor(t, h.notes.waitFor(t, i, notifyWatchdog), notifyWatchdog)

	enrollDevice(t, pki, dir, "cam-0001", b.URL(), time.Now(), 0)
	h.notes.waitFor(t, i, "STATUS=connected to broker")
	h.waitLED(camgpio.Online)
	if n := strings.Count(h.log.String(), "the device is not enrolled"); n != 1 {
		t.Errorf("logged %q %d times", "the device is not enrolled", n)
	}
	if n := h.notes.count(notifyReady); n != 1 {
		t.Errorf("READY=1 sent %d times", n)
	}
	h.stop()
	// STOPPING=1, then nothing but status lines and watchdog pings (the watchdog goes on
	// while the agent shuts down, which systemd takes).
	st := h.notes.all()
	stopping := slices.Index(st, notifyStopping)
	if stopping < 0 {
		t.Fatalf("no STOPPING=1 among %q", st)
	}
	for _, n := range st[stopping+1:] {
		if n != notifyWatchdog && !strings.HasPrefix(n, "STATUS=") {
			t.Errorf("%q after STOPPING=1: %q", n, st)
		}
	}
}

// SIGHUP re-reads the configuration file: a bad one is logged and the agent goes on; a good
// one restarts the agent with it.
func TestServiceReloadsItsConfigurationOnSIGHUP(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", closedBroker(t), time.Now(), 0)
	conf := filepath.Join(t.TempDir(), "camagent.conf")
	write := func(text string) {
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("state = " + dir + "\n")
	h := startService(t, []string{"--config", conf}, camgpio.Pins{LED: &gpiotest.Pin{N: "GPIO17"}}, nil)
	i := h.notes.waitFor(t, 0, notifyReady)
	h.notes.waitFor(t, 0, "STATUS=connecting to broker")
	h.waitLED(camgpio.Connecting)
	first := h.agentNow()
	// Run starts on a goroutine of its own: the agent may not be running yet.
	h.waitUntil("the first agent runs", func() bool { return first.Status().Running })

	t.Run("a bad file keeps the agent running", func(t *testing.T) {
		write("state = " + dir + "\nbrokr = " + b.URL() + "\n")
		h.reload <- nil
		i = h.notes.waitFor(t, i, notifyReloading)
		i = h.notes.waitFor(t, i, notifyReady)
		h.log.waitFor(t, "reload failed; keeping the configuration in use", `unknown key \"brokr\"`, conf+":2")
		if a := h.agentNow(); a != first {
			t.Fatal("the agent was replaced after a failed reload")
		}
		if !first.Status().Running {
			t.Fatal("the agent stopped after a failed reload")
		}
	})
	t.Run("a good file restarts the agent with it", func(t *testing.T) {
		write("state = " + dir + "\nbroker = " + b.URL() + "\n")
		h.reload <- nil
		i = h.notes.waitFor(t, i, notifyReloading)
		i = h.notes.waitFor(t, i, notifyReady)
		h.notes.waitFor(t, i-1, "STATUS=connected to broker")
		h.waitLED(camgpio.Online)
		if first.Status().Running {
			t.Fatal("the old agent still runs")
		}
		if a := h.agentNow(); a == first || !a.Status().Connected {
			t.Fatal("no new, connected agent after the reload")
		}
	})
}

// countingSource is a camera that yields nothing and counts how often it was started.
type countingSource struct{ runs atomic.Int32 }

var _ camera.Source = (*countingSource)(nil)

func (c *countingSource) Run(ctx context.Context, _ func(camera.Frame)) error {
	c.runs.Add(1)
	<-ctx.Done()
	return ctx.Err()
}
func (c *countingSource) Info() camera.StreamInfo { return camera.StreamInfo{} }
func (c *countingSource) RequestKeyframe() error  { return camera.ErrUnsupported }

// The privacy switch's position is applied before the agent runs, so a camera switched
// private at boot never starts its camera; flipping the switch drives privacy mode on the
// real agent, and the LED shows it.
func TestPrivacySwitchDrivesTheAgent(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
	sw := newPin("GPIO22")
	sw.L = gpio.High // open: privacy on
	cam := &countingSource{}
	h := startService(t, []string{"--state", dir}, camgpio.Pins{LED: &gpiotest.Pin{N: "GPIO17"}, Privacy: sw},
		func(c *agent.Config) { c.Video = cam })
	h.clk.fire(t, 50*time.Millisecond) // the level read at start holds for the debounce period

	h.notes.waitFor(t, 0, "STATUS=connected to broker; privacy mode on")
	a := h.agentNow()
	if !a.Privacy() {
		t.Fatal("privacy is off with the switch open")
	}
	h.waitLED(camgpio.Privacy)
	if n := cam.runs.Load(); n != 0 {
		t.Fatalf("the camera ran %d times in privacy mode", n)
	}

	h.edge(sw, gpio.Low) // closed: privacy off
	h.notes.waitFor(t, 0, "STATUS=connected to broker")
	h.waitLED(camgpio.Online)
	if a.Privacy() {
		t.Fatal("privacy is still on with the switch closed")
	}
	deadline := time.Now().Add(waitLimit)
	for cam.runs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the camera did not start with privacy off")
		}
		time.Sleep(5 * time.Millisecond)
	}

	h.edge(sw, gpio.High)
	i := h.notes.waitFor(t, 0, "STATUS=connected to broker")
	h.notes.waitFor(t, i, "STATUS=connected to broker; privacy mode on")
	if !a.Privacy() {
		t.Fatal("privacy is off after opening the switch")
	}
	h.log.waitFor(t, "privacy mode", "on=true", "by=switch")
}

// A switch already closed when the service starts turns privacy off for an agent that had it
// on from an earlier run.
func TestPrivacySwitchClosedAtStartTurnsSavedPrivacyOff(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
	a, err := agent.New(agent.Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetPrivacy(context.Background(), true, "test"); err != nil {
		t.Fatal(err)
	}
	sw := newPin("GPIO22") // low: closed
	h := startService(t, []string{"--state", dir}, camgpio.Pins{Privacy: heldPin{sw}}, nil)
	h.clk.fire(t, 50*time.Millisecond) // the level read at start holds for the debounce period
	h.notes.waitFor(t, 0, "STATUS=connected to broker")
	if h.agentNow().Privacy() {
		t.Fatal("privacy is on with the switch closed")
	}
}

// Holding the reset button for 10 s wipes the device (S10) and leaves the service waiting for
// enrollment, showing Error; a short press logs the status.
func TestResetButtonLongPressFactoryResets(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
	btn := newPin("GPIO27")
	h := startService(t, []string{"--state", dir}, camgpio.Pins{LED: &gpiotest.Pin{N: "GPIO17"}, Button: btn}, nil)
	h.clk.fire(t, 50*time.Millisecond) // the level read at start holds for the debounce period
	i := h.notes.waitFor(t, 0, "STATUS=connected to broker")
	a := h.agentNow()

	h.edge(btn, gpio.Low) // pressed
	h.clk.waitTimer(t, 10*time.Second-50*time.Millisecond)
	h.edge(btn, gpio.High)
	h.log.waitFor(t, "status (reset button)", "device=cam-0001", "connected=true", "privacy=false", "epoch=0")
	if _, err := os.Stat(filepath.Join(dir, agent.KeyFile)); err != nil {
		t.Fatal("a short press touched the keys")
	}

	h.edge(btn, gpio.Low)
	h.clk.fire(t, 10*time.Second-50*time.Millisecond) // held for 10 s
	h.log.waitFor(t, "reset button held: factory reset")
	h.notes.waitFor(t, i, "STATUS=not enrolled: waiting for a bundle in "+dir)
	h.waitLED(camgpio.Error)
	h.log.waitFor(t, "factory reset done")
	if a.Status().Running {
		t.Fatal("the agent still runs after the reset")
	}
	var left []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != dir && d.Name() != agent.LockFile {
			left = append(left, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("left in the state directory after the reset: %v", left)
	}
	h.edge(btn, gpio.High) // released; the service goes on waiting
	h.notes.waitFor(t, i, notifyWatchdog)
}

// While `camagent run` uses a state directory, a second `camagent run` on it, an enroll and a
// factory reset are refused, naming the process that holds it: two agents would run two
// rotation journals over the same files and take each other's MQTT session. While the service
// waits for enrollment it holds nothing, so enrolling works (TestServiceWaitsWhileNotEnrolledThenStarts).
func TestASecondCamagentOnTheSameStateIsRefused(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
	h := startService(t, []string{"--state", dir}, camgpio.Pins{}, nil)
	h.notes.waitFor(t, 0, "STATUS=connected to broker")
	bundle := filepath.Join(t.TempDir(), "bundle.json")
	if err := os.WriteFile(bundle, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	holder := "process " + strconv.Itoa(os.Getpid())
	for _, args := range [][]string{
		{"run", "--state", dir},
		{"enroll", "--state", dir, "--bundle", bundle},
		{"enroll", "--state", dir, "--id", "cam-0002"},
		{"reset", "--state", dir, "--yes"},
	} {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := runCommand(ctx, args, &stdout, &stderr, Env{})
		cancel()
		if !errors.Is(err, agent.ErrStateInUse) || !strings.Contains(err.Error(), holder) {
			t.Errorf("camagent %s = %v, want ErrStateInUse naming %s", strings.Join(args, " "), err, holder)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, agent.KeyFile)); err != nil {
		t.Fatalf("the running agent's key: %v", err)
	}
	if !h.agentNow().Status().Connected {
		t.Fatal("the running agent lost its connection")
	}
	h.stop()
	// Stopped, the directory is free again.
	var stdout, stderr bytes.Buffer
	if err := runCommand(context.Background(), []string{"reset", "--state", dir, "--yes"}, &stdout, &stderr, Env{}); err != nil {
		t.Fatalf("reset after the service stopped: %v", err)
	}
}

// A camera killed (SIGKILL, power cut) in the middle of atomic writes, again and again, would
// gather their temporary files for ever. The service removes them when it takes the state
// directory, in the state directory and in the credential generations' directories, and leaves
// every other file: the real ones, a file merely named alike, and a temporary file too new to
// be a dead write's (camagent onboard writes beside a running agent, without the lock).
func TestServiceRemovesTemporaryFilesOfKilledWrites(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := enrollDevice(t, pki, "", "cam-0001", closedBroker(t), time.Now(), 0)
	// A rotation killed after it made generation 1's key and token, before its certificate.
	gen := filepath.Join(dir, "creds", "1")
	if err := atomicfile.EnsurePrivateDir(gen); err != nil {
		t.Fatal(err)
	}
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteKeyFile(filepath.Join(gen, agent.KeyFile), key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gen, agent.TokenFile), []byte(strings.Repeat("tok-", 8)), 0o600); err != nil { // 32 bytes, not zeros: a damaged token would start the rotation over
		t.Fatal(err)
	}
	store := state.NewFileStore(filepath.Join(dir, agent.StateFile), time.Now)
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.Cred = state.Cred{Phase: state.PhasePending, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdef"}
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}

	// What killed writes leave, written as atomicfile names them, from a while ago.
	long := time.Now().Add(-agent.TempMinAge - time.Minute)
	leave := func(dir, target string, mtime time.Time) string {
		t.Helper()
		f, err := atomicfile.CreateTemp(dir, target)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("half a write")
		f.Close()
		if err := os.Chtimes(f.Name(), mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}
	dead := []string{
		leave(dir, agent.StateFile, long),
		leave(dir, agent.KeyFile, long),
		leave(gen, "device.crt", long),
		leave(gen, agent.TokenFile, long),
	}
	fresh := leave(dir, "settings.sealed", time.Now())
	alike := filepath.Join(dir, "notes.tmp-1")
	if err := os.WriteFile(alike, []byte("an operator's"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(alike, long, long)

	h := startService(t, []string{"--state", dir}, camgpio.Pins{}, nil)
	h.notes.waitFor(t, 0, notifyReady)
	h.log.waitFor(t, "removed temporary files left by interrupted writes", "removed=4")
	if a := h.agentNow(); !a.Status().Rotating {
		t.Errorf("the agent does not resume the rotation: %+v", a.Status())
	}
	for _, p := range dead {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it removed", p, err)
		}
	}
	for _, p := range []string{
		fresh, alike,
		filepath.Join(dir, agent.KeyFile), filepath.Join(dir, agent.TokenFile), filepath.Join(dir, agent.BundleFile),
		filepath.Join(dir, agent.StateFile), filepath.Join(gen, agent.KeyFile), filepath.Join(gen, agent.TokenFile),
	} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
	h.stop()
}

// A value that seems to carry a comment after it is kept as it is (a state directory may be
// named so), and the service says at start which line and key hold it, without the value.
func TestServiceWarnsOfAValueThatSeemsToCarryAComment(t *testing.T) {
	state := filepath.Join(t.TempDir(), "cam # the porch")
	conf := writeConf(t, "# camagent\nstate = "+state+"\n")
	h := startService(t, []string{"--config", conf}, camgpio.Pins{}, nil)
	h.log.waitFor(t, "level=WARN", `a value holds \" #\"`, "comments go on a line of their own", "line=2", "key=state")
	h.notes.waitFor(t, 0, "STATUS=not enrolled: waiting for a bundle in "+state)
	for _, l := range strings.Split(h.log.String(), "\n") {
		if strings.Contains(l, "a value holds") && strings.Contains(l, "porch") {
			t.Errorf("the warning quotes the value: %s", l)
		}
	}
	h.stop()
}
