package broker

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

var scoreT0 = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

func scoreAt(s float64) time.Time { return scoreT0.Add(time.Duration(s * float64(time.Second))) }

// A source is suspect after more than 16 failures beyond what leaked away, and no longer once
// enough has leaked; a host hammering without a certificate is suspect within seconds, three
// broken cameras behind one home NAT restarting their backoff together never are, and a
// source that stops failing is forgiven within about a minute however long it failed.
func TestAFailureScoreLeaksAndMarksOnlyHammeringSources(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.1")

	t.Run("the 17th failure at once makes a source suspect, and 4 s of quiet undo it", func(t *testing.T) {
		f := newFailScores(maxSources)
		for i := 1; i <= 17; i++ {
			became, scored := f.fail(src, scoreT0)
			if !scored || became != (i == 17) {
				t.Fatalf("failure %d: became suspect %v, scored %v", i, became, scored)
			}
		}
		if !f.suspect(src, scoreT0) || !f.suspect(src, scoreAt(3.9)) {
			t.Fatal("not suspect after 17 failures")
		}
		if f.suspect(src, scoreAt(4.01)) {
			t.Fatal("still suspect once more than one failure leaked away")
		}
	})

	t.Run("a host hammering at 5 attempts a second is suspect within 4 s", func(t *testing.T) {
		f := newFailScores(maxSources)
		var when float64 = -1
		for i := range 100 {
			s := float64(i) / 5
			if became, _ := f.fail(src, scoreAt(s)); became {
				when = s
				break
			}
		}
		if when < 0 || when > 4 {
			t.Fatalf("suspect after %v s", when)
		}
	})

	t.Run("three broken cameras behind one NAT restarting their backoff together are never suspect", func(t *testing.T) {
		f := newFailScores(maxSources)
		// The agent's backoff with the mean of its full jitter: 1 s ceiling, doubling to 5 min.
		sched := []float64{0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 63.5, 127.5, 255.5, 405.5, 555.5}
		for _, s := range sched {
			for range 3 {
				f.fail(src, scoreAt(s))
			}
			if f.suspect(src, scoreAt(s)) {
				t.Fatalf("suspect at %v s", s)
			}
		}
	})

	t.Run("a source that failed for an hour is forgiven 64 s after it stops", func(t *testing.T) {
		f := newFailScores(maxSources)
		for i := range 3600 {
			f.fail(src, scoreAt(float64(i)))
		}
		if !f.suspect(src, scoreAt(3599+63)) || f.suspect(src, scoreAt(3599+64.01)) {
			t.Fatalf("suspect 63 s after: %v, 64 s after: %v; want true, false", f.suspect(src, scoreAt(3599+63)), f.suspect(src, scoreAt(3599+64.01)))
		}
	})

	t.Run("a clock set back leaks nothing meanwhile", func(t *testing.T) {
		f := newFailScores(maxSources)
		for range 17 {
			f.fail(src, scoreAt(10))
		}
		if !f.suspect(src, scoreAt(5)) {
			t.Fatal("the score leaked while the clock went back")
		}
	})
}

// A source is an IPv4 address or an IPv6 /64: the addresses of one /64 share a score, another
// /64 has its own, and an IPv4 address mapped into IPv6 is that IPv4 address.
func TestASourceIsAnIPv4AddressOrAnIPv6Slash64(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"two hosts of one IPv6 /64 are one source", "[2001:db8:1:2::10]:5000", "[2001:db8:1:2:ffff::1]:6000", true},
		{"two IPv6 /64s are two sources", "[2001:db8:1:2::10]:5000", "[2001:db8:1:3::10]:5000", false},
		{"two IPv4 addresses are two sources", "192.0.2.1:5000", "192.0.2.2:5000", false},
		{"one IPv4 address on two ports is one source", "192.0.2.1:5000", "192.0.2.1:6000", true},
		{"an IPv4-mapped address is its IPv4 address", "[::ffff:192.0.2.1]:5000", "192.0.2.1:6000", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := sourceOf(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.a))), sourceOf(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.b)))
			if !a.IsValid() || !b.IsValid() || (a == b) != tt.same {
				t.Fatalf("sources %v and %v; want the same: %v", a, b, tt.same)
			}
		})
	}
	if got := sourceString(sourceOf(net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8:1:2::10]:1")))); got != "2001:db8:1:2::/64" {
		t.Fatalf("an IPv6 source is logged as %q", got)
	}
}

// The table of sources never holds more than its bound. Once it is full, a new source is not
// scored (so never suspect) rather than a suspect evicted; the sweep forgets the scores that
// leaked to zero, at most every sweepEvery, and a new source is scored again after it.
func TestTheSourceTableStaysBoundedAndKeepsItsSuspects(t *testing.T) {
	f := newFailScores(maxSources)
	suspect := netip.MustParseAddr("198.51.100.7")
	for range 20 {
		f.fail(suspect, scoreT0)
	}
	// A many-address attacker: one failure from each of 70,000 addresses.
	for i := range 70_000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		_, scored := f.fail(src, scoreAt(0.001))
		if scored != (i < maxSources-1) {
			t.Fatalf("failure of source %d: scored %v with %d sources held", i, scored, len(f.scores))
		}
	}
	if n := len(f.scores); n != maxSources {
		t.Fatalf("%d sources held, bound %d", n, maxSources)
	}
	late := netip.MustParseAddr("203.0.113.9")
	for range 40 {
		f.fail(late, scoreAt(1))
	}
	if f.suspect(late, scoreAt(1)) {
		t.Fatal("a source failing while the table was full was scored")
	}
	if !f.suspect(suspect, scoreAt(1)) {
		t.Fatal("the suspect was evicted to make room")
	}
	if sources, suspects, unscored := f.stats(scoreAt(1)); sources != maxSources || suspects != 1 || unscored != 70_000-(maxSources-1)+40 {
		t.Fatalf("stats: %d sources, %d suspects, %d unscored", sources, suspects, unscored)
	}

	// The single failures leak to zero within 4 s; the suspect's 20 take 80 s. The next
	// failure after sweepEvery sweeps.
	later := scoreAt(0.001).Add(sweepEvery)
	if _, scored := f.fail(late, later); !scored {
		t.Fatal("a new source is not scored after the sweep")
	}
	if n := len(f.scores); n != 2 {
		t.Fatalf("%d sources held after the sweep, want the suspect and the new one", n)
	}
	if !f.suspect(suspect, later) {
		t.Fatal("the sweep forgot a suspect whose score had not leaked away")
	}
}
