package camera_test

import (
	"errors"
	"io"
	"os"
	"testing"

	"github.com/camagent/camagent/device/h264"
)

// TestCommittedClip checks the clip tools/mkclip/mkclip.sh made: constrained baseline,
// 320x240, 90 frames at 30 fps with a keyframe every 30, SPS and PPS before every keyframe,
// and small enough to commit.
func TestCommittedClip(t *testing.T) {
	f, err := os.Open(clipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() > 300<<10 {
		t.Fatalf("clip is %d bytes, want at most 300 KiB (%v)", st.Size(), err)
	}
	sp := h264.NewSplitter(f, 0)
	frames := 0
	for {
		au, err := sp.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !au.HasPicture() {
			t.Fatalf("access unit %d has no picture", frames)
		}
		key := frames%clipGOP == 0
		if au.Keyframe != key || au.HasParams != key {
			t.Errorf("frame %d: keyframe %v, parameter sets %v; want both %v", frames, au.Keyframe, au.HasParams, key)
		}
		if key {
			var spsNAL []byte
			for _, nal := range au.NALs {
				if h264.TypeOf(nal) == h264.NALSPS {
					spsNAL = nal
				}
			}
			sps, err := h264.ParseSPS(spsNAL)
			if err != nil {
				t.Fatalf("frame %d: %v", frames, err)
			}
			if sps.ProfileIDC != 66 || sps.Constraints&0x40 == 0 || !sps.ConstrainedBaseline() {
				t.Errorf("frame %d: profile_idc %d constraints %#x, want constrained baseline (66 with constraint_set1)",
					frames, sps.ProfileIDC, sps.Constraints)
			}
			if sps.Width != 320 || sps.Height != 240 {
				t.Errorf("frame %d: %dx%d, want 320x240", frames, sps.Width, sps.Height)
			}
			if d, ok := sps.FrameInterval(); !ok || d != 33333333 {
				t.Errorf("frame %d: VUI frame interval %v %v, want 1/30 s", frames, d, ok)
			}
			if got := sps.SDPProfileLevelID(); got[:4] != "42e0" {
				t.Errorf("SDP profile-level-id %q, want 42e0xx", got)
			}
		}
		frames++
	}
	if frames != clipFrames {
		t.Errorf("clip has %d frames, want %d", frames, clipFrames)
	}
}
