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

// TestBrokerRefusesLimitsThatMeanNothing: the broker's limits are checked before anything is
// opened, and a value that would shut every client out is refused with what to give instead.
func TestBrokerRefusesLimitsThatMeanNothing(t *testing.T) {
	dir := t.TempDir() // no fleet: a refusal must come before fleet.Open
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--device-publish-limit", "10"}, "want RATE:BURST"},
		{[]string{"--device-publish-limit", "0:5"}, "want RATE:BURST"},
		{[]string{"--viewer-publish-limit", "5:0"}, "want RATE:BURST"},
		{[]string{"--viewer-publish-limit", "fast"}, "want RATE:BURST"},
		{[]string{"--max-sessions-per-identity", "0"}, "at least 1"},
		{[]string{"--publish-flood-cut", "0s"}, "a negative one for never"},
	} {
		_, _, err := run(t, append([]string{"broker", "--dir", dir}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("broker %s: %v, want an error saying %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	// Accepted values get as far as the fleet directory, which is missing here.
	for _, args := range [][]string{
		{"--device-publish-limit", "off"},
		{"--device-publish-limit", "2.5:40", "--viewer-publish-limit", "off", "--max-sessions-per-identity", "-1", "--publish-flood-cut", "-1s"},
	} {
		_, _, err := run(t, append([]string{"broker", "--dir", dir}, args...)...)
		if err == nil || strings.Contains(err.Error(), "RATE:BURST") || strings.Contains(err.Error(), "would") {
			t.Errorf("broker %s: %v, want only the missing fleet refused", strings.Join(args, " "), err)
		}
	}
}
