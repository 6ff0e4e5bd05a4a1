package agent

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/internal/logtest"
)

// Sealed settings that cannot be opened (a damaged file, a secret others could read) must not
// keep the agent from starting, which under systemd is a restart loop and a camera that no
// longer rotates in a breach (R6). The agent wipes them, says so, and runs; the owner
// onboards the camera again.
func TestUnusableSealedSettingsAreWipedAndTheAgentRuns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, dir string)
		wiped bool
	}{
		{"a damaged settings file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, seal.SettingsFile)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 0xff
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a directory where the settings file should be", func(t *testing.T, dir string) {
			// Before, reading it failed ("is a directory") at every start: New, and the
			// CLI's LoadPrivacy before it, returned the error, and the camera restarted
			// for good. It holds a file: wiping it must remove that too.
			p := filepath.Join(dir, seal.SettingsFile)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, "lost"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a secret others could read", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, seal.SecretFile), 0o640); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
			s := testSetup("c0ffee")
			if err := Onboard(f.dir, s); err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, f.dir)

			// The CLI's guard is made before the agent: it learns the settings are unusable,
			// and leaves the files to the agent.
			var se *SettingsError
			if err := LoadPrivacy(f.dir, egress.New()); !errors.As(err, &se) || se.Wiped {
				t.Fatalf("LoadPrivacy = %v, want a *SettingsError that wiped nothing", err)
			}
			if _, err := os.Stat(filepath.Join(f.dir, seal.SettingsFile)); err != nil {
				t.Fatalf("LoadPrivacy touched the settings: %v", err)
			}

			log, rec := logtest.New()
			a, err := New(Config{StateDir: f.dir, Logger: log})
			if err != nil {
				t.Fatalf("New with unusable sealed settings: %v", err)
			}
			if a.settings != nil {
				t.Fatal("the agent kept settings it could not open")
			}
			rec.WaitFor(t, time.Second, "the sealed settings cannot be used", "wiped=true")
			for _, name := range []string{seal.SettingsFile, seal.SecretFile} {
				if _, err := os.Stat(filepath.Join(f.dir, name)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s after the agent started: %v, want it wiped", name, err)
				}
			}
			// Onboarding again works, and the guard has the values again.
			if err := Onboard(f.dir, s); err != nil {
				t.Fatal(err)
			}
			g := egress.New()
			if err := LoadPrivacy(f.dir, g); err != nil || g.Check([]byte(s.SSID)) == nil {
				t.Fatalf("after onboarding again: %v, guard holds the network: %v", err, g.Check([]byte(s.SSID)) != nil)
			}
		})
	}
}
