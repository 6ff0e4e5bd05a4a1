package fleet

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/internal/atomicfile"
)

// ErrSignerRunning reports a signer instance whose name another process of this fleet
// directory already serves under (LockSignerInstance).
var ErrSignerRunning = errors.New("fleet: a signer instance of this name already runs on this fleet directory")

// LockSignerInstance takes, without waiting, the lock of the signer instance named name in
// the fleet directory, and returns its release, which the signer calls when it stops (the
// lock also ends with the process). Two instances of one name share one MQTT client id
// (SignerClientID), and would take each other's session over in turn for as long as both
// run: when another process holds the lock it returns an error wrapping ErrSignerRunning.
// Instances run from different copies of the directory are not seen.
func (f *Fleet) LockSignerInstance(name string) (func(), error) {
	if !wire.SignerNameRe.MatchString(name) {
		return nil, fmt.Errorf("fleet: signer instance name %q: letters, digits, '.', '_' and '-', at most 64", name)
	}
	dir := filepath.Join(f.Dir, signerDir)
	if err := atomicfile.EnsurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	path := filepath.Join(dir, "instance-"+name+".lock")
	release, held, err := tryLock(path)
	if err != nil {
		return nil, fmt.Errorf("fleet: lock signer instance %q: %w", name, err)
	}
	if held {
		return nil, fmt.Errorf("%w: %q, in %s (the process holding %s)", ErrSignerRunning, name, f.Dir, path)
	}
	return release, nil
}
