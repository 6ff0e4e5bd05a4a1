package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/fleetctl/fleettest"
)

// Bad arguments are refused before anything is retired, each with an error saying what was
// wrong.
func TestRetireArguments(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	list := filepath.Join(t.TempDir(), "gone.txt")
	if err := os.WriteFile(list, []byte("# recall\ncam-0001\ncam 0002\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no device", []string{"retire", "--dir", f.Dir}, "--device ID"},
		{"an id that is not one", []string{"retire", "--dir", f.Dir, "--device", "cam/0001"}, "flag -device"},
		{"a list with a bad line", []string{"retire", "--dir", f.Dir, "--from", list}, "line 3"},
		{"a device never enrolled", []string{"retire", "--dir", f.Dir, "--device", "cam-0001", "--device", "cam-0009"}, "cam-0009 was never enrolled"},
		{"a stray argument", []string{"retire", "--dir", f.Dir, "cam-0001"}, "unexpected argument"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if ids := reg.RetiredDevices(); len(ids) != 0 {
		t.Fatalf("refused commands retired %v", ids)
	}
}
