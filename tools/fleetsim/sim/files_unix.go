//go:build unix

package sim

import (
	"fmt"
	"syscall"
)

// checkFiles fails early when the process may not open enough files for the run: every
// simulated device holds a connection, an embedded broker the other end of it, and the fault
// proxy two more for each device behind it. (Go raises the soft limit to the hard one at
// start, so the hard limit is what counts.)
func checkFiles(c Config) error {
	need := uint64(c.Devices + 256)
	if c.Embedded {
		need += uint64(c.Devices)
	}
	if c.Fault.Mode != 0 {
		need += uint64(2 * float64(c.Devices) * c.FaultShare)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // cannot tell; the run will say if it runs out
	}
	if lim.Cur < need {
		return fmt.Errorf("%w: %d devices need about %d open files, the limit is %d: raise it (ulimit -n %d; as root, ulimit -Hn first)", ErrConfig, c.Devices, need, lim.Cur, need)
	}
	return nil
}
