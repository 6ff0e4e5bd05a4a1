package h264

// bitReader reads the bits of a raw byte sequence payload (RBSP) out of the encapsulated
// bytes of a NAL unit (EBSP), dropping each emulation_prevention_three_byte (the 0x03 in
// 0x000003, H.264 §7.4.1) as it goes, so no unescaped copy is made.
//
// Reads past the end return zero bits and set a sticky error flag; callers check ok() once
// after a group of reads.
type bitReader struct {
	data  []byte
	pos   int  // next byte of data to load
	zeros int  // consecutive zero bytes loaded, for spotting emulation prevention
	cur   byte // current byte, consumed from the most significant bit
	left  uint // bits left in cur
	short bool // a read ran past the end of data
}

func newBitReader(ebsp []byte) *bitReader { return &bitReader{data: ebsp} }

// load fetches the next RBSP byte into cur, skipping an emulation prevention byte.
func (r *bitReader) load() bool {
	for r.pos < len(r.data) {
		b := r.data[r.pos]
		r.pos++
		if r.zeros >= 2 && b == 0x03 {
			r.zeros = 0
			continue
		}
		if b == 0 {
			r.zeros++
		} else {
			r.zeros = 0
		}
		r.cur, r.left = b, 8
		return true
	}
	r.short = true
	return false
}

// bit reads u(1).
func (r *bitReader) bit() uint32 {
	if r.left == 0 && !r.load() {
		return 0
	}
	r.left--
	return uint32(r.cur>>r.left) & 1
}

// bits reads u(n) for n <= 32.
func (r *bitReader) bits(n int) uint32 {
	var v uint32
	for n > 0 {
		if r.left == 0 && !r.load() {
			return 0
		}
		// Take as many bits as the current byte holds at once.
		take := min(uint(n), r.left)
		r.left -= take
		v = v<<take | uint32(r.cur>>r.left)&(1<<take-1)
		n -= int(take)
	}
	return v
}

// maxUELeadingZeros bounds the prefix of an Exp-Golomb code. H.264 never codes a value
// above 2^32-2 with ue(v) (§9.1), which needs at most 31 leading zero bits.
const maxUELeadingZeros = 31

// ue reads ue(v), unsigned Exp-Golomb (H.264 §9.1). ok is false when the code is longer
// than any the standard allows or runs past the end of data.
func (r *bitReader) ue() (v uint32, ok bool) {
	zeros := 0
	for r.bit() == 0 {
		if r.short {
			return 0, false
		}
		zeros++
		if zeros > maxUELeadingZeros {
			return 0, false
		}
	}
	if zeros == 0 {
		return 0, true
	}
	rest := uint64(r.bits(zeros))
	if r.short {
		return 0, false
	}
	return uint32((uint64(1)<<zeros - 1) + rest), true
}

// se reads se(v), signed Exp-Golomb (H.264 §9.1.1).
func (r *bitReader) se() (v int32, ok bool) {
	k, ok := r.ue()
	if !ok {
		return 0, false
	}
	// k = 1, 2, 3, 4, ... maps to 1, -1, 2, -2, ...
	m := int64(k+1) / 2
	if k%2 == 0 {
		m = -m
	}
	return int32(m), true
}

// firstMBInSlice decodes first_mb_in_slice, the first ue(v) after the one-byte header of a
// slice NAL unit, from a prefix of that NAL unit. done reports whether the prefix held the
// whole code; when it did not, ok is false and a longer prefix may help.
func firstMBInSlice(nal []byte) (v uint32, ok, done bool) {
	if len(nal) < 2 {
		return 0, false, false
	}
	r := newBitReader(nal[1:])
	v, ok = r.ue()
	if !ok && r.short {
		return 0, false, false
	}
	return v, ok, true
}
