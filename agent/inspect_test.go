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
