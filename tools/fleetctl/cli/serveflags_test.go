package cli_test

import (
	"strings"
	"testing"
)

// TestServeRefusesFlagsItWouldIgnore: rollout controls given without the one that makes
// them mean anything are refused, before anything is opened, rather than dropped silently.
func TestServeRefusesFlagsItWouldIgnore(t *testing.T) {
	dir := t.TempDir() // no fleet: a refusal must come before fleet.Open
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--burst", "5"}, "--burst 5 without --max-rate"},
		{[]string{"--max-rate", "60", "--abort-min", "0", "--abort-ratio", "0.2"}, "--abort-min 0"},
		{[]string{"--abort-min", "5"}, "give --abort-ratio too"},
		{[]string{"--abort-window", "1m"}, "give --abort-ratio too"},
	} {
		_, _, err := run(t, append([]string{"serve", "--dir", dir}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("serve %s: %v, want an error saying %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
