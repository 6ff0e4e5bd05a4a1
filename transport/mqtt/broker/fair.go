package broker

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"
)

// The connection budget (Config.MaxConnectRate) is shared fairly between sources, so that one
// host cannot take the turns the fleet's cameras wait for. A source is an IPv4 address or an
// IPv6 /56 (sourceOf). Two things are shared:
//
//   - the turns queued in the budget (pacer): when a ClientHello finds the queue full, it
//     takes the last queued turn of the source that weighs the most, if that weighs at least
//     stealMargin more than the newcomer's source. A source weighs its turns of the last 30 to
//     60 s (recentWindow) that did not end in an MQTT connection the broker accepted (a TLS
//     handshake that failed, a client that left before its turn, no CONNECT or a refused
//     one), plus its turns queued beyond queuedAllowance. The connection whose turn is taken
//     is closed unanswered (counted as throttled). Without such a source the newcomer is
//     closed itself, as before.
//   - the room for sockets accepted whose ClientHello has not arrived (helloRoom), and the
//     bytes each may send before it: when the room is full, a newcomer closes the oldest
//     waiting socket of the source that holds the most, if that holds at least two more than
//     the newcomer's source, or else the oldest socket of a source holding more than the
//     newcomer's, or of its own, once it has waited longer than a client takes to send its
//     ClientHello (a quarter of the connect timeout); otherwise the newcomer is closed at
//     accept.
//
// So a source is only ever cut back while another waits, and a host whose clients connect
// weighs nothing until it queues more than queuedAllowance connections at once: the signers'
// host, or a home with a few cameras, keeps its turns in a reconnection storm, and a fleet
// whose cameras all reach the broker from one address (a NAT, or a load balancer that does
// not pass the client's address on with PROXY protocol) keeps the whole budget when nobody
// else asks for it. A host that keeps taking turns without connecting (no fleet certificate,
// a revoked one, or a stolen one it only handshakes with) gains a turn's weight each time it
// is served, and is soon cut back in favour of sources that had none. What the sharing
// cannot do is tell cameras from a sender with so many addresses that each wastes fewer than
// stealMargin turns in a window: about a sixth of the budget's turns in a minute (rate × 10)
// addresses.

// sourceOf returns the source the connection budget counts a remote address under: an IPv4
// address (an IPv4-mapped IPv6 one unmapped) as it is, an IPv6 address as its /56, the prefix
// an ISP commonly delegates to one home (a /64 is one network, and one host may hold
// thousands). It returns the zero Addr, one source like any other, for an address that is no
// IP.
func sourceOf(a net.Addr) netip.Addr {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return netip.Addr{}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(56)
		return p.Addr()
	}
	return ip
}

// tally counts something per source and knows at every moment a source that holds the most:
// each source sits in the set of its count, and the highest count held is kept, walked down
// when the sources holding it leave. The zero tally is empty and ready; it is not safe for
// concurrent use.
type tally struct {
	n   map[netip.Addr]int
	by  []map[netip.Addr]struct{} // by[c]: the sources whose count is c ≥ 1 (by[0] is unused)
	top int                       // the highest count, 0 when all are 0
}

func (t *tally) count(s netip.Addr) int { return t.n[s] }

func (t *tally) inc(s netip.Addr) { t.set(s, t.n[s]+1) }

// dec takes one from s, whose count must be positive.
func (t *tally) dec(s netip.Addr) { t.set(s, t.n[s]-1) }

// set makes s's count c (0 removes s), in constant time but for the walk down to the next
// highest count held when s held the most alone: a step for each count in between, a few
// nanoseconds each.
func (t *tally) set(s netip.Addr, c int) {
	old := t.n[s]
	if old == c {
		return
	}
	if t.n == nil {
		t.n = make(map[netip.Addr]int)
	}
	if old > 0 {
		delete(t.by[old], s)
	}
	if c == 0 {
		delete(t.n, s)
	} else {
		for len(t.by) <= c {
			t.by = append(t.by, nil)
		}
		if t.by[c] == nil {
			t.by[c] = make(map[netip.Addr]struct{})
		}
		t.by[c][s] = struct{}{}
		t.n[s] = c
		t.top = max(t.top, c)
	}
	for t.top > 0 && len(t.by[t.top]) == 0 {
		t.top--
	}
}

// most returns a source that holds the most, and its count; 0 when none holds any.
func (t *tally) most() (netip.Addr, int) {
	if t.top > 0 {
		for s := range t.by[t.top] {
			return s, t.top
		}
	}
	return netip.Addr{}, 0
}

// dominates reports whether a source other than s holds at least two more than s does, and
// which: the one a newcomer from s may take from.
func (t *tally) dominates(s netip.Addr) (netip.Addr, bool) {
	top, n := t.most()
	return top, n >= t.count(s)+2
}

const (
	// recentWindow: a wasted turn counts in its source's weight for one to two of these
	// (the current window and the one before), long enough to remember a host that keeps
	// handshaking without a fleet certificate, short enough that a camera whose handshake
	// timed out in the last storm weighs nothing in the next.
	recentWindow = 30 * time.Second
	// queuedAllowance: the turns a source may have queued at once before they weigh. A host
	// runs a few clients that all reconnect after a broker restart (fleetctl serve, several
	// of them; a home with a few cameras).
	queuedAllowance = 8
	// stealMargin: a newcomer takes a queued turn of a source that weighs at least this much
	// more than its own. A camera whose certificate expired fails three handshakes before it
	// turns to its bootstrap identity (agent), and one in a storm may time out once or twice
	// more: five, and it keeps its turn.
	stealMargin = 6
	// maxWeight caps a source's weight: past it, a source has had far more than its share
	// either way, and the tally of weights stays small.
	maxWeight = 1 << 10
)

// pacer hands out turns, a smooth budget of rate a second with a burst of one: each turn comes
// at least 1/rate after the one before, so no second of the clock holds more than rate turns,
// plus one. Turns are given in the order asked for, except that when the queue is full a
// source that weighs stealMargin less takes the last queued turn of the source that weighs the
// most (see the top of this file), and that a turn whose connection is found gone when it
// comes is passed on (pass): every turn queued after it moves up by one, so only connections
// still there spend the budget's turns. It is safe for concurrent use.
type pacer struct {
	rate     float64
	interval time.Duration

	mu      sync.Mutex
	next    time.Time                 // the earliest time of the next turn
	order   list.List                 // the turns queued, not yet come, of all sources, by time
	bySrc   map[netip.Addr]*list.List // the same turns by source, in the same order
	weighed tally                     // the weight of each source with turns queued
	// The turns wasted (every turn that did not end in an MQTT connection the broker
	// accepted: pacer.waste), by source, in the window ending at windowEnd and in the one
	// before.
	wasted, wastedBefore map[netip.Addr]int
	windowEnd            time.Time
}

// turn is one connection's turn in the budget.
type turn struct {
	// at is when the turn comes. Once the turn is queued it is guarded by the pacer's mu, and
	// may move earlier (pass): its connection reads it through due and claim.
	at  time.Time
	src netip.Addr
	// Set while the turn is queued, guarded by the pacer's mu: its places in its source's
	// list and in the pacer's order, a channel closed if another connection takes it, one
	// that is sent on when its time has moved earlier than the connection waits for, and the
	// time it waits for (due).
	elem, inOrder *list.Element
	taken         chan struct{}
	moved         chan struct{} // buffered, of one
	wake          time.Time
	lost          bool // another connection took it
	// stolen says this turn was taken from a connection of the source from, which weighed
	// fromWeight then.
	stolen     bool
	from       netip.Addr
	fromWeight int
}

func newPacer(rate float64) *pacer {
	return &pacer{
		rate: rate, interval: time.Duration(float64(time.Second) / rate),
		bySrc: make(map[netip.Addr]*list.List), wasted: make(map[netip.Addr]int),
	}
}

// take takes a turn for a connection from src, at most wait after now, and reports whether
// it got one. If the next turn is further away and the source that weighs the most weighs at
// least stealMargin more than src, the last turn that source queued is taken from it: its
// connection learns so from its turn's taken channel (and claim). A refusal takes nothing.
// The caller claims the turn when its time comes, or abandons it.
func (p *pacer) take(src netip.Addr, now time.Time, wait time.Duration) (*turn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.roll(now)
	at := p.next
	if at.Before(now) {
		at = now
	}
	if at.Sub(now) <= wait {
		p.next = at.Add(p.interval)
		t := &turn{at: at, src: src}
		if at.After(now) {
			p.enqueue(t, nil)
		}
		return t, true
	}
	top, n := p.weighed.most()
	if n < p.weight(src)+stealMargin {
		return nil, false
	}
	v := p.bySrc[top].Back().Value.(*turn)
	t := &turn{at: v.at, src: src, stolen: true, from: top, fromWeight: n}
	if t.at.After(now) {
		p.enqueue(t, v.inOrder) // in v's place in the order
	}
	p.dequeue(v)
	v.lost = true
	close(v.taken)
	return t, true
}

// due returns how long after now t comes, and records that its connection waits until then:
// a turn queued may come earlier later on (pass), and its connection then learns so from
// t.moved, and asks again.
func (p *pacer) due(t *turn, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	t.wake = t.at
	return t.at.Sub(now)
}

// claim takes t out of the queue, its time come, and reports whether it is still the
// caller's, and its time: not if another connection took it.
func (p *pacer) claim(t *turn) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.lost {
		return time.Time{}, false
	}
	if t.elem != nil {
		p.dequeue(t)
	}
	return t.at, true
}

// pass gives t, its time come and its connection gone (a client that left before its turn),
// to the turns queued after it, and reports whether it could: not if another connection took
// it. Each of those turns moves up to the time of the one before it (the first to t's), and
// the time of the last, if it was the last given, is given again to the next connection to
// ask: as if t had never been queued, so the turns spent stay 1/rate apart and none is spent
// on a connection that is gone. Each turn moved is told at once (its connection waits again
// for its new time). t's turn is counted as wasted against its source, as the turn of a
// connection that left is when it is spent. It costs a step, and a wake-up of a waiting
// connection, for each turn queued.
func (p *pacer) pass(t *turn, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.lost {
		return false
	}
	if t.elem != nil {
		p.dequeue(t)
	}
	slot := t.at
	for e := p.order.Front(); e != nil; e = e.Next() {
		q := e.Value.(*turn)
		if !q.at.After(slot) {
			continue // come already, and not yet claimed
		}
		q.at, slot = slot, q.at
		// Told now, each of them: telling one only when the one before it left the queue
		// made them all wait for a connection whose goroutine was slow to run, at their
		// old times, while the time freed at the end went to a newcomer.
		p.nudge(q)
	}
	if slot.Equal(p.next.Add(-p.interval)) {
		p.next = slot
	}
	p.addWaste(t.src, now)
	return true
}

// waste counts against src a turn wasted: one that did not end in an MQTT connection the
// broker accepted.
func (p *pacer) waste(src netip.Addr, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addWaste(src, now)
}

// addWaste is waste with p.mu held.
func (p *pacer) addWaste(src netip.Addr, now time.Time) {
	p.roll(now)
	p.wasted[src]++
	p.reweigh(src)
}

// abandon takes t out of the queue unused, its connection cut before its time (the
// handshake's context done).
func (p *pacer) abandon(t *turn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.elem != nil {
		p.dequeue(t)
	}
}

// weight is what src weighs in the sharing of the queue: its turns wasted within the current
// window and the one before, and its turns queued beyond queuedAllowance, at most maxWeight.
func (p *pacer) weight(src netip.Addr) int {
	n := p.wasted[src] + p.wastedBefore[src]
	if l := p.bySrc[src]; l != nil {
		n += max(0, l.Len()-queuedAllowance)
	}
	return min(n, maxWeight)
}

// reweigh brings src's entry in weighed up to date: its weight while it has turns queued,
// none otherwise (it has no turn to take).
func (p *pacer) reweigh(src netip.Addr) {
	if p.bySrc[src] == nil {
		p.weighed.set(src, 0)
		return
	}
	p.weighed.set(src, p.weight(src))
}

// roll starts a new window once now has passed the current one's end. Windows follow one
// another without a gap, so what was counted in one weighs for at most two.
func (p *pacer) roll(now time.Time) {
	if now.Before(p.windowEnd) {
		return
	}
	if now.Sub(p.windowEnd) < recentWindow {
		p.wastedBefore = p.wasted
		p.windowEnd = p.windowEnd.Add(recentWindow)
	} else {
		p.wastedBefore = nil // a whole window went by with nothing counted
		p.windowEnd = now.Add(recentWindow)
	}
	p.wasted = make(map[netip.Addr]int)
	for src := range p.bySrc {
		p.reweigh(src)
	}
}

// enqueue queues t, in the order before mark (the place of the turn t takes), or last if mark
// is nil.
func (p *pacer) enqueue(t *turn, mark *list.Element) {
	l := p.bySrc[t.src]
	if l == nil {
		l = list.New()
		p.bySrc[t.src] = l
	}
	t.elem = l.PushBack(t)
	if mark != nil {
		t.inOrder = p.order.InsertBefore(t, mark)
	} else {
		t.inOrder = p.order.PushBack(t)
	}
	t.taken = make(chan struct{})
	t.moved = make(chan struct{}, 1)
	t.wake = t.at
	p.reweigh(t.src)
}

// dequeue takes t out of the queue.
func (p *pacer) dequeue(t *turn) {
	l := p.bySrc[t.src]
	l.Remove(t.elem)
	t.elem = nil
	if l.Len() == 0 {
		delete(p.bySrc, t.src)
	}
	p.order.Remove(t.inOrder)
	t.inOrder = nil
	p.reweigh(t.src)
}

// nudge tells q's connection that q comes earlier than it waits for, if it does.
func (p *pacer) nudge(q *turn) {
	if q.wake.After(q.at) {
		select {
		case q.moved <- struct{}{}:
		default: // told already
		}
	}
}

// helloRoom holds the sockets accepted whose ClientHello has not arrived, at most max of
// them: a socket that sends nothing takes no turn from the budget (the turn is taken once the
// ClientHello is read), so this is what bounds them, and the file descriptors, goroutines and
// buffers they hold (admission caps the bytes each may send first), until the connect timeout
// ends them. When the room is full, a newcomer makes room by closing the oldest waiting socket
// of the source that holds the most, if that source holds at least two more than the
// newcomer's; or else, once it has waited longer than grace, the oldest socket of all if its
// source holds more than the newcomer's, or the newcomer's own source's oldest: so senders
// with many addresses and a socket each cannot hold the room, and a host that keeps its own
// sockets young cannot push out a camera's slow one. Otherwise the newcomer is refused. It is
// safe for concurrent use.
type helloRoom struct {
	max   int
	grace time.Duration

	mu    sync.Mutex
	held  tally
	all   list.List                 // of *admission, oldest first
	bySrc map[netip.Addr]*list.List // of *admission, oldest first
}

func newHelloRoom(max int, grace time.Duration) *helloRoom {
	return &helloRoom{max: max, grace: grace, bySrc: make(map[netip.Addr]*list.List)}
}

// enter counts adm, accepted at now, as waiting for its ClientHello and reports whether it
// may. If it made room by pushing out another socket, it returns that one, marked as pushed
// out, for the caller to close.
func (r *helloRoom) enter(adm *admission, now time.Time) (out *admission, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.all.Len() >= r.max {
		mine := r.held.count(adm.source)
		if top, ok := r.held.dominates(adm.source); ok {
			out = r.bySrc[top].Front().Value.(*admission)
		} else if oldest := r.all.Front().Value.(*admission); now.Sub(oldest.since) > r.grace && r.held.count(oldest.source) > mine {
			out = oldest
		} else if own := r.bySrc[adm.source]; own != nil && now.Sub(own.Front().Value.(*admission).since) > r.grace {
			out = own.Front().Value.(*admission)
		} else {
			return nil, false
		}
		r.remove(out)
		out.pushedOut.Store(true)
	}
	l := r.bySrc[adm.source]
	if l == nil {
		l = list.New()
		r.bySrc[adm.source] = l
	}
	adm.since = now
	adm.inRoom = l.PushBack(adm)
	adm.inAll = r.all.PushBack(adm)
	r.held.inc(adm.source)
	return out, true
}

// leave takes adm out of the room, if it is still there, and reports whether it was: false
// if another socket pushed it out.
func (r *helloRoom) leave(adm *admission) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if adm.inRoom == nil {
		return !adm.pushedOut.Load()
	}
	r.remove(adm)
	return true
}

func (r *helloRoom) remove(adm *admission) {
	l := r.bySrc[adm.source]
	l.Remove(adm.inRoom)
	r.all.Remove(adm.inAll)
	adm.inRoom, adm.inAll = nil, nil
	if l.Len() == 0 {
		delete(r.bySrc, adm.source)
	}
	r.held.dec(adm.source)
}
