package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// These tests put the state directory on a small tmpfs and fill it: a real full disk. They
// need root (or CAP_SYS_ADMIN) to mount it: skipped for a user who is not root, failed for
// root who cannot (CI runs them as root).

// smallDisk mounts a tmpfs of size bytes for the test and returns its path; it is unmounted
// when the test ends, after every cleanup registered later (agents stopped first).
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("cannot mount a tmpfs to fill (needs root; make test runs as root in CI): %v", err)
		}
		t.Fatalf("cannot mount a tmpfs to fill, as root: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes to a file in dir until the disk is full and returns a function that frees
// the space again.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	f.Close()
	// A byte-sized write fails too: nothing is left for a state write.
	if err := os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o600); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("the disk is not full: %v", err)
	}
	return func() {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// A camera that rotated (generation 1 active, the enrollment key wiped) finds its state file
// corrupt while its disk is full, so the recovered state cannot be saved. It must come up on
// generation 1 all the same, and come up again at the next start once the disk has room, with
// commands from before still refused. Before, the agent quarantined the file by moving it,
// failed to save, and exited; the next start found no state file, took the zero State for a
// new device's, and could never start again: generation 0, which that journal names, is gone.
func TestACorruptStateFileOnAFullDiskIsRecoveredNowAndAtEveryStart(t *testing.T) {
	const id = "cam-0001"
	disk := smallDisk(t, 1<<20)
	pki := mqtttest.NewPKI(t)
	now := time.Now()
	fx := enrolledFleet(t, pki, closedPort(t), id, now, 0, true)
	gen1 := writeGeneration(t, pki, fx.dir, id, 1, now, 0)
	if err := wipeGeneration(fx.dir, 0); err != nil {
		t.Fatal(err)
	}
	hwm := uint64(now.UnixNano())
	if err := state.NewFileStore(filepath.Join(fx.dir, StateFile), nil).Save(state.State{CommandHWM: hwm, Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(disk, "state")
	copyDir(t, fx.dir, dir)
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(`{"command_hwm":`), 0o600); err != nil {
		t.Fatal(err)
	}
	free := fillDisk(t, disk)

	log, rec := logtest.New()
	start := func(when string) *Agent {
		t.Helper()
		a, err := New(Config{StateDir: dir, Logger: log})
		if err != nil {
			t.Errorf("%s: the agent did not start: %v", when, err)
			return nil
		}
		if got := a.Certificate().SerialNumber; got.Cmp(gen1.SerialNumber) != 0 {
			t.Errorf("%s: presents certificate %x, want generation 1's %x", when, got, gen1.SerialNumber)
		}
		old, _ := certs.SignCommand(fx.cmdKey, certs.Command{Type: "ping", Target: id, Seq: hwm, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
		a.handleCommand(context.Background(), "dev/"+id+"/down/cmd", old)
		if a.cmdsOK.Load() != 0 {
			t.Errorf("%s: a command sequenced before the recovery was accepted", when)
		}
		return a
	}
	start("on the full disk")
	rec.WaitFor(t, time.Second, "state file was corrupt")
	free()
	if start("at the next start, with room on the disk") == nil {
		t.Fatalf("log:\n%s", rec.Text())
	}
	if st, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load(); err != nil || st.Cred.Active != 1 {
		t.Fatalf("journal after the recovery: %+v, %v", st.Cred, err)
	}
}
