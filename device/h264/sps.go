package h264

import (
	"fmt"
	"time"
)

// MaxSPSSize caps the NAL unit ParseSPS accepts. A real SPS is tens of bytes; the largest
// legal one (full scaling lists, a 255-entry picture order count cycle and VUI with HRD
// parameters) stays well below this.
const MaxSPSSize = 4096

// Picture size bounds from H.264 Annex A: no level allows more than 139264 macroblocks per
// frame (level 6.2, Table A-1), and A.3.1 item f / A.3.2 item g bound each dimension to
// sqrt(8 * MaxFS) = 1055 macroblocks.
const (
	maxFrameSizeInMbs = 139264
	maxDimensionInMbs = 1055
)

// SPS holds the fields of a sequence parameter set (H.264 §7.3.2.1.1) that the agent needs:
// the profile and level for SDP, the picture size, and the VUI frame timing if present.
type SPS struct {
	// ProfileIDC is profile_idc: 66 baseline, 77 main, 88 extended, 100 high, and so on.
	ProfileIDC uint8
	// Constraints is the byte after profile_idc: constraint_set0_flag in the most significant
	// bit down to constraint_set5_flag, then two reserved zero bits. It is the middle byte of
	// profile-level-id (RFC 6184 §8.1, profile-iop).
	Constraints uint8
	// LevelIDC is level_idc, ten times the level number (31 is level 3.1).
	LevelIDC uint8
	// ID is seq_parameter_set_id, 0–31.
	ID uint32

	// ChromaFormatIDC is chroma_format_idc: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
	// It is 1 for profiles that do not code it.
	ChromaFormatIDC uint32
	// SeparateColourPlane is separate_colour_plane_flag (4:4:4 only).
	SeparateColourPlane bool
	// BitDepthLuma and BitDepthChroma are the sample bit depths, 8–14.
	BitDepthLuma, BitDepthChroma uint32
	// FrameMbsOnly is frame_mbs_only_flag: false when the stream may hold field pictures.
	FrameMbsOnly bool
	// MaxNumRefFrames is max_num_ref_frames.
	MaxNumRefFrames uint32

	// Width and Height are the displayed picture size in luma samples, after frame cropping.
	Width, Height int

	// TimingInfoPresent reports that the VUI carries timing_info. When it does,
	// NumUnitsInTick and TimeScale give the clock tick, and FixedFrameRate says whether the
	// frame rate is constant.
	TimingInfoPresent bool
	NumUnitsInTick    uint32
	TimeScale         uint32
	FixedFrameRate    bool
}

// constraint flag masks in SPS.Constraints.
const (
	constraintSet0 = 0x80
	constraintSet1 = 0x40
	constraintSet2 = 0x20
	constraintSet3 = 0x10
)

// ProfileLevelID returns the profile-level-id the stream carries, as RFC 6184 §8.1 writes it:
// profile_idc, the constraint byte and level_idc in lower-case hex, for example "42c01f" for
// x264's constrained baseline at level 3.1.
func (s *SPS) ProfileLevelID() string {
	return fmt.Sprintf("%02x%02x%02x", s.ProfileIDC, s.Constraints, s.LevelIDC)
}

// ConstrainedBaseline reports whether the stream is Constrained Baseline: profile_idc 66
// with constraint_set1_flag (RFC 6184 §8.1, Table 5), the profile every WebRTC browser
// decodes. Encoders write it as 42c0xx (x264, ffmpeg), 42e0xx (libwebrtc, Chrome) or 4240xx.
func (s *SPS) ConstrainedBaseline() bool {
	return s.ProfileIDC == 66 && s.Constraints&constraintSet1 != 0
}

// SDPProfileLevelID returns the profile-level-id to put in an SDP offer or answer for this
// stream. For Constrained Baseline it returns the canonical form browsers offer, "42e0"
// followed by the level ("42e01f"), or "42f00b" for level 1b, because some SDP stacks (pion's
// codec matching among them) compare the first two bytes of profile-level-id literally and
// would not match x264's equivalent "42c0". For any other profile it returns ProfileLevelID.
func (s *SPS) SDPProfileLevelID() string {
	if !s.ConstrainedBaseline() {
		return s.ProfileLevelID()
	}
	// Level 1b in the Baseline family is level_idc 11 with constraint_set3_flag (§A.3.1).
	if s.LevelIDC == 11 && s.Constraints&constraintSet3 != 0 {
		return "42f00b"
	}
	return fmt.Sprintf("42e0%02x", s.LevelIDC)
}

// FrameInterval returns the time between frames given by the VUI timing, 2·num_units_in_tick
// / time_scale (H.264 §E.2.1, with two clock ticks per frame as x264, ffmpeg and camera
// encoders write it). ok is false when the SPS has no timing or the interval is outside
// 1 ms to 10 s.
func (s *SPS) FrameInterval() (d time.Duration, ok bool) {
	if !s.TimingInfoPresent || s.NumUnitsInTick == 0 || s.TimeScale == 0 {
		return 0, false
	}
	d = time.Duration(2 * uint64(s.NumUnitsInTick) * uint64(time.Second) / uint64(s.TimeScale))
	if d < time.Millisecond || d > 10*time.Second {
		return 0, false
	}
	return d, true
}

// ParseSPS parses a sequence parameter set NAL unit, given with its one-byte header and
// without start code. It removes emulation prevention bytes, parses the fields up to and
// including the VUI timing information, and checks each value against its range in the
// standard. Errors wrap ErrMalformed or ErrTooLarge.
func ParseSPS(nal []byte) (*SPS, error) {
	if len(nal) > MaxSPSSize {
		return nil, fmt.Errorf("%w: SPS of %d bytes exceeds limit of %d bytes", ErrTooLarge, len(nal), MaxSPSSize)
	}
	if len(nal) < 4 {
		return nil, malformed("SPS of %d bytes is too short", len(nal))
	}
	if nal[0]&0x80 != 0 {
		return nil, malformed("SPS with forbidden_zero_bit set")
	}
	if t := TypeOf(nal); t != NALSPS {
		return nil, malformed("NAL unit type %d is not an SPS", t)
	}
	p := spsParser{r: newBitReader(nal[1:])}
	s := p.parse()
	if p.err != nil {
		return nil, p.err
	}
	return s, nil
}

// spsParser keeps the first error so the field-by-field code reads straight through.
type spsParser struct {
	r   *bitReader
	err error
}

func (p *spsParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = malformed("SPS: "+format, args...)
	}
}

// u reads u(n).
func (p *spsParser) u(n int, name string) uint32 {
	v := p.r.bits(n)
	if p.r.short {
		p.fail("truncated at %s", name)
	}
	return v
}

// flag reads u(1).
func (p *spsParser) flag(name string) bool { return p.u(1, name) == 1 }

// ue reads ue(v) and checks it is at most max.
func (p *spsParser) ue(name string, max uint32) uint32 {
	v, ok := p.r.ue()
	switch {
	case !ok && p.r.short:
		p.fail("truncated at %s", name)
	case !ok:
		p.fail("bad Exp-Golomb code for %s", name)
	case v > max:
		p.fail("%s %d out of range 0..%d", name, v, max)
	}
	return v
}

// se reads se(v) and checks it is within [lo, hi].
func (p *spsParser) se(name string, lo, hi int32) int32 {
	v, ok := p.r.se()
	switch {
	case !ok && p.r.short:
		p.fail("truncated at %s", name)
	case !ok:
		p.fail("bad Exp-Golomb code for %s", name)
	case v < lo || v > hi:
		p.fail("%s %d out of range %d..%d", name, v, lo, hi)
	}
	return v
}

// highProfile reports whether profile_idc codes chroma_format_idc, bit depths and scaling
// lists in the SPS (the condition in §7.3.2.1.1).
func highProfile(profileIDC uint8) bool {
	switch profileIDC {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		return true
	}
	return false
}

// parse follows seq_parameter_set_data() in §7.3.2.1.1 and vui_parameters() in §E.1.1 as far
// as timing_info. Range limits come from the semantics in §7.4.2.1.1 and §E.2.1.
func (p *spsParser) parse() *SPS {
	s := &SPS{ChromaFormatIDC: 1, BitDepthLuma: 8, BitDepthChroma: 8}
	s.ProfileIDC = uint8(p.u(8, "profile_idc"))
	s.Constraints = uint8(p.u(8, "constraint flags"))
	s.LevelIDC = uint8(p.u(8, "level_idc"))
	s.ID = p.ue("seq_parameter_set_id", 31)

	if highProfile(s.ProfileIDC) {
		s.ChromaFormatIDC = p.ue("chroma_format_idc", 3)
		if s.ChromaFormatIDC == 3 {
			s.SeparateColourPlane = p.flag("separate_colour_plane_flag")
		}
		s.BitDepthLuma = 8 + p.ue("bit_depth_luma_minus8", 6)
		s.BitDepthChroma = 8 + p.ue("bit_depth_chroma_minus8", 6)
		p.flag("qpprime_y_zero_transform_bypass_flag")
		if p.flag("seq_scaling_matrix_present_flag") {
			n := 8
			if s.ChromaFormatIDC == 3 {
				n = 12
			}
			for i := range n {
				if p.flag("seq_scaling_list_present_flag") {
					size := 16
					if i >= 6 {
						size = 64
					}
					p.scalingList(size)
				}
			}
		}
	}

	p.ue("log2_max_frame_num_minus4", 12)
	switch pocType := p.ue("pic_order_cnt_type", 2); pocType {
	case 0:
		p.ue("log2_max_pic_order_cnt_lsb_minus4", 12)
	case 1:
		const lim = 1<<31 - 1
		p.flag("delta_pic_order_always_zero_flag")
		p.se("offset_for_non_ref_pic", -lim, lim)
		p.se("offset_for_top_to_bottom_field", -lim, lim)
		n := p.ue("num_ref_frames_in_pic_order_cnt_cycle", 255)
		for range n {
			p.se("offset_for_ref_frame", -lim, lim)
			if p.err != nil {
				break
			}
		}
	}
	s.MaxNumRefFrames = p.ue("max_num_ref_frames", 16)
	p.flag("gaps_in_frame_num_value_allowed_flag")
	widthMbs := p.ue("pic_width_in_mbs_minus1", maxDimensionInMbs-1) + 1
	heightMapUnits := p.ue("pic_height_in_map_units_minus1", maxDimensionInMbs-1) + 1
	s.FrameMbsOnly = p.flag("frame_mbs_only_flag")
	if !s.FrameMbsOnly {
		p.flag("mb_adaptive_frame_field_flag")
	}
	p.flag("direct_8x8_inference_flag")
	var cropLeft, cropRight, cropTop, cropBottom uint32
	if p.flag("frame_cropping_flag") {
		const lim = 8 * maxDimensionInMbs // larger than any picture; checked below
		cropLeft = p.ue("frame_crop_left_offset", lim)
		cropRight = p.ue("frame_crop_right_offset", lim)
		cropTop = p.ue("frame_crop_top_offset", lim)
		cropBottom = p.ue("frame_crop_bottom_offset", lim)
	}
	if p.err != nil {
		return nil
	}

	// Picture size, §7.4.2.1.1 equations 7-13 to 7-20.
	fieldFactor := uint32(2)
	if s.FrameMbsOnly {
		fieldFactor = 1
	}
	heightMbs := fieldFactor * heightMapUnits
	if heightMbs > maxDimensionInMbs || widthMbs*heightMbs > maxFrameSizeInMbs {
		p.fail("picture of %dx%d macroblocks exceeds every level", widthMbs, heightMbs)
		return nil
	}
	chromaArrayType := s.ChromaFormatIDC
	if s.SeparateColourPlane {
		chromaArrayType = 0
	}
	cropUnitX, cropUnitY := uint32(1), fieldFactor
	if chromaArrayType != 0 {
		subWidthC, subHeightC := uint32(2), uint32(2) // 4:2:0
		switch chromaArrayType {
		case 2: // 4:2:2
			subHeightC = 1
		case 3: // 4:4:4
			subWidthC, subHeightC = 1, 1
		}
		cropUnitX, cropUnitY = subWidthC, subHeightC*fieldFactor
	}
	width, height := widthMbs*16, heightMbs*16
	cropX := cropUnitX * (cropLeft + cropRight)
	cropY := cropUnitY * (cropTop + cropBottom)
	if cropX >= width || cropY >= height {
		p.fail("frame cropping %d,%d leaves no picture of %dx%d", cropX, cropY, width, height)
		return nil
	}
	s.Width, s.Height = int(width-cropX), int(height-cropY)

	if p.flag("vui_parameters_present_flag") {
		p.vui(s)
	}
	if p.err != nil {
		return nil
	}
	return s
}

// scalingList skips scaling_list() (§7.3.2.1.1.1), checking delta_scale's range.
func (p *spsParser) scalingList(size int) {
	last, next := int32(8), int32(8)
	for range size {
		if next != 0 {
			delta := p.se("delta_scale", -128, 127)
			if p.err != nil {
				return
			}
			next = (last + delta + 256) % 256
		}
		if next != 0 {
			last = next
		}
	}
}

// vui reads vui_parameters() (§E.1.1) up to and including the timing information.
func (p *spsParser) vui(s *SPS) {
	if p.flag("aspect_ratio_info_present_flag") {
		const extendedSAR = 255
		if p.u(8, "aspect_ratio_idc") == extendedSAR {
			p.u(16, "sar_width")
			p.u(16, "sar_height")
		}
	}
	if p.flag("overscan_info_present_flag") {
		p.flag("overscan_appropriate_flag")
	}
	if p.flag("video_signal_type_present_flag") {
		p.u(3, "video_format")
		p.flag("video_full_range_flag")
		if p.flag("colour_description_present_flag") {
			p.u(8, "colour_primaries")
			p.u(8, "transfer_characteristics")
			p.u(8, "matrix_coefficients")
		}
	}
	if p.flag("chroma_loc_info_present_flag") {
		p.ue("chroma_sample_loc_type_top_field", 5)
		p.ue("chroma_sample_loc_type_bottom_field", 5)
	}
	if p.flag("timing_info_present_flag") {
		s.NumUnitsInTick = p.u(32, "num_units_in_tick")
		s.TimeScale = p.u(32, "time_scale")
		s.FixedFrameRate = p.flag("fixed_frame_rate_flag")
		if p.err == nil && (s.NumUnitsInTick == 0 || s.TimeScale == 0) {
			// §E.2.1: both shall be greater than 0.
			p.fail("timing_info with num_units_in_tick %d, time_scale %d", s.NumUnitsInTick, s.TimeScale)
		}
		s.TimingInfoPresent = p.err == nil
	}
}
