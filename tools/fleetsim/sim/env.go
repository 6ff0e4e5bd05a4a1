package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// command is a long-lived fleetctl command (broker, serve) run in this process, exactly as
// `fleetctl` runs it.
type command struct {
	name   string
	out    *output
	cancel context.CancelFunc
	done   chan error
}

func startCommand(name string, args []string, log io.Writer) *command {
	ctx, cancel := context.WithCancel(context.Background())
	c := &command{name: name, out: &output{log: log, prefix: name + ": ", changed: make(chan struct{})}, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- cli.Run(ctx, args, c.out, c.out) }()
	return c
}

// waitFor waits until the command's output matches re and returns the match, or fails when the
// command ends, ctx ends or timeout passes.
func (c *command) waitFor(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		changed := c.out.changedCh()
		if m := re.FindStringSubmatch(c.out.String()); m != nil {
			return m, nil
		}
		select {
		case err := <-c.done:
			c.done <- err
			return nil, fmt.Errorf("fleetctl %s ended before it was ready: %v; output:\n%s", c.name, err, c.out.String())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("fleetctl %s not ready within %s; output:\n%s", c.name, timeout, c.out.String())
		case <-changed:
		}
	}
}

// stop cancels the command and waits for it. It is idempotent.
func (c *command) stop() error {
	c.cancel()
	err := <-c.done
	c.done <- err
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("fleetctl %s: %w", c.name, err)
	}
	return nil
}

// output keeps a command's first 64 KiB of output (enough to find its readiness line) and
// passes its warnings and errors on to log.
type output struct {
	log    io.Writer
	prefix string

	mu      sync.Mutex
	head    bytes.Buffer
	partial []byte
	changed chan struct{}
}

const outputHead = 64 << 10

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := outputHead - o.head.Len(); room > 0 {
		o.head.Write(p[:min(len(p), room)])
	}
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		line := o.partial[:i+1]
		if o.log != nil && (bytes.Contains(line, []byte("level=WARN")) || bytes.Contains(line, []byte("level=ERROR"))) {
			fmt.Fprintf(o.log, "%s%s", o.prefix, line)
		}
		o.partial = o.partial[i+1:]
	}
	if len(o.partial) > outputHead {
		o.partial = o.partial[:0] // a line this long is no log line; drop it
	}
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.head.String()
}

func (o *output) changedCh() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// readyTimeout bounds the wait for a broker or signer to be ready.
const readyTimeout = 30 * time.Second

var (
	brokerReady = regexp.MustCompile(`broker listening on (mqtts://\S+)`)
	signerReady = regexp.MustCompile(`signer "[^"]+" serving`)
)

// embedded is the embedded broker (`fleetctl broker`) run by fleetsim: it can be restarted on
// the same address with the same persistence.
type embedded struct {
	args []string
	log  io.Writer
	addr string
	cmd  *command
}

// startEmbedded starts `fleetctl broker` for the fleet in dir on addr ("" picks a port), with
// its persistence in data.
func startEmbedded(ctx context.Context, dir, addr, data string, connRate float64, log io.Writer) (*embedded, error) {
	if addr == "" {
		var err error
		if addr, err = freeStablePort(); err != nil {
			return nil, err
		}
	}
	e := &embedded{addr: addr, log: log, args: []string{"broker", "--dir", dir, "--listen", addr, "--data", data, "--revocation-poll", "1s",
		"--max-connect-rate", strconv.FormatFloat(connRate, 'g', -1, 64)}}
	if err := e.start(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *embedded) url() string { return "mqtts://" + e.addr }

func (e *embedded) start(ctx context.Context) error {
	// The port was just released (by the previous run of the broker, or by freeStablePort);
	// something else may hold it for a moment.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		e.cmd = startCommand("broker", e.args, e.log)
		if _, err = e.cmd.waitFor(ctx, brokerReady, readyTimeout); err == nil {
			return nil
		}
		e.cmd.stop()
		if !strings.Contains(err.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("embedded broker: %w", err)
}

// restart stops the broker (it closes every connection and flushes its persistence, as
// `systemctl restart` would), waits downtime, and starts it again on the same address.
func (e *embedded) restart(ctx context.Context, downtime time.Duration) error {
	if err := e.cmd.stop(); err != nil {
		return err
	}
	if downtime > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(downtime):
		}
	}
	return e.start(ctx)
}

func (e *embedded) stop() error { return e.cmd.stop() }

// freeStablePort returns a free loopback address whose port is below Linux's ephemeral range
// (32768 and up): an outgoing connection can then never be given that port as its own while
// the broker is down for a restart, which would keep the broker from binding it again.
func freeStablePort() (string, error) {
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr, nil
		}
	}
	return "", errors.New("fleetsim: no free port in 20000-31999 on 127.0.0.1")
}

// startSigners runs n `fleetctl serve` instances for the fleet in dir, named fleetsim-1..n,
// and returns once each is subscribed.
func startSigners(ctx context.Context, dir, url string, n int, log io.Writer) ([]*command, error) {
	var cmds []*command
	for i := 1; i <= n; i++ {
		c := startCommand(fmt.Sprintf("signer %d", i), []string{"serve", "--dir", dir, "--broker", url, "--name", fmt.Sprintf("fleetsim-%d", i), "--log-level", "warn"}, log)
		cmds = append(cmds, c)
		if _, err := c.waitFor(ctx, signerReady, readyTimeout); err != nil {
			for _, c := range cmds {
				c.stop()
			}
			return nil, err
		}
	}
	return cmds, nil
}

// newFleet makes a throw-away fleet in dir for an embedded run.
func newFleet(dir, brokerURL string) (*fleet.Fleet, error) {
	return fleet.Init(filepath.Join(dir, "fleet"), fleet.InitOptions{Name: "fleetsim", Broker: brokerURL})
}

// waitTLS waits until a broker of f completes a TLS handshake at url.
func waitTLS(ctx context.Context, f *fleet.Fleet, url string) error {
	cert, err := f.OperatorCertificate()
	if err != nil {
		return err
	}
	host, err := certs.BrokerHost(url)
	if err != nil {
		return err
	}
	addr := strings.TrimPrefix(url, "mqtts://")
	conf := certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert))
	for {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: conf}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker at %s: %w (last: %v)", url, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
