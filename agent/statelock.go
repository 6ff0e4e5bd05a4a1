package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/camagent/camagent/internal/atomicfile"
)

// LockFile is the file in the state directory whose lock says a camagent process is using the
// directory. A factory reset leaves it in place.
const LockFile = ".camagent.lock"

// ErrStateInUse reports a state directory another process holds with LockState: two agents on
// one directory would run two rotation journals over the same files and take each other's MQTT
// session, and enrolling or resetting under a running agent would pull its files away.
var ErrStateInUse = errors.New("agent: the state directory is in use by another camagent process")

// StateLock is held on a state directory while a process uses it (LockState).
type StateLock struct {
	f   *os.File
	dir string
}

// LockState takes the state directory dir for this process, without waiting: it fails with
// ErrStateInUse, naming the holder's process id, while another process holds it. The lock is an
// advisory lock on dir's LockFile (made, 0644, with dir if missing, 0700), held until Unlock or
// until the process ends however it ends, so a SIGKILLed agent leaves no stale lock. Within one
// process a second LockState on the same directory fails too.
func LockState(dir string) (*StateLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: lock state directory: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	// 0644, and opened read-only when it belongs to another user (root ran a command by
	// mistake): it holds a process id only, and flock needs no write access, so such a file
	// never locks the service user out of its own directory.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrPermission) {
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: lock state directory: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("agent: lock %s: %w", path, err)
	}
	if !held {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		holder := "another process"
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
			holder = "process " + strconv.Itoa(pid)
		}
		return nil, fmt.Errorf("%w: %s holds %s (stop it first, e.g. systemctl stop camagent)", ErrStateInUse, holder, dir)
	}
	// The holder's pid, for the message above; the lock, not this, is what counts.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &StateLock{f: f, dir: dir}, nil
}

// TempMinAge is how old a temporary file must be for RemoveTemps to remove it.
const TempMinAge = 10 * time.Minute

// RemoveTemps removes the temporary files that atomic writes (internal/atomicfile) killed
// before their rename (SIGKILL, power cut) left in the state directory and in each credential
// generation's directory (creds/N), and returns how many it removed. Every other file stays.
// A camera that crashes or loses power again and again would otherwise gather them for ever.
//
// It is a method of the lock because only the lock's holder may run it: every camagent process
// that writes state files under the lock is then between writes. `camagent onboard` and
// `camagent selftest` write without the lock, beside a running agent, so a temporary file
// modified less than TempMinAge ago is left for a later start. It fails on a released lock.
// A file that cannot be removed does not stop the others; the errors are joined.
func (l *StateLock) RemoveTemps() (int, error) {
	if l == nil || l.f == nil {
		return 0, errors.New("agent: remove temporary files: the state directory is not locked")
	}
	var errs []error
	dirs := []string{l.dir}
	ents, err := os.ReadDir(filepath.Join(l.dir, credsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range ents {
		if _, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && e.IsDir() {
			dirs = append(dirs, filepath.Join(l.dir, credsDir, e.Name()))
		}
	}
	removed := 0
	for _, d := range dirs {
		n, err := atomicfile.RemoveTemps(d, TempMinAge)
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("agent: remove temporary files: %w", err)
	}
	return removed, nil
}

// Unlock releases the state directory. Unlocking a nil or released lock does nothing.
func (l *StateLock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	l.f.Close() // closing the file releases its lock
	l.f = nil
}
