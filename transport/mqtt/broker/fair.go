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
// IPv6 /64 (sourceOf). Two things are shared:
//
//   - the turns queued in the budget (pacer): when a ClientHello finds the queue full, it
//     takes the last queued turn of the source that holds the most, if that source holds at
//     least two more than the newcomer's (that connection is closed unanswered, counted as
//     throttled). Otherwise it is closed itself, as before.
//   - the room for sockets accepted whose ClientHello has not arrived (helloRoom): when it is
//     full, a newcomer closes the oldest waiting socket of the source that holds the most, on
//     the same condition, or else the oldest waiting socket of all if that has waited longer
//     than a client takes to send its ClientHello (a quarter of the connect timeout);
//     otherwise the newcomer is closed at accept.
//
// So a source is only ever cut back while another source waits, and then only to within one
// of the others: a fleet whose cameras all reach the broker from one address (a NAT, or a
// load balancer that does not pass the client's address on with PROXY protocol) keeps the
// whole budget when nobody else asks for it. What it cannot do: a sender with as many
// addresses as there are cameras waiting gets as many turns as they do.

// sourceOf returns the source the connection budget counts a remote address under: an IPv4
// address (an IPv4-mapped IPv6 one unmapped) as it is, an IPv6 address as its /64, the prefix
// one host or one home network is given. It returns the zero Addr, one source like any other,
// for an address that is no IP.
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
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// tally counts something per source and knows at every moment a source that holds the most:
// a count moves by one at a time, so each source sits in the set of its count and the highest
// non-empty set is found in constant time. The zero tally is empty and ready; it is not safe
// for concurrent use.
type tally struct {
	n   map[netip.Addr]int
	by  []map[netip.Addr]struct{} // by[c]: the sources whose count is c ≥ 1 (by[0] is unused)
	top int                       // the highest count, 0 when all are 0
}

func (t *tally) count(s netip.Addr) int { return t.n[s] }

func (t *tally) inc(s netip.Addr) {
	if t.n == nil {
		t.n = make(map[netip.Addr]int)
		t.by = []map[netip.Addr]struct{}{nil}
	}
	c := t.n[s]
	if c > 0 {
		delete(t.by[c], s)
	}
	c++
	t.n[s] = c
	if c == len(t.by) {
		t.by = append(t.by, make(map[netip.Addr]struct{}))
	}
	t.by[c][s] = struct{}{}
	t.top = max(t.top, c)
}

// dec takes one from s, whose count must be positive.
func (t *tally) dec(s netip.Addr) {
	c := t.n[s]
	delete(t.by[c], s)
	c--
	if c == 0 {
		delete(t.n, s)
	} else {
		t.n[s] = c
		t.by[c][s] = struct{}{}
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

// pacer hands out turns, a smooth budget of rate a second with a burst of one: each turn comes
// at least 1/rate after the one before, in the order asked for, so no second of the clock
// holds more than rate turns, plus one. A turn still to come is queued under its source; when
// the queue is full, a source holding fewer takes the last queued turn of the source holding
// the most (see the top of this file). It is safe for concurrent use.
type pacer struct {
	rate     float64
	interval time.Duration

	mu     sync.Mutex
	next   time.Time // the earliest time of the next turn
	queued tally     // turns queued, by source
	bySrc  map[netip.Addr]*list.List
}

// turn is one connection's turn in the budget.
type turn struct {
	at  time.Time
	src netip.Addr
	// Set while the turn is queued, guarded by the pacer's mu: its place in its source's
	// list, and a channel closed if another connection takes it.
	elem  *list.Element
	taken chan struct{}
	lost  bool // another connection took it
}

func newPacer(rate float64) *pacer {
	return &pacer{rate: rate, interval: time.Duration(float64(time.Second) / rate), bySrc: make(map[netip.Addr]*list.List)}
}

// take takes a turn for a connection from src, at most wait after now, and reports whether
// it got one. If the next turn is further away and another source holds at least two more
// queued turns than src, the last one that source queued is taken from it: its connection
// learns so from its turn's taken channel (and claim). A refusal takes nothing. The caller
// claims the turn when its time comes, or abandons it, with claim.
func (p *pacer) take(src netip.Addr, now time.Time, wait time.Duration) (*turn, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := p.next
	if at.Before(now) {
		at = now
	}
	if at.Sub(now) <= wait {
		p.next = at.Add(p.interval)
		t := &turn{at: at, src: src}
		if at.After(now) {
			p.enqueue(t)
		}
		return t, true
	}
	top, ok := p.queued.dominates(src)
	if !ok {
		return nil, false
	}
	v := p.bySrc[top].Back().Value.(*turn)
	p.dequeue(v)
	v.lost = true
	close(v.taken)
	t := &turn{at: v.at, src: src}
	if t.at.After(now) {
		p.enqueue(t)
	}
	return t, true
}

// claim takes t out of the queue, its time come or its wait abandoned, and reports whether it
// is still the caller's: false if another connection took it.
func (p *pacer) claim(t *turn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.lost {
		return false
	}
	if t.elem != nil {
		p.dequeue(t)
	}
	return true
}

func (p *pacer) enqueue(t *turn) {
	l := p.bySrc[t.src]
	if l == nil {
		l = list.New()
		p.bySrc[t.src] = l
	}
	t.elem = l.PushBack(t)
	t.taken = make(chan struct{})
	p.queued.inc(t.src)
}

func (p *pacer) dequeue(t *turn) {
	l := p.bySrc[t.src]
	l.Remove(t.elem)
	t.elem = nil
	if l.Len() == 0 {
		delete(p.bySrc, t.src)
	}
	p.queued.dec(t.src)
}

// helloRoom holds the sockets accepted whose ClientHello has not arrived, at most max of
// them: a socket that sends nothing takes no turn from the budget (the turn is taken once the
// ClientHello is read), so this is what bounds them, and the file descriptors and goroutines
// they hold, until the connect timeout ends them. When the room is full, a newcomer makes room
// by closing the oldest waiting socket of the source that holds the most, if that source holds
// at least two more than the newcomer's; or else the oldest waiting socket of all, if it has
// waited longer than grace, so that senders with many addresses and a socket each cannot hold
// the room either; otherwise the newcomer is refused. It is safe for concurrent use.
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
		if top, ok := r.held.dominates(adm.source); ok {
			out = r.bySrc[top].Front().Value.(*admission)
		} else if oldest := r.all.Front().Value.(*admission); now.Sub(oldest.since) > r.grace {
			out = oldest
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
