// Package state persists the agent's small mutable state: the command high-water mark, the
// time floor and the trusted key set version. It writes atomically (R6) and never crash-loops
// on a corrupt file: the file is quarantined beside itself and the caller is told, so it can
// recover with safe values.
//
// It holds no secrets; keys live in their own 0600 files (certs.WriteKeyFile).
package state

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/jsonsum"
	"github.com/camagent/camagent/internal/strictjson"
)

// State is what survives a restart.
type State struct {
	// CommandHWM is the command high-water mark: no command with a sequence at or below it is
	// accepted. SeenCommands are the sequences above it already accepted (at most
	// ReplayWindow, sorted): a command is accepted once, in whatever order the broker delivers
	// it, and when the window is full its lowest entry becomes the new mark (RFC 4303 §3.4.3).
	CommandHWM   uint64   `json:"command_hwm"`
	SeenCommands []uint64 `json:"seen_commands,omitempty"`
	// TimeFloor is a Unix time the device's clock has certainly passed (it was seen while
	// connected, or is the build time). A clock below it is known to be wrong (R5).
	TimeFloor int64 `json:"time_floor"`
	// KeySet is the newest root-signed key set accepted after enrollment, as received; ""
	// means the bundle's.
	KeySet string `json:"keyset,omitempty"`
	// FleetDesired and DeviceDesired are the versions of the last accepted fleet-wide and
	// per-device desired-state documents; older ones are ignored.
	FleetDesired  uint64 `json:"fleet_desired,omitempty"`
	DeviceDesired uint64 `json:"device_desired,omitempty"`
	// DesiredEpoch is the highest credential epoch any accepted desired state asked for.
	DesiredEpoch uint64 `json:"desired_epoch,omitempty"`
	// Cred is the credential journal (rotation issue): which credential generation is in use
	// and where an unfinished rotation stands.
	Cred Cred `json:"cred"`
	// Privacy is privacy mode: the camera is stopped and viewers are refused until it is
	// turned off. It survives a reboot.
	Privacy bool `json:"privacy,omitempty"`
}

// Rotation phases of the credential journal.
const (
	PhaseNone    = ""
	PhasePending = "pending" // the next generation's key and token exist; no certificate yet
	PhaseIssued  = "issued"  // its certificate arrived and verified; not yet confirmed
)

// Cred is the credential journal. A rotation moves Phase from PhaseNone to PhasePending to
// PhaseIssued and back to PhaseNone with Active = Next: each step is one atomic write, and the
// active generation's files are never touched before that last write, so the device always has
// a working credential (R1).
type Cred struct {
	// Active is the credential generation in use; 0 is the enrollment key and bundle.
	Active uint64 `json:"active"`
	// Epoch is the credential and grant epoch of the active generation.
	Epoch uint64 `json:"epoch"`
	// Phase is where an unfinished rotation stands.
	Phase string `json:"phase,omitempty"`
	// Next is the generation being made, TargetEpoch the epoch it is for, ReqID the attempt's id.
	Next        uint64 `json:"next,omitempty"`
	TargetEpoch uint64 `json:"target_epoch,omitempty"`
	ReqID       string `json:"req_id,omitempty"`
	// Bootstrap is set when the next generation is being requested through the bootstrap
	// identity, because the active certificate expired or was revoked.
	Bootstrap bool `json:"bootstrap,omitempty"`
}

// Store loads and saves State. Implementations are safe for concurrent use.
type Store interface {
	// Load returns the saved state; a store with nothing saved returns the zero State and no
	// error. A corrupt store returns the zero State and a *CorruptError after quarantining a
	// copy of it; it stays corrupt, and each Load says so again, until a Save replaces it, so
	// a caller killed before it saved what it recovered recovers again at its next Load.
	Load() (State, error)
	// Save replaces the saved state durably before returning.
	Save(State) error
}

// Equal reports whether s and o hold the same state, so that saving one over the other would
// write the same file.
func (s State) Equal(o State) bool {
	return reflect.DeepEqual(s, o)
}

// ReplayWindow is how many accepted command sequences above the high-water mark are kept.
const ReplayWindow = 64

// AcceptCommand records seq as accepted, if it is new: above the high-water mark and not in
// the window. It reports whether it was new.
func (s *State) AcceptCommand(seq uint64) bool {
	if seq <= s.CommandHWM {
		return false
	}
	i, found := slices.BinarySearch(s.SeenCommands, seq)
	if found {
		return false
	}
	s.SeenCommands = slices.Insert(slices.Clone(s.SeenCommands), i, seq)
	if len(s.SeenCommands) > ReplayWindow {
		s.CommandHWM = s.SeenCommands[0]
		s.SeenCommands = s.SeenCommands[1:]
	}
	return true
}

// Parse decodes a state file's bytes. A file that does not parse, or parses into a state no
// sequence of the agent's writes leaves, is an error, and the State is the zero one.
func Parse(b []byte) (State, error) {
	st, _, err := parse(b)
	return st, err
}

// parse is Parse also returning, when the bytes parse but fail the check, what they parsed
// into (nil otherwise).
func parse(b []byte) (State, *State, error) {
	b, err := jsonsum.Strip(b)
	if err != nil {
		return State{}, nil, err
	}
	var st State
	if err := strictjson.Unmarshal(b, &st); err != nil {
		return State{}, nil, err
	}
	if len(st.SeenCommands) == 0 {
		st.SeenCommands = nil // as a save of it loads again: "[]" is omitted
	}
	if err := st.check(); err != nil {
		return State{}, &st, err
	}
	return st, nil, nil
}

// check reports a state that parses but that no sequence of the agent's own writes leaves: a
// storage fault changed a byte inside a value (a phase, a generation, a number of the replay
// window). Acting on it could commit a generation that was never made, renew nothing while
// calling it a rotation, or accept a command already executed; such a file is as corrupt as
// one that does not parse. Only what the agent relies on is checked, so that no state it
// wrote is ever refused.
func (s *State) check() error {
	c := s.Cred
	switch c.Phase {
	case PhaseNone:
	case PhasePending, PhaseIssued:
		if c.Next <= c.Active {
			return fmt.Errorf("cred: a %s rotation to generation %d, not above the active %d", c.Phase, c.Next, c.Active)
		}
		if !isReqID(c.ReqID) {
			return fmt.Errorf("cred: a %s rotation with request id %q, not 16 to 32 lowercase hex digits", c.Phase, c.ReqID)
		}
	default:
		return fmt.Errorf("cred: phase %q is none of %q, %q and %q", c.Phase, PhaseNone, PhasePending, PhaseIssued)
	}
	if len(s.SeenCommands) > ReplayWindow {
		return fmt.Errorf("seen_commands: %d, over the window of %d", len(s.SeenCommands), ReplayWindow)
	}
	last := s.CommandHWM
	for i, seq := range s.SeenCommands {
		if seq <= last {
			return fmt.Errorf("seen_commands: entry %d (%d) is not above %d", i, seq, last)
		}
		last = seq
	}
	return nil
}

// isReqID reports whether id has the shape of a rotation attempt's id (agent.begin; wire's
// req_id).
func isReqID(id string) bool {
	if len(id) < 16 || len(id) > 32 {
		return false
	}
	for i := range len(id) {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// MaxFileSize caps the state file; anything larger is treated as corrupt.
const MaxFileSize = 64 << 10

// ErrCorrupt is matched (errors.Is) by a *CorruptError.
var ErrCorrupt = errors.New("state: corrupt state file")

// CorruptError reports a state file that does not parse, parses into a state the check
// refuses, or is not a regular file, and where its quarantined copy is. The file itself
// stays until the next Save replaces it (one that is not a regular file is moved to the
// quarantined name instead).
type CorruptError struct {
	Path        string
	Quarantined string
	Err         error
	// Privacy reports that the file says privacy mode is on: it parsed with Privacy set and
	// failed the check, or it does not parse and still holds "privacy":true as Save writes
	// it, give or take the one byte a fault may have changed there too (privacy off is
	// omitted, so no one-bit fault writes that). A caller keeps privacy mode on: the owner's
	// choice must not be undone by a value damaged elsewhere in the file.
	Privacy bool
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state: corrupt state file %s (copied to %s): %v", e.Path, e.Quarantined, e.Err)
}

// Unwrap lets errors.Is match both ErrCorrupt and the parse error.
func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

// FileStore keeps State as JSON in one 0600 file.
type FileStore struct {
	path string
	now  func() time.Time
	mu   sync.Mutex
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a store at path; its directory must exist. now stamps quarantined
// files; nil means time.Now.
func NewFileStore(path string, now func() time.Time) *FileStore {
	if now == nil {
		now = time.Now
	}
	return &FileStore{path: path, now: now}
}

// Load implements Store.
func (s *FileStore) Load() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return State{}, s.moveAside(fi.Mode())
	case err != nil:
		// A symbolic link that leads to nothing readable (gone, a loop, a path through a
		// file: what a file system repair or a half-restored backup can leave) is not a new
		// device's missing file, and no open of it would ever work: the device wrote its
		// state, and recovers it as from a corrupt one. A link to a file is read through,
		// and the next save replaces the link.
		if li, lerr := os.Lstat(s.path); lerr == nil && li.Mode()&fs.ModeSymlink != 0 {
			return State{}, s.moveAside(li.Mode())
		}
	}
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("state: %w", err)
	}
	b := make([]byte, MaxFileSize+1)
	n, rerr := readFull(f, b)
	f.Close()
	if rerr != nil {
		return State{}, fmt.Errorf("state: read %s: %w", s.path, rerr)
	}
	var st State
	var parsed *State
	var perr error
	if n > MaxFileSize {
		perr = fmt.Errorf("over %d bytes", MaxFileSize)
	} else {
		st, parsed, perr = parse(b[:n])
	}
	if perr == nil {
		return st, nil
	}
	q := s.quarantineName()
	// The copy is a hard link, which needs no free space (the disk may be full: that may be
	// why the file is corrupt), and the corrupt file stays where it is until the caller saves
	// the state it recovers over it. Moving it away instead left no state file at all when
	// that save failed or the process was killed before it: the next start then loaded the
	// zero State as if the device were new, with no command high-water mark and a journal
	// naming the enrollment key, which a rotated device has wiped (R6).
	if err := os.Link(s.path, q); err != nil {
		// A file system without hard links: a copy of what was read.
		if err := atomicfile.WriteFile(q, b[:min(n, MaxFileSize)], 0o600); err != nil {
			return State{}, fmt.Errorf("state: quarantine %s: %w", s.path, err)
		}
	}
	s.pruneQuarantined(q)
	if err := atomicfile.SyncDir(filepath.Dir(s.path)); err != nil {
		return State{}, err
	}
	privacy := parsed != nil && parsed.Privacy || parsed == nil && saysPrivacyOn(b[:min(n, MaxFileSize)])
	return State{}, &CorruptError{Path: s.path, Quarantined: q, Err: perr, Privacy: privacy}
}

// privacyOn is how Save writes privacy mode on; off is omitted.
const privacyOn = `"privacy":true`

// saysPrivacyOn reports whether b, a state file that does not parse, holds privacyOn with at
// most one byte changed: the fault that broke the file may be in those very bytes. No other
// member comes within one byte of it, and a wrong "on" only keeps the camera stopped until its
// owner turns privacy mode off, where a wrong "off" would stream against their choice.
func saysPrivacyOn(b []byte) bool {
	for i := 0; i+len(privacyOn) <= len(b); i++ {
		diff := 0
		for j := range len(privacyOn) {
			if b[i+j] != privacyOn[j] {
				if diff++; diff > 1 {
					break
				}
			}
		}
		if diff <= 1 {
			return true
		}
	}
	return false
}

// quarantineName returns the name of a new quarantined copy of the state file.
func (s *FileStore) quarantineName() string {
	return fmt.Sprintf("%s.corrupt-%d", s.path, s.now().UnixNano())
}

// moveAside quarantines a state file that is not a regular file (a directory, after a file
// system repair): it is renamed away, since no save could replace it, and the caller
// recovers as for a corrupt file.
func (s *FileStore) moveAside(mode os.FileMode) error {
	q := s.quarantineName()
	if err := os.Rename(s.path, q); err != nil {
		return fmt.Errorf("state: quarantine %s: %w", s.path, err)
	}
	s.pruneQuarantined(q)
	if err := atomicfile.SyncDir(filepath.Dir(s.path)); err != nil {
		return err
	}
	return &CorruptError{Path: s.path, Quarantined: q, Err: fmt.Errorf("not a regular file (mode %s)", mode)}
}

// MaxQuarantined is how many quarantined copies of a corrupt state file are kept, the newest:
// enough to find out what went wrong, few enough that a storage fault corrupting the file
// again and again does not fill the camera's storage.
const MaxQuarantined = 3

// pruneQuarantined removes the quarantined copies of the state file beyond the MaxQuarantined
// newest, never keep, the one just made. It does its best: a copy it cannot remove stays.
func (s *FileStore) pruneQuarantined(keep string) {
	prefix := filepath.Base(s.path) + ".corrupt-"
	ents, err := os.ReadDir(filepath.Dir(s.path))
	if err != nil {
		return
	}
	type quarantined struct {
		name string
		at   int64
	}
	var copies []quarantined
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		at, err := strconv.ParseInt(rest, 10, 64)
		if !ok || err != nil || !e.Type().IsRegular() || filepath.Join(filepath.Dir(s.path), e.Name()) == keep {
			continue
		}
		copies = append(copies, quarantined{e.Name(), at})
	}
	slices.SortFunc(copies, func(a, b quarantined) int { return cmp.Compare(b.at, a.at) })
	for _, c := range copies[min(len(copies), MaxQuarantined-1):] {
		os.Remove(filepath.Join(filepath.Dir(s.path), c.name))
	}
}

func readFull(f *os.File, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// Save implements Store.
func (s *FileStore) Save(st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	b = jsonsum.Append(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := atomicfile.WriteFile(s.path, b, 0o600); err != nil {
		return fmt.Errorf("state: save: %w", err)
	}
	return nil
}

// MemStore is the in-memory twin of FileStore, for tests and tools.
type MemStore struct {
	mu sync.Mutex
	st State
}

var _ Store = (*MemStore)(nil)

// Load implements Store.
func (m *MemStore) Load() (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st, nil
}

// Save implements Store.
func (m *MemStore) Save(st State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = st
	return nil
}
