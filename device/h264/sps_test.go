package h264

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The SPS vectors below come from ffmpeg 6 with libx264; the expected values are what
// ffprobe reports for the same streams.
func TestParseSPSEncoderVectors(t *testing.T) {
	tests := []struct {
		name            string
		hex             string
		plid            string
		width, height   int
		chroma          uint32
		depth           uint32
		frameMbsOnly    bool
		interval        time.Duration
		constrainedBase bool
	}{
		{"constrained baseline 320x240 at 30 fps, the test clip", "6742c00dd90141fb0110000003001000000303c0f142a480",
			"42c00d", 320, 240, 1, 8, true, time.Second / 30, true},
		{"1080p, cropped from 1088 rows", "6742c028da01e0089f970110000003001000000303c0f1832a",
			"42c028", 1920, 1080, 1, 8, true, time.Second / 30, true},
		{"322x242, cropped on both axes", "6742c00dda05421e2223011000000300100000030300f142aa",
			"42c00d", 322, 242, 1, 8, true, time.Second / 24, true},
		{"high profile 352x288 at 25 fps", "6764000dacd9416096c044000003000400000300c83c50a658",
			"64000d", 352, 288, 1, 8, true, time.Second / 25, false},
		{"main profile interlaced 720x576", "674d401ef405a126c044000003000400000300c87c50aa80",
			"4d401e", 720, 576, 1, 8, false, time.Second / 25, false},
		{"monochrome 160x120", "6764000bf2d0508fc4e02d90000003001000000303c0f142aa",
			"64000b", 160, 120, 0, 8, true, time.Second / 30, false},
		{"4:2:2 10-bit 640x360 at 60 fps", "677a001fb6cb405017fc4e0220000003002000000f01e30654",
			"7a001f", 640, 360, 2, 10, true, time.Second / 60, false},
		{"4:4:4 176x144 at 15 fps", "67f4000a919682c4ec0440000003004000000783c489a8",
			"f4000a", 176, 144, 3, 8, true, time.Second / 15, false},
		{"4:4:4 1280x720 at 50 fps", "67f40020919b280a00b76022000003000200000300c81e30632c",
			"f40020", 1280, 720, 3, 8, true, time.Second / 50, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSPS(mustHex(t, strings.ReplaceAll(tt.hex, " ", "")))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.ProfileLevelID(); got != tt.plid {
				t.Errorf("ProfileLevelID %q, want %q", got, tt.plid)
			}
			if s.Width != tt.width || s.Height != tt.height {
				t.Errorf("size %dx%d, want %dx%d", s.Width, s.Height, tt.width, tt.height)
			}
			if s.ChromaFormatIDC != tt.chroma || s.BitDepthLuma != tt.depth || s.FrameMbsOnly != tt.frameMbsOnly {
				t.Errorf("chroma %d depth %d frame_mbs_only %v, want %d %d %v",
					s.ChromaFormatIDC, s.BitDepthLuma, s.FrameMbsOnly, tt.chroma, tt.depth, tt.frameMbsOnly)
			}
			if d, ok := s.FrameInterval(); !ok || d != tt.interval {
				t.Errorf("FrameInterval %v %v, want %v", d, ok, tt.interval)
			}
			if s.ConstrainedBaseline() != tt.constrainedBase {
				t.Errorf("ConstrainedBaseline %v, want %v", s.ConstrainedBaseline(), tt.constrainedBase)
			}
		})
	}
}

// spsFields drives buildSPS, which writes an SPS with the syntax of §7.3.2.1.1 so that tests
// can reach fields no encoder at hand writes: scaling lists in the SPS, picture order count
// type 1, 4:2:2 interlaced cropping.
type spsFields struct {
	profile, constraints, level uint8
	chroma                      uint64
	scaling                     [][]int64 // delta_scale values per list; nil entries are absent lists
	pocType                     uint64
	pocCycle                    []int64
	widthMbs, heightMapUnits    uint64
	frameMbsOnly                bool
	crop                        [4]uint64 // left, right, top, bottom
	timing                      [2]uint64 // num_units_in_tick, time_scale; zero for none
	aspectExtended              bool
}

func buildSPS(f spsFields) []byte {
	var w bitWriter
	w.u(8, 0x67)
	w.u(8, uint64(f.profile))
	w.u(8, uint64(f.constraints))
	w.u(8, uint64(f.level))
	w.ue(3) // seq_parameter_set_id
	if highProfile(f.profile) {
		w.ue(f.chroma)
		if f.chroma == 3 {
			w.flag(false)
		}
		w.ue(2) // bit_depth_luma_minus8
		w.ue(2) // bit_depth_chroma_minus8
		w.flag(false)
		w.flag(f.scaling != nil)
		if f.scaling != nil {
			n := 8
			if f.chroma == 3 {
				n = 12
			}
			for i := range n {
				var deltas []int64
				if i < len(f.scaling) {
					deltas = f.scaling[i]
				}
				w.flag(deltas != nil)
				for _, d := range deltas {
					w.se(d)
				}
			}
		}
	}
	w.ue(4) // log2_max_frame_num_minus4
	w.ue(f.pocType)
	switch f.pocType {
	case 0:
		w.ue(2)
	case 1:
		w.flag(false)
		w.se(-3)
		w.se(7)
		w.ue(uint64(len(f.pocCycle)))
		for _, o := range f.pocCycle {
			w.se(o)
		}
	}
	w.ue(4) // max_num_ref_frames
	w.flag(false)
	w.ue(f.widthMbs - 1)
	w.ue(f.heightMapUnits - 1)
	w.flag(f.frameMbsOnly)
	if !f.frameMbsOnly {
		w.flag(true)
	}
	w.flag(true)
	w.flag(f.crop != [4]uint64{})
	if f.crop != [4]uint64{} {
		for _, c := range f.crop {
			w.ue(c)
		}
	}
	w.flag(true) // vui_parameters_present_flag
	w.flag(f.aspectExtended)
	if f.aspectExtended {
		w.u(8, 255)
		w.u(16, 4)
		w.u(16, 3)
	}
	w.flag(true) // overscan_info_present_flag
	w.flag(false)
	w.flag(true) // video_signal_type_present_flag
	w.u(3, 5)
	w.flag(false)
	w.flag(true)
	w.u(24, 0x010101)
	w.flag(true) // chroma_loc_info_present_flag
	w.ue(1)
	w.ue(1)
	w.flag(f.timing != [2]uint64{})
	if f.timing != [2]uint64{} {
		w.u(32, f.timing[0])
		w.u(32, f.timing[1])
		w.flag(true)
	}
	w.flag(false) // nal_hrd_parameters_present_flag
	w.flag(false) // vcl_hrd_parameters_present_flag
	w.flag(false) // pic_struct_present_flag
	w.flag(false) // bitstream_restriction_flag
	return escape(w.trailing())
}

// fullList returns delta_scale values giving a list of n explicit, changing entries.
func fullList(n int) []int64 {
	d := make([]int64, n)
	for i := range d {
		d[i] = int64(i%5) - 2
		if i == 0 {
			d[i] = 9
		}
	}
	return d
}

func TestParseSPSSyntax(t *testing.T) {
	lists8 := [][]int64{fullList(16), nil, fullList(16), {-8}, nil, fullList(16), fullList(64), {1, -9}}
	lists12 := append(append([][]int64{}, lists8...), fullList(64), nil, []int64{-8}, fullList(64))
	tests := []struct {
		name          string
		f             spsFields
		width, height int
		interval      time.Duration
	}{{
		name:  "high profile with scaling lists, some using the default (delta to zero)",
		f:     spsFields{profile: 100, level: 40, chroma: 1, scaling: lists8, widthMbs: 120, heightMapUnits: 68, frameMbsOnly: true, crop: [4]uint64{0, 0, 0, 4}, timing: [2]uint64{1001, 60000}},
		width: 1920, height: 1080, interval: 1001 * time.Second / 30000,
	}, {
		name:  "4:4:4 with twelve scaling lists",
		f:     spsFields{profile: 244, level: 40, chroma: 3, scaling: lists12, widthMbs: 20, heightMapUnits: 15, frameMbsOnly: true, crop: [4]uint64{1, 2, 3, 4}},
		width: 320 - 3, height: 240 - 7,
	}, {
		name:  "4:2:2 interlaced crops two rows per unit",
		f:     spsFields{profile: 122, level: 40, chroma: 2, widthMbs: 45, heightMapUnits: 18, frameMbsOnly: false, crop: [4]uint64{1, 1, 1, 1}},
		width: 720 - 4, height: 576 - 4,
	}, {
		name:  "4:2:0 interlaced crops four rows per unit",
		f:     spsFields{profile: 77, level: 40, widthMbs: 45, heightMapUnits: 18, frameMbsOnly: false, crop: [4]uint64{0, 0, 0, 2}},
		width: 720, height: 576 - 8,
	}, {
		name:  "picture order count type 1 with a cycle",
		f:     spsFields{profile: 66, constraints: 0xe0, level: 31, pocType: 1, pocCycle: []int64{2, -2, 100000, 0}, widthMbs: 40, heightMapUnits: 30, frameMbsOnly: true, aspectExtended: true},
		width: 640, height: 480,
	}, {
		name:  "an SPS whose zeros need emulation prevention",
		f:     spsFields{profile: 66, level: 10, widthMbs: 1, heightMapUnits: 1, frameMbsOnly: true, timing: [2]uint64{1, 50}},
		width: 16, height: 16, interval: time.Second / 25,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nal := buildSPS(tt.f)
			s, err := ParseSPS(nal)
			if err != nil {
				t.Fatalf("%v\nSPS %x", err, nal)
			}
			if s.Width != tt.width || s.Height != tt.height || s.ID != 3 {
				t.Errorf("size %dx%d id %d, want %dx%d id 3", s.Width, s.Height, s.ID, tt.width, tt.height)
			}
			d, ok := s.FrameInterval()
			if ok != (tt.interval != 0) || d != tt.interval {
				t.Errorf("FrameInterval %v %v, want %v", d, ok, tt.interval)
			}
		})
	}
}

func TestParseSPSRejects(t *testing.T) {
	good := buildSPS(spsFields{profile: 100, level: 40, chroma: 1, scaling: [][]int64{fullList(16)}, widthMbs: 20, heightMapUnits: 15, frameMbsOnly: true, timing: [2]uint64{1, 60}})
	if _, err := ParseSPS(good); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		nal  []byte
		want string
	}{
		{"not an SPS", append([]byte{0x68}, good[1:]...), "not an SPS"},
		{"forbidden bit", append([]byte{0xe7}, good[1:]...), "forbidden_zero_bit"},
		{"too short", good[:3], "too short"},
		{"too long", append(good, make([]byte, MaxSPSSize)...), "exceeds limit"},
		{"truncated in the VUI", good[:len(good)-6], "truncated"},
		{"chroma_format_idc 4", buildSPS(spsFields{profile: 100, chroma: 4, widthMbs: 1, heightMapUnits: 1, frameMbsOnly: true}), "chroma_format_idc 4"},
		{"delta_scale out of range", buildSPS(spsFields{profile: 100, chroma: 1, scaling: [][]int64{{200}}, widthMbs: 1, heightMapUnits: 1, frameMbsOnly: true}), "delta_scale"},
		{"pic_order_cnt_type 3", buildSPS(spsFields{profile: 66, pocType: 3, widthMbs: 1, heightMapUnits: 1, frameMbsOnly: true}), "pic_order_cnt_type"},
		{"too wide", buildSPS(spsFields{profile: 66, widthMbs: 1056, heightMapUnits: 1, frameMbsOnly: true}), "pic_width_in_mbs_minus1"},
		{"too many macroblocks", buildSPS(spsFields{profile: 66, widthMbs: 1000, heightMapUnits: 1000, frameMbsOnly: true}), "exceeds every level"},
		{"too tall once fields are counted", buildSPS(spsFields{profile: 66, widthMbs: 10, heightMapUnits: 600, frameMbsOnly: false}), "exceeds every level"},
		{"cropped to nothing", buildSPS(spsFields{profile: 66, widthMbs: 2, heightMapUnits: 2, frameMbsOnly: true, crop: [4]uint64{8, 8, 0, 0}}), "leaves no picture"},
		{"zero time_scale", buildSPS(spsFields{profile: 66, widthMbs: 2, heightMapUnits: 2, frameMbsOnly: true, timing: [2]uint64{1, 0}}), "time_scale 0"},
		{"Exp-Golomb code too long", []byte{0x67, 66, 0, 30, 0, 0, 0, 0, 0, 1}, "bad Exp-Golomb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSPS(tt.nal)
			if err == nil {
				t.Fatal("parsed")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Errorf("error %v wraps neither ErrMalformed nor ErrTooLarge", err)
			}
			if !strings.HasPrefix(err.Error(), "h264: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestParseSPSEveryTruncation(t *testing.T) {
	nal := buildSPS(spsFields{profile: 100, level: 40, chroma: 1, scaling: [][]int64{fullList(16)}, widthMbs: 20, heightMapUnits: 15, frameMbsOnly: true, timing: [2]uint64{1, 60}})
	for n := range len(nal) - 2 {
		if _, err := ParseSPS(nal[:n]); err == nil {
			t.Errorf("SPS cut to %d of %d bytes parsed", n, len(nal))
		}
	}
}

func TestProfileLevelIDs(t *testing.T) {
	tests := []struct {
		profile, constraints, level uint8
		plid, sdp                   string
	}{
		{66, 0xc0, 31, "42c01f", "42e01f"},
		{66, 0xe0, 31, "42e01f", "42e01f"},
		{66, 0x40, 13, "42400d", "42e00d"},
		{66, 0xd0, 11, "42d00b", "42f00b"},
		{66, 0x00, 31, "42001f", "42001f"},
		{77, 0x40, 40, "4d4028", "4d4028"},
		{100, 0x00, 51, "640033", "640033"},
	}
	for _, tt := range tests {
		s := &SPS{ProfileIDC: tt.profile, Constraints: tt.constraints, LevelIDC: tt.level}
		if got := s.ProfileLevelID(); got != tt.plid {
			t.Errorf("ProfileLevelID(%d, %#x, %d) = %q, want %q", tt.profile, tt.constraints, tt.level, got, tt.plid)
		}
		if got := s.SDPProfileLevelID(); got != tt.sdp {
			t.Errorf("SDPProfileLevelID(%d, %#x, %d) = %q, want %q", tt.profile, tt.constraints, tt.level, got, tt.sdp)
		}
	}
}

func TestBitReaderSkipsEmulationPrevention(t *testing.T) {
	r := newBitReader([]byte{0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0xff})
	if got := r.bits(32); got != 0x00000100 {
		t.Errorf("bits(32) = %#x, want 0x100", got)
	}
	if got := r.bits(24); got != 0x0000ff {
		t.Errorf("bits(24) = %#x, want 0xff", got)
	}
	if r.bits(1); !r.short {
		t.Error("read past the end not flagged")
	}
}

func TestFirstMBInSlice(t *testing.T) {
	for _, mb := range []uint64{0, 1, 2, 7, 8, 1000, 8159, 139263} {
		nal := slice(NALSlice, mb)
		v, ok, done := firstMBInSlice(nal[:min(len(nal), classifyLen)])
		if !ok || !done || uint64(v) != mb {
			t.Errorf("first_mb_in_slice %d: got %d %v %v", mb, v, ok, done)
		}
	}
	if _, _, done := firstMBInSlice([]byte{0x65, 0x00}); done {
		t.Error("a code cut short reported done")
	}
	if _, ok, done := firstMBInSlice(bytes.Repeat([]byte{0}, 16)); ok || !done {
		t.Error("an over-long code not rejected")
	}
}
