package signer

import (
	"time"

	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// bucket is the token bucket of Config.MaxRate. It is fed by the registry rather than by this
// process's own decisions: every rotation certificate any signer on the fleet directory
// issued takes a token, so the instances share one budget, and an instance that starts late
// replays the log to the same state as the others.
type bucket struct {
	rate   float64 // tokens per second; 0 means unlimited
	burst  float64
	tokens float64
	last   time.Time            // when tokens was last brought up to date; zero before the first use
	cursor registry.IssueCursor // the registry's rotation certificates taken into account
}

func newBucket(perMinute float64, burst int) *bucket {
	return &bucket{rate: perMinute / 60, burst: float64(burst), tokens: float64(burst)}
}

// refill adds the tokens earned since the last update, up to burst. Time never runs
// backwards for the bucket: records written by another host's clock may be slightly out of
// order.
func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.last = now
		return
	}
	if !now.After(b.last) {
		return
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
}

// sync takes a token for every rotation certificate issued since the last sync.
func (b *bucket) sync(tx *registry.Tx) {
	if b.rate == 0 {
		return
	}
	issues, next, all := tx.IssuesFrom(b.cursor)
	if all {
		// The first sync, or the log was compacted since the last one: the cursor no longer
		// says which certificates were counted, so the bucket replays the log from the start,
		// as a signer that starts now does.
		b.tokens, b.last = b.burst, time.Time{}
	}
	for _, c := range issues {
		b.refill(c.Issued)
		b.tokens--
	}
	b.cursor = next
}

// allow reports whether a token is available at now. It does not take it: issuing does, via
// the registry and sync.
func (b *bucket) allow(now time.Time) bool {
	if b.rate == 0 {
		return true
	}
	b.refill(now)
	return b.tokens >= 1
}

// wait is how long from now until a token is available (0 if one is).
func (b *bucket) wait(now time.Time) time.Duration {
	if b.rate == 0 || b.allow(now) {
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}
