package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// notifySocket is a service manager's notification socket (sd_notify(3)): a unix datagram
// socket that records every state the service sends.
type notifySocket struct {
	path string
	conn *net.UnixConn

	mu      sync.Mutex
	states  []string
	changed chan struct{}
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify"), changed: make(chan struct{})}
	n.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			// A datagram may carry several newline-separated assignments.
			n.states = append(n.states, strings.Split(strings.TrimSpace(string(buf[:k])), "\n")...)
			close(n.changed)
			n.changed = make(chan struct{})
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		n.conn.Close()
		<-done
	})
	return n
}

// waitFor waits until state arrives at or after index from, and returns the index after it.
func (n *notifySocket) waitFor(t *testing.T, from int, state string) int {
	t.Helper()
	deadline := time.After(30 * time.Second)
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
			t.Fatalf("no %q (from #%d) on the notification socket; got %q", state, from, states)
		}
	}
}

// notifiedProc runs `camagent run args` as systemd would: with NOTIFY_SOCKET, WATCHDOG_USEC
// and WATCHDOG_PID set to the process's own pid (the shell execs camagent, keeping its pid).
func notifiedProc(t *testing.T, n *notifySocket, watchdog time.Duration, args ...string) (*exec.Cmd, *logtest.Buffer, chan error) {
	t.Helper()
	return notifiedBin(t, n, watchdog, camagentBin, append([]string{"run"}, args...)...)
}

// notifiedBin runs bin with args as systemd would, like notifiedProc.
func notifiedBin(t *testing.T, n *notifySocket, watchdog time.Duration, bin string, args ...string) (*exec.Cmd, *logtest.Buffer, chan error) {
	t.Helper()
	log := new(logtest.Buffer)
	cmd := exec.Command("/bin/sh", append([]string{"-c", `WATCHDOG_PID=$$ exec "$0" "$@"`, bin}, args...)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC="+strconv.FormatInt(watchdog.Microseconds(), 10))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), log.String())
		}
	})
	return cmd, log, done
}

// stopped sends SIGTERM and checks that the process says STOPPING=1 and exits with status 0.
func stopped(t *testing.T, n *notifySocket, from int, cmd *exec.Cmd, done chan error) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, from, "STOPPING=1")
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("the process exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the process did not exit after SIGTERM")
	}
}

// Under systemd (Type=notify, WatchdogSec, ExecReload=kill -HUP): camagent says READY=1 once
// it runs, pings the watchdog while alive, brackets a reload with RELOADING=1 and READY=1, and
// says STOPPING=1 on SIGTERM before exiting cleanly (R9).
func TestSystemdNotifyProtocol(t *testing.T) {
	f, pki := newFleet(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enroll(t, f, "cam-sd-0001")
	conf := filepath.Join(t.TempDir(), "camagent.conf")
	if err := os.WriteFile(conf, []byte("# test\nstate = "+dir+"\nbroker = "+b.URL()+"\nlog-level = debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := listenNotify(t)
	cmd, log, done := notifiedProc(t, n, 600*time.Millisecond, "--config", conf)

	i := n.waitFor(t, 0, "READY=1")
	n.waitFor(t, 0, "STATUS=connected to broker")
	n.waitFor(t, n.waitFor(t, i, "WATCHDOG=1"), "WATCHDOG=1")

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	i = n.waitFor(t, i, "RELOADING=1")
	i = n.waitFor(t, i, "READY=1")
	n.waitFor(t, i, "WATCHDOG=1")
	if !strings.Contains(log.String(), "SIGHUP: reloading the configuration") {
		t.Errorf("no reload in the log")
	}
	stopped(t, n, i, cmd, done)
}

// A fresh install under systemd starts (READY=1), says why it waits, keeps the watchdog fed,
// and stops cleanly: no crash loop before enrollment.
func TestSystemdNotEnrolledIsReadyAndWaits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	n := listenNotify(t)
	cmd, _, done := notifiedProc(t, n, 600*time.Millisecond, "--state", dir)
	i := n.waitFor(t, 0, "READY=1")
	n.waitFor(t, 0, "STATUS=not enrolled: waiting for a bundle in "+dir)
	n.waitFor(t, n.waitFor(t, i, "WATCHDOG=1"), "WATCHDOG=1")
	stopped(t, n, i, cmd, done)
}

// The fleet's own services under systemd (packaging/fleetctl-broker.service and
// fleetctl-signer@.service): fleetctl broker and fleetctl serve say READY=1 and what they do,
// feed the watchdog while their loop over the registry runs, and say STOPPING=1 on SIGTERM
// before exiting cleanly.
func TestFleetServicesSpeakSystemdNotify(t *testing.T) {
	bin, err := fleetctlBin()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := newFleet(t)
	addr := fleettest.FreeAddr(t)

	bn := listenNotify(t)
	broker, _, brokerDone := notifiedBin(t, bn, time.Second, bin, "broker", "--dir", f.Dir, "--listen", addr, "--revocation-poll", "100ms")
	i := bn.waitFor(t, 0, "READY=1")
	bn.waitFor(t, 0, "STATUS=listening on mqtts://"+addr)
	bn.waitFor(t, bn.waitFor(t, i, "WATCHDOG=1"), "WATCHDOG=1")

	// The signer's loop takes the registry every 5 s: a watchdog of 12 s is fed every 6 s.
	sn := listenNotify(t)
	url := "mqtts://" + addr
	signer, _, signerDone := notifiedBin(t, sn, 12*time.Second, bin, "serve", "--dir", f.Dir, "--broker", url, "--name", "s1")
	j := sn.waitFor(t, 0, "READY=1")
	sn.waitFor(t, 0, "STATUS=connecting to "+url)
	sn.waitFor(t, 0, "STATUS=serving "+url+" as signer:default (client id "+fleet.SignerClientID("signer:default", "s1")+")")
	sn.waitFor(t, sn.waitFor(t, j, "WATCHDOG=1"), "WATCHDOG=1")

	stopped(t, sn, j, signer, signerDone)
	stopped(t, bn, i, broker, brokerDone)
}
