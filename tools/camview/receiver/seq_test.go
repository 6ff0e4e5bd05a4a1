package receiver

import (
	"testing"
	"time"
)

func TestSeqCounterCountsGapsOnly(t *testing.T) {
	for _, tc := range []struct {
		name       string
		seqs       []uint16
		lost, dups int
	}{
		{"an unbroken run loses nothing", []uint16{10, 11, 12, 13}, 0, 0},
		{"one gap is one packet lost", []uint16{10, 11, 13}, 1, 0},
		{"a gap of three is three lost", []uint16{10, 14}, 3, 0},
		{"a late packet fills its gap", []uint16{10, 12, 11}, 0, 0},
		{"reordering across a wrap-around loses nothing", []uint16{65534, 0, 65535, 1}, 0, 0},
		{"the count runs on across a wrap-around", []uint16{65534, 65535, 0, 1, 2}, 0, 0},
		{"a gap across a wrap-around is counted", []uint16{65534, 1}, 2, 0},
		{"a duplicate counts once", []uint16{10, 11, 11, 12}, 0, 1},
		{"a retransmission after the gap was filled is a duplicate", []uint16{10, 12, 11, 11}, 0, 1},
		{"a packet older than the first is ignored", []uint16{10, 11, 8, 12}, 0, 0},
		{"a packet older than the window is ignored", append(run(0, seqWindow+10), 5), 0, 0},
		{"the loss before a jump stays counted after it", []uint16{1, 3, 5000, 5001}, 1 + 4996, 0},
		{"several wrap-arounds keep counting", run(60000, 3*65536), 0, 0},
		{"a single packet loses nothing", []uint16{7}, 0, 0},
		{"nothing received loses nothing", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c seqCounter
			dups := 0
			for _, s := range tc.seqs {
				if c.add(s) {
					dups++
				}
			}
			if got := c.lost(); got != tc.lost {
				t.Errorf("lost = %d, want %d", got, tc.lost)
			}
			if dups != tc.dups || c.duplicates != tc.dups {
				t.Errorf("duplicates = %d (counted %d), want %d", dups, c.duplicates, tc.dups)
			}
		})
	}
}

// run returns n consecutive sequence numbers from start, wrapping at 16 bits.
func run(start uint16, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = start + uint16(i)
	}
	return out
}

func TestTimestampSpanFollowsWrapAroundAndReordering(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []uint32
		want time.Duration
	}{
		{"thirty frames at 30 fps span 29 frame intervals", frames(1000, 30), 29 * time.Second / 30},
		{"a wrap-around does not break the span", frames(1<<32-3000*5, 31), time.Second},
		{"an older frame arriving late widens the span back", []uint32{9000, 12000, 6000}, 6000 * time.Second / clockRate},
		{"one frame spans nothing", []uint32{42}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s tsSpan
			for _, ts := range tc.ts {
				s.add(ts)
			}
			if got := s.duration(); got != tc.want {
				t.Errorf("duration = %v, want %v", got, tc.want)
			}
		})
	}
}

func frames(start uint32, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = start + uint32(i)*3000
	}
	return out
}
