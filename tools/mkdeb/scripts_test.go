package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// stubs are the commands the maintainer scripts may run. Each stub records its arguments;
// getent finds what the test says exists, and deb-systemd-helper was-enabled answers as told.
// Any other command is absent from PATH, so a script that ran rm, deluser or chown would fail.
var stubs = []string{"getent", "adduser", "addgroup", "install", "deb-systemd-helper", "deb-systemd-invoke", "systemctl"}

// runScript runs a maintainer script of packaging/ with /bin/sh and PATH holding only the
// stubs, and returns the commands it ran.
func runScript(t *testing.T, script string, existing []string, wasEnabled bool, args ...string) []string {
	t.Helper()
	return runScriptWith(t, stubs, script, existing, wasEnabled, args...)
}

// runScriptWith is runScript with only the given stubs on PATH.
func runScriptWith(t *testing.T, commands []string, script string, existing []string, wasEnabled bool, args ...string) []string {
	t.Helper()
	sh := need(t, "sh", "dash")
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	for _, name := range commands {
		body := "#!/bin/sh\necho \"" + name + " $*\" >> \"$CALLS\"\n"
		switch name {
		case "getent":
			body += "case \" $EXISTING \" in *\" $1:$2 \"*) exit 0;; esac\nexit 2\n"
		case "deb-systemd-helper":
			body += "[ \"$2\" = was-enabled ] && exit $WAS_ENABLED\nexit 0\n"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	enabled := "1"
	if wasEnabled {
		enabled = "0"
	}
	cmd := exec.Command(sh, append([]string{filepath.Join(packagingDir, script)}, args...)...)
	cmd.Env = []string{"PATH=" + dir, "CALLS=" + calls, "EXISTING=" + strings.Join(existing, " "), "WAS_ENABLED=" + enabled}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	b, err := os.ReadFile(calls)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// systemdRunning says whether this machine runs systemd, which the scripts check for.
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func TestScriptsParse(t *testing.T) {
	sh := need(t, "sh", "dash")
	for _, s := range []string{"postinst", "prerm", "postrm", "fleetctl-postinst", "fleetctl-prerm", "fleetctl-postrm"} {
		if out, err := exec.Command(sh, "-n", filepath.Join(packagingDir, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
}

func TestPostinst(t *testing.T) {
	_, statErr := os.Stat("/var/lib/camagent")
	stateDirMissing := os.IsNotExist(statErr)
	t.Run("a first install creates the user, the groups, the state directory, and enables the service", func(t *testing.T) {
		calls := runScript(t, "postinst", nil, true, "configure")
		want := []string{
			"getent passwd camagent",
			"adduser --system --group --quiet --home /var/lib/camagent --no-create-home --shell /usr/sbin/nologin camagent",
			"getent group gpio", "addgroup --system --quiet gpio", "adduser --quiet camagent gpio",
			"getent group video", "addgroup --system --quiet video", "adduser --quiet camagent video",
			"deb-systemd-helper unmask camagent.service",
			"deb-systemd-helper --quiet was-enabled camagent.service",
			"deb-systemd-helper enable camagent.service",
		}
		if stateDirMissing {
			want = slices.Insert(want, 8, "install -d -m 0700 -o camagent -g camagent /var/lib/camagent")
		}
		if systemdRunning() {
			want = append(want, "systemctl --system daemon-reload", "deb-systemd-invoke start camagent.service")
		}
		if !slices.Equal(calls, want) {
			t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
		}
	})
	t.Run("without init-system-helpers, a first install enables the service with systemctl", func(t *testing.T) {
		calls := runScriptWith(t, []string{"getent", "adduser", "addgroup", "install", "systemctl"}, "postinst", nil, true, "configure")
		if !slices.Contains(calls, "systemctl enable camagent.service") {
			t.Errorf("calls %q lack systemctl enable", calls)
		}
	})
	t.Run("an upgrade keeps the user, its groups, and an administrator's disable", func(t *testing.T) {
		calls := runScript(t, "postinst", []string{"passwd:camagent", "group:gpio", "group:video"}, false, "configure", "1.0.0")
		for _, c := range calls {
			if strings.HasPrefix(c, "adduser --system") || strings.HasPrefix(c, "addgroup") || c == "deb-systemd-helper enable camagent.service" {
				t.Errorf("an upgrade ran %q", c)
			}
		}
		if !slices.Contains(calls, "deb-systemd-helper update-state camagent.service") {
			t.Errorf("an upgrade did not update the unit's state: %q", calls)
		}
		if systemdRunning() && !slices.Contains(calls, "deb-systemd-invoke restart camagent.service") {
			t.Errorf("an upgrade did not restart the service: %q", calls)
		}
	})
}

func TestRemovalKeepsTheDevicesKeys(t *testing.T) {
	for _, tc := range []struct {
		script string
		args   []string
	}{
		{"prerm", []string{"remove"}},
		{"prerm", []string{"upgrade", "1.1.0"}},
		{"postrm", []string{"remove"}},
		{"postrm", []string{"upgrade", "1.1.0"}},
	} {
		t.Run(tc.script+" "+strings.Join(tc.args, " ")+" leaves /var/lib/camagent and the user alone", func(t *testing.T) {
			calls := runScript(t, tc.script, []string{"passwd:camagent"}, true, tc.args...)
			for _, c := range calls {
				if strings.Contains(c, "/var/lib") || strings.HasPrefix(c, "deluser") || strings.HasPrefix(c, "delgroup") {
					t.Errorf("ran %q", c)
				}
			}
		})
	}
}

// Purge wipes the device as a factory reset does (SECURITY-BAR S10): a camera whose package
// was purged keeps no key, token, sealed Wi-Fi settings or journal. The script runs with the
// real rm on a state directory below DPKG_ROOT; the user stays.
func TestPurgeWipesTheDevice(t *testing.T) {
	sh := need(t, "sh", "dash")
	rm := need(t, "rm", "coreutils")
	root := t.TempDir()
	state := filepath.Join(root, "var", "lib", "camagent")
	for _, f := range []string{"device.key", "bootstrap.key", "device.token", "device.secret", "settings.sealed", "bundle.json", "creds/1/device.key", "journal/rotation.json"} {
		path := filepath.Join(state, f)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bin := t.TempDir()
	calls := filepath.Join(bin, "calls")
	for _, name := range []string{"deb-systemd-helper", "deluser", "delgroup"} {
		body := "#!/bin/sh\necho \"" + name + " $*\" >> \"$CALLS\"\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(rm, filepath.Join(bin, "rm")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, filepath.Join(packagingDir, "postrm"), "purge")
	cmd.Env = []string{"PATH=" + bin, "CALLS=" + calls, "DPKG_ROOT=" + root}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("postrm purge: %v\n%s", err, out)
	}
	if _, err := os.Lstat(state); !os.IsNotExist(err) {
		left, _ := os.ReadDir(state)
		t.Errorf("purge left %s (%v): %v", state, err, left)
	}
	if !strings.Contains(string(out), "deleted "+state) {
		t.Errorf("purge did not say what it deleted: %s", out)
	}
	b, _ := os.ReadFile(calls)
	if want := "deb-systemd-helper purge camagent.service\ndeb-systemd-helper unmask camagent.service\n"; string(b) != want {
		t.Errorf("purge ran %q, want %q (the user and its groups stay)", b, want)
	}

	t.Run("what lets a device come back goes first, even when the rest cannot", func(t *testing.T) {
		first := []string{"device.secret", "bootstrap.key", "device.key", "bundle.copy.json", "bundle.json"}
		for _, f := range append(first, "creds/1/device.key") {
			path := filepath.Join(state, f)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("secret"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// An rm that removes single files but fails on the directory, as a read-only or
		// damaged subdirectory would make it.
		wrapper := filepath.Join(bin, "rm")
		os.Remove(wrapper)
		body := "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -rf ] && { echo 'rm: cannot remove: Input/output error' >&2; exit 1; }; done\nexec " + rm + " \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sh, filepath.Join(packagingDir, "postrm"), "purge")
		cmd.Env = []string{"PATH=" + bin, "CALLS=" + calls, "DPKG_ROOT=" + root}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("postrm purge with a failing rm -rf succeeded:\n%s", out)
		}
		for _, f := range first {
			if _, err := os.Lstat(filepath.Join(state, f)); !os.IsNotExist(err) {
				t.Errorf("%s survived a purge that failed later (%v)", f, err)
			}
		}
	})

	t.Run("and says so, failing, when it cannot", func(t *testing.T) {
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(bin, "rm"))
		if err := os.WriteFile(filepath.Join(bin, "rm"), []byte("#!/bin/sh\necho \"rm: cannot remove: Read-only file system\" >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sh, filepath.Join(packagingDir, "postrm"), "purge")
		cmd.Env = []string{"PATH=" + bin, "CALLS=" + calls, "DPKG_ROOT=" + root}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "could not delete "+state) {
			t.Fatalf("postrm purge with a failing rm: err = %v\n%s", err, out)
		}
	})
}

// The fleetctl package makes the fleetctl user and /var/lib/fleetctl, enables no service (the
// fleet directory must be put there first), restarts the running ones on an upgrade, stops them
// on removal, and never deletes the fleet directory or the user.
func TestFleetctlScripts(t *testing.T) {
	_, statErr := os.Stat("/var/lib/fleetctl")
	stateDirMissing := os.IsNotExist(statErr)
	t.Run("a first install creates the user and the state directory and enables nothing", func(t *testing.T) {
		calls := runScript(t, "fleetctl-postinst", nil, true, "configure")
		want := []string{
			"getent passwd fleetctl",
			"adduser --system --group --quiet --home /var/lib/fleetctl --no-create-home --shell /usr/sbin/nologin fleetctl",
		}
		if stateDirMissing {
			want = append(want, "install -d -m 0700 -o fleetctl -g fleetctl /var/lib/fleetctl")
		}
		if systemdRunning() {
			want = append(want, "systemctl --system daemon-reload")
		}
		if !slices.Equal(calls, want) {
			t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
		}
	})
	t.Run("an upgrade keeps the user and restarts the services that run", func(t *testing.T) {
		calls := runScript(t, "fleetctl-postinst", []string{"passwd:fleetctl"}, true, "configure", "1.0.0")
		for _, c := range calls {
			if strings.HasPrefix(c, "adduser") || strings.Contains(c, "enable") {
				t.Errorf("an upgrade ran %q", c)
			}
		}
		if want := "systemctl try-restart fleetctl-broker.service fleetctl-signer@*.service"; systemdRunning() && !slices.Contains(calls, want) {
			t.Errorf("an upgrade did not restart the services: %q", calls)
		}
	})
	for _, tc := range []struct {
		script string
		args   []string
	}{
		{"fleetctl-prerm", []string{"remove"}},
		{"fleetctl-prerm", []string{"upgrade", "1.1.0"}},
		{"fleetctl-postrm", []string{"remove"}},
		{"fleetctl-postrm", []string{"purge"}},
	} {
		t.Run(tc.script+" "+strings.Join(tc.args, " ")+" leaves the fleet directory and the user alone", func(t *testing.T) {
			calls := runScript(t, tc.script, []string{"passwd:fleetctl"}, true, tc.args...)
			for _, c := range calls {
				if strings.Contains(c, "/var/lib") || strings.HasPrefix(c, "deluser") || strings.HasPrefix(c, "delgroup") {
					t.Errorf("ran %q", c)
				}
			}
			stops := slices.Contains(calls, "systemctl stop fleetctl-broker.service fleetctl-signer@*.service")
			if want := systemdRunning() && tc.script == "fleetctl-prerm" && tc.args[0] == "remove"; stops != want {
				t.Errorf("stopped the services: %v, want %v (%q)", stops, want, calls)
			}
		})
	}
}
