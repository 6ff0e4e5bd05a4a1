package broker

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// sourceOf counts an IPv4 address as itself, an IPv4-mapped one as the IPv4 address, and
// every IPv6 address as its /56.
func TestSourceOfIsTheAddressOrItsSlash56(t *testing.T) {
	for _, c := range []struct{ ip, want string }{
		{"127.0.0.1", "127.0.0.1"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1::"},
		{"2001:db8:1:2ff::1", "2001:db8:1:200::"},
		{"::1", "::"},
	} {
		got := sourceOf(&net.TCPAddr{IP: net.ParseIP(c.ip), Port: 1234})
		if got != netip.MustParseAddr(c.want) {
			t.Errorf("sourceOf(%s) = %v, want %s", c.ip, got, c.want)
		}
	}
	if got := sourceOf(&net.UnixAddr{Name: "/x"}); got.IsValid() {
		t.Errorf("sourceOf(a unix address) = %v, want the zero Addr", got)
	}
}

// tally's most is always a source holding the highest count, through any sequence of
// increments, decrements and counts set outright: checked against counting by hand.
func TestTallyKnowsTheSourceHoldingTheMost(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	srcs := make([]netip.Addr, 12)
	for i := range srcs {
		srcs[i] = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
	}
	var tl tally
	want := map[netip.Addr]int{}
	for step := range 20000 {
		s := srcs[rng.IntN(len(srcs))]
		switch r := rng.IntN(5); {
		case r == 0:
			c := rng.IntN(3) * rng.IntN(40) // 0 a third of the time
			tl.set(s, c)
			want[s] = c
		case want[s] > 0 && r < 3:
			tl.dec(s)
			want[s]--
		default:
			tl.inc(s)
			want[s]++
		}
		hi := 0
		for _, n := range want {
			hi = max(hi, n)
		}
		top, n := tl.most()
		if n != hi || (hi > 0 && want[top] != hi) {
			t.Fatalf("step %d: most = %v holding %d (really %d), highest count %d", step, top, n, want[top], hi)
		}
		for _, x := range srcs {
			if tl.count(x) != want[x] {
				t.Fatalf("step %d: count(%v) = %d, want %d", step, x, tl.count(x), want[x])
			}
		}
	}
}

// When one source has filled the queue, a connection from another source takes the last turn
// the first one queued, and the connection that had it learns so; this goes on until the
// first weighs less than stealMargin more than the second (turns queued beyond
// queuedAllowance weigh one each), and no turn is ever made that the budget did not have: the
// turns handed out stay 1/rate apart.
func TestTheQueueIsSharedBetweenSources(t *testing.T) {
	const rate = 100
	p := newPacer(rate)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	wait := time.Second
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")

	var ofA []*turn
	for {
		tn, ok := p.take(a, t0, wait)
		if !ok {
			break
		}
		ofA = append(ofA, tn)
	}
	// Turns at 0, 10 ms, …, 1 s: 101 of them, the first one at once and not queued.
	if len(ofA) != 101 || p.weight(a) != 100-queuedAllowance {
		t.Fatalf("source a got %d turns, weighs %d; want 101 and %d", len(ofA), p.weight(a), 100-queuedAllowance)
	}
	if _, ok := p.claim(ofA[0]); !ok {
		t.Fatal("a's first turn, at once, is not a's")
	}
	// a itself gets no more: it weighs the most.
	if _, ok := p.take(a, t0, wait); ok {
		t.Fatal("source a took a turn with the queue full of its own")
	}

	var ofB []*turn
	for {
		tn, ok := p.take(b, t0, wait)
		if !ok {
			break
		}
		ofB = append(ofB, tn)
	}
	// b takes while a weighs 6 more: 48 turns, leaving a 52 queued (44) and b 48 (40).
	if len(ofB) != 48 || p.weight(a) != 44 || p.weight(b) != 40 {
		t.Fatalf("source b took %d turns, leaving a weighing %d and b %d; want 48, 44, 40", len(ofB), p.weight(a), p.weight(b))
	}
	lost := 0
	for _, tn := range ofA[1:] {
		select {
		case <-tn.taken:
			lost++
			if _, ok := p.claim(tn); ok {
				t.Fatalf("a turn of a's at %v was taken by b, and claim still gives it to a", tn.at)
			}
		default:
		}
	}
	if lost != 48 {
		t.Fatalf("%d of a's turns were taken, want 48", lost)
	}
	// The turns still held are the budget's 101, each once, 10 ms apart.
	held := map[time.Time]int{}
	for _, tn := range ofA {
		if !tn.lost {
			held[tn.at]++
		}
	}
	for _, tn := range ofB {
		held[tn.at]++
	}
	if len(held) != 101 {
		t.Fatalf("%d distinct turn times held, want 101", len(held))
	}
	for i := range 101 {
		if at := t0.Add(time.Duration(i) * p.interval); held[at] != 1 {
			t.Fatalf("turn at %v held %d times, want once", at, held[at])
		}
	}

	// A third source takes from the one that weighs the most, a.
	c := netip.MustParseAddr("203.0.113.3")
	if _, ok := p.take(c, t0, wait); !ok {
		t.Fatal("source c, weighing nothing, found no turn while a and b weigh 44 and 40")
	}
	if p.weight(a) != 43 || p.weight(b) != 40 {
		t.Fatalf("after c took one: a weighs %d, b %d; want 43 and 40", p.weight(a), p.weight(b))
	}
}

// A source's weight remembers its wasted turns for a window or two: a host that keeps wasting
// them, each time with one turn queued, loses that turn to a newcomer; a host with up to
// queuedAllowance turns queued and none wasted (the signers' host after a broker restart)
// keeps them, and so does a camera whose certificate expired (3 handshakes failed before it
// turns to its bootstrap identity) and whose handshake then timed out twice in the storm;
// two windows on, the turns wasted are forgotten.
func TestWastedTurnsWeighForAWhile(t *testing.T) {
	const rate = 10
	p := newPacer(rate)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	wait := time.Second // a queue of 10 turns beyond the one at once
	host, signers, cam := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("203.0.113.3")

	for range 7 {
		p.waste(host, t0)
	}
	for range 5 {
		p.waste(cam, t0)
	}
	// The queue: a turn at once, then the signers' 8, the camera's and the host's.
	p.take(netip.MustParseAddr("203.0.113.9"), t0, wait)
	var ofSigners []*turn
	for range queuedAllowance {
		tn, ok := p.take(signers, t0, wait)
		if !ok {
			t.Fatal("the signers found no turn")
		}
		ofSigners = append(ofSigners, tn)
	}
	camTurn, ok := p.take(cam, t0, wait)
	if !ok {
		t.Fatal("the camera found no turn")
	}
	hostTurn, ok := p.take(host, t0, wait)
	if !ok {
		t.Fatal("the host found no turn")
	}
	if p.weight(host) != 7 || p.weight(cam) != 5 || p.weight(signers) != 0 {
		t.Fatalf("host weighs %d, camera %d, signers %d; want 7, 5, 0", p.weight(host), p.weight(cam), p.weight(signers))
	}
	newcomer := netip.MustParseAddr("203.0.113.4")
	if _, ok := p.take(newcomer, t0, wait); !ok {
		t.Fatal("a newcomer found no turn while the host, 7 turns wasted, has one queued")
	}
	if !hostTurn.lost {
		t.Fatal("the newcomer did not take the host's turn")
	}
	// Another newcomer finds nothing to take: the camera weighs 5, the signers nothing.
	if _, ok := p.take(netip.MustParseAddr("203.0.113.5"), t0, wait); ok {
		t.Fatal("a newcomer took a turn of the camera (5 wasted) or the signers (8 queued)")
	}
	if camTurn.lost {
		t.Fatal("the camera's turn was taken")
	}
	for _, tn := range ofSigners {
		if tn.lost {
			t.Fatal("a turn of the signers' was taken")
		}
	}

	// Two windows on, the host's turns wasted are forgotten.
	later := t0.Add(2*recentWindow + time.Second)
	p.waste(netip.MustParseAddr("203.0.113.6"), later) // starts a new window
	if p.weight(host) != 0 {
		t.Fatalf("two windows on, the host weighs %d, want 0", p.weight(host))
	}
	// One window on, they still count.
	p2 := newPacer(rate)
	for range 7 {
		p2.waste(host, t0)
	}
	p2.waste(cam, t0.Add(recentWindow+time.Second))
	if p2.weight(host) != 7 {
		t.Fatalf("one window on, the host weighs %d, want 7", p2.weight(host))
	}
}

// Windows follow one another without a gap: a turn wasted weighs for at most two of them,
// however the calls fall. Before, a window started whenever the first call after the last one
// came, and a failure counted just before a quiet spell weighed for nearly three.
func TestAWastedTurnWeighsAtMostTwoWindows(t *testing.T) {
	p := newPacer(10)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	cam := netip.MustParseAddr("203.0.113.3")
	other := netip.MustParseAddr("198.51.100.9")
	p.waste(cam, t0) // the window [t0, t0+30 s)
	p.waste(other, t0.Add(59*time.Second))
	if w := p.weight(cam); w != 1 {
		t.Fatalf("59 s on, a turn wasted in the window before weighs %d, want 1", w)
	}
	p.waste(other, t0.Add(61*time.Second))
	if w := p.weight(cam); w != 0 {
		t.Fatalf("61 s on, two windows past, a turn wasted weighs %d, want 0", w)
	}
}

// A source's weight stops at maxWeight.
func TestAWeightStopsAtItsCap(t *testing.T) {
	p := newPacer(10)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	host := netip.MustParseAddr("198.51.100.1")
	for range maxWeight + 100 {
		p.waste(host, t0)
	}
	if w := p.weight(host); w != maxWeight {
		t.Fatalf("weight %d, want the cap %d", w, maxWeight)
	}
}

// The room for sockets waiting for their ClientHello: a newcomer from a source holding at least
// two fewer pushes out the oldest socket of the source holding the most; with no such source,
// the oldest of all once it has waited longer than grace; otherwise the newcomer is refused.
func TestTheHelloRoomIsSharedBetweenSources(t *testing.T) {
	r := newHelloRoom(4, time.Second)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	src := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, i}) }
	adm := func(i byte) *admission { return &admission{source: src(i)} }

	var ofA []*admission
	for range 4 {
		x := adm(1)
		if out, ok := r.enter(x, t0); !ok || out != nil {
			t.Fatalf("room not full: enter = %v, %v", out, ok)
		}
		ofA = append(ofA, x)
	}
	if _, ok := r.enter(adm(1), t0); ok {
		t.Fatal("a fifth socket of the source holding the whole room got in")
	}
	b1 := adm(2)
	out, ok := r.enter(b1, t0)
	if !ok || out != ofA[0] || !out.pushedOut.Load() {
		t.Fatalf("b's first socket: pushed out %v (%v), want a's oldest", out, ok)
	}
	if r.leave(ofA[0]) {
		t.Fatal("leave says a's pushed-out socket was still in the room")
	}
	if out, ok = r.enter(adm(2), t0); !ok || out != ofA[1] {
		t.Fatalf("b's second socket: pushed out %v (%v), want a's second oldest", out, ok)
	}
	// a and b hold 2 each: a third of b's is refused until the oldest has waited past grace.
	if _, ok := r.enter(adm(2), t0.Add(time.Second)); ok {
		t.Fatal("b's third socket got in with a and b holding 2 each and none past grace")
	}
	if !r.leave(ofA[2]) {
		t.Fatal("leave says a socket still waiting was not in the room")
	}
	// ofA[2]'s place is free: a newcomer gets in without pushing anyone out.
	if out, ok := r.enter(adm(3), t0.Add(time.Second)); !ok || out != nil {
		t.Fatalf("with a free place: enter = %v, %v", out, ok)
	}
	// Full again, a holding 1, b 2, the third source 1: a fourth source, holding none, pushes
	// out b's oldest.
	if out, ok := r.enter(adm(4), t0.Add(time.Second)); !ok || out != b1 {
		t.Fatalf("full again: pushed out %v (%v), want b's oldest", out, ok)
	}
	// Now each source holds one: a newcomer gets in only by pushing out the oldest of all (a's
	// last, in at t0), and only once it has waited longer than grace.
	if _, ok := r.enter(adm(5), t0.Add(time.Second)); ok {
		t.Fatal("a newcomer got in with the room full, no source holding two more, none past grace")
	}
	if out, ok := r.enter(adm(5), t0.Add(time.Second+time.Nanosecond)); !ok || out != ofA[3] {
		t.Fatalf("past grace: pushed out %v (%v), want a's last, the oldest", out, ok)
	}
	if n := r.all.Len(); n != 4 {
		t.Fatalf("%d sockets in a room of 4", n)
	}
}

// The grace rule does not let the source holding the most push out a camera's slow socket:
// a host holding 3 of 4 places, its newcomer finds the camera's socket the oldest, past
// grace, and pushes out its own oldest instead, once that is past grace too.
func TestTheGraceRuleSparesSmallerSources(t *testing.T) {
	r := newHelloRoom(4, time.Second)
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	cam := &admission{source: netip.MustParseAddr("192.0.2.5")}
	if _, ok := r.enter(cam, t0); !ok {
		t.Fatal("camera refused in an empty room")
	}
	host := netip.MustParseAddr("198.51.100.1")
	later := t0.Add(1500 * time.Millisecond)
	var ofHost []*admission
	for range 3 {
		x := &admission{source: host}
		if _, ok := r.enter(x, later); !ok {
			t.Fatal("room not full")
		}
		ofHost = append(ofHost, x)
	}
	if out, ok := r.enter(&admission{source: host}, later); ok {
		t.Fatalf("the host's newcomer got in, pushing out %v", out)
	}
	out, ok := r.enter(&admission{source: host}, later.Add(time.Second+time.Nanosecond))
	if !ok || out != ofHost[0] {
		t.Fatalf("past grace, the host's newcomer pushed out %v (%v), want the host's own oldest", out, ok)
	}
	if cam.pushedOut.Load() {
		t.Fatal("the camera's socket was pushed out")
	}
}
