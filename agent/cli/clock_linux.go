package cli

import "golang.org/x/sys/unix"

// kernelClockSynchronized reports whether the kernel says its clock is synchronised: an NTP
// client (systemd-timesyncd, chrony, ntpd) cleared STA_UNSYNC in adjtimex(2), as timedatectl's
// NTPSynchronized reads it. Reading needs no privilege.
func kernelClockSynchronized() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0
}
