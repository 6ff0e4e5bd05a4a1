package webrtc

import (
	"testing"
	"time"
)

func sized(ts uint64, n int, key bool) *frame {
	var ps [][]byte
	for n > 0 {
		k := min(n, maxPayload)
		ps = append(ps, make([]byte, k))
		n -= k
	}
	return &frame{ts: ts, keyframe: key, payloads: ps}
}

func TestCatchUpScheduleSendsTheKeyframeAtOnceThenPacesTheGroup(t *testing.T) {
	// One second of 2 Mb/s video at 30 fps: a 50 KB keyframe and 29 P-frames of 6.9 KB.
	group := []*frame{sized(0, 50_000, true)}
	for i := 1; i < 30; i++ {
		group = append(group, sized(uint64(i)*3000, 6_900, false))
	}
	due := catchUpSchedule(group)
	if due[0] != 0 || due[1] <= 0 {
		t.Fatalf("keyframe due %v, next %v: the keyframe goes at once, the rest after it", due[0], due[1])
	}
	total := 0
	for _, f := range group {
		total += f.size()
	}
	rate := float64(total) * CatchUpFactor // bytes a second: the group spans one second
	sent := 0
	for i, f := range group {
		if i > 0 && due[i] <= due[i-1] {
			t.Fatalf("frame %d due %v, not after frame %d's %v", i, due[i], i-1, due[i-1])
		}
		// No prefix of the group leaves faster than the catch-up rate.
		if want := time.Duration(float64(sent) / rate * float64(time.Second)); due[i] < want-time.Millisecond {
			t.Fatalf("frame %d due %v, before %v", i, due[i], want)
		}
		sent += f.size()
	}
	// The whole group is caught up in about 1/CatchUpFactor of its duration.
	if last := due[len(due)-1]; last < 200*time.Millisecond || last > 260*time.Millisecond {
		t.Fatalf("group caught up after %v, want about 250 ms", last)
	}
}

func TestCatchUpScheduleOfAShortGroup(t *testing.T) {
	if due := catchUpSchedule([]*frame{sized(0, 10_000, true)}); len(due) != 1 || due[0] != 0 {
		t.Fatalf("a lone keyframe: %v", due)
	}
	// Two frames with one timestamp: no bitrate to estimate, so the floor rate applies.
	due := catchUpSchedule([]*frame{sized(0, 10_000, true), sized(0, 1000, false)})
	keyframe := 10_000.0
	if want := time.Duration(keyframe / minCatchUpRate * float64(time.Second)); due[1] != want {
		t.Fatalf("second frame due %v, want %v", due[1], want)
	}
}
