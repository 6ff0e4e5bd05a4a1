package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
)

func TestReadCredentialsChangesNothing(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now, "mqtts://127.0.0.1:1")
	st := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	if err := st.Save(state.State{TimeFloor: now.Unix()}); err != nil {
		t.Fatal(err)
	}
	c, err := ReadCredentials(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.DeviceID != "cam-0001" || c.Broker != "mqtts://127.0.0.1:1" || c.Generation != 0 || c.Cert.Leaf == nil ||
		c.Cert.Leaf.Subject.CommonName != "cam-0001" || c.TimeFloor.Unix() != now.Unix() || c.Pool == nil {
		t.Fatalf("credentials = %+v", c)
	}

	t.Run("a fresh install is not enrolled", func(t *testing.T) {
		if _, err := ReadCredentials(t.TempDir()); !errors.Is(err, ErrNotEnrolled) {
			t.Fatalf("err = %v, want ErrNotEnrolled", err)
		}
	})
	for _, tc := range []struct{ name, content string }{
		{"a corrupt state file is reported and left where it is", "{garbage"},
		// Parses, but no agent write leaves it: the agent quarantines it too.
		{"a damaged journal is reported and left where it is", `{"command_hwm":4,"cred":{"active":0,"phase":"pendinf","next":1,"req_id":"0123456789abcdef"}}`},
	} {
		content := tc.content
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(f.dir, StateFile)
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadCredentials(f.dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
				t.Fatalf("err = %v", err)
			}
			if b, _ := os.ReadFile(p); string(b) != content {
				t.Fatal("ReadCredentials changed the state file")
			}
			if m, _ := filepath.Glob(p + ".corrupt*"); len(m) != 0 {
				t.Fatalf("ReadCredentials quarantined: %v", m)
			}
		})
	}
}

// A state file the agent would rebuild is reported as such, not read as a device enrolled a
// moment ago: on a rotated camera that reported generation 0's missing key, and an operator
// could have enrolled a healthy camera again. Nothing is changed.
func TestReadCredentialsReportsAStateFileTheAgentWouldRebuild(t *testing.T) {
	for _, tc := range []struct {
		name, says string
		lose       func(p string) error
	}{
		{"a link to nothing", "symbolic link", func(p string) error { return os.Symlink(p+".gone", p) }},
		{"a link in a loop", "symbolic link", func(p string) error { return os.Symlink(p, p) }},
		{"gone, with the floor there", "is gone although the device wrote one", func(string) error { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := enrolled(t, "cam-0001", time.Now(), "mqtts://127.0.0.1:1")
			p := filepath.Join(f.dir, StateFile)
			if err := state.NewFileStore(p, nil).Save(state.State{Cred: state.Cred{Epoch: 1}}); err != nil {
				t.Fatal(err)
			}
			if _, err := New(Config{StateDir: f.dir}); err != nil { // writes floor.json
				t.Fatal(err)
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := tc.lose(p); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadDir(f.dir)
			if c, err := ReadCredentials(f.dir); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("ReadCredentials = %+v, %v; want it to say %q", c, err, tc.says)
			}
			if after, _ := os.ReadDir(f.dir); len(after) != len(before) {
				t.Fatalf("ReadCredentials changed the directory: %v, then %v", before, after)
			}
		})
	}
}
