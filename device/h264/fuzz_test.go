package h264

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// splitResult is what a splitter made of a stream, in a form that can be compared.
type splitResult struct {
	aus  []AccessUnit
	errs []string // "too large" or "malformed", in order
}

func runSplitter(t *testing.T, r io.Reader, maxAU int) splitResult {
	var res splitResult
	s := NewSplitter(r, maxAU)
	for {
		au, err := s.Next()
		switch {
		case err == nil:
			res.aus = append(res.aus, au)
		case errors.Is(err, io.EOF):
			return res
		case errors.Is(err, ErrTooLarge):
			res.errs = append(res.errs, "too large")
			var se *SizeError
			if !errors.As(err, &se) || se.Size <= se.Limit || se.Limit != s.maxAU {
				t.Fatalf("bad size error %v", err)
			}
		case errors.Is(err, ErrMalformed):
			res.errs = append(res.errs, "malformed")
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if !strings.HasPrefix(errString(err), "h264: ") {
			t.Fatalf("error %q lacks the package prefix", err)
		}
		if cap(s.data) > s.maxAU {
			t.Fatalf("buffer of %d bytes over the cap of %d", cap(s.data), s.maxAU)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "h264: "
	}
	return err.Error()
}

func checkAccessUnit(t *testing.T, au AccessUnit, maxAU int) {
	if len(au.NALs) == 0 {
		t.Fatal("empty access unit")
	}
	if au.Size() > maxAU {
		t.Fatalf("access unit of %d bytes over the cap of %d", au.Size(), maxAU)
	}
	var idr, sps, pps bool
	for _, nal := range au.NALs {
		if len(nal) == 0 || nal[len(nal)-1] == 0 || bytes.Contains(nal, startCode) {
			t.Fatalf("bad NAL unit %x", nal)
		}
		if nal[0]&0x80 != 0 {
			t.Fatalf("NAL unit with forbidden_zero_bit passed through")
		}
		idr = idr || TypeOf(nal) == NALIDR
		sps = sps || TypeOf(nal) == NALSPS
		pps = pps || TypeOf(nal) == NALPPS
	}
	if au.Keyframe != idr || au.HasParams != (sps && pps) {
		t.Fatalf("flags Keyframe %v HasParams %v for IDR %v SPS %v PPS %v", au.Keyframe, au.HasParams, idr, sps, pps)
	}
}

// FuzzSplitter feeds arbitrary bytes, in arbitrary reads, under an arbitrary cap. The
// splitter must not panic or hold more than its cap, every access unit must be well formed,
// the result must not depend on how the input is chunked, and when nothing was dropped the
// NAL units must be exactly those of a plain whole-buffer split.
func FuzzSplitter(f *testing.F) {
	clip := readClip(f)
	f.Add(clip[:2048], uint16(0), uint8(1))
	f.Add(annexB(4, testSPS(), testPPS, testSEI, slice(NALIDR, 0, 1), slice(NALIDR, 3, 1), slice(NALSlice, 0, 0, 0, 0)), uint16(0), uint8(3))
	f.Add(annexB(3, testAUD, slice(NALSlice, 0, bytes.Repeat([]byte{9}, 100)...), testAUD, slice(NALSlice, 0)), uint16(64), uint8(5))
	f.Add([]byte{0, 0, 0, 1, 0xe5, 0x88, 0, 0, 1, 0x65, 0x88, 0, 0, 0, 0, 0x41, 0x9a}, uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, maxAU16 uint16, chunk uint8) {
		maxAU := int(maxAU16)
		if maxAU == 0 {
			maxAU = DefaultMaxAU
		}
		whole := runSplitter(t, bytes.NewReader(data), maxAU)
		sizes := make([]int, int(chunk%8)+1)
		for i := range sizes {
			sizes[i] = i + 1
		}
		chunked := runSplitter(t, &chunkReader{data: data, sizes: sizes}, maxAU)

		for _, au := range whole.aus {
			checkAccessUnit(t, au, maxAU)
		}
		if !slices.Equal(whole.errs, chunked.errs) {
			t.Fatalf("errors depend on chunking: %q vs %q", whole.errs, chunked.errs)
		}
		if len(whole.aus) != len(chunked.aus) {
			t.Fatalf("%d access units whole, %d chunked", len(whole.aus), len(chunked.aus))
		}
		for i := range whole.aus {
			w, c := whole.aus[i], chunked.aus[i]
			if !slices.EqualFunc(w.NALs, c.NALs, bytes.Equal) || w.Keyframe != c.Keyframe || w.HasParams != c.HasParams {
				t.Fatalf("access unit %d depends on chunking", i)
			}
		}
		if len(whole.errs) == 0 && !slices.EqualFunc(flatten(whole.aus), refNALs(data), bytes.Equal) {
			t.Fatalf("NAL units differ from a whole-buffer split")
		}
	})
}

// FuzzParseSPS parses arbitrary bytes as an SPS. It must not panic, and whatever it accepts
// must describe a picture some level allows.
func FuzzParseSPS(f *testing.F) {
	f.Add(testSPS())
	f.Add(buildSPS(spsFields{profile: 100, level: 40, chroma: 1, scaling: [][]int64{fullList(16), nil, {-8}}, pocType: 1, pocCycle: []int64{1, -1}, widthMbs: 120, heightMapUnits: 34, crop: [4]uint64{0, 0, 0, 4}, timing: [2]uint64{1001, 60000}}))
	f.Add(buildSPS(spsFields{profile: 244, chroma: 3, scaling: [][]int64{fullList(16)}, widthMbs: 2, heightMapUnits: 2, frameMbsOnly: true, aspectExtended: true}))
	f.Fuzz(func(t *testing.T, nal []byte) {
		s, err := ParseSPS(nal)
		if err != nil {
			if s != nil {
				t.Fatal("SPS returned with an error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			if !strings.HasPrefix(err.Error(), "h264: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		const maxSide = 16 * maxDimensionInMbs
		if s.Width <= 0 || s.Height <= 0 || s.Width > maxSide || s.Height > maxSide {
			t.Fatalf("accepted a %dx%d picture", s.Width, s.Height)
		}
		if s.ID > 31 || s.ChromaFormatIDC > 3 || s.BitDepthLuma > 14 || s.BitDepthChroma > 14 {
			t.Fatalf("accepted out-of-range fields %+v", s)
		}
		if len(s.ProfileLevelID()) != 6 || len(s.SDPProfileLevelID()) != 6 {
			t.Fatalf("bad profile-level-id %q %q", s.ProfileLevelID(), s.SDPProfileLevelID())
		}
		if d, ok := s.FrameInterval(); ok && (d < 0 || !s.TimingInfoPresent) {
			t.Fatalf("bad frame interval %v", d)
		}
	})
}
