package cli_test

import (
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/fleetctl/fleettest"
)

func TestReplaceArguments(t *testing.T) {
	f, _ := fleettest.NewFleet(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no identity", []string{"replace", "--dir", f.Dir}, "name one identity"},
		{"two", []string{"replace", "--dir", f.Dir, "operator", "signer"}, "name one identity"},
		{"a device", []string{"replace", "--dir", f.Dir, "cam-0001"}, "fleetctl rotate or retire"},
		{"a viewer", []string{"replace", "--dir", f.Dir, "viewer"}, "give operator, signer or broker"},
		{"no fleet", []string{"replace", "--dir", t.TempDir(), "operator"}, "no fleet"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}
