package broker

import (
	"net/netip"
	"testing"
	"time"
)

// turnAt takes a turn from p for a connection from one and the same source and returns its
// time.
func turnAt(p *pacer, now time.Time, wait time.Duration) (time.Time, bool) {
	t, ok := p.take(netip.Addr{}, now, wait)
	if !ok {
		return time.Time{}, false
	}
	return t.at, true
}

// The pacer spaces turns by 1/rate in the order asked for, refuses a caller whose turn would
// come too late without taking a turn from those behind it, and so never gives any second of
// the clock more than rate turns plus one, whatever the arrivals.
func TestThePacerSpacesTurnsAndRefusesWithoutTakingOne(t *testing.T) {
	const rate = 400
	p := newPacer(rate)
	t0 := time.Date(2026, 11, 27, 9, 0, 0, 999_000_000, time.UTC) // just before a second starts
	wait := 5 * time.Second

	// A storm: 5,000 arrivals within 10 ms.
	var turns []time.Time
	refused := 0
	for i := range 5000 {
		now := t0.Add(time.Duration(i) * 2 * time.Microsecond)
		at, ok := turnAt(p, now, wait)
		if !ok {
			refused++
			continue
		}
		if at.Before(now) || at.Sub(now) > wait {
			t.Fatalf("arrival %d at %v got a turn at %v", i, now, at)
		}
		turns = append(turns, at)
	}
	// Turns every 2.5 ms, the first at once, up to 5 s after the last arrival (at 9.998 ms):
	// 0, 2.5 ms, …, 5,007.5 ms, 2,004 of them.
	if len(turns) != 2004 || refused != 5000-2004 {
		t.Fatalf("%d turns, %d refused; want 2004 and %d", len(turns), refused, 5000-2004)
	}
	for i := 1; i < len(turns); i++ {
		if d := turns[i].Sub(turns[i-1]); d != p.interval {
			t.Fatalf("turns %d and %d are %v apart, want %v", i-1, i, d, p.interval)
		}
	}
	perSecond := map[int64]int{}
	for _, at := range turns {
		perSecond[at.Unix()]++
	}
	for s, n := range perSecond {
		if n > rate+1 {
			t.Errorf("second %d holds %d turns, budget %d", s, n, rate)
		}
	}

	// The refusals took nothing: the next caller's turn follows the last one given.
	last := turns[len(turns)-1]
	at, ok := turnAt(p, last.Add(p.interval-wait), wait) // its turn is exactly wait away
	if !ok || !at.Equal(last.Add(p.interval)) {
		t.Fatalf("turn after the storm at %v (%v), want %v", at, ok, last.Add(p.interval))
	}
	// After a quiet spell the next caller goes at once.
	later := at.Add(time.Minute)
	if at, ok := turnAt(p, later, 0); !ok || !at.Equal(later) {
		t.Fatalf("turn after a quiet minute at %v (%v), want at once", at, ok)
	}
}

// admissions keeps the most counted in one second of the clock, also when turns are counted
// out of order across a second's boundary.
func TestAdmissionsKeepThePeakSecond(t *testing.T) {
	var a admissions
	base := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for i, n := range []int{3, 7, 2} {
		for j := range n {
			a.add(base.Add(time.Duration(i)*time.Second + time.Duration(j)*time.Millisecond))
		}
	}
	if a.peak() != 7 {
		t.Fatalf("peak = %d, want 7", a.peak())
	}
	// Second 10 gets 9 turns, second 9 one more, counted in this order: 10, 9, 10, 9, ...
	var b admissions
	for j := range 9 {
		b.add(base.Add(10*time.Second + time.Duration(j)*time.Millisecond))
		b.add(base.Add(9*time.Second + time.Duration(999-j)*time.Millisecond))
	}
	if b.peak() != 9 {
		t.Fatalf("peak = %d, want 9 (out of order)", b.peak())
	}
}
