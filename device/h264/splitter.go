package h264

import (
	"bytes"
	"errors"
	"io"
)

// DefaultMaxAU is the access unit cap NewSplitter uses when given zero or less: four times the
// largest IDR picture a 1080p camera encoder produces at a generous bitrate.
const DefaultMaxAU = 2 << 20

// maxAULimit bounds the cap a caller may ask for, so that size arithmetic cannot overflow an
// int on 32-bit boards.
const maxAULimit = 1 << 30

// readSize is the size of the splitter's read buffer. The buffer never grows: bytes are
// copied from it into the access unit being assembled.
const readSize = 64 << 10

// classifyLen is how many bytes of a NAL unit the splitter looks at to decide whether it
// starts a new access unit: the header and first_mb_in_slice, which takes at most 37 bits for
// the largest picture any level allows, plus room for emulation prevention bytes.
const classifyLen = 16

// maxEmptyReads is how many reads returning no bytes and no error the splitter tolerates in a
// row before giving up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// startCode is the three-byte Annex B start code prefix (§B.1.1). A four-byte start code is
// the same prefix after a zero_byte, and the zero is trimmed from the NAL unit before it.
var startCode = []byte{0, 0, 1}

// nalState says what happens to the bytes of the NAL unit being read.
type nalState uint8

const (
	nalNone       nalState = iota // outside any NAL unit: before the first start code
	nalHeader                     // collecting the first classifyLen bytes into hdr
	nalAccumulate                 // appending to the access unit
	nalDrop                       // dropping: the access unit is being discarded
)

// Splitter reads an H.264 Annex B byte stream (H.264 Annex B) and yields whole access units.
//
// It accepts any chunking of the input, three- and four-byte start codes, leading zero bytes
// and trailing_zero_8bits. It groups NAL units into access units with the practical rule of
// §7.4.1.2.3: a new access unit begins at an access unit delimiter, SPS, PPS, SEI or NAL unit
// types 15–18, or at a slice whose first_mb_in_slice is 0, whenever the access unit being
// assembled already holds a slice. This is exact for single-layer streams without redundant
// pictures or arbitrary slice order, which is what camera encoders produce. Streams with
// SVC/MVC layers, redundant pictures or arbitrary slice order are not split reliably: telling
// their pictures apart needs the slice header comparisons of §7.4.1.2.4.
//
// An access unit is yielded as soon as the first NAL unit of the next one has started, or at
// the end of the stream, so a live stream without access unit delimiters is one frame behind
// the encoder, which Annex B makes unavoidable.
//
// Memory is bounded by the read buffer plus the cap: an access unit or NAL unit larger than
// the cap is reported as a *SizeError (ErrTooLarge) as soon as the cap is crossed, and a NAL
// unit with forbidden_zero_bit set as ErrMalformed. In both cases the splitter drops the
// whole access unit and resumes at the start of the next one, so the caller may keep calling
// Next. Errors from the reader are returned as they are and end the stream.
//
// A Splitter is not safe for concurrent use.
type Splitter struct {
	r     io.Reader
	maxAU int

	buf    []byte // read buffer
	lo, hi int    // unprocessed bytes are buf[lo:hi]
	rerr   error  // error from the reader, reported after the bytes before it
	done   bool   // the end of stream has been flushed

	// zeros counts zero bytes seen but not yet stored: they are either part of the next
	// start code or trailing zeros (dropped), or, when a non-zero byte follows that does not
	// complete a start code, NAL unit content (stored then). Saturates at maxAU+1.
	zeros int

	state nalState
	hdr   [classifyLen]byte // first bytes of the current NAL unit while state == nalHeader
	nh    int               // bytes in hdr

	// The access unit being assembled: data holds its NAL units back to back, offs the
	// offset of each in data.
	data     []byte
	offs     []int
	hasVCL   bool
	keyframe bool
	hasSPS   bool
	hasPPS   bool
	lastSize int // size of the previous access unit without a keyframe, to size the next allocation
	lastKey  int // size of the previous keyframe access unit, for streams of keyframes only

	// discarding is set after an error: the access unit is dropped up to the next boundary.
	// hasVCL keeps tracking it so the boundary is found by the same rule.
	discarding bool

	ready   []AccessUnit // complete access units not yet returned
	pending error        // recoverable error not yet returned
}

// NewSplitter returns a Splitter reading from r that refuses access units and NAL units of
// more than maxAU bytes. maxAU <= 0 means DefaultMaxAU; values above 1 GiB are lowered to it.
func NewSplitter(r io.Reader, maxAU int) *Splitter {
	if maxAU <= 0 {
		maxAU = DefaultMaxAU
	}
	maxAU = min(maxAU, maxAULimit)
	return &Splitter{r: r, maxAU: maxAU, buf: make([]byte, readSize)}
}

// Reset discards all state, buffered bytes and pending errors, and makes the splitter read a
// new stream from r, keeping its cap and its read buffer.
func (s *Splitter) Reset(r io.Reader) {
	*s = Splitter{r: r, maxAU: s.maxAU, buf: s.buf, offs: s.offs[:0]}
}

// Next returns the next access unit. At the end of the stream it returns the last access unit
// and then io.EOF on every later call. An error wrapping ErrTooLarge or ErrMalformed means an
// access unit was dropped; the stream continues and Next may be called again. Any other error
// comes from the reader and is returned on every later call.
func (s *Splitter) Next() (AccessUnit, error) {
	empty := 0
	for {
		if len(s.ready) > 0 {
			au := s.ready[0]
			s.ready[0] = AccessUnit{}
			s.ready = s.ready[1:]
			return au, nil
		}
		if s.pending != nil {
			err := s.pending
			s.pending = nil
			return AccessUnit{}, err
		}
		if s.lo < s.hi {
			s.feed()
			continue
		}
		if s.rerr != nil {
			if errors.Is(s.rerr, io.EOF) && !s.done {
				s.done = true
				s.flush()
				continue
			}
			return AccessUnit{}, s.rerr
		}
		n, err := s.r.Read(s.buf)
		if n < 0 || n > len(s.buf) {
			// A broken Reader; do not index with its count.
			n, err = 0, errors.New("h264: reader returned invalid count")
		}
		s.lo, s.hi = 0, n
		s.rerr = err
		if n == 0 && err == nil {
			if empty++; empty >= maxEmptyReads {
				s.rerr = io.ErrNoProgress
			}
			continue
		}
		empty = 0
	}
}

// feed processes buf[lo:hi] until it is used up or an access unit or error is ready.
func (s *Splitter) feed() {
	for s.lo < s.hi && len(s.ready) == 0 && s.pending == nil {
		chunk := s.buf[s.lo:s.hi]
		// A start code may straddle two reads: zeros counted from the last one, the rest of
		// the zeros and the 0x01 in this one.
		if s.zeros > 0 {
			lz := leadingZeros(chunk)
			if lz == len(chunk) {
				s.addZeros(lz)
				s.lo = s.hi
				return
			}
			if chunk[lz] == 1 && s.zeros+lz >= 2 {
				s.lo += lz + 1
				s.startCode()
				continue
			}
		}
		i := bytes.Index(chunk, startCode)
		if i < 0 {
			s.lo = s.hi
			s.put(chunk)
			return
		}
		s.lo += i + len(startCode)
		s.put(chunk[:i])
		s.startCode()
	}
}

// leadingZeros counts the zero bytes at the start of b.
func leadingZeros(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return len(b)
}

// addZeros counts n more unstored zero bytes.
func (s *Splitter) addZeros(n int) {
	s.zeros = min(s.zeros+n, s.maxAU+1)
}

// put takes the bytes of the current NAL unit up to (not including) the next start code or
// the end of the chunk. Trailing zeros are held back in s.zeros.
func (s *Splitter) put(seg []byte) {
	last := len(seg) - 1
	for last >= 0 && seg[last] == 0 {
		last--
	}
	if last < 0 {
		s.addZeros(len(seg))
		return
	}
	z := s.zeros
	s.zeros = len(seg) - 1 - last
	if s.state != nalNone {
		s.write(z, seg[:last+1])
	}
}

// write stores z zero bytes and then b as content of the current NAL unit.
func (s *Splitter) write(z int, b []byte) {
	if s.state == nalHeader {
		for z > 0 && s.nh < len(s.hdr) {
			s.hdr[s.nh] = 0
			s.nh++
			z--
		}
		n := copy(s.hdr[s.nh:], b)
		s.nh += n
		b = b[n:]
		if !s.classify(false) {
			return // hdr is not full, so z and b are used up.
		}
	}
	if s.state != nalAccumulate || !s.reserve(z+len(b)) {
		return
	}
	n := len(s.data)
	s.data = s.data[:n+z] // reserve made room
	clear(s.data[n:])
	s.data = append(s.data, b...)
}

// startCode ends the current NAL unit, if any, and begins a new one. The zeros before the
// start code are trailing zeros or a four-byte start code's zero_byte, never content.
func (s *Splitter) startCode() {
	s.endNAL()
	s.zeros = 0
	s.state = nalHeader
	s.nh = 0
}

// endNAL finishes the current NAL unit.
func (s *Splitter) endNAL() {
	if s.state == nalHeader {
		s.classify(true)
	}
	s.state = nalNone
}

// flush ends the stream: the last NAL unit ends and the last access unit is complete.
func (s *Splitter) flush() {
	s.endNAL()
	if !s.discarding && len(s.offs) > 0 {
		s.emit()
	}
	s.zeros = 0
}

// startsAccessUnit reports whether a NAL unit of type t begins a new access unit after a
// picture (§7.4.1.2.3): access unit delimiter, SPS, PPS, SEI and types 15 to 18. Prefix NAL
// units (14) precede every base-layer slice, so they cannot mark a boundary by themselves.
func startsAccessUnit(t NALType) bool {
	switch t {
	case NALAUD, NALSPS, NALPPS, NALSEI, NALSubsetSPS, NALDPS, 17, 18:
		return true
	}
	return false
}

// classify decides, from the first bytes of a NAL unit in hdr, whether it begins a new access
// unit, and moves it into the access unit being assembled or drops it. ended says the NAL unit
// is complete. It returns false when it needs more bytes.
func (s *Splitter) classify(ended bool) bool {
	h := s.hdr[:s.nh]
	if len(h) == 0 {
		s.state = nalNone // empty NAL unit: two start codes in a row
		return true
	}
	t := TypeOf(h)
	vcl := t.VCL() && t != NALSliceDPB && t != NALSliceDPC // B and C have no slice header
	first := false
	if vcl {
		v, ok, done := firstMBInSlice(h)
		if !done && !ended && s.nh < len(s.hdr) {
			return false
		}
		first = ok && v == 0
	}
	boundary := s.hasVCL && (startsAccessUnit(t) || first)
	if h[0]&0x80 != 0 {
		// A corrupt NAL unit spoils the access unit it belongs to. Its header is suspect,
		// but it is the only guide to which one that is.
		if !s.discarding {
			if boundary {
				s.emit()
			}
			s.fail(malformed("NAL unit type %d with forbidden_zero_bit set", t))
		}
		s.hasVCL = s.hasVCL || t.VCL()
		s.state = nalDrop
		return true
	}
	switch {
	case s.discarding && !boundary:
		s.hasVCL = s.hasVCL || t.VCL()
		s.state = nalDrop
		return true
	case s.discarding:
		s.discarding = false
		s.reset(false)
	case boundary:
		s.emit()
	}
	s.offs = append(s.offs, len(s.data))
	s.hasVCL = s.hasVCL || t.VCL()
	s.keyframe = s.keyframe || t == NALIDR
	s.hasSPS = s.hasSPS || t == NALSPS
	s.hasPPS = s.hasPPS || t == NALPPS
	s.state = nalAccumulate
	if s.reserve(len(h)) {
		s.data = append(s.data, h...)
	}
	return true
}

// reserve makes room for n more bytes of the current NAL unit, or, when they would take the
// access unit or the NAL unit over the cap, fails the access unit and returns false.
func (s *Splitter) reserve(n int) bool {
	au := len(s.data) + n
	if au <= s.maxAU {
		if cap(s.data) < au {
			// Grow geometrically but never beyond the cap.
			grown := make([]byte, len(s.data), min(max(2*cap(s.data), au), s.maxAU))
			copy(grown, s.data)
			s.data = grown
		}
		return true
	}
	err := &SizeError{Unit: "access unit", Size: au, Limit: s.maxAU}
	if nal := au - s.offs[len(s.offs)-1]; nal > s.maxAU {
		err.Unit, err.Size = "NAL unit", nal
	}
	s.fail(err)
	return false
}

// fail reports err and discards the access unit being assembled, up to the next boundary.
func (s *Splitter) fail(err error) {
	s.pending = err
	s.discarding = true
	hasVCL := s.hasVCL
	s.reset(false)
	s.hasVCL = hasVCL
	s.state = nalDrop
}

// emit queues the access unit assembled so far and starts a new one.
func (s *Splitter) emit() {
	nals := make([][]byte, len(s.offs))
	for i, off := range s.offs {
		end := len(s.data)
		if i+1 < len(s.offs) {
			end = s.offs[i+1]
		}
		nals[i] = s.data[off:end:end]
	}
	s.ready = append(s.ready, AccessUnit{NALs: nals, Keyframe: s.keyframe, HasParams: s.hasSPS && s.hasPPS})
	if s.keyframe {
		s.lastKey = len(s.data)
	} else {
		s.lastSize = len(s.data)
	}
	s.reset(true)
}

// reset empties the access unit being assembled. fresh says its bytes now belong to an
// emitted AccessUnit, so a new buffer is needed; otherwise the old one is reused.
func (s *Splitter) reset(fresh bool) {
	if fresh {
		// Access units of one stream are much alike in size, keyframes aside; a keyframe
		// grows its buffer a few times, which costs less than over-allocating every picture
		// (and the picture after a keyframe would keep a keyframe-sized buffer alive, unseen
		// by a GOPCache's budget). A stream of keyframes only is sized by its keyframes.
		last := s.lastSize
		if last == 0 {
			last = s.lastKey
		}
		s.data = make([]byte, 0, min(max(last+last/4, 256), s.maxAU))
	} else {
		s.data = s.data[:0]
	}
	s.offs = s.offs[:0]
	s.hasVCL, s.keyframe, s.hasSPS, s.hasPPS = false, false, false, false
}
