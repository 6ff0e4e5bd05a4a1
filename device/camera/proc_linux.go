//go:build linux

package camera

import "syscall"

// procAttr puts the encoder in a process group of its own, so that it and any helper it forks
// are signalled together, and has the kernel kill it if the agent dies without cleaning up,
// so that a crashed agent does not leave the camera held by an orphan.
//
// Pdeathsig fires when the OS thread that started the child exits. The Go runtime keeps its
// threads unless a goroutine exits while locked to one, which nothing here does; if that ever
// happens the encoder is killed early and restarted with backoff, which is safe.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
