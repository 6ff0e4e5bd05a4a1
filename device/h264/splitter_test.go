package h264

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSplitterClip(t *testing.T) {
	clip := readClip(t)
	aus, errs := splitAll(t, bytes.NewReader(clip), 0)
	if len(errs) > 0 {
		t.Fatalf("errors splitting the clip: %v", errs)
	}
	if len(aus) != clipFrames {
		t.Fatalf("got %d access units, want %d", len(aus), clipFrames)
	}
	for i, au := range aus {
		wantKey := i%clipGOP == 0
		if au.Keyframe != wantKey || au.HasParams != wantKey {
			t.Errorf("access unit %d: Keyframe %v HasParams %v, want both %v", i, au.Keyframe, au.HasParams, wantKey)
		}
		slices := 0
		for _, nal := range au.NALs {
			if TypeOf(nal).VCL() {
				slices++
			}
		}
		if slices != 1 {
			t.Errorf("access unit %d has %d slices, want 1", i, slices)
		}
	}
	if !slices.EqualFunc(flatten(aus), refNALs(clip), bytes.Equal) {
		t.Errorf("NAL units differ from a whole-buffer split")
	}
}

func TestSplitterChunkingDoesNotMatter(t *testing.T) {
	clip := readClip(t)
	want, _ := splitAll(t, bytes.NewReader(clip), 0)
	readers := map[string]func() io.Reader{
		"one byte at a time":        func() io.Reader { return iotest.OneByteReader(bytes.NewReader(clip)) },
		"half reads":                func() io.Reader { return iotest.HalfReader(bytes.NewReader(clip)) },
		"data with EOF":             func() io.Reader { return iotest.DataErrReader(bytes.NewReader(clip)) },
		"reads of 1, 2, 3, 5, 4093": func() io.Reader { return &chunkReader{data: clip, sizes: []int{1, 2, 3, 5, 4093}} },
		"reads of 2":                func() io.Reader { return &chunkReader{data: clip, sizes: []int{2}} },
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			got, errs := splitAll(t, mk(), 0)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d access units, want %d", len(got), len(want))
			}
			for i := range got {
				if !slices.EqualFunc(got[i].NALs, want[i].NALs, bytes.Equal) ||
					got[i].Keyframe != want[i].Keyframe || got[i].HasParams != want[i].HasParams {
					t.Fatalf("access unit %d differs", i)
				}
			}
		})
	}
}

func TestSplitterGrouping(t *testing.T) {
	sps := testSPS()
	idr0 := slice(NALIDR, 0, 1, 2, 3)
	idr1 := slice(NALIDR, 10, 4, 5, 6)
	p0 := slice(NALSlice, 0, 7, 8)
	p1 := slice(NALSlice, 10, 9)
	p2 := slice(NALSlice, 0, 0, 0, 0, 0) // zeros in the payload get escaped
	end := []byte{0x0b}

	tests := []struct {
		name string
		in   []byte
		want [][][]byte // NAL units of each access unit
	}{{
		name: "parameter sets and SEI join the IDR that follows them",
		in:   annexB(4, sps, testPPS, testSEI, idr0, p0),
		want: [][][]byte{{sps, testPPS, testSEI, idr0}, {p0}},
	}, {
		name: "three-byte start codes split the same way",
		in:   annexB(3, sps, testPPS, idr0, p0, p2),
		want: [][][]byte{{sps, testPPS, idr0}, {p0}, {p2}},
	}, {
		name: "slices with first_mb_in_slice above zero stay in their picture",
		in:   annexB(4, sps, testPPS, idr0, idr1, p0, p1, p2),
		want: [][][]byte{{sps, testPPS, idr0, idr1}, {p0, p1}, {p2}},
	}, {
		name: "access unit delimiters start access units",
		in:   annexB(4, testAUD, sps, testPPS, idr0, testAUD, p0, p1, testAUD, p2),
		want: [][][]byte{{testAUD, sps, testPPS, idr0}, {testAUD, p0, p1}, {testAUD, p2}},
	}, {
		name: "an SEI after a picture starts the next access unit",
		in:   annexB(4, idr0, testSEI, p0, testSEI, p2),
		want: [][][]byte{{idr0}, {testSEI, p0}, {testSEI, p2}},
	}, {
		name: "end of stream NAL unit stays with its picture",
		in:   annexB(4, idr0, end),
		want: [][][]byte{{idr0, end}},
	}, {
		name: "parameter sets at the end of the stream are flushed",
		in:   annexB(4, idr0, sps, testPPS),
		want: [][][]byte{{idr0}, {sps, testPPS}},
	}, {
		name: "bytes before the first start code are dropped",
		in:   append([]byte{0xde, 0xad, 0x00, 0xbe}, annexB(4, idr0, p0)...),
		want: [][][]byte{{idr0}, {p0}},
	}, {
		name: "trailing zeros and empty NAL units are dropped",
		in: slices.Concat([]byte{0, 0, 0, 0, 0, 1}, idr0, []byte{0, 0, 0, 0, 0, 0},
			[]byte{0, 0, 1, 0, 0, 1}, p0, []byte{0, 0, 0, 0}),
		want: [][][]byte{{idr0}, {p0}},
	}, {
		name: "a stream without start codes has no access units",
		in:   []byte{1, 2, 3, 4, 5},
		want: nil,
	}, {
		name: "an empty stream has no access units",
		in:   nil,
		want: nil,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, sizes := range [][]int{{1 << 20}, {1}, {2, 3}} {
				aus, errs := splitAll(t, &chunkReader{data: tt.in, sizes: sizes}, 0)
				if len(errs) > 0 {
					t.Fatalf("reads of %v: errors %v", sizes, errs)
				}
				var got [][][]byte
				for _, au := range aus {
					got = append(got, au.NALs)
				}
				if !slices.EqualFunc(got, tt.want, func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }) {
					t.Fatalf("reads of %v:\n got %x\nwant %x", sizes, got, tt.want)
				}
			}
		})
	}
}

func TestSplitterFlags(t *testing.T) {
	in := annexB(4, testSPS(), testPPS, slice(NALIDR, 0), testSPS(), slice(NALIDR, 0), slice(NALSlice, 0))
	aus, _ := splitAll(t, bytes.NewReader(in), 0)
	want := []AccessUnit{{Keyframe: true, HasParams: true}, {Keyframe: true}, {}}
	if len(aus) != len(want) {
		t.Fatalf("got %d access units, want %d", len(aus), len(want))
	}
	for i := range want {
		if aus[i].Keyframe != want[i].Keyframe || aus[i].HasParams != want[i].HasParams {
			t.Errorf("access unit %d: Keyframe %v HasParams %v, want %v %v",
				i, aus[i].Keyframe, aus[i].HasParams, want[i].Keyframe, want[i].HasParams)
		}
		if !aus[i].HasPicture() {
			t.Errorf("access unit %d: HasPicture false", i)
		}
	}
}

func TestSplitterAccessUnitOverCap(t *testing.T) {
	big := slice(NALSlice, 0, bytes.Repeat([]byte{0xab}, 300)...)
	small := slice(NALSlice, 0, 1)
	in := annexB(4, testSPS(), testPPS, slice(NALIDR, 0, 1), big, small, small)
	for _, sizes := range [][]int{{1 << 20}, {1}, {7}} {
		s := NewSplitter(&chunkReader{data: in, sizes: sizes}, 200)
		var got []string
		for {
			au, err := s.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			var se *SizeError
			switch {
			case errors.As(err, &se):
				if se.Unit != "NAL unit" || se.Size <= 200 || se.Limit != 200 {
					t.Errorf("reads of %v: SizeError %+v", sizes, se)
				}
				if !errors.Is(err, ErrTooLarge) || !strings.HasPrefix(err.Error(), "h264: NAL unit of at least") {
					t.Errorf("reads of %v: error %q does not wrap ErrTooLarge with the size", sizes, err)
				}
				got = append(got, "too large")
			case err != nil:
				t.Fatalf("reads of %v: %v", sizes, err)
			default:
				got = append(got, strings.Repeat("k", btoi(au.Keyframe))+strings.Repeat("p", len(au.NALs)))
			}
		}
		want := []string{"kppp", "too large", "p", "p"}
		if !slices.Equal(got, want) {
			t.Errorf("reads of %v: got %q, want %q", sizes, got, want)
		}
		if cap(s.data) > 200 {
			t.Errorf("reads of %v: buffer grew to %d bytes, over the cap", sizes, cap(s.data))
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestSplitterAccessUnitOfManyNALsOverCap(t *testing.T) {
	part := func(mb uint64) []byte { return slice(NALSlice, mb, bytes.Repeat([]byte{0x11}, 50)...) }
	in := annexB(3, part(0), part(1), part(2), part(3), part(4), part(0), part(1))
	aus, errs := splitAll(t, bytes.NewReader(in), 200)
	if len(errs) != 1 {
		t.Fatalf("got errors %v, want one", errs)
	}
	var se *SizeError
	if !errors.As(errs[0], &se) || se.Unit != "access unit" || se.Size <= 200 {
		t.Errorf("got %v, want an access unit SizeError", errs[0])
	}
	if len(aus) != 1 || len(aus[0].NALs) != 2 {
		t.Errorf("got %d access units, want the last one with 2 slices", len(aus))
	}
}

// endless yields n bytes of a repeated pattern, without holding them.
type endless struct {
	pattern []byte
	n       int
	off     int
}

func (r *endless) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = r.pattern[r.off%len(r.pattern)]
		r.off++
	}
	r.n -= k
	return k, nil
}

func TestSplitterHostileStreamsStayBounded(t *testing.T) {
	const maxAU = 4096
	tests := []struct {
		name     string
		r        io.Reader
		wantErrs int
	}{
		{"a NAL unit that never ends", io.MultiReader(bytes.NewReader(annexB(4, slice(NALIDR, 0))), &endless{pattern: []byte{0x42}, n: 1 << 20}), 1},
		{"zeros without end", io.MultiReader(bytes.NewReader(annexB(4, slice(NALIDR, 0))), &endless{pattern: []byte{0}, n: 1 << 20}), 0},
		{"zeros then content", io.MultiReader(bytes.NewReader(annexB(4, slice(NALIDR, 0))), &endless{pattern: []byte{0}, n: 1 << 20}, bytes.NewReader([]byte{5})), 1},
		{"start codes without end", &endless{pattern: []byte{0, 0, 1}, n: 1 << 20}, 0},
		{"bytes without start codes", &endless{pattern: []byte{1, 2, 3}, n: 1 << 20}, 0},
		{"pictures without end", &endless{pattern: annexB(3, slice(NALSlice, 0, 1)), n: 1 << 20}, 0},
		{"one picture of endless slices", io.MultiReader(bytes.NewReader(annexB(3, slice(NALSlice, 0, 1))), &endless{pattern: annexB(3, slice(NALSlice, 1, 1)), n: 1 << 20}), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSplitter(tt.r, maxAU)
			errs := 0
			for {
				_, err := s.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if errors.Is(err, ErrTooLarge) {
					errs++
				} else if err != nil {
					t.Fatal(err)
				}
				if cap(s.data) > maxAU {
					t.Fatalf("buffer grew to %d bytes", cap(s.data))
				}
			}
			if errs != tt.wantErrs {
				t.Errorf("got %d size errors, want %d", errs, tt.wantErrs)
			}
		})
	}
}

func TestSplitterForbiddenBit(t *testing.T) {
	bad := slice(NALSlice, 0, 1)
	bad[0] |= 0x80
	p := slice(NALSlice, 0, 2)
	in := annexB(4, slice(NALIDR, 0), bad, slice(NALSlice, 5), p)
	aus, errs := splitAll(t, bytes.NewReader(in), 0)
	if len(errs) != 1 || !errors.Is(errs[0], ErrMalformed) {
		t.Fatalf("got errors %v, want one ErrMalformed", errs)
	}
	if len(aus) != 2 || !bytes.Equal(aus[1].NALs[0], p) {
		t.Errorf("got %d access units, want the IDR and the slice after the bad picture", len(aus))
	}
}

func TestSplitterReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	in := annexB(4, slice(NALIDR, 0), slice(NALSlice, 0))
	s := NewSplitter(io.MultiReader(bytes.NewReader(in), iotest.ErrReader(boom)), 0)
	if _, err := s.Next(); err != nil {
		t.Fatalf("first access unit: %v", err)
	}
	for range 2 {
		if _, err := s.Next(); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the reader's error every time", err)
		}
	}

	s = NewSplitter(iotest.DataErrReader(bytes.NewReader(in)), 0)
	for range 2 {
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := s.Next(); err != io.EOF {
			t.Fatalf("got %v, want io.EOF every time", err)
		}
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestSplitterStuckReader(t *testing.T) {
	if _, err := NewSplitter(emptyReader{}, 0).Next(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("got %v, want io.ErrNoProgress", err)
	}
}

// TestSplitterMultiSliceEncoder splits a real multi-slice stream from ffmpeg, when ffmpeg with
// libx264 is installed.
func TestSplitterMultiSliceEncoder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ffmpeg")
	}
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not installed")
	}
	const frames = 20
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-frames:v", "20",
		"-c:v", "libx264", "-profile:v", "baseline", "-g", "10", "-x264-params", "slices=4:aud=1",
		"-f", "h264", "-").Output()
	if err != nil {
		t.Skipf("ffmpeg with libx264 failed: %v", err)
	}
	aus, errs := splitAll(t, iotest.HalfReader(bytes.NewReader(out)), 0)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(aus) != frames {
		t.Fatalf("got %d access units, want %d", len(aus), frames)
	}
	for i, au := range aus {
		n := 0
		for _, nal := range au.NALs {
			if TypeOf(nal).VCL() {
				n++
			}
		}
		if n != 4 || TypeOf(au.NALs[0]) != NALAUD || au.Keyframe != (i%10 == 0) {
			t.Errorf("access unit %d: %d slices, first NAL type %d, keyframe %v", i, n, TypeOf(au.NALs[0]), au.Keyframe)
		}
	}
}

func TestAppendAnnexBRoundTrip(t *testing.T) {
	clip := readClip(t)
	aus, _ := splitAll(t, bytes.NewReader(clip), 0)
	var b []byte
	for _, au := range aus {
		b = AppendAnnexB(b, au)
	}
	again, _ := splitAll(t, bytes.NewReader(b), 0)
	if !slices.EqualFunc(flatten(again), flatten(aus), bytes.Equal) || len(again) != len(aus) {
		t.Fatal("re-split of AppendAnnexB output differs")
	}
}

func TestSplitterReset(t *testing.T) {
	in := annexB(4, slice(NALIDR, 0), slice(NALSlice, 0))
	s := NewSplitter(bytes.NewReader(in[:len(in)-2]), 0)
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	s.Reset(bytes.NewReader(in))
	var n int
	for {
		au, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if au.Size() != len(au.NALs[0]) || (n == 1 && !bytes.Equal(au.NALs[0], slice(NALSlice, 0))) {
			t.Fatalf("access unit %d carries state from before Reset", n)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("got %d access units after Reset, want 2", n)
	}
}
