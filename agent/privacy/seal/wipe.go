package seal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/camagent/camagent/internal/atomicfile"
)

// Wipe removes the device secret and the sealed settings from dir, with any temporary file
// left behind by an interrupted write of either, and fsyncs dir. Files already gone are not an
// error. It removes the secret first: from that moment every sealed copy, anywhere, is
// unreadable (crypto-shredding; see the package doc for why nothing is overwritten).
//
// Wipe is one part of a factory reset (S10); keys, tokens and the journal are the caller's.
func Wipe(dir string) error {
	var errs []error
	// The secret first, then the files sealed under it.
	// The ".." pattern catches atomicfile's temporary file for the secret's private name.
	for _, pattern := range []string{SecretFile, "." + SecretFile + ".*", ".." + SecretFile + ".*", SettingsFile, "." + SettingsFile + ".tmp-*"} {
		paths, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, p := range paths {
			// RemoveAll: a directory where a file should be (after a file system repair) goes too.
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := atomicfile.SyncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("seal: wipe: %w", err)
	}
	return nil
}
