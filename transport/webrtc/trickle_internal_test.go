package webrtc

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tt := range []struct {
		name  string
		steps []time.Duration // event times from t0
		want  []bool
	}{
		{"takes a burst at once and refuses the next", []time.Duration{0, 0, 0, 0}, []bool{true, true, true, false}},
		{"takes one more after an interval", []time.Duration{0, 0, 0, 0, 250 * time.Millisecond, 250 * time.Millisecond}, []bool{true, true, true, false, true, false}},
		{"earns no more than a burst after a long gap", []time.Duration{0, 0, 0, time.Hour, time.Hour, time.Hour, time.Hour}, []bool{true, true, true, true, true, true, false}},
		{"earns nothing from a clock stepping back", []time.Duration{time.Second, time.Second, time.Second, 0, time.Second, time.Second + 250*time.Millisecond}, []bool{true, true, true, false, false, true}},
		{"does not overflow after the longest gap", []time.Duration{0, 0, 0, 1 << 62, 1 << 62, 1 << 62, 1 << 62}, []bool{true, true, true, true, true, true, false}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newTokenBucket(4, 3, t0) // 4 per second, bursts of 3
			for i, d := range tt.steps {
				if got := b.take(at(d)); got != tt.want[i] {
					t.Fatalf("event %d at %v: take = %v, want %v", i, d, got, tt.want[i])
				}
			}
		})
	}
}
