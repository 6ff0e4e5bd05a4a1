package broker

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// simWaiter is one connection in the simulation, following listener.takeTurn and awaitTurn.
type simWaiter struct {
	id       int
	src      netip.Addr
	t        *turn
	gone     bool          // its client left before its turn
	deadline time.Time     // its handshake context's
	late     time.Duration // how late its goroutine runs after each wake
	gen      int           // the generation of its timer
	done     bool
	spentAt  time.Time // real time of its claim
	spentOn  time.Time // the turn's time claim returned
	outcome  string
}

type simEvent struct {
	at   time.Time
	seq  int
	kind int // 0 arrival, 1 timer, 2 signal (moved or taken), 3 ctx done
	w    *simWaiter
	gen  int
}

type simQueue []*simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type simResult struct {
	waiters []*simWaiter
	p       *pacer
}

// simulate runs n connections arriving over span against a pacer of rate, with explicit times.
func simulate(t *testing.T, seed uint64, rate float64, n int, span, wait time.Duration, goneFrac float64, maxLate time.Duration, ctxFrac float64) simResult {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b9))
	p := newPacer(rate)
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	srcs := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("203.0.113.4"),
	}
	// Make one source weigh a lot, so that steals happen.
	for range 20 {
		p.waste(srcs[0], t0)
	}
	var q simQueue
	seq := 0
	push := func(at time.Time, kind int, w *simWaiter, gen int) {
		seq++
		heap.Push(&q, &simEvent{at: at, seq: seq, kind: kind, w: w, gen: gen})
	}
	var ws []*simWaiter
	for i := range n {
		w := &simWaiter{id: i, src: srcs[rng.IntN(len(srcs))], gone: rng.Float64() < goneFrac}
		if maxLate > 0 {
			w.late = time.Duration(rng.Int64N(int64(maxLate)))
		}
		arr := t0.Add(time.Duration(rng.Int64N(int64(span))))
		if rng.Float64() < ctxFrac {
			w.deadline = arr.Add(time.Duration(rng.Int64N(int64(wait))))
		}
		ws = append(ws, w)
		push(arr, 0, w, 0)
	}
	waiting := map[*simWaiter]bool{}
	// arrive is what takeTurn does once awaitTurn returned nil.
	arrive := func(w *simWaiter, now time.Time) {
		delete(waiting, w)
		w.done = true
		if w.gone && p.pass(w.t, now) {
			w.outcome = "passed"
			return
		}
		at, ok := p.claim(w.t)
		if !ok {
			w.outcome = "lost"
			return
		}
		w.outcome = "spent"
		w.spentAt, w.spentOn = now, at
	}
	// await is one round of awaitTurn's loop.
	await := func(w *simWaiter, now time.Time) {
		d := p.due(w.t, now)
		if d <= 0 {
			arrive(w, now)
			return
		}
		w.gen++
		waiting[w] = true
		push(now.Add(d).Add(w.late), 1, w, w.gen)
	}
	// poll delivers what the pacer sent to waiting connections.
	poll := func(now time.Time) {
		for w := range waiting {
			select {
			case <-w.t.taken:
				w.gen++
				delete(waiting, w)
				push(now.Add(w.late), 2, w, w.gen)
				continue
			default:
			}
			select {
			case <-w.t.moved:
				w.gen++
				delete(waiting, w)
				push(now.Add(w.late), 2, w, w.gen)
			default:
			}
		}
	}
	for q.Len() > 0 {
		e := heap.Pop(&q).(*simEvent)
		now, w := e.at, e.w
		switch e.kind {
		case 0:
			tn, ok := p.take(w.src, now, wait)
			if !ok {
				w.done, w.outcome = true, "refused"
				break
			}
			w.t = tn
			if !w.deadline.IsZero() {
				push(w.deadline, 3, w, 0)
			}
			await(w, now)
		case 1, 2:
			if w.done || e.gen != w.gen {
				break
			}
			delete(waiting, w)
			w.gen++
			select {
			case <-w.t.taken:
				arrive(w, now) // claim says no
				break
			default:
				await(w, now)
			}
		case 3:
			if w.done || !waiting[w] {
				break
			}
			delete(waiting, w)
			w.done, w.outcome = true, "abandoned"
			p.abandon(w.t)
		}
		poll(now)
		checkPacer(t, p, now)
	}
	return simResult{waiters: ws, p: p}
}

// checkSpacing checks that the turn times claim returned are at least 1/rate apart.
func checkSpacing(t *testing.T, r simResult, label string) {
	t.Helper()
	var ats []time.Time
	for _, w := range r.waiters {
		if w.outcome == "spent" {
			ats = append(ats, w.spentOn)
		}
	}
	slices.SortFunc(ats, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(ats); i++ {
		if d := ats[i].Sub(ats[i-1]); d < r.p.interval {
			t.Fatalf("%s: turns spent at %v and %v, %v apart", label, ats[i-1].Format("05.000000"), ats[i].Format("05.000000"), d)
		}
	}
}

func TestSimulatedPacerKeepsItsSpacing(t *testing.T) {
	for seed := range uint64(15) {
		label := fmt.Sprintf("seed %d", seed)
		n := 300 + int(seed%3)*300
		r := simulate(t, seed, 50, n, 4*time.Second, time.Second, 0.3, 0, 0.1)
		checkSpacing(t, r, label)
		for _, w := range r.waiters {
			if !w.done {
				t.Fatalf("%s: connection %d never finished", label, w.id)
			}
			if w.outcome == "spent" && w.spentAt.Before(w.spentOn) {
				t.Fatalf("%s: connection %d spent its turn at %v before its time %v", label, w.id, w.spentAt, w.spentOn)
			}
		}
		if r.p.order.Len() != 0 || len(r.p.bySrc) != 0 {
			t.Fatalf("%s: %d turns left in the order, %d sources", label, r.p.order.Len(), len(r.p.bySrc))
		}
	}
}

// With goroutines that run late, the turn times claim returns still never coincide.
func TestSimulatedPacerKeepsItsSpacingWithLateGoroutines(t *testing.T) {
	for seed := range uint64(15) {
		label := fmt.Sprintf("seed %d", seed)
		n := 300 + int(seed%3)*300
		r := simulate(t, seed, 50, n, 4*time.Second, time.Second, 0.3, 60*time.Millisecond, 0.1)
		checkSpacing(t, r, label)
		for _, w := range r.waiters {
			if !w.done {
				t.Fatalf("%s: connection %d never finished", label, w.id)
			}
		}
	}
}

// With prompt goroutines, each connection that is there is served when its turn comes: spent
// in real time 1/rate apart, and no later than its turn's time as given at take.
func TestSimulatedPromptConnectionsAreServedOnTime(t *testing.T) {
	for seed := range uint64(15) {
		label := fmt.Sprintf("seed %d", seed)
		n := 300 + int(seed%3)*300
		r := simulate(t, seed, 50, n, 4*time.Second, time.Second, 0.3, 0, 0.1)
		var real []time.Time
		for _, w := range r.waiters {
			if w.outcome == "spent" {
				real = append(real, w.spentAt)
				if !w.spentAt.Equal(w.spentOn) {
					t.Fatalf("%s: connection %d spent its turn of %v at %v", label, w.id, w.spentOn.Format("05.000000"), w.spentAt.Format("05.000000"))
				}
			}
		}
		slices.SortFunc(real, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(real); i++ {
			if d := real[i].Sub(real[i-1]); d < r.p.interval {
				t.Fatalf("%s: spent at %v and %v", label, real[i-1], real[i])
			}
		}
	}
}

// Every turn passed on counts once as wasted by its source.
func TestSimulatedPassesCountAsWasted(t *testing.T) {
	for seed := range uint64(8) {
		r := simulate(t, seed, 50, 600, 4*time.Second, time.Second, 0.3, 60*time.Millisecond, 0.1)
		passed := map[netip.Addr]int{}
		for _, w := range r.waiters {
			if w.outcome == "passed" {
				passed[w.src]++
			}
		}
		passed[netip.MustParseAddr("192.0.2.1")] += 20
		for src, n := range passed {
			if got := r.p.wasted[src] + r.p.wastedBefore[src]; got != n {
				t.Fatalf("seed %d: %v wasted %d, passed %d", seed, src, got, n)
			}
		}
	}
}

// checkPacer checks the pacer's structures agree: the order holds exactly the turns by
// source, sorted by time 1/rate apart at least, every queued turn before p.next, and the
// weights are up to date.
func checkPacer(t *testing.T, p *pacer, now time.Time) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for src, l := range p.bySrc {
		n += l.Len()
		for e := l.Front(); e != nil; e = e.Next() {
			tn := e.Value.(*turn)
			if tn.inOrder == nil || tn.elem != e || tn.src != src || tn.lost {
				t.Fatalf("at %v: a turn of %v is broken", now, src)
			}
		}
		if got, want := p.weighed.count(src), p.weight(src); got != want {
			t.Fatalf("at %v: %v weighed %d, weighs %d", now, src, got, want)
		}
	}
	if n != p.order.Len() {
		t.Fatalf("at %v: %d turns by source, %d in the order", now, n, p.order.Len())
	}
	for src, c := range p.weighed.n {
		if p.bySrc[src] == nil && c != 0 {
			t.Fatalf("at %v: %v has no turn queued and weighs %d in the tally", now, src, c)
		}
	}
	var prev time.Time
	for e := p.order.Front(); e != nil; e = e.Next() {
		tn := e.Value.(*turn)
		if tn.inOrder != e {
			t.Fatalf("at %v: order broken", now)
		}
		if !prev.IsZero() && tn.at.Sub(prev) < p.interval {
			t.Fatalf("at %v: queued turns at %v and %v", now, prev, tn.at)
		}
		if !tn.at.Before(p.next) {
			t.Fatalf("at %v: a turn queued at %v, next %v", now, tn.at, p.next)
		}
		prev = tn.at
	}
}
