//go:build unix && !linux

package camera

import "syscall"

// procAttr puts the encoder in a process group of its own, so that it and any helper it forks
// are signalled together.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
