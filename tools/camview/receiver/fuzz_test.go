package receiver

import (
	"encoding/binary"
	"testing"
)

// splitPayloads cuts b into RTP payloads: each is a 2-byte big-endian length (at most 1500:
// what one packet carries) and that many bytes, the last one whatever is left.
func splitPayloads(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b)) % 1501
		b = b[2:]
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

// joinPayloads is the inverse of splitPayloads, for seeds.
func joinPayloads(ps ...[]byte) []byte {
	var b []byte
	for _, p := range ps {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

// FuzzDepacketizer checks what h264Depacketizer promises for any run of RTP payloads a camera
// sends: no panic, and what it holds between payloads, and hands over in one, stays within
// its cap plus one packet, however the fragments start, end or never end. The cap is 4 KiB
// here rather than maxAU's 2 MiB, so that inputs the fuzzer makes can cross it.
func FuzzDepacketizer(f *testing.F) {
	f.Add(joinPayloads(single()))
	f.Add(joinPayloads(fuA(true, false, 10), fuA(false, false, 100), fuA(false, true, 100)))
	f.Add(joinPayloads(fuA(true, false, 10), fuA(true, false, 10), fuA(false, true, 10)))
	f.Add(joinPayloads(fuA(false, true, 10), single(), fuA(false, false, 1400)))
	f.Add(joinPayloads(fuA(true, false, 1400), fuA(false, false, 1400), fuA(false, false, 1400), fuA(false, false, 1400), fuA(false, true, 1400)))
	// STAP-A (type 24) carrying two NAL units, and one whose sizes run past its end.
	f.Add(joinPayloads([]byte{0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce}))
	f.Add(joinPayloads([]byte{0x78, 0xff, 0xff, 0x67}))
	f.Add(joinPayloads([]byte{0x7c}, []byte{}, []byte{0x7c, 0x85}))
	// A NAL unit that went over the cap, then a packet of another kind while it is dropped.
	f.Add(joinPayloads(fuA(true, false, 1400), fuA(false, false, 1400), fuA(false, false, 1400), single(), fuA(false, true, 10)))
	f.Fuzz(func(t *testing.T, b []byte) {
		const maxNAL = 4 << 10
		d := h264Depacketizer{maxNAL: maxNAL}
		for i, p := range splitPayloads(b) {
			out, err := d.Unmarshal(p)
			if err != nil {
				continue // a payload pion cannot parse is dropped; the next one is still taken
			}
			// Annex B start codes and NAL headers pion adds are at most a few bytes a NAL unit;
			// a STAP-A packet carries at most len(p) of them.
			if limit := maxNAL + 5 + 5*len(p); len(out) > limit {
				t.Fatalf("payload %d (%d bytes) handed over %d bytes, over %d", i, len(p), len(out), limit)
			}
			// Only a NAL unit within the cap is held; one that went over it is counted no further
			// than the packet that crossed the cap, and is dropped.
			if !d.skipping && d.fragmented > maxNAL {
				t.Fatalf("payload %d: holding %d bytes of a fragmented NAL unit, over the cap %d", i, d.fragmented, maxNAL)
			}
			if d.skipping && d.fragmented > maxNAL+1500 {
				t.Fatalf("payload %d: counted %d bytes of a dropped NAL unit, over the cap %d and one packet", i, d.fragmented, maxNAL)
			}
			if d.skipping && d.fragmented <= maxNAL {
				t.Fatalf("payload %d: skipping a NAL unit of %d bytes, within the cap %d", i, d.fragmented, maxNAL)
			}
		}
	})
}

// FuzzSeqCounter checks seqCounter for any run of sequence numbers: no panic; the packets it
// calls lost are never negative nor more than the numbers between the first and the highest;
// and a number received again right after is always a duplicate.
func FuzzSeqCounter(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 0, 4, 0, 3})
	f.Add([]byte{0xff, 0xfe, 0xff, 0xff, 0, 0, 0, 1})    // a wrap-around
	f.Add([]byte{0, 10, 0x80, 10, 0, 10, 0x40, 0})       // jumps of half the range
	f.Add([]byte{0, 0, 0x10, 0, 0, 1, 0, 0, 0x0f, 0xff}) // older than the window
	f.Fuzz(func(t *testing.T, b []byte) {
		var c seqCounter
		for i := 0; i+1 < len(b); i += 2 {
			seq := binary.BigEndian.Uint16(b[i:])
			c.add(seq)
			if lost := c.lost(); lost < 0 || int64(lost) > c.max-c.first {
				t.Fatalf("after %d numbers (last %d): lost %d, first %d, highest %d", i/2+1, seq, lost, c.first, c.max)
			}
			// The number just received is known as seen unless it was older than the first or
			// too far behind the highest to tell.
			ext := c.max + int64(int16(seq-uint16(c.max)))
			if ext >= c.first && c.max-ext < seqWindow && !c.add(seq) {
				t.Fatalf("after %d numbers: %d received twice in a row was not a duplicate", i/2+1, seq)
			}
		}
	})
}
