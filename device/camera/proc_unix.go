//go:build unix

package camera

import (
	"errors"
	"syscall"
)

// signalGroup sends sig to the process group led by pid. A group that is already gone is not
// an error.
func signalGroup(pid int, sig syscall.Signal) error {
	if pid <= 0 {
		return errors.New("camera: no process group")
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
