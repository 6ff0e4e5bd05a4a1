package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// syscallSet expands a systemd system call group (@name) or a single call into the calls it
// stands for, as systemd-analyze syscall-filter lists them.
func syscallSet(t *testing.T, analyze, name string, into map[string]bool) {
	t.Helper()
	if !strings.HasPrefix(name, "@") {
		into[name] = true
		return
	}
	out, err := exec.Command(analyze, "syscall-filter", "--no-pager", name).Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
	}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		syscallSet(t, analyze, line, into)
	}
}

// unitSyscalls returns the system calls the unit lets its process make, following
// systemd.exec(5): the first SystemCallFilter= line decides between an allow list and a deny
// list, and the lines after it add to or take from it in order. ProtectClock=yes is a filter
// of its own that refuses every call of @clock.
func unitSyscalls(t *testing.T, analyze, unit string) (allowed func(string) bool) {
	t.Helper()
	f, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := map[string]bool{}
	allowList, started := false, false
	protectClock := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		switch {
		case !ok:
		case k == "ProtectClock" && v == "yes":
			syscallSet(t, analyze, "@clock", protectClock)
		case k == "SystemCallFilter":
			deny := strings.HasPrefix(v, "~")
			if !started {
				started, allowList = true, !deny
			}
			for _, name := range strings.Fields(strings.TrimPrefix(v, "~")) {
				names := map[string]bool{}
				syscallSet(t, analyze, name, names)
				for n := range names {
					// In an allow list a "~" line takes calls out; in a deny list it puts them in.
					set[n] = deny != allowList
				}
			}
		}
	}
	return func(call string) bool {
		if protectClock[call] {
			return false
		}
		if !started {
			return true
		}
		return set[call] == allowList
	}
}

// The agent reads the kernel's clock synchronisation status with adjtimex(2) in read-only
// mode (agent/cli's kernelClockSynchronized, Config.ClockSynchronized): it is how a persisted
// time floor saved while the clock ran ahead comes down instead of keeping the camera offline.
// The unit must let that call through; a refused call reads as "not synchronised" for ever.
func TestUnitLetsTheAgentReadTheClockStatus(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	allowed := unitSyscalls(t, analyze, filepath.Join(packagingDir, "camagent.service"))
	for _, call := range []string{"adjtimex", "read", "connect", "ioctl"} {
		if !allowed(call) {
			t.Errorf("camagent.service refuses %s, which the agent makes", call)
		}
	}
	// Setting the clock stays refused by the filter as well as by the missing CAP_SYS_TIME.
	for _, call := range []string{"settimeofday", "clock_settime", "clock_adjtime", "reboot", "setrlimit"} {
		if allowed(call) {
			t.Errorf("camagent.service allows %s", call)
		}
	}
}
