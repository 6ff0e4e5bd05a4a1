package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
