package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// startServe runs fleetctl serve --name name until the returned stop is called.
func startServe(t *testing.T, f *fleet.Fleet, url, name string) (stop func()) {
	t.Helper()
	out := new(logtest.Buffer)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cli.Run(ctx, []string{"serve", "--dir", f.Dir, "--broker", url, "--name", name, "--log-level", "warn"}, out, out)
	}()
	waitFor(t, fleettest.Timeout, "the signer to serve", func() bool { return strings.Contains(out.String(), "serving") })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleetctl serve --name %s: %v\n%s", name, err, out.String())
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// statusOf runs fleetctl status --json and returns the report and what it warned.
func statusOf(t *testing.T, f *fleet.Fleet, url string) (status.Report, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cli.Run(ctx, []string{"status", "--dir", f.Dir, "--broker", url, "--json"}, &out, &errb); err != nil {
		t.Fatalf("fleetctl status: %v\n%s", err, errb.String())
	}
	var r status.Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	return r, errb.String()
}

// fleetWithBroker makes a fleet and starts its broker of kind ("embedded": fleetctl broker;
// "mosquitto"), with no signer, and returns the fleet and the broker's URL.
func fleetWithBroker(t *testing.T, kind string) (*fleet.Fleet, string) {
	t.Helper()
	f, pki := newFleet(t)
	if kind == "embedded" {
		return f, fleettest.StartBroker(t, f)
	}
	fleetctl(t, "crl", "--dir", f.Dir)
	crl, err := os.ReadFile(f.CRLPath())
	if err != nil {
		t.Fatal(err)
	}
	return f, mqtttest.StartMosquitto(t, pki, fleettest.Identities(), mqtttest.WithCRL(crl)).URL()
}

// An operator at 3 a.m. learns from fleetctl status (and breach, rotate) whether any signer
// serves, before waiting for a rollout that cannot move: each running fleetctl serve keeps its
// presence retained, says "stopped" when it stops, and serve --retire clears it. On both
// brokers.
func TestStatusSaysWhetherASignerServes(t *testing.T) {
	for _, kind := range []string{"embedded", "mosquitto"} {
		t.Run(kind, func(t *testing.T) {
			f, url := fleetWithBroker(t, kind)
			if _, warned := statusOf(t, f, url); !strings.Contains(warned, "WARNING: no signer has said it serves") {
				t.Fatalf("no signer ever ran, and status said:\n%s", warned)
			}

			stop := startServe(t, f, url, "s1")
			var r status.Report
			waitFor(t, 30*time.Second, "status to list s1 serving", func() bool {
				r, _ = statusOf(t, f, url)
				return len(r.Signers) == 1 && r.Signers[0].Name == "s1" && r.Signers[0].State == wire.SignerServing
			})
			if _, warned := statusOf(t, f, url); strings.Contains(warned, "signer") {
				t.Fatalf("with s1 serving, status warned:\n%s", warned)
			}

			cam := startAgent(t, enroll(t, f, "cam-0000"), url, fastRotation)
			cam.waitConnected(t)
			waitFor(t, 30*time.Second, "the camera's state", func() bool { r, _ := statusOf(t, f, url); return r.Total == 1 && r.NoState == 0 })
			stop()
			if r, warned := statusOf(t, f, url); !strings.Contains(warned, "every signer has stopped (the last, s1,") || r.Signers[0].State != wire.SignerStopped {
				t.Fatalf("s1 stopped, and status said %+v:\n%s", r.Signers, warned)
			}
			// A rollout started now says it will wait; status --wait says so in its progress bar
			// (drawn again after 5 s without news) and when it gives up.
			if out, err := tryFleetctl("rotate", "--dir", f.Dir, "--broker", url, "--device", "cam-0000"); err != nil || !strings.Contains(out, "WARNING: every signer has stopped") {
				t.Fatalf("rotate with no signer serving: %v\n%s", err, out)
			}
			if out, err := tryFleetctl("status", "--dir", f.Dir, "--broker", url, "--wait", "7s"); err == nil || !strings.Contains(err.Error(), "not converged") || !strings.Contains(err.Error(), "every signer has stopped") || !strings.Contains(out, "NO SIGNER SERVES") {
				t.Fatalf("status --wait with no signer serving: %v\n%s", err, out)
			}
			fleetctl(t, "serve", "--dir", f.Dir, "--broker", url, "--name", "s1", "--retire")
			if r, warned := statusOf(t, f, url); len(r.Signers) != 0 || !strings.Contains(warned, "no signer has said it serves") {
				t.Fatalf("s1 retired, and status said %+v:\n%s", r.Signers, warned)
			}
		})
	}
}

// A signer that is killed (SIGKILL: no "stopped") is gone for fleetctl status at once, by the
// will the broker publishes for it, rather than after its word has aged three intervals; a
// signer started again under its name is serving again. On both brokers.
func TestStatusSaysAtOnceThatAKilledSignerIsGone(t *testing.T) {
	bin, err := fleetctlBin()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"embedded", "mosquitto"} {
		t.Run(kind, func(t *testing.T) {
			f, url := fleetWithBroker(t, kind)
			out := new(logtest.Buffer)
			cmd := exec.Command(bin, "serve", "--dir", f.Dir, "--broker", url, "--name", "s1", "--log-level", "warn")
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			waitFor(t, 30*time.Second, "status to list s1 serving", func() bool {
				r, _ := statusOf(t, f, url)
				return len(r.Signers) == 1 && r.Signers[0].State == wire.SignerServing
			})

			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			killed := time.Now()
			var r status.Report
			var warned string
			// Its word is 30 s apart: aged out, it would be gone 90 s after it last spoke.
			waitFor(t, 20*time.Second, "status to say s1 is lost", func() bool {
				r, warned = statusOf(t, f, url)
				return len(r.Signers) == 1 && r.Signers[0].State == wire.SignerLost
			})
			if !strings.Contains(warned, "no signer serves: the broker says s1 lost its connection without stopping") {
				t.Fatalf("s1 killed, and status warned:\n%s", warned)
			}
			t.Logf("status said s1 was lost %v after the kill", time.Since(killed).Round(time.Millisecond))

			startServe(t, f, url, "s1")
			waitFor(t, 30*time.Second, "status to list s1 serving again", func() bool {
				r, warned = statusOf(t, f, url)
				return len(r.Signers) == 1 && r.Signers[0].State == wire.SignerServing && !strings.Contains(warned, "signer")
			})
		})
	}
}
