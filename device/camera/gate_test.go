package camera_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
)

// tickSource emits a frame whenever the test sends on tick, with PTS counting from 0 in each
// run, and records how many runs are active.
type tickSource struct {
	tick    chan struct{}
	mu      sync.Mutex
	running int
	runs    int
	fail    error
}

func (s *tickSource) Run(ctx context.Context, out func(camera.Frame)) error {
	s.mu.Lock()
	s.running++
	s.runs++
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.running--; s.mu.Unlock() }()
	var pts time.Duration
	for {
		select {
		case <-s.tick:
			s.mu.Lock()
			fail := s.fail
			s.mu.Unlock()
			if fail != nil {
				return fail
			}
			out(camera.Frame{PTS: pts})
			pts += 33 * time.Millisecond
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *tickSource) Info() camera.StreamInfo { return camera.StreamInfo{} }
func (s *tickSource) RequestKeyframe() error  { return nil }

func (s *tickSource) state() (running, runs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running, s.runs
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGateStopsTheCameraWhileClosedAndKeepsTheStreamContinuous(t *testing.T) {
	src := &tickSource{tick: make(chan struct{})}
	g := camera.NewGate(src, false)
	frames := make(chan camera.Frame, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, func(f camera.Frame) { frames <- f }) }()

	// Closed from the start: the camera never runs.
	time.Sleep(20 * time.Millisecond)
	if running, runs := src.state(); running != 0 || runs != 0 {
		t.Fatalf("closed gate: camera running %d, runs %d", running, runs)
	}
	g.SetOpen(true)
	waitUntil(t, "the camera runs", func() bool { r, _ := src.state(); return r == 1 })
	var got []camera.Frame
	for range 3 {
		src.tick <- struct{}{}
		got = append(got, <-frames)
	}
	g.SetOpen(false)
	waitUntil(t, "the camera stops", func() bool { r, _ := src.state(); return r == 0 })
	select {
	case src.tick <- struct{}{}:
		t.Fatal("a closed gate's camera took a frame")
	case <-time.After(20 * time.Millisecond):
	}
	g.SetOpen(true)
	waitUntil(t, "the camera runs again", func() bool { r, n := src.state(); return r == 1 && n == 2 })
	for range 2 {
		src.tick <- struct{}{}
		got = append(got, <-frames)
	}
	for i, f := range got {
		if f.Seq != uint64(i) {
			t.Errorf("frame %d has Seq %d", i, f.Seq)
		}
		if i > 0 && f.PTS <= got[i-1].PTS {
			t.Errorf("frame %d PTS %v not after %v", i, f.PTS, got[i-1].PTS)
		}
		if want := i == 0 || i == 3; f.Discontinuity != want {
			t.Errorf("frame %d Discontinuity %v, want %v", i, f.Discontinuity, want)
		}
	}
	// Closing and opening quickly, twice over, leaves one camera running.
	g.SetOpen(false)
	g.SetOpen(true)
	g.SetOpen(false)
	g.SetOpen(true)
	waitUntil(t, "one camera runs", func() bool { r, _ := src.state(); return r == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if r, _ := src.state(); r != 0 {
		t.Fatal("the camera still runs after Run returned")
	}
}

func TestGatePassesOnTheCamerasFailureWhileOpen(t *testing.T) {
	boom := errors.New("encoder died")
	src := &tickSource{tick: make(chan struct{}), fail: boom}
	g := camera.NewGate(src, true)
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background(), func(camera.Frame) {}) }()
	src.tick <- struct{}{}
	if err := <-done; !errors.Is(err, boom) {
		t.Fatalf("Run: %v, want %v", err, boom)
	}
}
