package cameratest_test

import (
	"context"
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/camera/cameratest"
)

func TestClockFiresTimersInOrder(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := cameratest.NewClock(start)
	late := c.NewTimer(3 * time.Second)
	early := c.NewTimer(time.Second)
	stopped := c.NewTimer(2 * time.Second)
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop should report true once, then false")
	}
	if got := c.Pending(); len(got) != 2 || got[0] != time.Second || got[1] != 3*time.Second {
		t.Fatalf("Pending() = %v", got)
	}
	if moved, ok := c.AdvanceToNext(); !ok || moved != time.Second {
		t.Fatalf("AdvanceToNext() = %v, %v", moved, ok)
	}
	select {
	case at := <-early.C():
		if !at.Equal(start.Add(time.Second)) {
			t.Errorf("fired at %v", at)
		}
	default:
		t.Fatal("the earliest timer did not fire")
	}
	select {
	case <-late.C():
		t.Fatal("the later timer fired early")
	default:
	}
	c.Advance(5 * time.Second)
	<-late.C()
	if !c.Now().Equal(start.Add(6 * time.Second)) {
		t.Errorf("Now() = %v", c.Now())
	}
	if _, ok := c.AdvanceToNext(); ok {
		t.Error("AdvanceToNext with no timers reported ok")
	}
	<-c.NewTimer(0).C() // fires at once
}

func TestClockWaitPending(t *testing.T) {
	c := cameratest.NewClock(time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go c.NewTimer(time.Second)
	if err := c.WaitPending(ctx, 1); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if err := c.WaitPending(short, 2); err == nil {
		t.Fatal("WaitPending returned nil for an unmet condition after cancel")
	}
}

func TestSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src := &cameratest.Source{StreamInfo: camera.StreamInfo{Width: 320, Height: 240}}
	got := make(chan camera.Frame, 1)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx, func(f camera.Frame) { got <- f }) }()
	if err := src.Emit(ctx, camera.Frame{Seq: 7}); err != nil {
		t.Fatal(err)
	}
	if f := <-got; f.Seq != 7 {
		t.Errorf("got frame %d", f.Seq)
	}
	if err := src.RequestKeyframe(); err != nil {
		t.Fatal(err)
	}
	<-src.KeyframeRequested()
	if src.Info().Width != 320 {
		t.Error("Info not returned")
	}
	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
}
