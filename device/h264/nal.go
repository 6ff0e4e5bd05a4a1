package h264

// NALType is nal_unit_type, the low five bits of a NAL unit header (H.264 Table 7-1).
type NALType uint8

// NAL unit types this package acts on (H.264 Table 7-1).
const (
	NALSlice       NALType = 1  // coded slice of a non-IDR picture
	NALSliceDPA    NALType = 2  // coded slice data partition A
	NALSliceDPB    NALType = 3  // coded slice data partition B
	NALSliceDPC    NALType = 4  // coded slice data partition C
	NALIDR         NALType = 5  // coded slice of an IDR picture
	NALSEI         NALType = 6  // supplemental enhancement information
	NALSPS         NALType = 7  // sequence parameter set
	NALPPS         NALType = 8  // picture parameter set
	NALAUD         NALType = 9  // access unit delimiter
	NALEndSequence NALType = 10 // end of sequence
	NALEndStream   NALType = 11 // end of stream
	NALFiller      NALType = 12 // filler data
	NALSPSExt      NALType = 13 // sequence parameter set extension
	NALPrefix      NALType = 14 // prefix NAL unit (SVC)
	NALSubsetSPS   NALType = 15 // subset sequence parameter set (SVC, MVC)
	NALDPS         NALType = 16 // depth parameter set (3D-AVC)
)

// TypeOf returns the nal_unit_type of a NAL unit given without its start code, or 0 for an
// empty slice.
func TypeOf(nal []byte) NALType {
	if len(nal) == 0 {
		return 0
	}
	return NALType(nal[0] & 0x1f)
}

// VCL reports whether t carries coded picture data (slices and data partitions, types 1–5).
func (t NALType) VCL() bool { return t >= NALSlice && t <= NALIDR }

// AccessUnit is one coded picture with the non-VCL NAL units that belong to it (H.264
// §7.4.1.2.3): for example an SPS, a PPS, an SEI and the slices of one frame.
//
// The NAL units have no start codes and no trailing zero bytes. An AccessUnit returned by a
// Splitter owns its bytes: nothing else refers to them, and since AccessUnits are shared
// between goroutines once published (GOPCache, fan-out), nobody may modify them afterwards.
type AccessUnit struct {
	// NALs are the NAL units in stream order, each starting with its one-byte header.
	NALs [][]byte
	// Keyframe reports that the access unit holds an IDR picture, from which a decoder can
	// start given the SPS and PPS.
	Keyframe bool
	// HasParams reports that the access unit holds both an SPS and a PPS.
	HasParams bool
}

// Size returns the total length of the NAL units, without start codes.
func (au AccessUnit) Size() int {
	n := 0
	for _, nal := range au.NALs {
		n += len(nal)
	}
	return n
}

// HasPicture reports whether the access unit holds at least one VCL NAL unit (a slice). The
// splitter can yield an access unit without one only at the end of a stream or after a
// resynchronisation, when parameter sets were not followed by a picture.
func (au AccessUnit) HasPicture() bool {
	for _, nal := range au.NALs {
		if TypeOf(nal).VCL() {
			return true
		}
	}
	return false
}

// AppendAnnexB appends the access unit to dst as an Annex B byte stream, each NAL unit
// preceded by a four-byte start code, and returns the extended slice.
func AppendAnnexB(dst []byte, au AccessUnit) []byte {
	for _, nal := range au.NALs {
		dst = append(dst, 0, 0, 0, 1)
		dst = append(dst, nal...)
	}
	return dst
}
