package fleettest

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// Run runs one fleetctl command in this process, failing the test if it fails, and returns its
// standard output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cli.Run(ctx, args, &out, &errb); err != nil {
		t.Fatalf("fleetctl %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	return out.String()
}

// Background runs a long-lived fleetctl command (broker, serve) in this process until the
// test ends; its output is shown if the test failed. The returned Output lets the test wait
// for the command to say it is ready.
func Background(t testing.TB, args ...string) *Output {
	t.Helper()
	out := &Output{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, args, out, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("fleetctl %v: %v", args, err)
		}
		if t.Failed() && testing.Verbose() {
			t.Logf("fleetctl %v output:\n%s", args, out.String())
		}
	})
	return out
}

// Output is a background command's output, safe for concurrent writers.
type Output struct{ logtest.Buffer }

// WaitFor waits until the output contains s, failing the test after Timeout.
func (o *Output) WaitFor(t testing.TB, s string) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !strings.Contains(o.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output within %s:\n%s", s, Timeout, o.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartSigner runs `fleetctl serve` for f against url until the test ends, and returns once it
// is subscribed: a request published before that would reach no signer.
func StartSigner(t testing.TB, f *fleet.Fleet, url string, flags ...string) {
	t.Helper()
	Background(t, append([]string{"serve", "--dir", f.Dir, "--broker", url}, flags...)...).WaitFor(t, "serving")
}

// FreeAddr returns a loopback address nothing listens on (yet).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitTLS waits until a broker of f accepts a TLS handshake at addr.
func WaitTLS(t testing.TB, f *fleet.Fleet, addr string) {
	t.Helper()
	cert, err := f.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(Timeout)
	for {
		c, err := tls.Dial("tcp", addr, certs.ClientTLSConfig(f.Pool, "127.0.0.1", certs.NewHolder(cert)))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker at %s not up: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartBroker runs `fleetctl broker` for f on a free loopback port until the test ends and
// returns its URL once it accepts connections. Extra flags are passed on.
func StartBroker(t testing.TB, f *fleet.Fleet, flags ...string) string {
	t.Helper()
	addr := FreeAddr(t)
	Background(t, append([]string{"broker", "--dir", f.Dir, "--listen", addr}, flags...)...)
	WaitTLS(t, f, addr)
	return "mqtts://" + addr
}
