package h264

import (
	"bytes"
	"testing"
)

// TestSplitterDoesNotSizePicturesAfterTheKeyframe checks the buffer the splitter sets aside for
// the picture after a keyframe. That picture is typically a hundredth of the keyframe's size,
// and the buffer stays alive with it (in a GOPCache, in viewers' queues), uncounted by any
// byte budget, which counts the access unit's length.
func TestSplitterDoesNotSizePicturesAfterTheKeyframe(t *testing.T) {
	const (
		keyframe = 200 << 10
		picture  = 2 << 10
	)
	var nals [][]byte
	for range 3 {
		nals = append(nals, testSPS(), testPPS, slice(NALIDR, 0, bytes.Repeat([]byte{9}, keyframe)...))
		for range 5 {
			nals = append(nals, slice(NALSlice, 0, bytes.Repeat([]byte{7}, picture)...))
		}
	}
	s := NewSplitter(bytes.NewReader(annexB(4, nals...)), 0)
	for i := range 18 {
		au, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if au.Keyframe != (i%6 == 0) {
			t.Fatalf("access unit %d: keyframe %v", i, au.Keyframe)
		}
		// s.data now holds the start of access unit i+1, in the buffer it is built in. Until
		// the splitter has seen a picture that is not a keyframe, it cannot know the stream
		// has any, so the first group is not checked.
		if i >= 6 && i%6 != 5 && i < 17 && cap(s.data) > 4*picture {
			t.Errorf("access unit %d, a picture of about %d bytes, is built in a buffer of %d bytes", i+1, picture, cap(s.data))
		}
	}
}
