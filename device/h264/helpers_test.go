package h264

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

// clipPath is the test clip tools/mkclip/mkclip.sh writes; device/camera owns it and its
// tests check its properties.
const clipPath = "../camera/testdata/clip.h264"

// Properties of the committed clip (see device/camera/clip_test.go).
const (
	clipFrames = 90
	clipGOP    = 30
)

func readClip(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(clipPath)
	if err != nil {
		tb.Fatalf("read test clip: %v", err)
	}
	return b
}

// refNALs splits a whole Annex B buffer into NAL units the obvious way: cut at every 00 00 01,
// drop trailing zeros and empty units, drop anything before the first start code.
func refNALs(b []byte) [][]byte {
	var nals [][]byte
	i := bytes.Index(b, startCode)
	if i < 0 {
		return nil
	}
	b = b[i+3:]
	for {
		j := bytes.Index(b, startCode)
		nal := b
		if j >= 0 {
			nal = b[:j]
		}
		nal = bytes.TrimRight(nal, "\x00")
		if len(nal) > 0 {
			nals = append(nals, nal)
		}
		if j < 0 {
			return nals
		}
		b = b[j+3:]
	}
}

// splitAll runs a splitter to the end, collecting access units and recoverable errors.
func splitAll(tb testing.TB, r io.Reader, maxAU int) (aus []AccessUnit, errs []error) {
	tb.Helper()
	s := NewSplitter(r, maxAU)
	for {
		au, err := s.Next()
		switch {
		case err == nil:
			aus = append(aus, au)
		case errors.Is(err, io.EOF):
			return aus, errs
		case errors.Is(err, ErrTooLarge), errors.Is(err, ErrMalformed):
			errs = append(errs, err)
		default:
			tb.Fatalf("Next: unexpected error %v", err)
		}
		if len(errs) > 1<<20 {
			tb.Fatalf("Next: too many errors")
		}
	}
}

// flatten returns the NAL units of access units in order.
func flatten(aus []AccessUnit) [][]byte {
	var nals [][]byte
	for _, au := range aus {
		nals = append(nals, au.NALs...)
	}
	return nals
}

// chunkReader returns data in reads of the given sizes, cycling through them.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = max(r.sizes[r.i%len(r.sizes)], 1)
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// annexB builds a byte stream from NAL units given as hex-free byte slices, each preceded by
// a start code of the given length (3 or 4).
func annexB(scLen int, nals ...[]byte) []byte {
	var b []byte
	for _, nal := range nals {
		if scLen == 4 {
			b = append(b, 0)
		}
		b = append(b, 0, 0, 1)
		b = append(b, nal...)
	}
	return b
}

// bitWriter writes RBSP bits for building test parameter sets.
type bitWriter struct {
	b    []byte
	nbit uint
}

func (w *bitWriter) u(n int, v uint64) {
	for i := n - 1; i >= 0; i-- {
		if w.nbit%8 == 0 {
			w.b = append(w.b, 0)
		}
		if v>>uint(i)&1 == 1 {
			w.b[len(w.b)-1] |= 0x80 >> (w.nbit % 8)
		}
		w.nbit++
	}
}

func (w *bitWriter) flag(f bool) {
	if f {
		w.u(1, 1)
	} else {
		w.u(1, 0)
	}
}

func (w *bitWriter) ue(v uint64) {
	v++
	n := 0
	for x := v; x > 1; x >>= 1 {
		n++
	}
	w.u(n, 0)
	w.u(n+1, v)
}

func (w *bitWriter) se(v int64) {
	if v > 0 {
		w.ue(uint64(2*v - 1))
	} else {
		w.ue(uint64(-2 * v))
	}
}

// trailing writes rbsp_trailing_bits and returns the RBSP.
func (w *bitWriter) trailing() []byte {
	w.u(1, 1)
	for w.nbit%8 != 0 {
		w.u(1, 0)
	}
	return w.b
}

// escape inserts emulation prevention bytes into an RBSP (H.264 §7.4.1).
func escape(rbsp []byte) []byte {
	var out []byte
	zeros := 0
	for _, c := range rbsp {
		if zeros >= 2 && c <= 3 {
			out = append(out, 3)
			zeros = 0
		}
		out = append(out, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

// slice returns a minimal slice NAL unit of the given type with first_mb_in_slice = firstMB
// and some payload bytes.
func slice(t NALType, firstMB uint64, payload ...byte) []byte {
	var w bitWriter
	w.u(8, uint64(0x60|t)) // nal_ref_idc 3
	w.ue(firstMB)
	w.ue(0) // slice_type
	w.ue(0) // pic_parameter_set_id
	for _, p := range payload {
		w.u(8, uint64(p))
	}
	return escape(w.trailing())
}

var (
	testAUD = []byte{0x09, 0xf0}
	testSEI = []byte{0x06, 0x05, 0x01, 0xaa, 0x80}
	testPPS = []byte{0x68, 0xce, 0x38, 0x80}
)

// testSPS returns a baseline SPS for a 320x240 picture.
func testSPS() []byte {
	var w bitWriter
	w.u(8, 0x67)
	w.u(8, 66)   // profile_idc
	w.u(8, 0xc0) // constraint_set0, constraint_set1
	w.u(8, 30)   // level_idc
	w.ue(0)      // seq_parameter_set_id
	w.ue(0)      // log2_max_frame_num_minus4
	w.ue(2)      // pic_order_cnt_type
	w.ue(1)      // max_num_ref_frames
	w.flag(false)
	w.ue(19) // pic_width_in_mbs_minus1
	w.ue(14) // pic_height_in_map_units_minus1
	w.flag(true)
	w.flag(true)
	w.flag(false) // frame_cropping_flag
	w.flag(false) // vui_parameters_present_flag
	return escape(w.trailing())
}
