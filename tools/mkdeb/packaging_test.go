package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	agentcli "github.com/camagent/camagent/agent/cli"
)

func runQuiet(prog string, args ...string) error { return exec.Command(prog, args...).Run() }

// unitWithTrue copies the unit to a temporary directory with ExecStart pointing at /bin/true,
// since systemd-analyze verify checks that the command exists.
func unitWithTrue(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(packagingDir, "camagent.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "\nExecStart=/usr/bin/camagent ", "\nExecStart=/bin/true ", 1)
	if text == string(b) {
		t.Fatal("no ExecStart=/usr/bin/camagent line in the unit")
	}
	path := filepath.Join(t.TempDir(), "camagent.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnitVerifies(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	unit := unitWithTrue(t)
	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	// verify exits 0 on some problems (an unknown key is "ignoring"), so any output fails.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestUnitIsHardened(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	unit := unitWithTrue(t)
	// The exposure score is 1.9 ("OK", with the read-only adjtimex the agent needs); fail if a
	// change takes it above 2.0. The threshold is ten times the score shown.
	out, err := exec.Command(analyze, "security", "--offline=true", "--threshold=20", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v (exposure above 2.0?)\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Log(lines[len(lines)-1])
}

// TestUnitSettings pins the settings the issue and SECURITY-BAR R9 ask for, so that an edit
// cannot drop one silently.
func TestUnitSettings(t *testing.T) {
	got := map[string][]string{}
	f, err := os.Open(filepath.Join(packagingDir, "camagent.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		got[k] = append(got[k], v)
	}
	for _, kv := range []string{
		"Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=always", "RestartSec=5s",
		"Wants=network-online.target", "After=network-online.target time-sync.target",
		"User=camagent", "Group=camagent", "SupplementaryGroups=gpio video",
		"StateDirectory=camagent", "StateDirectoryMode=0700", "ConfigurationDirectory=camagent",
		"ExecStart=/usr/bin/camagent run --config /etc/camagent/camagent.conf",
		"ExecReload=/bin/kill -HUP $MAINPID", "UMask=0077",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"CapabilityBoundingSet=", "AmbientCapabilities=",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
		"ProtectControlGroups=yes", "RestrictNamespaces=yes", "LockPersonality=yes",
		"MemoryDenyWriteExecute=yes", "SystemCallArchitectures=native", "DevicePolicy=closed",
		"DeviceAllow=char-gpiochip rw", "DeviceAllow=char-video4linux rw",
		"WantedBy=multi-user.target",
	} {
		k, v, _ := strings.Cut(kv, "=")
		found := false
		for _, have := range got[k] {
			found = found || have == v
		}
		if !found {
			t.Errorf("the unit lacks %s (has %s=%q)", kv, k, got[k])
		}
	}
}

// TestDefaultConfigFormat checks the shipped configuration against the documented format:
// "key = value" lines with known keys, once each; the commented examples too.
func TestDefaultConfigFormat(t *testing.T) {
	configKeys := map[string]bool{}
	for _, k := range agentcli.ConfigKeys() {
		configKeys[k] = true
	}
	b, err := os.ReadFile(filepath.Join(packagingDir, "camagent.conf"))
	if err != nil {
		t.Fatal(err)
	}
	active, examples := map[string]int{}, map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		target := active
		if strings.HasPrefix(line, "#") {
			// A commented-out setting: "# key = value" or "# key =".
			line, target = strings.TrimSpace(strings.TrimPrefix(line, "#")), examples
			k, _, ok := strings.Cut(line, "=")
			if !ok || strings.ContainsAny(strings.TrimSpace(k), " \t\"") {
				continue // prose
			}
		}
		if line == "" {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !configKeys[k] {
			t.Errorf("camagent.conf:%d: %q is not a known key = value", i+1, line)
			continue
		}
		target[k]++
	}
	for k, n := range active {
		if n > 1 {
			t.Errorf("camagent.conf sets %s %d times", k, n)
		}
	}
	for k := range configKeys {
		if examples[k] == 0 && active[k] == 0 {
			t.Errorf("camagent.conf does not document %s", k)
		}
	}
}

// fleetUnitWithTrue copies a fleetctl unit to a temporary directory with ExecStart pointing at
// /bin/true, under the name as (an instance name for the template).
func fleetUnitWithTrue(t *testing.T, name, as string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(packagingDir, name))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "\nExecStart=/usr/bin/fleetctl ", "\nExecStart=/bin/true ", 1)
	if text == string(b) {
		t.Fatalf("no ExecStart=/usr/bin/fleetctl line in %s", name)
	}
	path := filepath.Join(t.TempDir(), as)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var fleetUnits = map[string]string{"fleetctl-broker.service": "fleetctl-broker.service", "fleetctl-signer@.service": "fleetctl-signer@s1.service"}

func TestFleetUnitsVerifyAndAreHardened(t *testing.T) {
	analyze := need(t, "systemd-analyze", "systemd")
	for name, as := range fleetUnits {
		unit := fleetUnitWithTrue(t, name, as)
		out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s: systemd-analyze verify: %v\n%s", name, err, out)
		}
		// Both score 1.2 ("OK"); fail above 2.0.
		out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=20", "--no-pager", unit).CombinedOutput()
		if err != nil {
			t.Errorf("%s: systemd-analyze security: %v (exposure above 2.0?)\n%s", name, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Log(lines[len(lines)-1])
	}
}

// TestFleetUnitSettings pins what the services rely on: the notify protocol and watchdog that
// fleetctl speaks, the user and state directory the package makes, the fleet directory they
// start from, and for the broker enough descriptors for a fleet.
func TestFleetUnitSettings(t *testing.T) {
	common := []string{
		"Type=notify", "NotifyAccess=main", "WatchdogSec=60s", "Restart=always", "RestartSec=5s",
		"StartLimitIntervalSec=0", "User=fleetctl", "Group=fleetctl", "StateDirectory=fleetctl",
		"StateDirectoryMode=0700", "UMask=0077", "EnvironmentFile=-/etc/default/fleetctl",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateDevices=yes", "MemoryDenyWriteExecute=yes",
	}
	for name, own := range map[string][]string{
		"fleetctl-broker.service": {
			"ExecStart=/usr/bin/fleetctl broker --dir /var/lib/fleetctl/fleet $BROKER_ARGS",
			"ConditionPathExists=/var/lib/fleetctl/fleet/fleet.json", "LimitNOFILE=65536",
		},
		"fleetctl-signer@.service": {
			"ExecStart=/usr/bin/fleetctl serve --dir /var/lib/fleetctl/fleet --name %i $SIGNER_ARGS",
			"ConditionPathExists=/var/lib/fleetctl/fleet/ca.key",
		},
	} {
		got := map[string]bool{}
		f, err := os.Open(filepath.Join(packagingDir, name))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			got[strings.TrimSpace(sc.Text())] = true
		}
		f.Close()
		for _, kv := range append(own, common...) {
			if !got[kv] {
				t.Errorf("%s lacks %q", name, kv)
			}
		}
	}
}
