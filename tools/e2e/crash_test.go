package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// proc is camagent running as a real process.
type proc struct {
	cmd  *exec.Cmd
	log  *logtest.Buffer
	done chan error
}

func startProc(t testing.TB, dir, url string, args ...string) *proc {
	t.Helper()
	p := &proc{log: new(logtest.Buffer), done: make(chan error, 1)}
	p.cmd = exec.Command(camagentBin, append([]string{"run", "--state", dir, "--broker", url, "--log-level", "debug"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() && testing.Verbose() {
			t.Logf("camagent %v log:\n%s", args, p.log.String())
		}
	})
	return p
}

// killedWithin waits for the process to die of SIGKILL.
func (p *proc) killedWithin(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("camagent ended with %v, want SIGKILL; log:\n%s", err, p.log.String())
		}
	case <-time.After(d):
		t.Fatalf("camagent did not reach its crash point; log:\n%s", p.log.String())
	}
}

// pingOK pings device until it answers (it must have a working credential) and returns the
// serial it reports.
func pingOK(t testing.TB, e *env, device string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op, err := e.f.Dial(ctx, fleet.OperatorOptions{Broker: e.url})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	for {
		pctx, pc := context.WithTimeout(ctx, 2*time.Second)
		r, _, err := op.Ping(pctx, device)
		pc()
		if err == nil {
			return r.Status.CertSerial
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never answered: %v", device, err)
		}
	}
}

// converged waits until the device reports epoch and an idle rotation, and checks that only
// the active generation's key is left on disk, and that the agent never found its state file
// corrupt: its writes are atomic, so no kill leaves one it would quarantine.
func converged(t testing.TB, e *env, device, dir string, epoch uint64) {
	t.Helper()
	waitFor(t, 90*time.Second, device+" to converge", func() bool {
		for _, d := range statusReport(t, e).Devices {
			if d.ID == device {
				return d.Epoch == epoch && d.Rotation == "idle"
			}
		}
		return false
	})
	keys, _ := filepath.Glob(filepath.Join(dir, "creds", "*", agent.KeyFile))
	if _, err := os.Stat(filepath.Join(dir, agent.KeyFile)); err == nil {
		keys = append(keys, filepath.Join(dir, agent.KeyFile))
	}
	if len(keys) != 1 {
		t.Fatalf("%d device keys left on disk after convergence: %v", len(keys), keys)
	}
	if q, _ := filepath.Glob(filepath.Join(dir, agent.StateFile+".corrupt-*")); len(q) != 0 {
		t.Fatalf("the agent found its state file corrupt: %v", q)
	}
}

// SIGKILL right after every durable step of a rotation: after a restart the device always has a
// working credential and converges (R1).
func TestCrashAtEveryRotationStep(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		for i, step := range agent.Steps {
			t.Run(step, func(t *testing.T) {
				id := fmt.Sprintf("cam-crash-%d", i)
				dir := enroll(t, e.f, id)
				p := startProc(t, dir, e.url, "--crash-after", step)
				before := pingOK(t, e, id)
				fleetctl(t, "rotate", "--dir", e.f.Dir, "--broker", e.url, "--device", id)
				p.killedWithin(t, 60*time.Second)
				e.applyCRL(t) // the signer may have revoked the old certificate already

				startProc(t, dir, e.url)
				after := pingOK(t, e, id)
				converged(t, e, id, dir, 1)
				if final := pingOK(t, e, id); final == before {
					t.Fatalf("serial still %s after the rotation (reported %s right after restart)", before, after)
				}
			})
		}
	}, func() []string {
		var ids []string
		for i := range agent.Steps {
			ids = append(ids, fmt.Sprintf("cam-crash-%d", i))
		}
		return ids
	}()...)
}

// SIGKILL at random moments during rotations, several times in a row on one device.
func TestCrashAtRandomMoments(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		const id = "cam-random"
		dir := enroll(t, e.f, id)
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
		for run := 1; run <= 4; run++ {
			p := startProc(t, dir, e.url)
			pingOK(t, e, id)
			fleetctl(t, "rotate", "--dir", e.f.Dir, "--broker", e.url, "--device", id)
			delay := time.Duration(rng.IntN(400)) * time.Millisecond
			time.Sleep(delay) // the random moment: the point of this test
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			p.done <- nil
			t.Logf("run %d: killed %s after the rotate command", run, delay)
			e.applyCRL(t)
			q := startProc(t, dir, e.url)
			pingOK(t, e, id)
			converged(t, e, id, dir, uint64(run))
			q.cmd.Process.Signal(syscall.SIGTERM)
			<-q.done
			q.done <- nil
		}
	}, "cam-random")
}
