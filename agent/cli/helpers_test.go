package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// waitLimit bounds every wait of these tests. It is a deadline for a failure, not a sleep.
const waitLimit = 20 * time.Second

// logBuf is a log destination safe for concurrent writers that tests can wait on.
type logBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newLogBuf() *logBuf { return &logBuf{changed: make(chan struct{})} }

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the log holds every one of subs on one line.
func (l *logBuf) waitFor(t *testing.T, subs ...string) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		l.mu.Lock()
		text, changed := l.b.String(), l.changed
		l.mu.Unlock()
		for _, line := range strings.Split(text, "\n") {
			if containsAll(line, subs) {
				return
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line with %q within %v; log:\n%s", subs, waitLimit, text)
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// notes records what the service tells systemd.
type notes struct {
	mu      sync.Mutex
	states  []string
	changed chan struct{}
}

func newNotes() *notes { return &notes{changed: make(chan struct{})} }

func (n *notes) notify(state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.states = append(n.states, state)
	close(n.changed)
	n.changed = make(chan struct{})
	return nil
}

// all returns every state sent so far.
func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.states)
}

// waitFor waits until state has been sent, at or after index from, and returns the index
// after it.
func (n *notes) waitFor(t *testing.T, from int, state string) int {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		n.mu.Lock()
		states, changed := slices.Clone(n.states), n.changed
		n.mu.Unlock()
		for i := from; i < len(states); i++ {
			if states[i] == state {
				return i + 1
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %q (from #%d) within %v; sent: %q", state, from, waitLimit, states)
		}
	}
}

// count returns how often state was sent.
func (n *notes) count(state string) int {
	c := 0
	for _, s := range n.all() {
		if s == state {
			c++
		}
	}
	return c
}

// enrollDevice enrolls device id into the test PKI's fleet in a new state directory, with a
// certificate issued at issued for validity (zero: the default), pointing at broker.
func enrollDevice(t *testing.T, pki *mqtttest.PKI, dir, id, broker string, issued time.Time, validity time.Duration) string {
	t.Helper()
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "state")
	}
	csrPEM, err := agent.Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: csr, Now: issued, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := certs.NewSigningKey()
	cmdKey, _ := certs.NewSigningKey()
	ks, err := certs.SignKeySet(root, certs.KeySet{Version: 1, CommandKeys: []certs.PublicKey{cmdKey.Public()}, GrantKeys: []certs.PublicKey{cmdKey.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(certs.Bundle{V: 1, DeviceID: id, CertPEM: string(certs.EncodeCertPEM(c)), CAPEM: string(pki.CAPEM), RootKey: root.Public().Key, KeySet: ks, Broker: broker})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.InstallBundle(dir, b, issued); err != nil {
		t.Fatal(err)
	}
	return dir
}

// closedBroker returns an mqtts URL on loopback where nothing listens.
func closedBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "mqtts://" + addr
}

// afterClock is a fake clock that reports the duration of every timer made on it, once the
// timer is registered, so a test knows what a GPIO input waits for before moving the clock.
type afterClock struct {
	*clocktest.Fake
	afters chan time.Duration
}

var _ clock.Clock = afterClock{}

func newAfterClock() afterClock {
	return afterClock{clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), make(chan time.Duration, 64)}
}

func (c afterClock) After(d time.Duration) <-chan time.Time {
	ch := c.Fake.After(d)
	c.afters <- d
	return ch
}

// fire waits until a timer of d is made, skipping others, and moves the clock by d.
func (c afterClock) fire(t *testing.T, d time.Duration) {
	t.Helper()
	c.waitTimer(t, d)
	c.Advance(d)
}

// waitTimer waits until a timer of d is made, skipping others.
func (c afterClock) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case got := <-c.afters:
			if got == d {
				return
			}
		case <-deadline:
			t.Fatalf("no timer of %v within %v", d, waitLimit)
		}
	}
}
