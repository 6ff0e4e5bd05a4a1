package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFileStoreRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	s := NewFileStore(p, nil)
	st, err := s.Load()
	if err != nil || !reflect.DeepEqual(st, State{}) {
		t.Fatalf("empty store: %+v, %v", st, err)
	}
	want := State{CommandHWM: 42, TimeFloor: 1700000000}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := NewFileStore(p, nil).Load()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("reload: %+v, %v", got, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

func TestCorruptFilesAreQuarantinedNotFatal(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"a truncated file", `{"command_hwm":4`},
		{"random bytes", "\x00\xff\x13garbage"},
		{"an unknown field", `{"command_hwm":4,"evil":1}`},
		{"an oversized file", `{"command_hwm":4}` + strings.Repeat(" ", MaxFileSize)},
		// Files that parse, with one value a storage fault changed.
		{"an unknown phase", `{"command_hwm":4,"cred":{"active":1,"phase":"pendinf","next":2,"req_id":"0123456789abcdef"}}`},
		{"a rotation to the active generation", `{"command_hwm":4,"cred":{"active":1,"phase":"pending","next":1,"req_id":"0123456789abcdef"}}`},
		{"a rotation to an older generation", `{"command_hwm":4,"cred":{"active":3,"phase":"issued","next":2,"req_id":"0123456789abcdef"}}`},
		{"a rotation without its request id", `{"command_hwm":4,"cred":{"active":1,"phase":"pending","next":2}}`},
		{"a request id that is not hex", `{"command_hwm":4,"cred":{"active":1,"phase":"issued","next":2,"req_id":"0123456789abcdeg"}}`},
		{"seen commands out of order", `{"command_hwm":4,"seen_commands":[9,7],"cred":{}}`},
		{"a seen command at the mark", `{"command_hwm":4,"seen_commands":[4,7],"cred":{}}`},
		{"a seen command twice", `{"command_hwm":4,"seen_commands":[7,7],"cred":{}}`},
		{"a replay window over its size", `{"command_hwm":0,"seen_commands":[` + seqs(ReplayWindow+1) + `],"cred":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "state.json")
			os.WriteFile(p, []byte(tc.content), 0o600)
			s := NewFileStore(p, func() time.Time { return time.Unix(0, 77) })
			st, err := s.Load()
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want CorruptError", err)
			}
			if !reflect.DeepEqual(st, State{}) {
				t.Fatalf("state %+v from a corrupt file", st)
			}
			if b, _ := os.ReadFile(ce.Quarantined); string(b) != tc.content {
				t.Fatal("quarantined copy differs from the corrupt file")
			}
			// Saving the recovered state replaces the corrupt file: no crash loop.
			if err := s.Save(State{CommandHWM: 5}); err != nil {
				t.Fatal(err)
			}
			if st, err := s.Load(); err != nil || st.CommandHWM != 5 {
				t.Fatalf("load after the recovery was saved: %+v, %v", st, err)
			}
		})
	}
}

// A process killed (or a disk full) between the quarantine of a corrupt file and the save of
// the state recovered from it must find the file corrupt again at its next start and recover
// again, not find no file and take the zero State for a new device's (R6).
func TestACorruptFileStaysCorruptUntilTheRecoveredStateIsSaved(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	os.WriteFile(p, []byte(`{"command_hwm":4`), 0o600)
	var tick int64
	s := NewFileStore(p, func() time.Time { tick++; return time.Unix(0, tick) })
	for i := range 2 {
		if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("load %d of a corrupt file not saved over: err = %v, want ErrCorrupt", i+1, err)
		}
	}
	if err := s.Save(State{CommandHWM: 9}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Load(); err != nil || st.CommandHWM != 9 {
		t.Fatalf("load after the save: %+v, %v", st, err)
	}
	m, _ := filepath.Glob(p + ".corrupt-*")
	if len(m) != 2 {
		t.Fatalf("quarantined copies: %v, want one per load that found the file corrupt", m)
	}
}

func TestMemStore(t *testing.T) {
	var m MemStore
	m.Save(State{CommandHWM: 3})
	if st, _ := m.Load(); st.CommandHWM != 3 {
		t.Fatal(st)
	}
}

func TestReplayWindowAcceptsReorderedOnceAndRefusesReplays(t *testing.T) {
	var s State
	for _, seq := range []uint64{10, 12, 11} {
		if !s.AcceptCommand(seq) {
			t.Fatalf("seq %d refused", seq)
		}
	}
	for _, seq := range []uint64{10, 11, 12, 0} {
		if s.AcceptCommand(seq) {
			t.Fatalf("replayed seq %d accepted", seq)
		}
	}
	for i := uint64(100); i < 100+ReplayWindow; i++ {
		s.AcceptCommand(i)
	}
	if len(s.SeenCommands) != ReplayWindow || s.CommandHWM != 12 {
		t.Fatalf("window %d, mark %d", len(s.SeenCommands), s.CommandHWM)
	}
	if s.AcceptCommand(11) || s.AcceptCommand(12) {
		t.Fatal("a sequence below the mark was accepted")
	}
	if !s.AcceptCommand(13) {
		t.Fatal("a new sequence above the mark was refused")
	}
}

// A storage fault that corrupts the state file again and again must not fill the camera's
// storage with quarantined copies: the newest MaxQuarantined stay, the others go, and no other
// file is touched.
func TestOnlyTheNewestQuarantinedCopiesStay(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	other := filepath.Join(dir, "state.json.corrupt-notes")
	os.WriteFile(other, []byte("mine"), 0o600)
	var tick int64
	s := NewFileStore(p, func() time.Time { tick++; return time.Unix(0, tick) })
	var last *CorruptError
	for range MaxQuarantined + 4 {
		os.WriteFile(p, []byte("garbage"), 0o600)
		_, err := s.Load()
		if !errors.As(err, &last) {
			t.Fatalf("err = %v, want CorruptError", err)
		}
	}
	var kept []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".corrupt-") && e.Name() != filepath.Base(other) {
			kept = append(kept, e.Name())
		}
	}
	want := []string{"state.json.corrupt-5", "state.json.corrupt-6", "state.json.corrupt-7"}
	if !slices.Equal(kept, want) {
		t.Fatalf("quarantined copies kept: %v, want %v", kept, want)
	}
	if filepath.Base(last.Quarantined) != "state.json.corrupt-7" {
		t.Fatalf("the last quarantine is %s", last.Quarantined)
	}
	if b, err := os.ReadFile(other); err != nil || string(b) != "mine" {
		t.Fatalf("a file that only looks like a quarantined copy was touched: %v", err)
	}
}

// seqs returns "1,2,…,n".
func seqs(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

// Every state the agent's own writes leave loads again as it was: the check of a loaded file
// refuses none of them.
func TestStatesTheAgentWritesAreNeverCorrupt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	s := NewFileStore(p, nil)
	full := State{CommandHWM: 10}
	for seq := uint64(11); seq <= 11+ReplayWindow+5; seq++ {
		full.AcceptCommand(seq)
	}
	for _, st := range []State{
		{},
		full,
		{Cred: Cred{Active: 0, Phase: PhasePending, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdef"}},
		{Cred: Cred{Active: 4, Epoch: 3, Phase: PhaseIssued, Next: 7, TargetEpoch: 5, ReqID: strings.Repeat("f", 32), Bootstrap: true}},
		{Cred: Cred{Active: 7, Epoch: 5, TargetEpoch: 5}}, // abandonIssued keeps the target
	} {
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load(); err != nil || !got.Equal(st) {
			t.Fatalf("saved %+v, loaded %+v, %v", st, got, err)
		}
	}
}

// FuzzLoad checks what Load promises for any bytes in the state file: no panic; either a state
// the agent could have written, which saves and loads again unchanged, or a CorruptError with
// the zero State and the bytes kept in a quarantined copy.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		`{"command_hwm":4,"seen_commands":[5,9],"time_floor":1700000000,"cred":{"active":1,"epoch":1}}`,
		`{"command_hwm":4,"cred":{"active":1,"epoch":1,"phase":"pending","next":2,"target_epoch":2,"req_id":"0123456789abcdef"}}`,
		`{"command_hwm":4,"cred":{"active":1,"phase":"pendinf","next":2,"req_id":"0123456789abcdef"}}`,
		`{"command_hwm":4,"seen_commands":[9,7],"cred":{}}`,
		`{"command_hwm":4,"seen_commands":[],"cred":{}}`,
		`{"command_hwm":4,"seen_commands":[5],"seen_commands":[],"cred":{}}`,
		`{"keyset":"x","fleet_desired":3,"device_desired":2,"desired_epoch":2,"cred":{},"privacy":true}`,
		"\x00garbage",
	} {
		f.Add([]byte(s))
	}
	p := filepath.Join(f.TempDir(), "state.json") // one file, written over: a directory an input is slow
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s := NewFileStore(p, nil)
		st, err := s.Load()
		var ce *CorruptError
		switch {
		case errors.As(err, &ce):
			if !reflect.DeepEqual(st, State{}) {
				t.Fatalf("state %+v with a corrupt file", st)
			}
			if q, _ := os.ReadFile(ce.Quarantined); len(b) <= MaxFileSize && !bytes.Equal(q, b) {
				t.Fatal("the quarantined copy differs from the file")
			}
			return
		case err != nil:
			t.Fatalf("neither a state nor a CorruptError: %v", err)
		}
		// What the agent relies on, told apart from check: a known phase, a rotation to a
		// generation above the active one, and a replay window that refuses again every
		// command it holds and the mark.
		if c := st.Cred; c.Phase != PhaseNone && (c.Phase != PhasePending && c.Phase != PhaseIssued || c.Next <= c.Active) {
			t.Fatalf("loaded a journal no agent write leaves: %+v", c)
		}
		replay := st
		for _, seq := range append([]uint64{st.CommandHWM}, st.SeenCommands...) {
			if replay.AcceptCommand(seq) {
				t.Fatalf("loaded a replay window that accepts %d again: mark %d, window %v", seq, st.CommandHWM, st.SeenCommands)
			}
		}
		if err := s.Save(st); err != nil {
			t.Fatal(err)
		}
		if again, err := s.Load(); err != nil || !again.Equal(st) {
			t.Fatalf("loaded %+v, saved, loaded %+v, %v", st, again, err)
		}
		// One bit of what Save wrote changed, wherever the input says: never a state.
		saved, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bit := 0
		for _, c := range b {
			bit = (bit*31 + int(c)) % (8 * len(saved))
		}
		saved[bit/8] ^= 1 << (bit % 8)
		if err := os.WriteFile(p, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		if again, err := s.Load(); !errors.As(err, &ce) {
			t.Fatalf("bit %d of the saved file flipped loads %+v, %v:\n%s", bit, again, err, saved)
		}
	})
}

// Every one-bit change of a saved state file is caught: a digit changed inside a value (the
// command mark, the grant epoch, a generation) parses and passes check, and before the
// checksum such a file was taken as it is, refusing every command or grant for good after a
// fault that raised a mark. A file written before the checksum still loads.
func TestEveryOneBitChangeOfASavedStateIsCorrupt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	s := NewFileStore(p, nil)
	want := State{CommandHWM: 1764316800000000000, SeenCommands: []uint64{1764316800000000001}, TimeFloor: 1764316800,
		DesiredEpoch: 3, Privacy: true}
	want.Cred.Active, want.Cred.Epoch = 2, 3
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for bit := range 8 * len(saved) {
		b := bytes.Clone(saved)
		b[bit/8] ^= 1 << (bit % 8)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var ce *CorruptError
		if st, err := s.Load(); !errors.As(err, &ce) {
			t.Fatalf("bit %d flipped: loaded %+v, %v:\n%s", bit, st, err, b)
		} else if !ce.Privacy {
			t.Fatalf("bit %d flipped: the error does not say privacy mode was on:\n%s", bit, b)
		}
		os.Remove(ce.Quarantined)
	}

	t.Run("a file written before the checksum loads", func(t *testing.T) {
		old, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, old, 0o600); err != nil {
			t.Fatal(err)
		}
		if st, err := s.Load(); err != nil || !st.Equal(want) {
			t.Fatalf("loaded %+v, %v", st, err)
		}
	})
}

// A directory where the state file should be (a file system repair leaves such things) is
// moved aside as a quarantined copy: no save could replace it, and the agent would fail at
// every start on "is a directory".
func TestADirectoryInPlaceOfTheStateFileIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := os.MkdirAll(filepath.Join(p, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := NewFileStore(p, nil)
	st, err := s.Load()
	var ce *CorruptError
	if !errors.As(err, &ce) || !reflect.DeepEqual(st, State{}) {
		t.Fatalf("Load = %+v, %v; want a CorruptError", st, err)
	}
	if fi, err := os.Stat(ce.Quarantined); err != nil || !fi.IsDir() {
		t.Fatalf("the directory was not moved to %s: %v", ce.Quarantined, err)
	}
	if err := s.Save(State{CommandHWM: 5}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Load(); err != nil || st.CommandHWM != 5 {
		t.Fatalf("load after the recovery was saved: %+v, %v", st, err)
	}
}

// A symbolic link to nothing in place of the state file is a state file the device wrote and
// lost, not a new device's missing one: it is moved aside and reported corrupt, so that the
// agent recovers the journal from the disk. Before, it loaded as a device enrolled a moment
// ago. A link to a state file is read through it.
func TestADanglingLinkInPlaceOfTheStateFileIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewFileStore(p, nil)
	for _, target := range []string{
		filepath.Join(dir, "gone.json"),
		p,                               // a loop
		filepath.Join(dir, "file", "x"), // a path through a file
	} {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		st, err := s.Load()
		var ce *CorruptError
		if !errors.As(err, &ce) || !reflect.DeepEqual(st, State{}) {
			t.Fatalf("a link to %s: Load = %+v, %v; want a CorruptError", target, st, err)
		}
		if fi, err := os.Lstat(ce.Quarantined); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Fatalf("the link to %s was not moved to %s: %v", target, ce.Quarantined, err)
		}
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the link to %s is still in place: %v", target, err)
		}
	}

	t.Run("a link to a state file is read through", func(t *testing.T) {
		target := filepath.Join(dir, "elsewhere.json")
		if err := NewFileStore(target, nil).Save(State{CommandHWM: 7}); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if st, err := s.Load(); err != nil || st.CommandHWM != 7 {
			t.Fatalf("Load = %+v, %v; want the linked state", st, err)
		}
	})
}

// A corrupt file that says privacy mode is on says so with the error, whether it parsed and
// failed the check or does not parse at all (one flipped bit in a key name); the caller keeps
// privacy mode on.
func TestACorruptErrorSaysPrivacyModeWasOn(t *testing.T) {
	for _, tc := range []struct {
		content string
		privacy bool
	}{
		{`{"command_hwm":4,"seen_commands":[9,7],"privacy":true,"cred":{"active":1}}`, true},
		{`{"command_hwm":4,"time_fmoor":5,"cred":{"active":1},"privacy":true}`, true},
		{`{"command_hwm":4,"seen_commands":[9,7],"cred":{"active":1}}`, false},
		{`{"command_hwm":4,"time_fmoor":5,"cred":{"active":1}}`, false},
	} {
		p := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewFileStore(p, nil).Load()
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: Load error %v, want a CorruptError", tc.content, err)
		}
		if ce.Privacy != tc.privacy {
			t.Fatalf("%s: privacy %v, want %v", tc.content, ce.Privacy, tc.privacy)
		}
	}
}
