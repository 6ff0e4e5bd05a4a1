package mqtt

import (
	"math"
	"testing"
	"time"
)

func TestBackoffIsFullJitteredAndCapped(t *testing.T) {
	const min, max = time.Second, 5 * time.Minute
	// Ceilings: 1s, 2s, 4s, ..., 256s, then the 5-minute cap.
	wantCeil := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300}
	for _, tc := range []struct {
		name string
		r    float64
	}{
		{"half the ceiling with rand 0.5", 0.5},
		{"zero with rand 0", 0},
		{"just under the ceiling with rand close to 1", 0.999999},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{min: min, max: max, rand: func() float64 { return tc.r }}
			for i, c := range wantCeil {
				got := b.next()
				want := time.Duration(tc.r * float64(c*time.Second))
				if got != want {
					t.Errorf("retry %d: %v, want %v", i, got, want)
				}
				if got >= c*time.Second && c*time.Second > 0 {
					t.Errorf("retry %d: %v is not below the ceiling %v", i, got, c*time.Second)
				}
			}
		})
	}

	t.Run("the delay is spread over the whole window, not added to a base", func(t *testing.T) {
		rs := []float64{0, 0.25, 0.75}
		i := 0
		b := backoff{min: min, max: max, rand: func() float64 { r := rs[i%len(rs)]; i++; return r }}
		for range 9 { // reach the cap
			b.next()
		}
		for _, r := range rs {
			if got, want := b.next(), time.Duration(r*float64(max)); got != want {
				t.Errorf("at the cap with rand %v: %v, want %v", r, got, want)
			}
		}
	})

	t.Run("reset starts again from the shortest ceiling", func(t *testing.T) {
		b := backoff{min: min, max: max, rand: func() float64 { return 0.5 }}
		for range 5 {
			b.next()
		}
		b.reset()
		if got := b.next(); got != 500*time.Millisecond {
			t.Errorf("after reset: %v, want 500ms", got)
		}
	})

	t.Run("out-of-range rand values stay inside the window", func(t *testing.T) {
		for _, r := range []float64{-1, 1, 2, math.NaN(), math.Inf(1)} {
			b := backoff{min: min, max: max, rand: func() float64 { return r }}
			if got := b.next(); got < 0 || got >= min {
				t.Errorf("rand %v: %v, want in [0, %v)", r, got, min)
			}
		}
	})

	t.Run("a huge cap does not overflow", func(t *testing.T) {
		b := backoff{min: time.Nanosecond, max: math.MaxInt64, rand: func() float64 { return 0.5 }}
		for i := range 200 {
			if got := b.next(); got < 0 {
				t.Fatalf("retry %d: negative delay %v", i, got)
			}
		}
	})
}
