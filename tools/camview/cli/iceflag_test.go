package cli_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// A refused --ice-server value is never quoted, neither in the error nor on stderr: the flag
// package quotes a value whose Set fails, credential and all.
func TestARefusedICEServerIsNotQuoted(t *testing.T) {
	dir := t.TempDir()
	record := []string{"record", "--fleet", filepath.Join(dir, "nofleet"), "--device", "cam-0001", "--out", filepath.Join(dir, "x.h264"), "--grant", "AAAA"}
	bad := "turn:127.0.0.1:3478?transport=sctp&user=alice&credential=s3cret"
	good := "turn:127.0.0.1:3478?user=alice&credential=s3cret"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"serve, a bad transport", []string{"serve", "--ice-server", bad}, "transport"},
		{"record, a bad transport", append(record, "--ice-server", bad), "transport"},
		{"serve, a credential before an @", []string{"serve", "--ice-server", "turn:alice:s3cret@127.0.0.1:3478?user=alice&credential=s3cret"}, "user= and credential="},
		{"serve, five servers", []string{"serve", "--ice-server", good, "--ice-server", good, "--ice-server", good, "--ice-server", good, "--ice-server", good}, "at most 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(stderr, "s3cret") {
				t.Errorf("the TURN credential is quoted:\nerr: %v\nstderr: %s", err, stderr)
			}
		})
	}
}
