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

// A turn passed on, its connection gone when it came, is as if it had never been given: each
// turn queued after it moves up to the time of the one before it, the first to the passed
// turn's, which their connections learn at once, the last time given is given again, and the
// turns held stay 1/rate apart. The passed turn weighs as a turn wasted by its source; one
// another connection took cannot be passed on.
func TestATurnPassedOnMovesTheQueueUp(t *testing.T) {
	p := newPacer(10) // a turn every 100 ms
	t0 := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	first, _ := p.take(b, t0, time.Second)
	if _, ok := p.claim(first); !ok {
		t.Fatal("the first turn, at once, is not its caller's")
	}
	var q []*turn // a's, at 100 to 400 ms, then b's at 500 ms
	for range 4 {
		tn, _ := p.take(a, t0, time.Second)
		q = append(q, tn)
	}
	last, _ := p.take(b, t0, time.Second)
	q = append(q, last)

	if !p.pass(q[0], t0.Add(100*time.Millisecond)) {
		t.Fatal("pass refused a turn still its caller's")
	}
	for i, tn := range q[1:] {
		if want := t0.Add(time.Duration(i+1) * p.interval); !tn.at.Equal(want) {
			t.Errorf("queued turn %d at %v after the pass, want %v", i+1, tn.at.Sub(t0), want.Sub(t0))
		}
	}
	if w := p.weight(a); w != 1 {
		t.Errorf("a weighs %d after its turn was passed on, want 1 (wasted)", w)
	}
	told := func(tn *turn) bool {
		select {
		case <-tn.moved:
			return true
		default:
			return false
		}
	}
	if d := p.due(q[1], t0.Add(100*time.Millisecond)); !told(q[1]) || d != 0 {
		t.Fatalf("the turn moved to now: told %v, due in %v; want told, due now", told(q[1]), d)
	}
	for i, tn := range q[2:] {
		if !told(tn) {
			t.Fatalf("turn %d moved was not told at once", i+2)
		}
	}
	if at, ok := p.claim(q[1]); !ok || !at.Equal(t0.Add(100*time.Millisecond)) {
		t.Fatalf("claim = %v, %v", at.Sub(t0), ok)
	}
	// The 500 ms time, last given and freed, is the next caller's.
	if tn, ok := p.take(b, t0.Add(100*time.Millisecond), time.Second); !ok || !tn.at.Equal(t0.Add(5*p.interval)) {
		t.Fatalf("the next turn after the pass is at %v (%v), want 500 ms", tn.at.Sub(t0), ok)
	}

	// A turn given at once and passed on gives its time back to the next caller.
	p2 := newPacer(10)
	now, _ := p2.take(b, t0, 0)
	p2.pass(now, t0)
	if tn, ok := p2.take(b, t0, 0); !ok || !tn.at.Equal(t0) {
		t.Fatalf("after a turn at once was passed on, the next is at %v (%v), want at once", tn.at.Sub(t0), ok)
	}

	// A turn taken by another connection (its source weighs 6) is not passed on, and the
	// connection that took it has its place in the order.
	p3 := newPacer(10)
	for range stealMargin {
		p3.waste(a, t0)
	}
	p3.take(b, t0, 0)
	victim, _ := p3.take(a, t0, 100*time.Millisecond)
	thief, ok := p3.take(b, t0, 100*time.Millisecond)
	if !ok || !thief.stolen || !victim.lost {
		t.Fatal("b did not take a's turn")
	}
	if p3.pass(victim, t0.Add(100*time.Millisecond)) {
		t.Fatal("a turn another connection took was passed on")
	}
	if p3.order.Len() != 1 || p3.order.Front().Value.(*turn) != thief {
		t.Fatal("the turn taken is not in the order in the place of the one it took")
	}
}
