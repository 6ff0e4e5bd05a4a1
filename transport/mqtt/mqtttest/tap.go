package mqtttest

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tap is a plain TCP forwarder on 127.0.0.1 in front of a broker that records the source
// address of every connection it accepts: the address the broker would see. It passes the
// bytes on untouched, so TLS runs end to end between client and broker; its own address is one
// the test brokers' certificates carry. Tests use it to check which address clients connect
// from (transport/mqtt Config.LocalAddr), which neither broker reports in a form a test can
// read.
type Tap struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and every forwarding goroutine

	mu      sync.Mutex
	sources []netip.Addr
	conns   map[net.Conn]struct{} // both ends of every connection forwarded now
	closed  bool
}

// StartTap starts a Tap forwarding to brokerURL ("mqtts://host:port") until the test ends.
func StartTap(t testing.TB, brokerURL string) *Tap {
	t.Helper()
	target := strings.TrimPrefix(brokerURL, "mqtts://")
	if _, _, err := net.SplitHostPort(target); err != nil {
		t.Fatalf("mqtttest: tap in front of %q: %v", brokerURL, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustf(t, err, "tap listen")
	p := &Tap{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL returns "mqtts://127.0.0.1:<port>", the address to give clients instead of the broker's.
func (p *Tap) URL() string { return "mqtts://" + p.ln.Addr().String() }

// Sources returns the source address of every connection accepted so far, in the order they
// were accepted.
func (p *Tap) Sources() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netip.Addr(nil), p.sources...)
}

func (p *Tap) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // the listener is closed: the test is over
		}
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if !p.track(c) {
			c.Close()
			return
		}
		p.mu.Lock()
		p.sources = append(p.sources, src)
		p.mu.Unlock()
		p.wg.Add(1)
		go p.forward(c)
	}
}

// forward connects c to the broker and copies both ways until either side closes.
func (p *Tap) forward(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	up, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return // the client sees its connection closed, as if the broker had refused it
	}
	defer p.untrack(up)
	if !p.track(up) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	// One side ended: end the other too, so that the second copy returns.
	c.Close()
	up.Close()
	<-done
}

// track adds c to the live connections, or reports false once the tap is closed.
func (p *Tap) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (p *Tap) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// close stops accepting, closes every connection and waits for every goroutine.
func (p *Tap) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
