// Package atomicfile writes files so that a reader, or a device that loses power mid-write,
// sees either the old content or the new content, never a mix or an empty file.
//
// It writes a temporary file in the same directory, fsyncs it, renames it over the target
// and fsyncs the directory (R6 in SECURITY-BAR.md). It never follows the target if it is a
// symlink: the rename replaces the link itself.
//
// A process killed (SIGKILL, power cut) between creating the temporary file and the rename
// leaves the temporary file behind, named "." + the target's name + ".tmp-" + digits. Nothing
// else removes it: RemoveTemps does, for a directory its caller knows no one else is writing.
// The package never removes or replaces a file it did not name so itself.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tempInfix separates a temporary file's "." + target name from its random digits.
const tempInfix = ".tmp-"

// WriteFile atomically replaces path with data, with permission perm.
// The directory must exist. On error the target is left as it was.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFileFrom(path, perm, func(w io.Writer) error {
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("atomicfile: write %s: %w", path, err)
		}
		return nil
	})
}

// WriteFileFrom is WriteFile for contents too large to hold in memory: write streams them to
// the temporary file (unbuffered: wrap it in a bufio.Writer and flush it for many small
// writes). If write returns an error, the temporary file is removed, path is left
// as it was, and that error is returned as it is.
func WriteFileFrom(path string, perm os.FileMode, write func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := CreateTemp(dir, filepath.Base(path))
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: rename to %s: %w", path, err)
	}
	return SyncDir(dir)
}

// CreateTemp creates a new file in dir, 0600, under the name WriteFile gives the temporary file
// for a target named name ("." + name + ".tmp-" + random digits), and opens it for reading and
// writing. It is for a caller that writes a short-lived file of its own in a directory
// RemoveTemps cleans, so that a copy its process leaves when killed is removed too. The caller
// removes the file when done.
func CreateTemp(dir, name string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "."+name+tempInfix+"*")
	if err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	return f, nil
}

// IsTemp reports whether name, a file name without a directory, is one WriteFile, WriteFileFrom
// and CreateTemp give their temporary files: "." + a non-empty target name + ".tmp-" + decimal
// digits (os.CreateTemp's random part). "x.tmp-1" (no leading dot), ".x.tmp-" and ".x.tmp-1a"
// are not.
func IsTemp(name string) bool {
	i := strings.LastIndex(name, tempInfix)
	if i < 2 || name[0] != '.' || strings.ContainsRune(name, '/') {
		return false
	}
	digits := name[i+len(tempInfix):]
	if digits == "" || len(digits) > 20 {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// RemoveTemps removes from dir the temporary files of writes that were killed before their
// rename (IsTemp names them), when their last modification is at least minAge old, and returns
// how many it removed. It looks at dir alone, not its subdirectories, removes regular files
// only (never a directory or a symbolic link, whatever its name), and fsyncs dir when it
// removed one.
//
// The caller must know no writer of its own is between create and rename in dir (a lock the
// writers take). minAge spares the temporary file of a writer that does not take that lock; 0
// removes every temporary file, however new. A file that disappears meanwhile (its write
// finished) is not counted and is no error. A file that cannot be removed does not stop the
// others: the errors are joined.
func RemoveTemps(dir string, minAge time.Duration) (removed int, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("atomicfile: remove temporary files: %w", err)
	}
	now := time.Now()
	var errs []error
	for _, e := range ents {
		if !e.Type().IsRegular() || !IsTemp(e.Name()) {
			continue
		}
		if minAge > 0 {
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			// A modification time in the future (a clock set back, as a Raspberry Pi's is
			// at boot until it synchronises) is not old: the file waits for a later start.
			if now.Sub(fi.ModTime()) < minAge {
				continue
			}
		}
		switch err := os.Remove(filepath.Join(dir, e.Name())); {
		case err == nil:
			removed++
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, err)
		}
	}
	if removed > 0 {
		if err := SyncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("atomicfile: remove temporary files: %w", err)
	}
	return removed, nil
}

// SyncDir fsyncs a directory so that a rename or removal inside it survives power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("atomicfile: fsync dir %s: %w", dir, err)
	}
	return nil
}

// EnsurePrivateDir creates dir (and parents) if needed and makes sure dir itself is 0700.
// It is for directories that hold keys and state (S2).
func EnsurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return nil
}
