package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestWriteFileReplacesContentAndSetsMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("read %q, %v; want two", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
}

func TestWriteFileIntoMissingDirFailsWithoutSideEffects(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "no", "x"), []byte("x"), 0o600); err == nil {
		t.Fatal("want error for missing directory")
	}
}

func TestEnsurePrivateDirTightensMode(t *testing.T) {
	d := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePrivateDir(d); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(d)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v, want 0700", fi.Mode().Perm())
	}
}

// A write that fails leaves the file as it was and no temporary file, and its error comes back
// as it is.
func TestWriteFileFromAbortsOnTheWritersError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "log")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("nothing to replace")
	err := WriteFileFrom(p, 0o600, func(w io.Writer) error {
		io.WriteString(w, "half of the new")
		return stop
	})
	if err != stop {
		t.Fatalf("err = %v, want the writer's own", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("the file holds %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := WriteFileFrom(p, 0o600, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("the file holds %q", b)
	}
}

// leaveTemp leaves the temporary file a write of target killed before its rename leaves, made
// the way WriteFile makes it, modified at mtime.
func leaveTemp(t *testing.T, dir, target string, mtime time.Time) string {
	t.Helper()
	f, err := CreateTemp(dir, target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("half a write"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(f.Name(), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return filepath.Base(f.Name())
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// RemoveTemps removes the temporary files of killed writes, and nothing else: not a file a
// person or another program named alike, not a directory or a link, not a subdirectory's, and
// not a temporary file younger than minAge (a write in progress).
func TestRemoveTempsRemovesOnlyKilledWritesTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	killed := []string{
		leaveTemp(t, dir, "state.json", old),
		leaveTemp(t, dir, "state.json", old),
		leaveTemp(t, dir, "device.key", old),
		leaveTemp(t, dir, ".device.secret.new-0123abcd", old), // a temp of a temp name
		".x.tmp-1",
		".with.tmp-in.name.tmp-4294967295",
	}
	for _, n := range killed[4:] {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(dir, n), old, old)
	}
	fresh := leaveTemp(t, dir, "settings.sealed", time.Now())
	future := leaveTemp(t, dir, "bundle.json", time.Now().Add(24*time.Hour)) // a clock set back since
	kept := []string{
		"state.json", "device.key", // the targets
		"x.tmp-1",                      // no leading dot: not atomicfile's
		".x.tmp-",                      // no digits
		".x.tmp-1a",                    // not digits only
		".x.tmp-1.bak",                 // something after the digits
		".tmp-123",                     // no target name
		"..tmp-1",                      // no target name either
		".x.TMP-1",                     // another case
		".x.tmp_1",                     // another separator
		".x.tmp-123456789012345678901", // longer than any uint64
	}
	for _, n := range kept {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(dir, n), old, old)
	}
	// Named like a temporary file, but not a regular file.
	if err := os.Mkdir(filepath.Join(dir, ".dir.tmp-7"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("state.json", filepath.Join(dir, ".link.tmp-8")); err != nil {
		t.Fatal(err)
	}
	// A subdirectory's are its own directory's business.
	sub := filepath.Join(dir, "creds")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	inSub := leaveTemp(t, sub, "device.key", old)
	kept = append(kept, fresh, future, ".dir.tmp-7", ".link.tmp-8", "creds")

	n, err := RemoveTemps(dir, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(killed) {
		t.Errorf("removed %d, want %d", n, len(killed))
	}
	got := names(t, dir)
	for _, k := range killed {
		if slices.Contains(got, k) {
			t.Errorf("%s was left", k)
		}
	}
	for _, k := range kept {
		if !slices.Contains(got, k) {
			t.Errorf("%s was removed", k)
		}
	}
	if len(got) != len(kept) {
		t.Errorf("left %v, want %v", got, kept)
	}
	if !slices.Contains(names(t, sub), inSub) {
		t.Errorf("%s in a subdirectory was removed", inSub)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "state.json")); string(b) != "keep" {
		t.Errorf("the target holds %q", b)
	}

	t.Run("a minimum age of 0 takes the fresh ones too", func(t *testing.T) {
		n, err := RemoveTemps(dir, 0)
		if err != nil || n != 2 {
			t.Fatalf("removed %d, %v; want 2", n, err)
		}
		if got := names(t, dir); slices.Contains(got, fresh) || slices.Contains(got, future) || !slices.Contains(got, "x.tmp-1") {
			t.Fatalf("left %v", got)
		}
	})
	t.Run("a missing directory is an error", func(t *testing.T) {
		if _, err := RemoveTemps(filepath.Join(dir, "nope"), 0); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
	})
}

// WriteFile's temporary files are the ones IsTemp names.
func TestWriteFilesTemporaryFileIsATemp(t *testing.T) {
	dir := t.TempDir()
	var seen string
	err := WriteFileFrom(filepath.Join(dir, "state.json"), 0o600, func(io.Writer) error {
		n := names(t, dir)
		if len(n) == 1 {
			seen = n[0]
		}
		return errors.New("stop")
	})
	if err == nil || !IsTemp(seen) {
		t.Fatalf("temporary file %q (err %v): IsTemp says no", seen, err)
	}
}
