package broker

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// The connection budget (Config.MaxConnectRate) keeps a score of failed TLS handshakes per
// source, so that one host without a fleet certificate cannot take the turns the fleet's
// cameras wait for. A source whose score is above suspectAbove is suspect: it takes a turn only
// when one is free at once, and is closed without one while the budget is contended. It is
// never refused while a turn is free, so a home NAT or a load balancer that puts many cameras
// behind one address is at worst served after the cameras that wait their turn.
//
// The score is a leaky bucket: each failed handshake adds one, and it leaks leakPerSecond. The
// numbers come from the agent's reconnect backoff (transport/mqtt: full jitter, a first
// ceiling of 1 s doubling to 5 minutes). A camera that cannot connect tries about 7 times in
// its first minute (at 0, ½, 1½, 3½, 7½, 15½ and 31½ s on average), then once every 2½ minutes
// on average: three such cameras behind one home NAT, all restarting their backoff at once
// after a power cut, reach a score of about 14 at most (with the mean of the jitter), below
// 16, and a steady one adds 0.4 a minute against the 15 the bucket leaks. A host hammering without a fleet
// certificate gains nearly one point per attempt: at 5 attempts a second it is suspect within
// 4 s, at 20 within a second, and one taking a real share of any budget is suspect at once.
//
// What it cannot do: an attacker with many addresses gets about 16 failed handshakes per
// address at first, then 15 a minute per address (what leaks), unhindered; past maxSources
// addresses scored within the last couple of minutes, new ones are not scored at all. Behind
// a TCP load balancer that does not pass the client's address on (PROXY protocol), every
// connection has the balancer's address: the fleet is one source, and a few failing clients
// make all of it suspect. That is still safe, since a suspect source still gets every free
// turn, but the budget then no longer tells cameras from an attacker.
// Besides its score, the budget counts each source's live connections (sourceCounts), for
// what a score learns too late: a failure is scored only when its handshake ends, up to a
// connect timeout after its turn, and a ClientHello costs its sender nothing (one captured is
// replayed as is). So a source holding maxHolding turns (its share: half the turns within
// half a connect timeout, the queue's length, at least minHolding) whose handshakes have not
// finished gets only free turns for more (the others are counted as throttled): one host can
// no longer fill the queue, so a camera elsewhere always finds room in it. A source may have
// at most maxWaiting connections (the queue's length, at least minWaiting) that have not sent
// their ClientHello, and all sources together maxAllWaiting, the excess closed at accept.
// Cameras behind one address lose nothing while the budget has turns free; during a storm
// their share halves their queue, not their rate: the budget's turns still all go to them.
const (
	// holdingShare: a source may hold 1/holdingShare of the queue's turns, at least
	// minHolding, before it gets only free turns.
	holdingShare = 2
	minHolding   = 8
	// minWaiting is the least maxWaiting: a storm's connections are accepted faster than
	// their goroutines get to read the ClientHello already in their socket, so the count of
	// a busy source's sockets not yet read runs well above what its sender holds.
	minWaiting = 256
	// maxAllWaiting is allWaitingPerQueue times the queue's length, at least minAllWaiting.
	allWaitingPerQueue = 4
	minAllWaiting      = 4096
)

const (
	// suspectAbove is the score above which a source is suspect: more than 16 failed
	// handshakes beyond what leaked away.
	suspectAbove = 16
	// leakPerSecond is how much of a source's score leaks away each second: 15 a minute.
	leakPerSecond = 0.25
	// scoreCap bounds a score, so that a source that stops failing is no longer suspect
	// within (scoreCap-suspectAbove)/leakPerSecond = 64 s, and forgotten within 128 s.
	scoreCap = 2 * suspectAbove
	// maxSources bounds the scores kept: at most 65,536 sources, some 5 MB. A source that
	// fails while the table is full is not scored (a suspect is never evicted to make room).
	maxSources = 1 << 16
	// sweepEvery is how often, at most, the table is swept of the scores that leaked to zero.
	sweepEvery = 10 * time.Second
)

// sourceOf returns the source of a connection from addr: its IPv4 address, or the /64 of its
// IPv6 address (a host is commonly given a whole /64, and a home network one /64 or more). It
// returns the zero Addr, which is never scored, for an address that is not IP.
func sourceOf(addr net.Addr) netip.Addr {
	var ap netip.AddrPort
	if tcp, ok := addr.(*net.TCPAddr); ok {
		ap = tcp.AddrPort()
	} else if addr != nil {
		ap, _ = netip.ParseAddrPort(addr.String())
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.Addr()
	}
	return ip
}

// sourceString says src as a log shows it: an IPv4 address, or an IPv6 /64.
func sourceString(src netip.Addr) string {
	if src.Is6() {
		return netip.PrefixFrom(src, 64).String()
	}
	return src.String()
}

// failScores keeps the score of failed TLS handshakes of each source that failed recently,
// for at most max sources. Times are those of the broker's clock, passed in. It is safe for
// concurrent use.
type failScores struct {
	max int // the most sources scored at once

	mu        sync.Mutex
	scores    map[netip.Addr]failScore
	lastSweep time.Time
	unscored  uint64 // failures not scored because the table was full
}

// failScore is one source's score, as it stood at a time.
type failScore struct {
	level float64 // failures, less what leaked away until at
	at    int64   // Unix ns
}

func newFailScores(max int) *failScores {
	return &failScores{max: max, scores: make(map[netip.Addr]failScore)}
}

// levelAt returns the score at now. A clock set back leaks nothing meanwhile.
func (s failScore) levelAt(now time.Time) float64 {
	d := max(0, now.UnixNano()-s.at)
	return max(0, s.level-float64(d)/float64(time.Second)*leakPerSecond)
}

// fail counts one failed handshake of src at now. It reports whether that made src suspect,
// and whether src is scored at all (false: the table is full).
func (f *failScores) fail(src netip.Addr, now time.Time) (becameSuspect, scored bool) {
	if !src.IsValid() {
		return false, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.lastSweep) >= sweepEvery || now.Before(f.lastSweep) {
		f.sweepLocked(now)
	}
	s, ok := f.scores[src]
	if !ok && len(f.scores) >= f.max {
		f.unscored++
		return false, false
	}
	before := s.levelAt(now)
	after := min(before+1, scoreCap)
	f.scores[src] = failScore{level: after, at: now.UnixNano()}
	return before <= suspectAbove && after > suspectAbove, true
}

// sweepLocked forgets the scores that leaked to zero by now.
func (f *failScores) sweepLocked(now time.Time) {
	f.lastSweep = now
	for src, s := range f.scores {
		if s.levelAt(now) == 0 {
			delete(f.scores, src)
		}
	}
}

// suspect reports whether src is suspect at now: its score is above suspectAbove.
func (f *failScores) suspect(src netip.Addr, now time.Time) bool {
	if !src.IsValid() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.scores[src]
	return ok && s.levelAt(now) > suspectAbove
}

// stats returns how many sources are scored, how many of them are suspect at now, and how many
// failures went unscored because the table was full. It walks the table: call it rarely.
func (f *failScores) stats(now time.Time) (sources, suspects int, unscored uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.scores {
		if s.levelAt(now) > suspectAbove {
			suspects++
		}
	}
	return len(f.scores), suspects, f.unscored
}
