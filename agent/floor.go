package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/internal/strictjson"
)

// FloorFile keeps, beside the state file, what a device must not fall below even when the
// state file is lost to corruption: the grant epoch and the newest key set it accepted. Both
// only rise, and only a breach notice or a key set raises them, so it is written rarely. A
// state file quarantined as corrupt otherwise left the device honouring grants from before
// the last breach, and trusting the keys that breach dropped, until it heard the retained
// notice again.
const FloorFile = "floor.json"

// maxFloorSize caps the floor file: a key set and a number.
const maxFloorSize = certs.MaxKeySetSize + 1024

// floor is FloorFile's content.
type floor struct {
	V int `json:"v"`
	// GrantEpoch is the device's grant epoch (Agent.GrantEpoch) when it was written.
	GrantEpoch uint64 `json:"grant_epoch"`
	// KeySet is the newest key set the device accepted, as the root signed it; empty while
	// it trusts its bundle's.
	KeySet string `json:"key_set,omitempty"`
}

// readFloor reads the floor file; a missing one is the zero floor.
func (a *Agent) readFloor() (floor, error) { return readFloorFile(a.cfg.StateDir) }

// readFloorFile reads stateDir's floor file; a missing one is the zero floor.
func readFloorFile(stateDir string) (floor, error) {
	b, err := cappedfile.Read(filepath.Join(stateDir, FloorFile), maxFloorSize)
	if errors.Is(err, fs.ErrNotExist) {
		return floor{}, nil
	}
	if err != nil {
		return floor{}, fmt.Errorf("agent: %s: %w", FloorFile, err)
	}
	var f floor
	if err := strictjson.Unmarshal(b, &f); err != nil || f.V != 1 {
		return floor{}, fmt.Errorf("agent: %s is not a version 1 floor: %v", FloorFile, err)
	}
	return f, nil
}

// keepFloor writes the floor of st (the state as just saved) when it is above the one on
// disk. A failure is logged: the state file holds the same values, and the floor only matters
// if that file is lost too.
func (a *Agent) keepFloor(st state.State) {
	want := floor{V: 1, GrantEpoch: max(st.Cred.Epoch, st.DesiredEpoch), KeySet: st.KeySet}
	if want.KeySet != "" {
		if _, err := certs.OpenKeySet(a.id.bundle.Root, []byte(want.KeySet)); err != nil {
			// Damaged in a state file that still parses: the floor keeps the copy it has,
			// which is what the agent recovers the set from (loadKeySet).
			want.KeySet = ""
		}
	}
	have, err := a.readFloor()
	if err == nil && have.GrantEpoch >= want.GrantEpoch && (want.KeySet == "" || have.KeySet == want.KeySet) {
		return
	}
	if err == nil {
		// Never lower either half: a key set is replaced only by the one just accepted, which
		// is newer; an epoch only by a higher one.
		want.GrantEpoch = max(want.GrantEpoch, have.GrantEpoch)
		if want.KeySet == "" {
			want.KeySet = have.KeySet
		}
	}
	// No checksum (jsonsum), unlike the state file: an older agent, after a rollback, reads
	// the floor strictly and would find an unknown member, lose its grant epoch and key set,
	// and write a lower floor over this one. The floor is what that agent rebuilds the state
	// file from, which it cannot read for its checksum.
	b, err := json.Marshal(want)
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(a.cfg.StateDir, FloorFile), b, 0o600)
	}
	if err != nil {
		a.log.Error("could not keep the grant epoch and key set floor", "err", err)
	}
}

// recoverFloor puts the floor into st, a state rebuilt after the state file was found corrupt:
// the grant epoch as the desired epoch (the device then rotates to it, as it would on hearing
// the retained notice again), and the key set if the root signed it.
func (a *Agent) recoverFloor(st *state.State) {
	f, err := a.readFloor()
	if err != nil {
		a.log.Error("the grant epoch and key set floor cannot be read either; starting from the enrollment's", "err", err)
		return
	}
	st.DesiredEpoch = max(st.DesiredEpoch, f.GrantEpoch)
	if f.KeySet != "" {
		if _, err := certs.OpenKeySet(a.id.bundle.Root, []byte(f.KeySet)); err != nil {
			a.log.Error("the key set of the floor does not open with the fleet root; starting from the enrollment's", "err", err)
		} else {
			st.KeySet = f.KeySet
		}
	}
	a.log.Info("recovered the grant epoch and key set floor", "grant_epoch", f.GrantEpoch, "key_set", f.KeySet != "")
}

// stateLost reports whether stateDir's state file is gone although the device wrote it
// before: the floor file, a quarantined state file or a generation with an issued
// certificate is there, which only a device that saved its state leaves (a rotation journals
// its pending generation before it asks for the certificate; a generation killed before that
// has none). A storage fault that
// lost the file otherwise made the agent start as a device enrolled a moment ago: generation
// 0 active, whose key a rotated device wiped (a failure at every start without a bootstrap
// identity, the working generation wiped with one), no command high-water mark, and grant
// epoch 0, honouring grants from before the last breach.
func stateLost(stateDir string) bool {
	if _, err := os.Lstat(filepath.Join(stateDir, StateFile)); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if _, err := os.Lstat(filepath.Join(stateDir, FloorFile)); err == nil {
		return true
	}
	// A state file quarantined as corrupt: one that was not a regular file (a directory, a
	// link to nothing) is moved away, and a device killed, or whose disk was full, before it
	// saved the state it rebuilt has none in its place.
	if m, _ := filepath.Glob(filepath.Join(stateDir, StateFile+".corrupt-*")); len(m) > 0 {
		return true
	}
	ents, _ := os.ReadDir(filepath.Join(stateDir, credsDir))
	return slices.ContainsFunc(ents, func(e fs.DirEntry) bool {
		if _, err := strconv.ParseUint(e.Name(), 10, 64); err != nil {
			return false
		}
		_, err := os.Lstat(filepath.Join(stateDir, credsDir, e.Name(), certFile))
		return err == nil
	})
}
