package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetsim/proxy"
)

// timeout bounds every wait in these tests; none is a performance assertion.
const timeout = 10 * time.Second

// upstream is an echo server that also counts the bytes it received and records where each
// connection came from.
type upstream struct {
	ln       net.Listener
	received atomic.Int64
	wg       sync.WaitGroup

	mu      sync.Mutex
	sources []netip.Addr
}

// Sources returns the source address of every connection accepted so far, in order.
func (u *upstream) Sources() []netip.Addr {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]netip.Addr(nil), u.sources...)
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.sources = append(u.sources, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					u.received.Add(int64(n))
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.wg.Wait()
	})
	return u
}

func start(t *testing.T, u *upstream, f proxy.Fault) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{Target: u.ln.Addr().String(), Fault: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *proxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo writes line and reads it back, failing the test on any error or timeout.
func echo(t *testing.T, c net.Conn, line string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo of %q: got %q, %v", line, got, err)
	}
}

// closedSoon reports whether the peer closes or resets c within d, without sending anything.
func closedSoon(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// refused reports whether a new connection through p is reset at once. The proxy accepts it
// and resets it, which on loopback may happen before the client's connect call has returned.
func refused(p *proxy.Proxy) bool {
	c, err := net.DialTimeout("tcp", p.Addr(), timeout)
	if err != nil {
		return true
	}
	defer c.Close()
	return closedSoon(c, timeout)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPassForwardsBothWaysAndCounts(t *testing.T) {
	u := startUpstream(t)
	p := start(t, u, proxy.Fault{})
	c := dial(t, p)
	echo(t, c, "hello broker")
	echo(t, c, strings.Repeat("x", 100_000))
	// A write is counted once it returned, which may be just after the echo came back.
	waitFor(t, "the bytes to be counted", func() bool {
		s := p.Stats()
		return s.Accepted == 1 && s.Active == 1 && s.BytesUp == 100_014 && s.BytesDown == 100_014
	})
	c.Close()
	waitFor(t, "the connection to be gone", func() bool { return p.Stats().Active == 0 })
}

func TestCutResetsLiveConnectionsAndRefusesNewOnesUntilRestored(t *testing.T) {
	u := startUpstream(t)
	p := start(t, u, proxy.Fault{})
	live := dial(t, p)
	echo(t, live, "before the cut")

	p.SetFault(proxy.Fault{Mode: proxy.Cut})
	if !closedSoon(live, timeout) {
		t.Fatal("a live connection survived the cut")
	}
	if !refused(p) {
		t.Fatal("a connection made during the cut was not reset")
	}
	if s := p.Stats(); s.Cut != 1 || s.Reset != 1 {
		t.Fatalf("stats %+v, want 1 cut and 1 reset", s)
	}

	p.SetFault(proxy.Fault{Mode: proxy.Pass})
	echo(t, dial(t, p), "after the cut")
}

func TestBlackholeDropsBytesBothWaysThenResetsWhatItDamaged(t *testing.T) {
	u := startUpstream(t)
	p := start(t, u, proxy.Fault{})
	live := dial(t, p)
	echo(t, live, "before")
	before := u.received.Load()

	p.SetFault(proxy.Fault{Mode: proxy.Blackhole})
	if _, err := io.WriteString(live, "into the void\n"); err != nil {
		t.Fatal(err)
	}
	fresh := dial(t, p) // accepted, but nothing reaches the upstream
	if _, err := io.WriteString(fresh, "also lost\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the blackhole to drop both writes", func() bool { return p.Stats().Dropped == uint64(len("into the void\n")+len("also lost\n")) })
	if closedSoon(live, 100*time.Millisecond) || closedSoon(fresh, 100*time.Millisecond) {
		t.Fatal("a blackholed connection was closed: a blackhole is silent")
	}
	if got := u.received.Load(); got != before {
		t.Fatalf("the upstream received %d bytes through the blackhole", got-before)
	}

	p.SetFault(proxy.Fault{Mode: proxy.Pass})
	if !closedSoon(live, timeout) || !closedSoon(fresh, timeout) {
		t.Fatal("connections that lost bytes were not reset when the blackhole ended")
	}
	echo(t, dial(t, p), "after")
}

func TestSlowDelaysEachDirectionAndCapsTheRate(t *testing.T) {
	u := startUpstream(t)
	const delay = 100 * time.Millisecond
	p := start(t, u, proxy.Fault{Mode: proxy.Slow, Delay: delay})
	c := dial(t, p)
	start := time.Now()
	echo(t, c, "ping")
	// A lower bound only: the delay is added on the way up and again on the way down.
	if rtt := time.Since(start); rtt < 2*delay {
		t.Fatalf("round trip %s through a %s-each-way link", rtt, delay)
	}

	const rate = 20_000
	p.SetFault(proxy.Fault{Mode: proxy.Slow, Rate: rate})
	start = time.Now()
	echo(t, c, strings.Repeat("y", rate/2-1)) // half a second's worth each way, pipelined
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("%d bytes each way took %s at %d B/s", rate/2, took, rate)
	}
}

// Switching faults on a live connection keeps its bytes in order: what was queued behind a
// delay is delivered before what comes after the switch.
func TestSwitchingFaultsOnALiveConnectionKeepsOrder(t *testing.T) {
	u := startUpstream(t)
	p := start(t, u, proxy.Fault{Mode: proxy.Slow, Delay: 50 * time.Millisecond})
	c := dial(t, p)
	c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	const n = 40
	for i := range n {
		if i == n/2 {
			p.SetFault(proxy.Fault{Mode: proxy.Pass})
		}
		if _, err := fmt.Fprintf(c, "%d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		line, err := r.ReadString('\n')
		if err != nil || line != fmt.Sprintf("%d\n", i) {
			t.Fatalf("line %d: got %q, %v", i, line, err)
		}
	}
}

// With KeepSource, the upstream sees each client at the address it dialled the proxy from,
// at every connection (a cut and the reconnection after it included); without, at the
// proxy's own, 127.0.0.1.
func TestKeepSourceDialsTheUpstreamFromTheClientsAddress(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has all of 127.0.0.0/8 on the loopback interface")
	}
	clients := []netip.Addr{netip.MustParseAddr("127.1.0.7"), netip.MustParseAddr("127.1.2.3")}
	for _, tc := range []struct {
		name       string
		keepSource bool
	}{
		{"with KeepSource the upstream sees each client's address", true},
		{"without KeepSource the upstream sees the proxy's", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := startUpstream(t)
			p, err := proxy.New(proxy.Config{Target: u.ln.Addr().String(), KeepSource: tc.keepSource})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			dialFrom := func(a netip.Addr) net.Conn {
				t.Helper()
				d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))}
				c, err := d.Dial("tcp", p.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			var want []netip.Addr
			for _, a := range clients {
				echo(t, dialFrom(a), "from "+a.String())
				want = append(want, a)
			}
			// Cut and restored: the first connection after it keeps its client's address too.
			p.SetFault(proxy.Fault{Mode: proxy.Cut})
			p.SetFault(proxy.Fault{})
			echo(t, dialFrom(clients[1]), "again")
			want = append(want, clients[1])
			if !tc.keepSource {
				for i := range want {
					want[i] = netip.MustParseAddr("127.0.0.1")
				}
			}
			if got := u.Sources(); !slices.Equal(got, want) {
				t.Fatalf("the upstream saw connections from %v, want %v", got, want)
			}
		})
	}
}

func TestUnreachableUpstreamClosesTheClient(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p, err := proxy.New(proxy.Config{Target: addr, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !refused(p) {
		t.Fatal("client kept open with no upstream")
	}
	waitFor(t, "the dial failure to be counted", func() bool { return p.Stats().DialFailed == 1 })
}

func TestConfigIsValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  proxy.Config
	}{
		{"a missing target is refused", proxy.Config{}},
		{"a target without a port is refused", proxy.Config{Target: "127.0.0.1"}},
		{"listening beyond loopback is refused", proxy.Config{Target: "127.0.0.1:1", Listen: "0.0.0.0:0"}},
		{"a negative delay is refused", proxy.Config{Target: "127.0.0.1:1", Fault: proxy.Fault{Mode: proxy.Slow, Delay: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := proxy.New(tc.cfg); err == nil {
				p.Close()
				t.Fatal("accepted")
			}
		})
	}
}

func TestCloseIsIdempotentAndEndsLiveConnections(t *testing.T) {
	u := startUpstream(t)
	p := start(t, u, proxy.Fault{})
	c := dial(t, p)
	echo(t, c, "x")
	p.Close()
	p.Close()
	if !closedSoon(c, timeout) {
		t.Fatal("connection survived Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("still listening after Close")
	}
}

func TestModeNamesRoundTrip(t *testing.T) {
	for _, m := range []proxy.Mode{proxy.Pass, proxy.Cut, proxy.Blackhole, proxy.Slow} {
		got, err := proxy.ParseMode(m.String())
		if err != nil || got != m {
			t.Fatalf("%v: %v, %v", m, got, err)
		}
	}
	if _, err := proxy.ParseMode("flaky"); err == nil {
		t.Fatal("unknown mode accepted")
	}
}
