package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// chunkSize is the most one read takes from a side, and queueLength how many chunks may wait
// for their delay in each direction before the reader stops reading (TCP back-pressure then
// slows the sender, as a slow link does).
const (
	chunkSize   = 32 << 10
	queueLength = 64
)

// conn is one proxied connection: the client side, the upstream side once dialled, and a pump
// per direction.
type conn struct {
	p      *Proxy
	client net.Conn

	mu       sync.Mutex
	upstream net.Conn // nil until dialled
	closed   bool

	poisoned  atomic.Bool // a blackhole dropped some of its bytes
	done      chan struct{}
	closeOnce sync.Once
}

// close resets both sides; the pumps then end. It is idempotent.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		up := c.upstream
		c.mu.Unlock()
		close(c.done)
		resetClose(c.client)
		if up != nil {
			resetClose(up)
		}
	})
}

func (c *conn) serve() {
	p := c.p
	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		p.wg.Done()
	}()
	if p.Fault().Mode == Blackhole {
		// Accepted, and nothing more: what the client says is dropped until it gives up or the
		// fault ends (which resets this connection).
		c.poisoned.Store(true)
		buf := make([]byte, chunkSize)
		for {
			n, err := c.client.Read(buf)
			p.dropped.Add(uint64(n))
			if err != nil {
				return
			}
		}
	}
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	if p.cfg.KeepSource {
		// The listener is TCP, so its connections' remote addresses are too.
		from := c.client.RemoteAddr().(*net.TCPAddr)
		d.LocalAddr = &net.TCPAddr{IP: from.IP, Zone: from.Zone}
	}
	up, err := d.Dial("tcp", p.cfg.Target)
	if err != nil {
		p.dialFailed.Add(1)
		p.log.Warn("proxy: cannot reach the upstream", "target", p.cfg.Target, "client", c.client.RemoteAddr().String(), "err", err)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		up.Close()
		return
	}
	c.upstream = up
	c.mu.Unlock()
	p.log.Debug("proxy: connection forwarded", "client", c.client.RemoteAddr().String())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.pump(c.client, up, &p.up)
	}()
	go func() {
		defer wg.Done()
		c.pump(up, c.client, &p.down)
	}()
	wg.Wait()
}

// chunk is bytes read from one side, to be written to the other at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pump moves bytes from src to dst under the fault in force at each chunk, until either side
// fails; then it closes the connection. A reader goroutine fills a queue (dropping what a
// blackhole swallows, stamping each chunk with its delay); this goroutine writes the queue out
// in order, paced to the rate cap.
func (c *conn) pump(src, dst net.Conn, count *atomic.Uint64) {
	queue := make(chan chunk, queueLength)
	readerDone := make(chan struct{})
	defer func() {
		c.close() // unblocks the reader
		<-readerDone
	}()
	go func() {
		defer close(readerDone)
		defer close(queue)
		buf := make([]byte, chunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				f := c.p.Fault()
				switch f.Mode {
				case Blackhole:
					c.poisoned.Store(true)
					c.p.dropped.Add(uint64(n))
				default:
					ch := chunk{b: append([]byte(nil), buf[:n]...), due: time.Now()}
					if f.Mode == Slow {
						ch.due = ch.due.Add(f.Delay)
					}
					select {
					case queue <- ch:
					case <-c.done:
						return
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range queue {
		if !c.wait(time.Until(ch.due)) {
			return
		}
		for b := ch.b; len(b) > 0; {
			n := len(b)
			f := c.p.Fault()
			var pace time.Duration
			if f.Mode == Slow && f.Rate > 0 {
				// Write at most a twentieth of a second's worth at a time, then wait for it.
				n = min(n, max(f.Rate/20, 1))
				pace = time.Duration(float64(n) / float64(f.Rate) * float64(time.Second))
			}
			w, err := dst.Write(b[:n])
			count.Add(uint64(w))
			if err != nil {
				return
			}
			b = b[n:]
			if !c.wait(pace) {
				return
			}
		}
	}
}

// wait sleeps for d, returning false if the connection is closed first.
func (c *conn) wait(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-c.done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return false
	case <-t.C:
		return true
	}
}
