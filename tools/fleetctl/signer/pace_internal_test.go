package signer

import (
	"testing"
	"time"
)

const hold = 25 * time.Second

// The hints a signer gives the devices it tells rate_limited: none without a pace to go by;
// otherwise after the requests it holds (for as long as it holds them) and one place apart at
// its fastest recent pace, or at the fleet's rate limit if that is slower; never past
// maxRetryAfter.
func TestPaceSpacesTheDevicesItTellsToRetry(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)

	var p pace
	if got := p.retryAfter(t0, 100, hold, 0, 0); got != 0 {
		t.Fatalf("no issue yet, no rate limit: hint %d s, want none", got)
	}
	if got := p.retryAfter(t0, 0, hold, 0.5, 4*time.Second); got != 4 {
		t.Fatalf("no issue yet, a limit whose next token is 4 s away: hint %d s, want 4", got)
	}

	// 10 a second for 10 s; told at the end, with 50 requests held before it.
	p = pace{}
	for i := range 10 {
		p.issued(t0.Add(time.Duration(i)*time.Second), 10)
	}
	now := t0.Add(10 * time.Second)
	if r := p.rate(now); r != 10 {
		t.Fatalf("rate %v, want 10 a second", r)
	}
	// 50 held: the first is told 5 s; then 0.1 s apart, rounded up to whole seconds.
	var hints []int
	perSecond := map[int]int{}
	for range 21 {
		h := p.retryAfter(now, 50, hold, 0, 0)
		hints = append(hints, h)
		perSecond[h]++
	}
	if hints[0] != 5 || hints[20] < 7 || hints[20] > 8 {
		t.Errorf("hints %v: want the first 5 s and the 21st 7 s (5 + 20 × 0.1)", hints)
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
	if a, b, c := q.retryAfter(at, 0, hold, 1, 0), q.retryAfter(at, 0, hold, 1, 0), q.retryAfter(at, 0, hold, 1, 0); a != 1 || b != 1 || c != 2 {
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
	if got := p.retryAfter(now.Add(time.Hour), 0, hold, 1, 0); got != 1 {
		t.Errorf("an hour later: hint %d s, want 1", got)
	}
	// The requests held go first only for as long as the signer holds them: after that they
	// are told to come back too, and take places after this one.
	p.next = time.Time{}
	if got := p.retryAfter(now, 1_000_000, hold, 0, 0); got != int(hold/time.Second) {
		t.Errorf("a million held: hint %d s, want the hold of %s", got, hold)
	}
	// Nothing is told to wait more than maxRetryAfter.
	if got := p.retryAfter(now, 0, hold, 1, 2*time.Hour); got != int(maxRetryAfter/time.Second) {
		t.Errorf("a limit's next token 2 h away: hint %d s, want %d", got, int(maxRetryAfter/time.Second))
	}
}
