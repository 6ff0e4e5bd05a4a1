package webrtc

import (
	"testing"
	"time"

	"github.com/camagent/camagent/device/camera"
)

// After a discontinuity the frames before are no reference for the ones after
// (camera.Frame.Discontinuity). A live viewer must not be sent a predicted frame of the new
// stream, which it could not decode against the old one: it waits for the next keyframe, and
// one is asked for.
func TestDiscontinuityRestartsLiveViewersAtAKeyframe(t *testing.T) {
	aus := clipAUs(t)
	asked := 0
	f := newFanout(0, func() { asked++ })
	for n := range 3 { // keyframe 0 and two P frames
		f.push(clipFrame(aus, n))
	}
	v := newViewer(64)
	if snap := f.join(v); len(snap) != 3 {
		t.Fatalf("snapshot of %d frames, want 3", len(snap))
	}
	// The source restarts mid-group: its first frame is a P frame of a stream the viewer has
	// never seen the keyframe of.
	f.push(camera.Frame{AU: aus[1], PTS: time.Second, Discontinuity: true})
	f.push(camera.Frame{AU: aus[2], PTS: time.Second + time.Second/30})
	if n := len(v.queue); n != 0 {
		t.Fatalf("the viewer was queued %d predicted frames from across the discontinuity", n)
	}
	if asked == 0 {
		t.Error("no keyframe was asked for after the discontinuity")
	}
	f.push(camera.Frame{AU: aus[0], PTS: time.Second + 2*time.Second/30})
	if len(v.queue) != 1 || !(<-v.queue).keyframe {
		t.Fatal("the viewer did not restart at the next keyframe")
	}
	if got := v.dropped.Load(); got != 2 {
		t.Errorf("dropped %d frames, want 2", got)
	}

	t.Run("a discontinuity at a keyframe goes straight through", func(t *testing.T) {
		f.push(camera.Frame{AU: aus[0], PTS: 2 * time.Second, Discontinuity: true})
		if len(v.queue) != 1 || !(<-v.queue).keyframe {
			t.Fatal("the keyframe after the discontinuity was not queued")
		}
	})
}
