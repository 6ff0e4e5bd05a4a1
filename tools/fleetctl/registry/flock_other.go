//go:build !unix

package registry

import "os"

// lockFile does nothing where flock(2) does not exist: there, only one process may write the
// log at a time (Registry's own mutex still serialises the writers of this process).
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) error { return nil }
