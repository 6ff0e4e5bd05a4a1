//go:build !unix

package camera

import (
	"os"
	"syscall"
)

// procAttr has nothing to add off Unix, where ExecSource can only kill the process itself.
func procAttr() *syscall.SysProcAttr { return nil }

// signalGroup kills the process pid; there are no process groups to signal.
func signalGroup(pid int, _ syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	return p.Kill()
}
