// Package proxy is a TCP proxy on loopback that forwards every connection to one upstream
// address (the broker) and injects network faults, switchable while connections are live:
// pass, cut, blackhole and slow (latency and a bandwidth cap). fleetsim and the chaos tests
// (tools/e2e) put it in front of the broker for the share of devices that suffers the fault.
//
// The proxy only moves bytes: it never terminates TLS, never reads what it forwards, and never
// listens beyond loopback. It is a simulation tool; nothing on a camera or in the fleet's
// services imports it.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does to the connections through it.
type Mode int

// The fault modes.
const (
	// Pass forwards bytes both ways as they come.
	Pass Mode = iota
	// Cut closes every live connection (with a TCP reset) and resets every new one as soon
	// as it is accepted: the link is down and the peer knows it at once.
	Cut
	// Blackhole accepts connections but forwards nothing: bytes from either side are read and
	// dropped, so both ends see silence until their own timeouts (MQTT keepalive, TLS
	// handshake timeout) give up. A connection that lost bytes cannot be resumed (TLS would
	// fail on the gap), so when the fault ends every connection that dropped bytes is reset.
	Blackhole
	// Slow delays every chunk by Fault.Delay in each direction and caps each direction of
	// each connection at Fault.Rate bytes a second. Bytes keep their order.
	Slow
)

var modeNames = [...]string{Pass: "pass", Cut: "cut", Blackhole: "blackhole", Slow: "slow"}

// String returns the mode's name: pass, cut, blackhole or slow.
func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("Mode(%d)", int(m))
	}
	return modeNames[m]
}

// ParseMode parses a mode name as String writes it.
func ParseMode(s string) (Mode, error) {
	for m, n := range modeNames {
		if n == s {
			return Mode(m), nil
		}
	}
	return Pass, fmt.Errorf("proxy: unknown fault mode %q: want pass, cut, blackhole or slow", s)
}

// Fault is the proxy's behaviour. The zero value passes everything.
type Fault struct {
	Mode Mode
	// Delay is the latency added to every chunk, in each direction, in Slow mode.
	Delay time.Duration
	// Rate caps each direction of each connection in Slow mode, in bytes per second;
	// 0 means no cap.
	Rate int
}

// String describes the fault, e.g. "slow (delay 200ms, 16384 B/s)".
func (f Fault) String() string {
	if f.Mode != Slow {
		return f.Mode.String()
	}
	rate := "no bandwidth cap"
	if f.Rate > 0 {
		rate = fmt.Sprintf("%d B/s", f.Rate)
	}
	return fmt.Sprintf("slow (delay %s, %s)", f.Delay, rate)
}

// Config configures a Proxy.
type Config struct {
	// Listen is the loopback address to listen on; "" means 127.0.0.1:0 (a free port; Addr
	// tells which). A non-loopback address is an error.
	Listen string
	// Target is the upstream host:port every connection is forwarded to. Required.
	Target string
	// Fault is the initial fault; the zero value passes everything.
	Fault Fault
	// KeepSource dials each upstream connection from its client's own IP address, with a port
	// of the system's choice, so that the upstream sees every client at the address it dialled
	// the proxy from rather than all of them at the proxy's: fleetsim's devices that dial from
	// addresses of their own (sim Config.SourceAddrs) look to the broker as they would without
	// the proxy. The upstream must be reachable from the clients' addresses, as it is on
	// loopback (any address of 127.0.0.0/8 reaches one there); a dial that fails is counted in
	// Stats.DialFailed. False lets the system choose, as for any outgoing connection
	// (127.0.0.1 for an upstream on loopback).
	KeepSource bool
	// DialTimeout bounds each upstream connection attempt; 0 means 10s.
	DialTimeout time.Duration
	// Logger receives connection events at debug level and upstream failures at warn
	// level; nil discards them.
	Logger *slog.Logger
}

// Stats are the proxy's counters since it started.
type Stats struct {
	// Accepted counts connections accepted; Reset those reset at once because the proxy was
	// cut; Cut those reset while live by a switch to Cut; DialFailed those whose upstream
	// could not be reached.
	Accepted, Reset, Cut, DialFailed uint64
	// Active is the number of connections open now.
	Active int
	// BytesUp and BytesDown are the bytes forwarded to and from the upstream; Dropped those
	// a blackhole discarded.
	BytesUp, BytesDown, Dropped uint64
}

// Proxy is a running fault proxy. Its methods are safe for concurrent use.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	ln    net.Listener
	fault atomic.Pointer[Fault]

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool

	wg        sync.WaitGroup
	closeOnce sync.Once

	accepted, reset, cut, dialFailed, up, down, dropped atomic.Uint64
}

// ErrNotLoopback is returned by New for a listen address outside loopback.
var ErrNotLoopback = errors.New("proxy: listen address must be on loopback")

// New validates cfg, listens, and starts forwarding. Close it when done.
func New(cfg Config) (*Proxy, error) {
	if cfg.Target == "" {
		return nil, errors.New("proxy: Config.Target is required")
	}
	if _, _, err := net.SplitHostPort(cfg.Target); err != nil {
		return nil, fmt.Errorf("proxy: Config.Target: %w", err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: Config.Listen: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%w: %q", ErrNotLoopback, cfg.Listen)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Fault.Delay < 0 || cfg.Fault.Rate < 0 {
		return nil, errors.New("proxy: Config.Fault: negative delay or rate")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{cfg: cfg, log: log, ln: ln, conns: map[*conn]struct{}{}}
	f := cfg.Fault
	p.fault.Store(&f)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the host:port the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Fault returns the fault in force.
func (p *Proxy) Fault() Fault { return *p.fault.Load() }

// SetFault switches the fault for every connection, live and new, at once. Switching to Cut
// resets every live connection; switching away from Blackhole resets every connection that
// dropped bytes. A negative delay or rate is an error.
func (p *Proxy) SetFault(f Fault) error {
	if f.Delay < 0 || f.Rate < 0 {
		return errors.New("proxy: SetFault: negative delay or rate")
	}
	p.fault.Store(&f)
	p.mu.Lock()
	var victims []*conn
	for c := range p.conns {
		if f.Mode == Cut || (f.Mode != Blackhole && c.poisoned.Load()) {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		if f.Mode == Cut {
			p.cut.Add(1)
		}
		c.close()
	}
	p.log.Debug("proxy: fault switched", "fault", f.String(), "reset", len(victims))
	return nil
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.conns)
	p.mu.Unlock()
	return Stats{
		Accepted: p.accepted.Load(), Reset: p.reset.Load(), Cut: p.cut.Load(), DialFailed: p.dialFailed.Load(),
		Active: active, BytesUp: p.up.Load(), BytesDown: p.down.Load(), Dropped: p.dropped.Load(),
	}
}

// Close stops listening, closes every connection and waits for every goroutine of the proxy.
// It is idempotent and returns nil.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]*conn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		p.ln.Close()
		for _, c := range conns {
			c.close()
		}
		p.wg.Wait()
	})
	return nil
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("proxy: accept failed", "err", err)
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors: do not spin
			continue
		}
		p.accepted.Add(1)
		if p.Fault().Mode == Cut {
			p.reset.Add(1)
			resetClose(nc)
			continue
		}
		c := &conn{p: p, client: nc, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			nc.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go c.serve()
	}
}

// resetClose closes nc with a TCP reset rather than an orderly FIN, as a dropped link does.
func resetClose(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}
