package agent

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLockStateKeepsASecondHolderOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l, err := LockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory made as %v, %v; want 0700", fi.Mode(), err)
	}
	_, err = LockState(dir)
	if !errors.Is(err, ErrStateInUse) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second LockState = %v, want ErrStateInUse naming process %d", err, os.Getpid())
	}
	l.Unlock()
	l.Unlock() // twice: nothing
	l2, err := LockState(dir)
	if err != nil {
		t.Fatalf("LockState after Unlock: %v", err)
	}
	l2.Unlock()
}

// TestLockStateHelperProcess holds the lock of CAMAGENT_LOCK_DIR for
// TestAKilledHolderLeavesNoLockBehind until it is killed.
func TestLockStateHelperProcess(t *testing.T) {
	dir := os.Getenv("CAMAGENT_LOCK_DIR")
	if dir == "" {
		return // not run as the helper
	}
	if _, err := LockState(dir); err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Stdout.WriteString("locked\n")
	select {}
}

// The lock is the process's: another process is kept out while it lives, and a holder killed
// with SIGKILL (power cut, OOM killer, watchdog) leaves nothing that keeps the next one out.
func TestAKilledHolderLeavesNoLockBehind(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	// Under emulation (make test-arm) the test binary is the target's: run it as go test -exec
	// does.
	args := []string{os.Args[0], "-test.run=^TestLockStateHelperProcess$"}
	if emu := os.Getenv("CAMAGENT_TEST_EXEC"); emu != "" {
		args = append([]string{emu}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "CAMAGENT_LOCK_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("helper: %q", line)
	}
	_, err = LockState(dir)
	if !errors.Is(err, ErrStateInUse) || !strings.Contains(err.Error(), "process "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("LockState while process %d holds it = %v, want ErrStateInUse naming it", cmd.Process.Pid, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := LockState(dir)
	if err != nil {
		t.Fatalf("LockState after the holder was killed: %v", err)
	}
	l.Unlock()
}

// A factory reset runs under the lock of whoever resets: the lock file stays, and is not
// reported as a file the reset did not know.
func TestResetLeavesTheLockAlone(t *testing.T) {
	dir := t.TempDir()
	l, err := LockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	left, err := Reset(dir)
	if err != nil || len(left) != 0 {
		t.Fatalf("Reset = %v, %v; want nothing left over", left, err)
	}
	if _, err := os.Stat(filepath.Join(dir, LockFile)); err != nil {
		t.Fatalf("the lock file went: %v", err)
	}
	if _, err := LockState(dir); !errors.Is(err, ErrStateInUse) {
		t.Fatalf("after the reset another process could take the directory: %v", err)
	}
}

// RemoveTemps cleans the directories the agent writes atomically, the state directory and
// each generation's, and no other: a directory under creds that is not a generation is not the
// agent's. A released lock removes nothing.
func TestStateLockRemoveTempsCleansTheAgentsDirectoriesOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	old := time.Now().Add(-TempMinAge - time.Minute)
	put := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half a write"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gone := []string{
		put(filepath.Join(dir, ".state.json.tmp-1")),
		put(filepath.Join(dir, credsDir, "1", ".device.key.tmp-2")),
		put(filepath.Join(dir, credsDir, "12", ".device.crt.tmp-3")),
	}
	kept := []string{
		put(filepath.Join(dir, credsDir, ".x.tmp-4")),          // creds itself is not written to
		put(filepath.Join(dir, credsDir, "old", ".x.tmp-5")),   // not a generation
		put(filepath.Join(dir, "backup", ".state.json.tmp-6")), // not the agent's
	}
	l, err := LockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, err := l.RemoveTemps()
	if err != nil || n != len(gone) {
		t.Fatalf("RemoveTemps = %d, %v; want %d", n, err, len(gone))
	}
	for _, p := range gone {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it removed", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
	l.Unlock()
	put(filepath.Join(dir, ".state.json.tmp-7"))
	if n, err := l.RemoveTemps(); err == nil || n != 0 {
		t.Fatalf("RemoveTemps on a released lock = %d, %v", n, err)
	}
}
