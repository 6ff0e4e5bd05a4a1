package signer

import (
	"testing"
	"time"
)

// The hints a signer gives the devices it tells rate_limited: none without a pace to go by;
// otherwise one place apart at its fastest recent pace, or at the fleet's rate limit if that
// is slower; never past maxRetryAfter.
func TestPaceSpacesTheDevicesItTellsToRetry(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)

	var p pace
	if got := p.retryAfter(t0, 0, 0); got != 0 {
		t.Fatalf("no issue yet, no rate limit: hint %d s, want none", got)
	}
	if got := p.retryAfter(t0, 0.5, 4*time.Second); got != 4 {
		t.Fatalf("no issue yet, a limit whose next token is 4 s away: hint %d s, want 4", got)
	}

	// 10 a second for 10 s; devices told at the end.
	p = pace{}
	for i := range 10 {
		p.issued(t0.Add(time.Duration(i)*time.Second), 10)
	}
	now := t0.Add(10 * time.Second)
	if r := p.rate(now); r != 10 {
		t.Fatalf("rate %v, want 10 a second", r)
	}
	// The first is told to come back now (1 s, rounded up); then 0.1 s apart.
	var hints []int
	perSecond := map[int]int{}
	for range 21 {
		h := p.retryAfter(now, 0, 0)
		hints = append(hints, h)
		perSecond[h]++
	}
	if hints[0] != 1 || hints[20] < 2 || hints[20] > 3 {
		t.Errorf("hints %v: want the first 1 s and the 21st 2 s (20 × 0.1)", hints)
	}
	for i := 1; i < len(hints); i++ {
		if hints[i] < hints[i-1] {
			t.Errorf("hints %v: a later device told to come back sooner", hints)
		}
	}
	for s, n := range perSecond {
		if n > 11 {
			t.Errorf("%d devices told to come back in %d s, at a pace of 10 a second", n, s)
		}
	}

	// A rate limit slower than the pace sets the spacing: 1 a second.
	q := pace{}
	q.issued(t0, 30)
	at := t0.Add(time.Second)
	if a, b, c := q.retryAfter(at, 1, 0), q.retryAfter(at, 1, 0), q.retryAfter(at, 1, 0); a != 1 || b != 1 || c != 2 {
		t.Errorf("at a limit of 1 a second: hints %d, %d and %d s, want 1 (now, rounded up), 1 and 2", a, b, c)
	}

	// The fastest pace of the last paceSpan, not the latest: after 10 s at 100 a second, a
	// minute at 1 a second (devices told to come back slowly come back slowly) still
	// counts 100.
	q = pace{}
	for i := range 10 {
		q.issued(t0.Add(time.Duration(i)*time.Second), 100)
	}
	for i := range 60 {
		q.issued(t0.Add(time.Duration(10+i)*time.Second), 1)
	}
	if r := q.rate(t0.Add(70 * time.Second)); r != 100 {
		t.Errorf("rate %v after a fast and a slow spell, want the fast one's 100 a second", r)
	}
	if r := q.rate(t0.Add(paceSpan + 30*time.Second)); r != 1 {
		t.Errorf("rate %v once the fast spell is older than paceSpan, want the slow one's 1 a second", r)
	}
	// Issues older than paceSpan do not count.
	if r := q.rate(t0.Add(paceSpan + 80*time.Second)); r != 0 {
		t.Errorf("rate %v long after the last issue, want 0", r)
	}

	// A place taken long ago does not push a new device back.
	if got := p.retryAfter(now.Add(time.Hour), 1, 0); got != 1 {
		t.Errorf("an hour later: hint %d s, want 1", got)
	}
	// A place further than maxRetryAfter ahead is drawn from its second half, and takes no
	// place after it: the devices beyond an hour's pace spread over the next half hour.
	half := int(maxRetryAfter/time.Second) / 2
	seen := map[int]bool{}
	p.next = now.Add(2 * maxRetryAfter)
	for range 20 {
		h := p.retryAfter(now, 1, 0)
		if h < half || h > 2*half {
			t.Fatalf("a place two hours ahead: hint %d s, want %d to %d", h, half, 2*half)
		}
		seen[h] = true
	}
	if len(seen) < 10 {
		t.Errorf("20 devices beyond an hour were told only %d different hints", len(seen))
	}
	if !p.next.Equal(now.Add(2 * maxRetryAfter)) {
		t.Errorf("the places beyond an hour moved on to %s", p.next)
	}
	if got := p.retryAfter(now, 1, 2*maxRetryAfter); got < half || got > 2*half {
		t.Errorf("a limit's next token 2 h away: hint %d s, want %d to %d", got, half, 2*half)
	}
}
