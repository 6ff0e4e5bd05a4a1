package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	boardid "github.com/camagent/camagent/device/board"
	camgpio "github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// clip is a constrained baseline 320x240 H.264 test clip.
var clip = filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264")

// selftestRun runs `camagent selftest args` with the system's clock synchronisation answer
// replaced by ntp, and returns its report (from --json) and error.
func selftestRun(t *testing.T, ntp ntpState, tune func(*selfTest), args ...string) (selftestReport, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runSelftest(context.Background(), append([]string{"--json"}, args...), &out, &errb, func(st *selfTest) {
		st.ntp = func(context.Context) ntpState { return ntp }
		st.ident = func() (boardid.Identity, error) {
			return boardid.Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "10000000a1b2c3d4", Source: boardid.SourceDeviceTree}, nil
		}
		if tune != nil {
			tune(st)
		}
	})
	var rep selftestReport
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("--json output does not parse: %v\n%s", jerr, out.String())
	}
	return rep, errb.String(), err
}

// pkiSince makes a test fleet CA valid from since, so devices can be enrolled in the past.
func pkiSince(t *testing.T, since time.Time) *mqtttest.PKI {
	t.Helper()
	ca, err := certs.NewCA("selftest fleet CA", since, 0)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := certs.EncodeCertPEM(ca.Cert)
	pool, err := certs.NewPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &mqtttest.PKI{CA: ca, CAPEM: caPEM, Pool: pool}
}

// results returns each check's result and the report's details by check name.
func results(rep selftestReport) (map[string]string, map[string]string) {
	res, det := map[string]string{}, map[string]string{}
	for _, c := range rep.Checks {
		res[c.Check], det[c.Check] = c.Result, c.Detail
	}
	return res, det
}

var synced = ntpState{known: true, synced: true, source: "timedatectl"}

func TestSelftestPassesOnAHealthyDevice(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)

	rep, _, err := selftestRun(t, synced, nil, "--state", dir, "--video-file", clip, "--timeout", "10s")
	if err != nil {
		t.Fatalf("selftest failed: %v\n%+v", err, rep)
	}
	res, det := results(rep)
	for _, c := range []string{"board", "clock", "credentials", "broker", "camera", "storage"} {
		if res[c] != resultPass {
			t.Errorf("%s: %s (%s)", c, res[c], det[c])
		}
	}
	if !rep.OK || len(rep.Checks) != 6 {
		t.Errorf("report: %+v", rep)
	}
	if !strings.Contains(det["camera"], "320x240") || !strings.Contains(det["camera"], "Constrained Baseline") {
		t.Errorf("camera detail: %s", det["camera"])
	}
	if !strings.Contains(det["credentials"], "cam-0001") || !strings.Contains(det["credentials"], "days left") {
		t.Errorf("credentials detail: %s", det["credentials"])
	}
	if !strings.Contains(det["broker"], "connected over mTLS") {
		t.Errorf("broker detail: %s", det["broker"])
	}

	t.Run("a clock nobody vouches for warns without failing", func(t *testing.T) {
		rep, _, err := selftestRun(t, ntpState{}, nil, "--state", dir)
		res, det := results(rep)
		if err != nil || !rep.OK || res["clock"] != resultWarn || !strings.Contains(det["clock"], "cannot tell") {
			t.Fatalf("err = %v, clock %s (%s)", err, res["clock"], det["clock"])
		}
		if res["camera"] != resultSkip {
			t.Errorf("camera without a source: %s (%s)", res["camera"], det["camera"])
		}
	})
	t.Run("an unsynchronised clock fails", func(t *testing.T) {
		rep, _, err := selftestRun(t, ntpState{known: true, source: "timedatectl"}, nil, "--state", dir)
		if res, _ := results(rep); res["clock"] != resultFail || err == nil || !strings.Contains(err.Error(), "clock") {
			t.Fatalf("err = %v, clock %s", err, res["clock"])
		}
	})
	t.Run("a clock before the certificate fails", func(t *testing.T) {
		rep, _, err := selftestRun(t, synced, func(st *selfTest) {
			st.now = func() time.Time { return time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC) }
		}, "--state", dir)
		res, det := results(rep)
		if res["clock"] != resultFail || !strings.Contains(det["clock"], "before") || err == nil {
			t.Fatalf("err = %v, clock %s (%s)", err, res["clock"], det["clock"])
		}
	})
	t.Run("the table has a row per check", func(t *testing.T) {
		var out bytes.Buffer
		err := runSelftest(context.Background(), []string{"--state", dir}, &out, &bytes.Buffer{}, func(st *selfTest) {
			st.ntp = func(context.Context) ntpState { return synced }
		})
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 7 || !strings.HasPrefix(lines[0], "CHECK") || !strings.Contains(lines[0], "RESULT") || !strings.Contains(lines[0], "DETAIL") {
			t.Fatalf("table:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "broker       PASS") {
			t.Errorf("table:\n%s", out.String())
		}
	})
}

func TestSelftestFailsNamingTheBrokerWhenItIsDown(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	dir := enrollDevice(t, pki, "", "cam-0001", closedBroker(t), time.Now(), 0)
	rep, _, err := selftestRun(t, synced, nil, "--state", dir, "--timeout", "5s")
	res, det := results(rep)
	if err == nil || !strings.Contains(err.Error(), "broker") || rep.OK {
		t.Fatalf("err = %v, ok = %v", err, rep.OK)
	}
	if res["broker"] != resultFail || !strings.HasPrefix(strings.SplitN(det["broker"], ": ", 2)[1], "refused") {
		t.Fatalf("broker: %s (%s)", res["broker"], det["broker"])
	}
	if res["credentials"] != resultPass {
		t.Errorf("credentials: %s (%s)", res["credentials"], det["credentials"])
	}
}

func TestSelftestFailsNamingTheCredentialsWhenTheCertificateExpired(t *testing.T) {
	pki := pkiSince(t, time.Now().Add(-24*time.Hour))
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now().Add(-3*time.Hour), time.Hour)
	rep, _, err := selftestRun(t, synced, nil, "--state", dir)
	res, det := results(rep)
	if err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("err = %v", err)
	}
	if res["credentials"] != resultFail || !strings.Contains(det["credentials"], "expired") {
		t.Fatalf("credentials: %s (%s)", res["credentials"], det["credentials"])
	}
	if res["broker"] != resultFail || !strings.Contains(det["broker"], "certificate") {
		t.Errorf("broker: %s (%s)", res["broker"], det["broker"])
	}

	t.Run("and a certificate about to expire fails too", func(t *testing.T) {
		dir := enrollDevice(t, pki, "", "cam-0002", b.URL(), time.Now().Add(-time.Hour), 48*time.Hour)
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		if res, det := results(rep); res["credentials"] != resultFail || !strings.Contains(det["credentials"], "under 3 days") {
			t.Fatalf("credentials: %s (%s)", res["credentials"], det["credentials"])
		}
	})
	t.Run("and a device not enrolled fails", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, nil, "--state", t.TempDir())
		if res, det := results(rep); res["credentials"] != resultFail || !strings.Contains(det["credentials"], "not enrolled") || res["broker"] != resultFail {
			t.Fatalf("credentials: %s (%s)", res["credentials"], det["credentials"])
		}
	})
}

func TestSelftestCameraNeedsAnSPSAndAKeyframe(t *testing.T) {
	dir := t.TempDir()
	t.Run("an encoder that writes nothing fails", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir, "--video-exec", "sleep 30", "--timeout", "500ms")
		if res, det := results(rep); res["camera"] != resultFail || !strings.Contains(det["camera"], "no SPS") {
			t.Fatalf("camera: %s (%s)", res["camera"], det["camera"])
		}
	})
	t.Run("an encoder that fails says what it said", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir, "--video-exec", "sh -c echo_camera_busy>&2", "--timeout", "2s")
		if res, det := results(rep); res["camera"] != resultFail || !strings.Contains(det["camera"], "last log") {
			t.Fatalf("camera: %s (%s)", res["camera"], det["camera"])
		}
	})
	t.Run("an encoder streaming the clip passes", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir, "--video-exec", "cat "+clip)
		if res, det := results(rep); res["camera"] != resultPass || !strings.Contains(det["camera"], "video-exec cat") {
			t.Fatalf("camera: %s (%s)", res["camera"], det["camera"])
		}
	})
}

// With --interactive the LED blinks and a press of the button passes; no press fails.
func TestSelftestInteractiveWaitsForTheButton(t *testing.T) {
	dir := t.TempDir()
	t.Run("a press passes", func(t *testing.T) {
		led, btn := &gpiotest.Pin{N: "GPIO17"}, newPin("GPIO27")
		clk := newAfterClock()
		prompt := newLogBuf()
		done := make(chan struct{})
		var rep selftestReport
		go func() {
			defer close(done)
			rep, _, _ = selftestRun(t, synced, func(st *selfTest) {
				st.pins = &camgpio.Pins{LED: led, Button: btn}
				st.clk = clk
				st.prompt = prompt
			}, "--state", dir, "--interactive")
		}()
		// The button's pin is set up (which drops pending edges) before the prompt.
		prompt.waitFor(t, "press the reset button (GPIO27)")
		clk.fire(t, 50*time.Millisecond) // the level read at start holds for the debounce period
		press := func(l gpio.Level) {
			select {
			case btn.EdgesChan <- l:
			case <-time.After(waitLimit):
				t.Fatal("the self-test does not watch the button")
			}
			clk.fire(t, 50*time.Millisecond) // debounced
		}
		press(gpio.Low)
		clk.waitTimer(t, 10*time.Second-50*time.Millisecond) // the press counts: the long press is timed
		press(gpio.High)
		<-done
		if res, det := results(rep); res["led+button"] != resultPass || !strings.Contains(det["led+button"], "GPIO27") {
			t.Fatalf("led+button: %s (%s)", res["led+button"], det["led+button"])
		}
	})
	t.Run("no press fails", func(t *testing.T) {
		rep, prompt, err := selftestRun(t, synced, func(st *selfTest) {
			st.pins = &camgpio.Pins{LED: &gpiotest.Pin{N: "GPIO17"}, Button: newPin("GPIO27")}
		}, "--state", dir, "--interactive", "--press-timeout", "50ms")
		if res, _ := results(rep); res["led+button"] != resultFail || err == nil || !strings.Contains(err.Error(), "led+button") {
			t.Fatalf("err = %v, led+button %s", err, res["led+button"])
		}
		if !strings.Contains(prompt, "press the reset button (GPIO27)") {
			t.Errorf("prompt: %q", prompt)
		}
	})
	t.Run("no pins fail", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, func(st *selfTest) { st.pins = &camgpio.Pins{NoGPIO: "no GPIO on this machine"} }, "--state", dir, "--interactive")
		if res, det := results(rep); res["led+button"] != resultFail || !strings.Contains(det["led+button"], "no GPIO") {
			t.Fatalf("led+button: %s (%s)", res["led+button"], det["led+button"])
		}
	})
}

func TestClassifyConnectError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), "refused"},
		{errors.New("dial tcp: lookup nope.invalid: no such host"), "dns"},
		{errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), "tls"},
		{errors.New("remote error: tls: expired certificate"), "certificate"},
		{errors.New("remote error: tls: bad certificate"), "certificate"},
		{errors.New("not Authorized"), "certificate"},
		{errors.New("dial tcp 10.0.0.1:8883: i/o timeout"), "timeout"},
		{errors.New("tls: handshake failure"), "tls"},
		{errors.New("EOF"), "error"},
	} {
		if got := classifyConnectError(tt.err); !strings.HasPrefix(got, tt.want+":") {
			t.Errorf("%q: %q, want class %s", tt.err, got, tt.want)
		}
	}
}

// The storage check writes: an SD card the kernel remounted read-only after I/O errors keeps
// its free space, and must fail. Real failures, that stop root too (tests may run as root, whom
// permission bits do not stop): a state path that is a regular file, and, for another user, a
// directory without write permission. Either way the detail names the directory and why, and
// the check leaves no file behind.
func TestSelftestStorageFailsWhenTheStateDirectoryTakesNoWrite(t *testing.T) {
	t.Run("a regular file where the directory should be", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "state")
		if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
			t.Fatal(err)
		}
		rep, _, err := selftestRun(t, synced, nil, "--state", file)
		res, det := results(rep)
		if res["storage"] != resultFail || err == nil || !strings.Contains(err.Error(), "storage") {
			t.Fatalf("err = %v, storage %s (%s)", err, res["storage"], det["storage"])
		}
		if !strings.HasPrefix(det["storage"], file+": cannot write a file there: create: not a directory") {
			t.Errorf("storage detail: %s", det["storage"])
		}
	})
	t.Run("a directory the user may not write", func(t *testing.T) {
		dir := t.TempDir()
		want := dir + ": cannot write a file there: create: permission denied"
		if os.Geteuid() == 0 {
			// Root writes whatever the permission bits say; a read-only mount refuses it too,
			// as a card the kernel remounted read-only after I/O errors does.
			if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
				t.Fatalf("mount a read-only tmpfs, as root: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(dir, 0) })
			want = dir + ": cannot write a file there: create: read-only file system"
		} else {
			if err := os.Chmod(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(dir, 0o700) })
		}
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		res, det := results(rep)
		if res["storage"] != resultFail || !strings.HasPrefix(det["storage"], want) {
			t.Fatalf("storage %s (%s)", res["storage"], det["storage"])
		}
	})
	t.Run("copies of a corrupt state file the agent quarantined are a warning about the storage", func(t *testing.T) {
		dir := t.TempDir()
		at := time.Date(2026, 11, 20, 3, 4, 5, 0, time.UTC)
		for _, ns := range []int64{at.Add(-time.Hour).UnixNano(), at.UnixNano()} {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s.corrupt-%d", agent.StateFile, ns)), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		res, det := results(rep)
		if res["storage"] != resultWarn || !strings.Contains(det["storage"], "corrupt 2 time(s), the last at 2026-11-20T03:04:05Z") || !strings.Contains(det["storage"], "dmesg") {
			t.Fatalf("storage %s (%s)", res["storage"], det["storage"])
		}
	})
	t.Run("a directory that takes the write passes and keeps nothing", func(t *testing.T) {
		dir := t.TempDir()
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		if res, det := results(rep); res["storage"] != resultPass || !strings.Contains(det["storage"], "writable") {
			t.Fatalf("storage %s (%s)", res["storage"], det["storage"])
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("left in the state directory: %v", ents)
		}
	})
}

// Each error a failing SD card gives is named for a person.
func TestWriteProblemSaysWhatTheErrorMeans(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&os.PathError{Op: "open", Path: "/var/lib/camagent/.x.tmp-1", Err: syscall.EROFS}, "create: read-only file system: the kernel remounts an SD card read-only"},
		{&os.PathError{Op: "open", Path: "/var/lib/camagent/.x.tmp-1", Err: syscall.EACCES}, "create: permission denied: "},
		{&os.PathError{Op: "write", Path: "/var/lib/camagent/.x.tmp-1", Err: syscall.ENOSPC}, "create: no space left on the device"},
		{&os.PathError{Op: "sync", Path: "/var/lib/camagent/.x.tmp-1", Err: syscall.EIO}, "create: input/output error: the storage is failing"},
		{&os.PathError{Op: "open", Path: "/var/lib/camagent/.x.tmp-1", Err: syscall.ENOENT}, "create: no such file or directory"},
	} {
		if got := writeProblem("create", tt.err).Error(); !strings.HasPrefix(got, tt.want) || strings.Contains(got, ".x.tmp-1") {
			t.Errorf("%v: %q, want it to start %q", tt.err, got, tt.want)
		}
	}
}

// The self-test warns of a configuration value that seems to carry a comment after it, naming
// the line and the key, not the value.
func TestSelftestWarnsOfAValueThatSeemsToCarryAComment(t *testing.T) {
	state := filepath.Join(t.TempDir(), "cam # the porch")
	conf := writeConf(t, "# camagent\nstate = "+state+"\n")
	rep, _, _ := selftestRun(t, synced, nil, "--config", conf)
	res, det := results(rep)
	if res["config"] != resultWarn || !strings.Contains(det["config"], "line 2 (state)") || !strings.Contains(det["config"], commentRule) || strings.Contains(det["config"], "porch") {
		t.Fatalf("config: %s (%s)", res["config"], det["config"])
	}
	if rep.Checks[0].Check != "config" {
		t.Errorf("the config row is not first: %+v", rep.Checks)
	}
}

// A camera that fails says why in the encoder's own words (rpicam-vid's "failed to acquire
// camera", "no cameras available"), not only in the agent's restart line that follows them.
func TestSelftestCameraShowsWhatTheEncoderSaid(t *testing.T) {
	enc := encoderScript(t, "echo 'ERROR: *** failed to acquire camera ***' >&2\nexit 1\n")
	rep, _, _ := selftestRun(t, synced, nil, "--state", t.TempDir(), "--video-exec", enc, "--timeout", "2s")
	res, det := results(rep)
	if res["camera"] != resultFail || !strings.Contains(det["camera"], "the encoder said: ERROR: *** failed to acquire camera ***") {
		t.Fatalf("camera: %s (%s)", res["camera"], det["camera"])
	}
}

// A self-test beside a running agent says so, naming the process that holds the state
// directory and how to stop it: the agent may have the camera open, and the broker check takes
// over its MQTT session. Only the row is added; the exit code stays the checks'.
func TestSelftestSaysWhenAnAgentHoldsTheStateDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Run("no holder, no row", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		if res, det := results(rep); res["agent"] != "" {
			t.Fatalf("agent: %s (%s)", res["agent"], det["agent"])
		}
	})
	t.Run("a holder warns, and a failed camera check points at it", func(t *testing.T) {
		l, err := agent.LockState(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir, "--video-exec", encoderScript(t, "exit 1\n"), "--timeout", "500ms")
		res, det := results(rep)
		pid := "process " + strconv.Itoa(os.Getpid())
		if res["agent"] != resultWarn || !strings.Contains(det["agent"], pid) || !strings.Contains(det["agent"], "sudo systemctl stop camagent") {
			t.Fatalf("agent: %s (%s)", res["agent"], det["agent"])
		}
		if res["camera"] != resultFail || !strings.Contains(det["camera"], pid) {
			t.Errorf("camera: %s (%s)", res["camera"], det["camera"])
		}
	})
	t.Run("a released lock is no holder", func(t *testing.T) {
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		if res, det := results(rep); res["agent"] != "" {
			t.Fatalf("agent: %s (%s)", res["agent"], det["agent"])
		}
	})
}

// encoderScript writes a shell script with body as an encoder for --video-exec.
func encoderScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "encoder")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// A state directory the self-test may not read (it ran as the wrong user: the directory is the
// service user's, 0700) is named as such, with the command to run instead, not as a setting
// camagent run would refuse or a broken credential. Root reads whatever the permission bits
// say, so the error is the one os.Open gives another user.
func TestSelftestSaysAsWhomToRunWhenTheStateDirectoryIsUnreadable(t *testing.T) {
	denied := fmt.Errorf("agent: seal: device secret: %w", &os.PathError{Op: "lstat", Path: "/var/lib/camagent/device.secret", Err: syscall.EACCES})
	if c := configRefused(denied); c.Result != resultFail || strings.Contains(c.Detail, "would refuse") || !strings.Contains(c.Detail, "sudo -u camagent camagent selftest") {
		t.Errorf("config: %s (%s)", c.Result, c.Detail)
	}
	st := &selfTest{opts: &runOptions{state: "/var/lib/camagent"}, now: time.Now}
	denied = fmt.Errorf("agent: %w", &os.PathError{Op: "open", Path: "/var/lib/camagent/bundle.json", Err: syscall.EACCES})
	if c := st.checkCredentials(nil, denied); c.Result != resultFail || !strings.Contains(c.Detail, "permission denied") || !strings.Contains(c.Detail, "sudo -u camagent camagent selftest") {
		t.Errorf("credentials: %s (%s)", c.Result, c.Detail)
	}
	if c := configRefused(errors.New("run: --log-level \"loud\": want debug, info, warn or error")); !strings.Contains(c.Detail, "would refuse") {
		t.Errorf("a refused setting: %s", c.Detail)
	}
}

// A state directory that is not there says so and what to check; a broker address where
// something accepts the connection and never answers says what may be wrong.
func TestSelftestSaysWhatToCheckForAMissingDirectoryAndASilentBroker(t *testing.T) {
	t.Run("a missing state directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "camagent")
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir)
		if res, det := results(rep); res["storage"] != resultFail || !strings.HasPrefix(det["storage"], dir+": missing: the package makes it") {
			t.Fatalf("storage: %s (%s)", res["storage"], det["storage"])
		}
	})
	t.Run("a broker that accepts and never answers", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var held []net.Conn
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			<-done
			for _, c := range held {
				c.Close()
			}
		})
		pki := mqtttest.NewPKI(t)
		dir := enrollDevice(t, pki, "", "cam-0001", "mqtts://"+ln.Addr().String(), time.Now(), 0)
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir, "--timeout", "1s")
		if res, det := results(rep); res["broker"] != resultFail || !strings.HasPrefix(strings.SplitN(det["broker"], ": ", 2)[1], "timeout: ") || !strings.Contains(det["broker"], "check the address and port") {
			t.Fatalf("broker: %s (%s)", res["broker"], det["broker"])
		}
	})
}

// The board row passes only for a board that says what it is and has a hardware serial: a
// machine whose serial comes from /etc/machine-id, or that names no model, warns.
func TestSelftestBoardPassesOnlyWithAModelAndAHardwareSerial(t *testing.T) {
	for _, tt := range []struct {
		name string
		id   boardid.Identity
		want string
	}{
		{"a Raspberry Pi's device tree passes", boardid.Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "10000000a1b2c3d4", Source: boardid.SourceDeviceTree}, resultPass},
		{"a serial from /proc/cpuinfo passes", boardid.Identity{Model: "Raspberry Pi Zero W Rev 1.1", Serial: "00000000a1b2c3d4", Source: boardid.SourceCPUInfo}, resultPass},
		{"a board without a model warns", boardid.Identity{Model: boardid.Unknown, Serial: "95db97d5419452e9", Source: boardid.SourceMachineID}, resultWarn},
		{"a serial from the machine id warns", boardid.Identity{Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "95db97d5419452e9", Source: boardid.SourceMachineID}, resultWarn},
		{"no serial warns", boardid.Identity{Model: "Raspberry Pi 4 Model B Rev 1.4"}, resultWarn},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.id.Serial == "" {
				err = boardid.ErrNoSerial
			}
			st := &selfTest{ident: func() (boardid.Identity, error) { return tt.id, err }}
			if c := st.checkBoard(); c.Result != tt.want {
				t.Errorf("board: %s (%s), want %s", c.Result, c.Detail, tt.want)
			}
		})
	}
}

// A bundle and its copy that disagree on the broker's address (a storage fault in one of
// them): the broker check tries both, as the agent does, and says which one took the
// connection and which record the agent writes over the other. It writes nothing itself.
func TestSelftestTriesTheBrokerOfADisputedBundleCopy(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dead := closedBroker(t)
	for _, tc := range []struct {
		name, damaged string
	}{
		{"the bundle's broker damaged", agent.BundleFile},
		{"the copy's broker damaged", agent.BundleCopyFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
			p := filepath.Join(dir, tc.damaged)
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			raw = bytes.Replace(raw, []byte(`"`+b.URL()+`"`), []byte(`"`+dead+`"`), 1)
			if err := os.WriteFile(p, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			before := map[string][]byte{}
			for _, f := range []string{agent.BundleFile, agent.BundleCopyFile} {
				before[f], _ = os.ReadFile(filepath.Join(dir, f))
			}
			rep, _, err := selftestRun(t, synced, nil, "--state", dir, "--timeout", "5s")
			res, det := results(rep)
			if err != nil || !rep.OK || res["broker"] != resultWarn {
				t.Fatalf("err = %v; broker: %s (%s)", err, res["broker"], det["broker"])
			}
			if !strings.HasPrefix(det["broker"], b.URL()+": connected over mTLS") || !strings.Contains(det["broker"], dead) {
				t.Errorf("broker detail does not name the broker that connected first and the damaged one: %s", det["broker"])
			}
			wantRewrite := "writes the bundle again from its copy"
			if tc.damaged == agent.BundleCopyFile {
				wantRewrite = "writes the copy again from the bundle"
			}
			if !strings.Contains(det["broker"], wantRewrite) {
				t.Errorf("broker detail does not say %q: %s", wantRewrite, det["broker"])
			}
			for f, want := range before {
				if got, _ := os.ReadFile(filepath.Join(dir, f)); !bytes.Equal(got, want) {
					t.Errorf("selftest changed %s", f)
				}
			}
		})
	}

	t.Run("both brokers down: the check fails naming both", func(t *testing.T) {
		dir := enrollDevice(t, pki, "", "cam-0001", b.URL(), time.Now(), 0)
		p := filepath.Join(dir, agent.BundleFile)
		raw, _ := os.ReadFile(p)
		dead2 := closedBroker(t)
		raw = bytes.Replace(raw, []byte(`"`+b.URL()+`"`), []byte(`"`+dead+`"`), 1)
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(dir, agent.BundleCopyFile)
		raw, _ = os.ReadFile(p)
		raw = bytes.Replace(raw, []byte(`"`+b.URL()+`"`), []byte(`"`+dead2+`"`), 1)
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, _, _ := selftestRun(t, synced, nil, "--state", dir, "--timeout", "5s")
		res, det := results(rep)
		if rep.OK || res["broker"] != resultFail || !strings.Contains(det["broker"], dead) || !strings.Contains(det["broker"], dead2) || strings.Count(det["broker"], "refused") < 2 {
			t.Fatalf("broker: %s (%s)", res["broker"], det["broker"])
		}
	})
}
