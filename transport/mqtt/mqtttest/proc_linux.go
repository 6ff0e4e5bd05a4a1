package mqtttest

import "syscall"

// sysProcAttr makes the kernel kill a test's Mosquitto if the test binary dies without
// stopping it, so no broker outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
