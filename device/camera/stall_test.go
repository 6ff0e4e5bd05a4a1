package camera_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/camera/cameratest"
)

// TestExecSourceRestartsAHungEncoder runs an encoder that sends its pictures and then hangs,
// alive but silent, as a wedged camera stack does: it is stopped and restarted like one that
// exited, rather than leaving the camera dark until the agent restarts.
func TestExecSourceRestartsAHungEncoder(t *testing.T) {
	needs(t, "sh", "cat", "sleep")
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv:  []string{"sh", "-c", `cat "$1"; exec sleep 1000`, "sh", clipPath},
		Clock: clk, Logger: log, KillGrace: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	frames, stop := runSource(t, ctx, src)
	leader := pidFromLog(t, rec.WaitFor(ctx, t, "encoder started"))
	// The clip's last picture is held back until its end, which never comes.
	for range clipFrames - 1 {
		recv(ctx, t, frames)
	}
	if err := clk.WaitPending(ctx, 1); err != nil {
		t.Fatalf("nothing watches the encoder's output: %v", err)
	}
	// Pictures came since the watch began: the encoder is not hung.
	clk.AdvanceToNext()
	if err := clk.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := rec.Count("restarting"); n != 0 {
		t.Fatalf("an encoder that sent pictures was restarted: %q", rec.Lines())
	}
	// A whole period without a picture: it is.
	clk.AdvanceToNext()
	rec.WaitFor(ctx, t, "restarting", "no picture")
	if alive(leader) {
		t.Errorf("the hung encoder (pid %d) is still running", leader)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

// TestExecSourceBoundsDamagedAccessUnitLogs runs an encoder whose output is a flood of damaged
// access units: each is dropped, but the log gets a bounded number of lines about them, as it
// does for the encoder's stderr, and the count of the rest.
func TestExecSourceBoundsDamagedAccessUnitLogs(t *testing.T) {
	needs(t, "sh", "cat", "sleep")
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	// An access unit delimiter, then a slice with forbidden_zero_bit set: 500 damaged access
	// units, then the clip.
	const damaged = 500
	script := `i=0; while [ $i -lt ` + strconv.Itoa(damaged) + ` ]; do printf '\000\000\001\011\360\000\000\001\345\210'; i=$((i+1)); done; cat "$1"; exec sleep 1000`
	src, err := camera.NewExecSource(camera.ExecConfig{
		Argv:  []string{"sh", "-c", script, "sh", clipPath},
		Clock: clk, Logger: log, KillGrace: time.Hour, StallTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	frames, stop := runSource(t, ctx, src)
	recv(ctx, t, frames) // every damaged access unit came before
	if n := rec.Count("damaged access unit"); n == 0 || n > camera.DefaultStderrPerMinute {
		t.Errorf("%d log lines about %d damaged access units, want 1 to %d", n, damaged, camera.DefaultStderrPerMinute)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if rec.Count("damaged access units suppressed") != 1 {
		t.Errorf("the suppressed damaged access units were not counted: %q", rec.Lines()[len(rec.Lines())-3:])
	}
}
