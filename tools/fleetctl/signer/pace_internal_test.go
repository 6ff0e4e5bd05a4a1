package signer

import (
	"fmt"
	"testing"
	"time"
)

// The hints a signer gives the devices it tells rate_limited: none without a pace to go by;
// otherwise one place after the devices told before it whose places are still ahead, at its
// fastest recent pace, or at the fleet's rate limit if that is slower; never past
// maxRetryAfter.
func TestPaceSpacesTheDevicesItTellsToRetry(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	dev := func(i int) string { return fmt.Sprintf("cam-%04d", i) }

	var p pace
	if got := p.retryAfter(t0, dev(0), 0, 0); got != 0 {
		t.Fatalf("no issue yet, no rate limit: hint %d s, want none", got)
	}
	if got := p.retryAfter(t0, dev(0), 0.5, 4*time.Second); got != 4 {
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
	for i := range 21 {
		h := p.retryAfter(now, dev(i), 0, 0)
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
	if a, b, c := q.retryAfter(at, dev(0), 1, 0), q.retryAfter(at, dev(1), 1, 0), q.retryAfter(at, dev(2), 1, 0); a != 1 || b != 1 || c != 2 {
		t.Errorf("at a limit of 1 a second: hints %d, %d and %d s, want 1 (now, rounded up), 1 and 2", a, b, c)
	}
	// Ten devices hold places 0 to 9 s ahead. One told again (its answer was lost, so it
	// asked before its place) gives up its first place, and one issued a certificate gives
	// up its own: the next device gets the place after eight others, not ten.
	for i := 3; i < 10; i++ {
		q.retryAfter(at, dev(i), 1, 0)
	}
	if got := q.retryAfter(at, dev(4), 1, 0); got != 9 {
		t.Errorf("a device told again: hint %d s, want 9 (after the nine others)", got)
	}
	q.served(dev(6))
	q.served(dev(7))
	if got := q.retryAfter(at, dev(10), 1, 0); got != 8 {
		t.Errorf("after two served: hint %d s, want 8", got)
	}
	// Places that have passed are forgotten.
	if got := q.retryAfter(at.Add(time.Minute), dev(11), 1, 0); got != 1 {
		t.Errorf("a minute later: hint %d s, want 1", got)
	}
	if len(q.places) != 1 || len(q.soonest) != 1 {
		t.Errorf("%d places and %d in the heap after they all passed, want the newest alone", len(q.places), len(q.soonest))
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

	// A place further than maxRetryAfter ahead is drawn from its second half and not kept:
	// the devices beyond an hour's pace spread over the next half hour.
	q = pace{}
	hour := int(maxRetryAfter / time.Second)
	for i := range hour + 1 {
		q.retryAfter(t0, dev(i), 1, 0)
	}
	seen := map[int]bool{}
	for i := range 20 {
		h := q.retryAfter(t0, dev(hour+1+i), 1, 0)
		if h < hour/2 || h > hour {
			t.Fatalf("a place beyond an hour: hint %d s, want %d to %d", h, hour/2, hour)
		}
		seen[h] = true
	}
	if len(seen) < 10 {
		t.Errorf("20 devices beyond an hour were told only %d different hints", len(seen))
	}
	if len(q.places) != hour+1 {
		t.Errorf("%d places kept, want the %d within the hour", len(q.places), hour+1)
	}
	if got := q.retryAfter(t0, dev(0), 1, 2*maxRetryAfter); got < hour/2 || got > hour {
		t.Errorf("a limit's next token 2 h away: hint %d s, want %d to %d", got, hour/2, hour)
	}
}
