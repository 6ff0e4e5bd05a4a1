package mqtt

import (
	"math"
	"testing"
	"time"
)

// late returns times an hour apart, call after call: an outage that old never bounds the
// window, so the exponential ceilings and the cap show alone.
var late = func() func() time.Time {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time { at = at.Add(time.Hour); return at }
}()

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
				got := b.next(late())
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
			b.next(late())
		}
		for _, r := range rs {
			if got, want := b.next(late()), time.Duration(r*float64(max)); got != want {
				t.Errorf("at the cap with rand %v: %v, want %v", r, got, want)
			}
		}
	})

	t.Run("reset starts again from the shortest ceiling", func(t *testing.T) {
		b := backoff{min: min, max: max, rand: func() float64 { return 0.5 }}
		for range 5 {
			b.next(late())
		}
		b.reset()
		if got := b.next(late()); got != 500*time.Millisecond {
			t.Errorf("after reset: %v, want 500ms", got)
		}
	})

	t.Run("out-of-range rand values stay inside the window", func(t *testing.T) {
		for _, r := range []float64{-1, 1, 2, math.NaN(), math.Inf(1)} {
			b := backoff{min: min, max: max, rand: func() float64 { return r }}
			if got := b.next(late()); got < 0 || got >= min {
				t.Errorf("rand %v: %v, want in [0, %v)", r, got, min)
			}
		}
	})

	t.Run("a huge cap does not overflow", func(t *testing.T) {
		b := backoff{min: time.Nanosecond, max: math.MaxInt64, rand: func() float64 { return 0.5 }}
		for i := range 200 {
			if got := b.next(late()); got < 0 {
				t.Fatalf("retry %d: negative delay %v", i, got)
			}
		}
	})
}

// Attempts that fail at once (the broker down, the link cut) do not push the window ahead of
// the outage: a device waits at most as long again as it has been away, so that it is back
// soon after a short cut; a long outage reaches the exponential ceilings and the cap as before.
func TestBackoffDoesNotRunAheadOfTheOutage(t *testing.T) {
	const lo, hi = time.Second, 5 * time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := backoff{min: lo, max: hi, rand: func() float64 { return 0.999999 }}
	// One attempt a second for ten seconds: each fails at once and draws close to its ceiling.
	for i := range 11 {
		out := time.Duration(i) * time.Second
		got := b.next(t0.Add(out))
		if bound := time.Duration(float64(max(out, lo)) * 0.999999); got > bound || got < bound-time.Millisecond {
			t.Errorf("attempt %d, %v into the outage: %v, want just under %v", i, out, got, max(out, lo))
		}
	}
	// Ten seconds out, the exponent alone would allow 2^11 s, the cap 5 minutes.
	if got := b.next(t0.Add(10 * time.Second)); got > 10*time.Second {
		t.Errorf("10 s into the outage: %v", got)
	}
	// An hour out, the cap.
	if got, want := b.next(t0.Add(time.Hour)), time.Duration(float64(hi)*0.999999); got != want {
		t.Errorf("an hour into the outage: %v, want %v", got, want)
	}
	// A connection that lasted starts a new outage.
	b.reset()
	if got := b.next(t0.Add(2 * time.Hour)); got >= lo {
		t.Errorf("the first attempt of a new outage: %v, want under %v", got, lo)
	}
	if got := b.next(t0.Add(2*time.Hour + 3*time.Second)); got > 2*time.Second {
		t.Errorf("3 s into the new outage, the second attempt: %v, want at most the exponent's 2 s", got)
	}
}
