//go:build !unix

package agent

import "os"

// tryLock cannot lock on this system: the agent runs on Linux, and elsewhere (a developer's
// machine) the directory is not guarded.
func tryLock(*os.File) (bool, error) { return true, nil }
