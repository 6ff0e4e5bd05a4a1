package camera_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/camera/cameratest"
	"github.com/camagent/camagent/device/h264"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// runSource runs src in the background, delivering frames on the returned channel; stop
// cancels it and returns Run's error.
func runSource(t *testing.T, ctx context.Context, src camera.Source) (frames <-chan camera.Frame, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan camera.Frame, 1024)
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(f camera.Frame) {
			select {
			case ch <- f:
			default:
				t.Error("frame channel full")
			}
		})
	}()
	var stopped bool
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return ch, stop
}

func recv(ctx context.Context, t *testing.T, frames <-chan camera.Frame) camera.Frame {
	t.Helper()
	select {
	case f := <-frames:
		return f
	case <-ctx.Done():
		t.Fatal("no frame before the test deadline")
		return camera.Frame{}
	}
}

func TestFileSourceLoopsInRealTime(t *testing.T) {
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	src, err := camera.NewFileSource(camera.FileConfig{Path: clipPath, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	info := src.Info()
	if info.Width != 320 || info.Height != 240 || info.ProfileLevelID[:4] != "42c0" ||
		info.SDPProfileLevelID[:4] != "42e0" || info.FrameInterval != 33333333 {
		t.Fatalf("Info() = %+v", info)
	}
	if !errors.Is(src.RequestKeyframe(), camera.ErrUnsupported) || !errors.Is(src.RequestKeyframe(), errors.ErrUnsupported) {
		t.Error("RequestKeyframe does not return ErrUnsupported")
	}

	frames, stop := runSource(t, ctx, src)
	const loops = 2
	var prev camera.Frame
	for i := range loops * clipFrames {
		if i > 0 {
			// The source waits for exactly one frame interval, give or take the
			// nanosecond lost to rounding 1/30 s.
			if err := clk.WaitPending(ctx, 1); err != nil {
				t.Fatal(err)
			}
			moved, _ := clk.AdvanceToNext()
			if moved < 33333333 || moved > 33333334 {
				t.Fatalf("frame %d came %v after the previous one, want 1/30 s", i, moved)
			}
		}
		f := recv(ctx, t, frames)
		if f.Seq != uint64(i) {
			t.Fatalf("frame %d has Seq %d", i, f.Seq)
		}
		if want := time.Duration(i) * time.Second / 30; f.PTS < want-1 || f.PTS > want {
			t.Errorf("frame %d: PTS %v, want %v", i, f.PTS, want)
		}
		if got := f.Timestamp90k(); got != uint64(i)*3000 {
			t.Errorf("frame %d: 90 kHz timestamp %d, want %d", i, got, i*3000)
		}
		if i > 0 && f.PTS <= prev.PTS {
			t.Errorf("frame %d: PTS %v does not follow %v", i, f.PTS, prev.PTS)
		}
		if f.Discontinuity != (i%clipFrames == 0) {
			t.Errorf("frame %d: Discontinuity %v", i, f.Discontinuity)
		}
		if f.AU.Keyframe != (i%clipGOP == 0) || !f.AU.HasPicture() {
			t.Errorf("frame %d: keyframe %v", i, f.AU.Keyframe)
		}
		prev = f
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	select {
	case f := <-frames:
		t.Fatalf("frame %d after the %d awaited", f.Seq, loops*clipFrames)
	default:
	}
}

func TestFileSourceFrameRate(t *testing.T) {
	tests := []struct {
		name string
		fps  float64
		want time.Duration
	}{
		{"the configured rate wins over the file's", 25, 40 * time.Millisecond},
		{"NTSC rates stay exact enough", 29.97, 33366700},
		{"zero means the file's VUI timing", 0, 33333333},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			clk := cameratest.NewClock(epoch)
			src, err := camera.NewFileSource(camera.FileConfig{Path: clipPath, FPS: tt.fps, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			if got := src.Info().FrameInterval; got != tt.want {
				t.Errorf("FrameInterval %v, want %v", got, tt.want)
			}
			frames, _ := runSource(t, ctx, src)
			recv(ctx, t, frames)
			if err := clk.WaitPending(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if got := clk.Pending()[0]; got != tt.want {
				t.Errorf("waits %v for the second frame, want %v", got, tt.want)
			}
		})
	}
}

func TestFileSourceCatchesUpAfterAStall(t *testing.T) {
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	log, rec := newLogRecorder(t)
	src, err := camera.NewFileSource(camera.FileConfig{Path: clipPath, Clock: clk, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	frames, _ := runSource(t, ctx, src)
	recv(ctx, t, frames)
	if err := clk.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second) // the board was suspended
	// Frame 1 was waiting and goes now. Frame 2 is 5 s late: it goes at once too, and the
	// schedule restarts from it rather than bursting 150 frames to catch up.
	f1 := recv(ctx, t, frames)
	f2 := recv(ctx, t, frames)
	if err := clk.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := clk.Pending()[0]; got < 33333333 || got > 33333334 {
		t.Errorf("after the stall the source waits %v, want one frame interval", got)
	}
	// Timestamps keep to the frame rate, with no jump for the stall.
	if f1.Seq != 1 || f1.PTS != 33333333 || f2.Seq != 2 || f2.PTS != 66666666 {
		t.Errorf("frames after the stall: %d at %v, %d at %v", f1.Seq, f1.PTS, f2.Seq, f2.PTS)
	}
	if rec.Count("fell behind") != 1 {
		t.Errorf("the stall was not logged: %q", rec.Lines())
	}
}

func TestFileSourceRejects(t *testing.T) {
	dir := t.TempDir()
	clip, err := os.ReadFile(clipPath)
	if err != nil {
		t.Fatal(err)
	}
	aus := splitClip(t, clip)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var fromP []byte
	for _, au := range aus[1:] {
		fromP = h264.AppendAnnexB(fromP, au)
	}
	tests := []struct {
		name string
		cfg  camera.FileConfig
		want error
	}{
		{"no path", camera.FileConfig{}, nil},
		{"a missing file", camera.FileConfig{Path: filepath.Join(dir, "missing.h264")}, os.ErrNotExist},
		{"an empty file", camera.FileConfig{Path: write("empty.h264", nil)}, camera.ErrNoPictures},
		{"a file starting after its keyframe", camera.FileConfig{Path: write("p.h264", fromP)}, camera.ErrNoPictures},
		{"parameter sets only", camera.FileConfig{Path: write("ps.h264", h264.AppendAnnexB(nil, h264.AccessUnit{NALs: aus[0].NALs[:2]}))}, camera.ErrNoPictures},
		{"a negative frame rate", camera.FileConfig{Path: clipPath, FPS: -1}, nil},
		{"too high a frame rate", camera.FileConfig{Path: clipPath, FPS: 1000}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := camera.NewFileSource(tt.cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if err.Error()[:8] != "camera: " {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestFileSourceRunsOnceAtATime(t *testing.T) {
	ctx := testContext(t)
	clk := cameratest.NewClock(epoch)
	src, err := camera.NewFileSource(camera.FileConfig{Path: clipPath, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	frames, stop := runSource(t, ctx, src)
	recv(ctx, t, frames)
	if err := src.Run(ctx, func(camera.Frame) {}); !errors.Is(err, camera.ErrRunning) {
		t.Errorf("second Run returned %v, want ErrRunning", err)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// Run again after the first ended: frames restart from 0.
	frames, _ = runSource(t, ctx, src)
	if f := recv(ctx, t, frames); f.Seq != 0 || !f.Discontinuity {
		t.Errorf("second Run's first frame: Seq %d Discontinuity %v", f.Seq, f.Discontinuity)
	}
}

func splitClip(t *testing.T, clip []byte) []h264.AccessUnit {
	t.Helper()
	var aus []h264.AccessUnit
	sp := h264.NewSplitter(bytesReader(clip), 0)
	for {
		au, err := sp.Next()
		if err != nil {
			return aus
		}
		aus = append(aus, au)
	}
}
