package camera_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
)

// inflightSource passes on the frames the test hands it, without looking at ctx while it
// waits for one, as an encoder's pump blocked in a read of its pipe does: a frame read just
// as the gate closes is handed to out before the source learns it must stop.
type inflightSource struct {
	frames   chan camera.Frame
	returned chan struct{}
}

func (s *inflightSource) Run(ctx context.Context, out func(camera.Frame)) error {
	defer close(s.returned)
	out(<-s.frames)
	out(<-s.frames)
	<-ctx.Done()
	return ctx.Err()
}

func (s *inflightSource) Info() camera.StreamInfo { return camera.StreamInfo{} }
func (s *inflightSource) RequestKeyframe() error  { return nil }

func TestGatePassesOnNoFrameOnceClosed(t *testing.T) {
	ctx := testContext(t)
	src := &inflightSource{frames: make(chan camera.Frame), returned: make(chan struct{})}
	g := camera.NewGate(src, true)
	got := make(chan camera.Frame, 4)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx, func(f camera.Frame) { got <- f }) }()

	src.frames <- camera.Frame{PTS: 0}
	if f := recv(ctx, t, got); f.Seq != 0 {
		t.Fatalf("first frame has Seq %d", f.Seq)
	}
	g.SetOpen(false) // privacy on
	src.frames <- camera.Frame{PTS: 33 * time.Millisecond}
	select {
	case <-src.returned:
	case <-ctx.Done():
		t.Fatal("the camera did not stop when the gate closed")
	}
	select {
	case f := <-got:
		t.Errorf("a frame (Seq %d) was passed on after the gate closed", f.Seq)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

// slowStopSource takes a while to stop once cancelled, as an encoder given KillGrace does.
type slowStopSource struct {
	started   chan struct{}
	cancelled chan struct{}
	release   chan struct{}
}

func (s *slowStopSource) Run(ctx context.Context, out func(camera.Frame)) error {
	s.started <- struct{}{}
	<-ctx.Done()
	s.cancelled <- struct{}{}
	<-s.release
	return ctx.Err()
}

func (s *slowStopSource) Info() camera.StreamInfo { return camera.StreamInfo{} }
func (s *slowStopSource) RequestKeyframe() error  { return nil }

func TestGateReopenedWhileTheCameraStopsStartsItAgain(t *testing.T) {
	ctx := testContext(t)
	src := &slowStopSource{started: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{})}
	g := camera.NewGate(src, true)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx, func(camera.Frame) {}) }()

	<-src.started
	g.SetOpen(false) // privacy on ...
	<-src.cancelled
	g.SetOpen(true) // ... and off again before the camera has finished stopping
	src.release <- struct{}{}
	select {
	case <-src.started:
	case err := <-done:
		t.Fatalf("Run returned %v: the gate gave up on the camera it had stopped itself", err)
	case <-ctx.Done():
		t.Fatal("the camera was not started again")
	}
	cancel()
	<-src.cancelled
	src.release <- struct{}{}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}
