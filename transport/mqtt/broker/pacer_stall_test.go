package broker

import (
	"net/netip"
	"testing"
	"time"
)

// When a turn is passed on, the turns queued behind it move up; a connection whose goroutine
// is slow to run (a busy machine) must not hold back the connections queued behind it. Before,
// only the first turn moved was told at once and each next one when the one before it left
// the queue: with the first one's goroutine late, the others kept waiting for their old times
// while the time freed at the end was already given to a newcomer, and two connections that
// ran on time started their handshakes at the same instant.
func TestASlowConnectionDoesNotHoldBackTheTurnsMovedBehindIt(t *testing.T) {
	p := newPacer(10) // a turn every 100 ms
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")

	type conn struct {
		name  string
		t     *turn
		timer time.Time // when its timer fires, zero if it is not waiting
		slow  time.Time // a slow goroutine runs only from then on
	}
	var conns []*conn
	spent := map[string]time.Time{}
	// await is one round of listener.awaitTurn, and then takeTurn's claim (none of these
	// clients left, but gone's).
	await := func(c *conn, now time.Time) {
		if d := p.due(c.t, now); d > 0 {
			c.timer = now.Add(d)
			return
		}
		c.timer = time.Time{}
		if c.name == "gone" {
			if !p.pass(c.t, now) {
				t.Fatal("pass refused")
			}
			return
		}
		if _, ok := p.claim(c.t); !ok {
			t.Fatalf("%s lost its turn", c.name)
		}
		spent[c.name] = now
	}
	take := func(name string, src netip.Addr, now time.Time) *conn {
		tn, ok := p.take(src, now, time.Second)
		if !ok {
			t.Fatalf("%s got no turn", name)
		}
		c := &conn{name: name, t: tn}
		conns = append(conns, c)
		await(c, now)
		return c
	}
	// run lets every connection that can run at now do so: those told their turn moved, and
	// those whose timer fired.
	run := func(now time.Time) {
		for again := true; again; {
			again = false
			for _, c := range conns {
				if c.timer.IsZero() || now.Before(c.slow) {
					continue
				}
				told := false
				if c.t.moved != nil {
					select {
					case <-c.t.moved:
						told = true
					default:
					}
				}
				if told || !now.Before(c.timer) {
					await(c, now)
					again = true
				}
			}
		}
	}

	take("first", b, ms(0)) // at once
	take("gone", a, ms(0))  // 100 ms
	q1 := take("q1", a, ms(0))
	take("q2", a, ms(0))
	take("q3", a, ms(0)) // 400 ms, the last given
	q1.slow = ms(350)    // q1's goroutine does not run again until 350 ms

	for now := ms(0); !now.After(ms(600)); now = now.Add(time.Millisecond) {
		if now.Equal(ms(150)) {
			take("newcomer", b, now)
		}
		run(now)
	}
	for _, c := range conns {
		if c.name != "gone" && spent[c.name].IsZero() {
			t.Fatalf("%s never got its turn", c.name)
		}
	}
	// q1 is late by its own fault; the others ran on time and must be 1/rate apart.
	onTime := []string{"first", "q2", "q3", "newcomer"}
	for i, x := range onTime {
		for _, y := range onTime[i+1:] {
			d := spent[x].Sub(spent[y])
			if d < 0 {
				d = -d
			}
			if d < p.interval {
				t.Errorf("%s and %s started their handshakes %v apart, at %v and %v (all spent: %v)",
					x, y, d, spent[x].Sub(t0), spent[y].Sub(t0), spentLog(spent, t0))
			}
		}
	}
}

func spentLog(spent map[string]time.Time, t0 time.Time) map[string]time.Duration {
	m := map[string]time.Duration{}
	for k, v := range spent {
		m[k] = v.Sub(t0)
	}
	return m
}
