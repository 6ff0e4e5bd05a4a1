package cli_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// checkLine runs fleetctl check on dir and returns its error and the line of the finding
// named what.
func checkLine(t *testing.T, dir, what string) (string, error) {
	t.Helper()
	stdout, stderr, err := run(t, "check", "--dir", dir)
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, what+"  ") {
			return l, err
		}
	}
	t.Fatalf("no %q in fleetctl check's output: %v\n%s%s", what, err, stdout, stderr)
	return "", nil
}

func wantStatus(t *testing.T, line, status, detail string) {
	t.Helper()
	if !strings.Contains(line, "  "+status+"  ") || !strings.Contains(line, detail) {
		t.Errorf("want %s with %q, got:\n%s", status, detail, line)
	}
}

// A fresh fleet checks clean but for the offline root key still on the machine.
func TestCheckAFreshFleet(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	stdout, _, err := run(t, "check", "--dir", f.Dir)
	if err != nil {
		t.Fatalf("a fresh fleet fails its check: %v\n%s", err, stdout)
	}
	if n := strings.Count(stdout, "  WARN  "); n != 1 || !strings.Contains(stdout, "offline root key") || strings.Contains(stdout, "FAIL") {
		t.Errorf("want one warning, for the root key:\n%s", stdout)
	}
	if err := os.Remove(filepath.Join(f.Dir, "offline", "root.key")); err != nil {
		t.Fatal(err)
	}
	line, err := checkLine(t, f.Dir, "offline root key")
	wantStatus(t, line, "ok", "not on this machine")
	if err != nil {
		t.Fatal(err)
	}
}

// A copy of the fleet directory holding a certificate that fleetctl replace revoked elsewhere
// fails its check: it would no longer get in.
func TestCheckFindsARevokedCopy(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	crt, key := filepath.Join(f.Dir, "operator", "operator.crt"), filepath.Join(f.Dir, "operator", "operator.key")
	oldCrt, _ := os.ReadFile(crt)
	oldKey, _ := os.ReadFile(key)
	mustRun(t, "replace", "--dir", f.Dir, "operator")
	line, err := checkLine(t, f.Dir, "operator:admin certificate")
	wantStatus(t, line, "ok", "valid until")
	if err != nil {
		t.Fatal(err)
	}
	// The stale copy: the old pair back in place, the registry shared.
	if err := os.WriteFile(crt, oldCrt, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	line, err = checkLine(t, f.Dir, "operator:admin certificate")
	wantStatus(t, line, "FAIL", "is revoked")
	if !errors.Is(err, cli.ErrCheckFailed) {
		t.Errorf("check with a failure returned %v", err)
	}
}

// Certificates near their end are reported, and checking renews nothing.
func TestCheckReportsExpiriesAndRenewsNothing(t *testing.T) {
	for _, c := range []struct {
		age    time.Duration
		status string
		detail string
	}{
		{80 * 24 * time.Hour, "WARN", "was not renewed"},
		{100 * 24 * time.Hour, "FAIL", "expired"},
	} {
		f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Now: time.Now().Add(-c.age)})
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(filepath.Join(f.Dir, "signer", "signer.crt"))
		line, _ := checkLine(t, f.Dir, "signer:default certificate")
		wantStatus(t, line, c.status, c.detail)
		line, _ = checkLine(t, f.Dir, "operator:admin certificate")
		wantStatus(t, line, c.status, c.detail)
		if after, _ := os.ReadFile(filepath.Join(f.Dir, "signer", "signer.crt")); string(after) != string(before) {
			t.Error("fleetctl check renewed a certificate")
		}
	}
}

// The CRL Mosquitto would load: one that lacks a revocation is a warning, one that is not a
// CRL a failure.
func TestCheckComparesTheCRLWithTheRegistry(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	mustRun(t, "crl", "--dir", f.Dir)
	line, err := checkLine(t, f.Dir, "CRL (crl.pem)")
	wantStatus(t, line, "ok", "lists every revocation (0)")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := reg.Update(func(tx *registry.Tx) error {
		return tx.Append(registry.Record{Type: registry.TypeRevoked, Serial: "abc123", Device: "cam-0001", Time: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	line, err = checkLine(t, f.Dir, "CRL (crl.pem)")
	wantStatus(t, line, "WARN", "lacks 1 of the registry's revocations")
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "crl", "--dir", f.Dir)
	line, _ = checkLine(t, f.Dir, "CRL (crl.pem)")
	wantStatus(t, line, "ok", "lists every revocation (1)")

	if err := os.WriteFile(f.CRLPath(), []byte("not a crl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	line, err = checkLine(t, f.Dir, "CRL (crl.pem)")
	wantStatus(t, line, "FAIL", "Mosquitto will not start with it")
	if !errors.Is(err, cli.ErrCheckFailed) {
		t.Errorf("check with a failure returned %v", err)
	}
}

// A copy without the CA key or the signing keys: it says what it cannot do, and fails nothing.
func TestCheckACheckOnlyCopy(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	for _, p := range []string{"ca.key", "keys"} {
		if err := os.RemoveAll(filepath.Join(f.Dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	line, err := checkLine(t, f.Dir, "CA key")
	wantStatus(t, line, "ok", "not here")
	if err != nil {
		t.Fatal(err)
	}
	line, _ = checkLine(t, f.Dir, "command signing key")
	wantStatus(t, line, "WARN", "cannot run from this copy")
}

// An aborted rollout is a warning: no camera rotates until it is resumed.
func TestCheckSaysTheRolloutIsAborted(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	if err := os.WriteFile(f.RolloutPath(), []byte(`{"aborted":true,"reason":"40 of 100 not confirmed","aborted_at":"2026-11-27T03:00:00Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	line, _ := checkLine(t, f.Dir, "rollout")
	wantStatus(t, line, "WARN", "fleetctl rollout resume")
}
