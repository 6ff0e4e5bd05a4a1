package receiver

import (
	"testing"

	"github.com/pion/rtp"
)

// fuA is the payload of an FU-A packet (RFC 6184 §5.8) of an IDR slice with n bytes of
// fragment.
func fuA(start, end bool, n int) []byte {
	fu := byte(5) // IDR slice
	if start {
		fu |= 0x80
	}
	if end {
		fu |= 0x40
	}
	payload := make([]byte, 2+n)
	payload[0], payload[1] = 0x60|28, fu
	return payload
}

// single is the payload of a single NAL unit packet: a non-IDR slice.
func single() []byte { return []byte{0x41, 0x9a, 0x00} }

// A camera that sends fragments of NAL units it never finishes must not make the receiver
// keep them all: what one NAL unit reassembles is bounded, and a new start drops an
// unfinished one.
func TestUnfinishedFragmentsAreNotKept(t *testing.T) {
	const size = 1200
	n := maxAU/size + 100 // together over maxAU
	for _, tc := range []struct {
		name  string
		frame [][]byte // the payloads of one frame; the last one has the marker bit
	}{
		{"starts without ends", [][]byte{fuA(true, false, size)}},
		{"middles after a whole NAL unit", [][]byte{single(), fuA(false, false, size)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTrack(&Session{}, 1)
			var seq uint16
			largest := 0
			push := func(ts uint32, payloads ...[]byte) {
				for i, p := range payloads {
					tr.sb.Push(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 102, SequenceNumber: seq, Timestamp: ts, Marker: i == len(payloads)-1}, Payload: p})
					seq++
					for smp := tr.sb.Pop(); smp != nil; smp = tr.sb.Pop() {
						largest = max(largest, len(smp.Data))
					}
				}
			}
			for i := range n {
				push(uint32(i)*3000, tc.frame...)
			}
			// Then a frame that ends a fragmented NAL unit (after a whole one, so that it is not
			// dropped as headless), and one after it so that it is handed over.
			push(uint32(n)*3000, single(), fuA(false, true, size))
			push(uint32(n+1)*3000, single())
			if largest > maxAU {
				t.Errorf("a sample of %d bytes came out, over maxAU %d: the fragments of %d frames were kept and joined", largest, maxAU, n)
			}
		})
	}
}

// A NAL unit fragmented into start, middle and end comes out whole, after an unfinished one.
func TestAFragmentedNALUnitIsReassembled(t *testing.T) {
	var d h264Depacketizer
	var out []byte
	for _, p := range [][]byte{fuA(true, false, 10), fuA(true, false, 100), fuA(false, false, 100), fuA(false, true, 100)} {
		b, err := d.Unmarshal(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	// Annex B start code, the NAL header, and the three fragments of the second NAL unit.
	if want := 4 + 1 + 300; len(out) != want || out[4] != 0x65 {
		t.Errorf("reassembled %d bytes (header %#x), want %d (0x65)", len(out), out[4], want)
	}
}
