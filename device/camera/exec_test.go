package camera_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/camera/cameratest"
)

// needs skips the test unless the programs are installed.
func needs(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed", p)
		}
	}
}

// TestExecSourceFFmpeg runs a real encoder, reads a second of frames and stops it.
func TestExecSourceFFmpeg(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	needs(t, "ffmpeg")
	ctx := testContext(t)
	log, rec := newLogRecorder(t)
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv: []string{"ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
			"-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
			"-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "baseline", "-preset", "ultrafast", "-tune", "zerolatency",
			"-g", "15", "-x264-params", "repeat-headers=1", "-f", "h264", "-"},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	frames, stop := runSource(t, ctx, src)
	const want = 30
	var prev camera.Frame
	for i := range want {
		f := recv(ctx, t, frames)
		if f.Seq != uint64(i) {
			t.Fatalf("frame %d has Seq %d", i, f.Seq)
		}
		if i == 0 && (!f.AU.Keyframe || !f.AU.HasParams || !f.Discontinuity) {
			t.Errorf("first frame: keyframe %v, parameter sets %v, discontinuity %v", f.AU.Keyframe, f.AU.HasParams, f.Discontinuity)
		}
		if i > 0 && (f.Timestamp90k() <= prev.Timestamp90k() || f.Discontinuity) {
			t.Errorf("frame %d: 90 kHz timestamp %d after %d, discontinuity %v", i, f.Timestamp90k(), prev.Timestamp90k(), f.Discontinuity)
		}
		if f.AU.Keyframe != (i%15 == 0) {
			t.Errorf("frame %d: keyframe %v", i, f.AU.Keyframe)
		}
		prev = f
	}
	info := src.Info()
	if info.Width != 320 || info.Height != 240 || !strings.HasPrefix(info.ProfileLevelID, "42c0") || !strings.HasPrefix(info.SDPProfileLevelID, "42e0") {
		t.Errorf("Info() = %+v", info)
	}
	// 29 intervals of 1/30 s, as ffmpeg -re paces them; wide bounds, this is not a timing test.
	if prev.PTS < 500*time.Millisecond || prev.PTS > 30*time.Second {
		t.Errorf("frame 29 arrived at %v", prev.PTS)
	}
	pid := pidFromLog(t, rec.WaitFor(ctx, t, "encoder started"))
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if alive(pid) {
		t.Errorf("ffmpeg (pid %d) outlived Run", pid)
	}
	if n := rec.Count("restarting"); n != 0 {
		t.Errorf("encoder restarted %d times: %q", n, rec.Lines())
	}
}

var pidRE = regexp.MustCompile(`pid=(\d+)`)

func pidFromLog(t *testing.T, line string) int {
	t.Helper()
	m := pidRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no pid in %q", line)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// alive reports whether pid is a live process (not gone, not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// TestExecSourceRestartsWithBackoff runs a command that fails at once: each failure is logged
// with its stderr, and each restart waits longer, up to the cap.
func TestExecSourceRestartsWithBackoff(t *testing.T) {
	needs(t, "sh")
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	const (
		lo    = 100 * time.Millisecond
		hi    = 500 * time.Millisecond
		grace = time.Hour // so the kill timer cannot be mistaken for a backoff
	)
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv:       []string{"sh", "-c", `echo "no camera found: try again" >&2; exit 3`},
		BackoffMin: lo, BackoffMax: hi, KillGrace: grace,
		StallTimeout: 2 * grace, // nor the stall watch
		Clock:        clk, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runSource(t, ctx, src)
	isBackoff := func(ds []time.Duration) bool { return len(ds) == 1 && ds[0] < grace }
	for attempt := range 6 {
		if err := clk.WaitFor(ctx, isBackoff); err != nil {
			t.Fatalf("restart %d: no backoff timer: %v\n%s", attempt, err, strings.Join(rec.Lines(), "\n"))
		}
		d := clk.Pending()[0]
		full := min(lo<<attempt, hi)
		if d < full/2 || d > full {
			t.Errorf("restart %d waits %v, want within [%v, %v]", attempt, d, full/2, full)
		}
		if n := rec.Count("camera: command stderr", "no camera found: try again"); n != attempt+1 {
			t.Errorf("after %d runs, stderr logged %d times", attempt+1, n)
		}
		if n := rec.Count("restarting", "exit status 3"); n != attempt+1 {
			t.Errorf("after %d runs, %d exits logged", attempt+1, n)
		}
		clk.AdvanceToNext()
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
}

// An encoder given by a relative path is looked for in the encoder's working directory (Dir),
// where the child starts, not in the agent's.
func TestExecSourceFindsARelativeEncoderInItsDirectory(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "enc.sh"), []byte("#!/bin/sh\necho started in its directory >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	log, rec := newLogRecorder(t)
	src, err := camera.NewExecSource(camera.ExecConfig{Argv: []string{"./enc.sh"}, Dir: dir, Clock: cameratest.NewClock(epoch), Logger: log, KillGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runSource(t, ctx, src)
	rec.WaitFor(ctx, t, "camera: command stderr", "started in its directory")
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestExecSourceStartFailureIsRetried(t *testing.T) {
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv: []string{"/nonexistent/rpicam-vid"}, Clock: clk, Logger: log, KillGrace: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runSource(t, ctx, src)
	for range 2 {
		if err := clk.WaitPending(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.AdvanceToNext()
	}
	rec.WaitFor(ctx, t, "restarting", "start /nonexistent/rpicam-vid")
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if n := rec.Count("restarting"); n < 2 {
		t.Errorf("%d failures logged, want each one", n)
	}
}

// TestExecSourceKillsTheProcessGroup checks that a helper the encoder forked is signalled
// with it, and that Run waits for both.
func TestExecSourceKillsTheProcessGroup(t *testing.T) {
	needs(t, "sh", "sleep")
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	src, err := camera.NewExecSource(camera.ExecConfig{
		// The helper holds stdout and stderr, as an encoder's helper process would.
		Argv:  []string{"sh", "-c", `sleep 1000 & echo "helper pid=$!" >&2; exec sleep 1000`},
		Clock: clk, Logger: log,
		KillGrace: time.Hour, // never reached: SIGTERM must do
	})
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runSource(t, ctx, src)
	helper := pidFromLog(t, rec.WaitFor(ctx, t, "helper pid="))
	leader := pidFromLog(t, rec.WaitFor(ctx, t, "encoder started"))
	if !alive(helper) || !alive(leader) {
		t.Fatal("encoder or helper not running")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("Run did not return: the helper (pid %d) kept the output open", helper)
	}
	// Run returned, so the output pipe reached EOF: the helper, which held it, has exited.
	// (Whether it is a zombie yet is the kernel's business, so it is not checked.) The
	// encoder itself was reaped.
	if alive(leader) {
		t.Errorf("encoder (pid %d) alive after Run returned", leader)
	}
}

// TestExecSourceKillsAnEncoderIgnoringSIGTERM checks the escalation to SIGKILL.
func TestExecSourceKillsAnEncoderIgnoringSIGTERM(t *testing.T) {
	needs(t, "sh", "sleep")
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	const grace = 7 * time.Second
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv:  []string{"sh", "-c", `trap "" TERM; echo ready >&2; exec sleep 1000`},
		Clock: clk, Logger: log, KillGrace: grace,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, stop := runSource(t, ctx, src)
	rec.WaitFor(ctx, t, "ready")
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if err := clk.WaitFor(ctx, func(ds []time.Duration) bool { return len(ds) == 1 && ds[0] == grace }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Run returned %v before the grace period ended", err)
	default:
	}
	clk.AdvanceToNext()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after SIGKILL")
	}
	if rec.Count("ignored SIGTERM") != 1 {
		t.Errorf("escalation not logged: %q", rec.Lines())
	}
}

func TestExecSourceTimestampsStrictlyIncrease(t *testing.T) {
	needs(t, "cat")
	// The whole clip arrives at once, at one instant of the fake clock: each frame is still
	// stamped one 90 kHz tick after the one before.
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv: []string{"cat", clipPath}, Clock: clk, KillGrace: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	frames, stop := runSource(t, ctx, src)
	var prev uint64
	for i := range clipFrames {
		f := recv(ctx, t, frames)
		if ts := f.Timestamp90k(); i > 0 && ts != prev+1 {
			t.Errorf("frame %d: 90 kHz timestamp %d, want %d", i, ts, prev+1)
		}
		prev = f.Timestamp90k()
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestExecConfigRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  camera.ExecConfig
		want string
	}{
		{"no command", camera.ExecConfig{}, "Argv"},
		{"an empty command", camera.ExecConfig{Argv: []string{""}}, "Argv"},
		{"a negative backoff", camera.ExecConfig{Argv: []string{"x"}, BackoffMin: -1}, "BackoffMin"},
		{"a cap below the floor", camera.ExecConfig{Argv: []string{"x"}, BackoffMin: time.Minute, BackoffMax: time.Second}, "BackoffMax"},
		{"a negative line cap", camera.ExecConfig{Argv: []string{"x"}, StderrLineMax: -5}, "StderrLineMax"},
		{"a negative stall timeout", camera.ExecConfig{Argv: []string{"x"}, StallTimeout: -time.Second}, "StallTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := camera.NewExecSource(tt.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), "camera: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
	src, err := camera.NewExecSource(camera.ExecConfig{Argv: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(src.RequestKeyframe(), camera.ErrUnsupported) {
		t.Error("RequestKeyframe does not return ErrUnsupported")
	}
	if src.Info() != (camera.StreamInfo{}) {
		t.Error("Info known before the encoder ran")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := time.Second, 30*time.Second
	for _, tt := range []struct {
		attempt int
		want    time.Duration
	}{{0, time.Second}, {1, 2 * time.Second}, {4, 16 * time.Second}, {5, hi}, {62, hi}, {1000, hi}} {
		least := camera.Backoff(tt.attempt, lo, hi, func(int64) int64 { return 0 })
		most := camera.Backoff(tt.attempt, lo, hi, func(n int64) int64 { return n - 1 })
		if most != tt.want || least != tt.want-tt.want/2 {
			t.Errorf("attempt %d: delays %v..%v, want %v..%v", tt.attempt, least, most, tt.want/2, tt.want)
		}
	}
}

func TestStderrLines(t *testing.T) {
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	w := camera.NewLineLogger(log, clk, 10, 3)
	fmt.Fprint(w, "first\nsec")
	fmt.Fprint(w, "ond\r\n\nthis line is far too long\nfourth\nfifth\n")
	if got := rec.Count("camera: command stderr"); got != 3 {
		t.Fatalf("logged %d lines, want 3 (the budget): %q", got, rec.Lines())
	}
	if rec.Count("line=first") != 1 || rec.Count("line=second") != 1 || rec.Count("line=this line ", "truncated=true") != 1 {
		t.Errorf("lines not split or capped: %q", rec.Lines())
	}
	clk.Advance(time.Minute)
	fmt.Fprint(w, "\xffnew minute")
	w.Close()
	if rec.Count("suppressed", "lines=2") != 1 || rec.Count("line=\uFFFDnew minu", "truncated=true") != 1 {
		t.Errorf("suppressed count or last line missing: %q", rec.Lines())
	}
}
