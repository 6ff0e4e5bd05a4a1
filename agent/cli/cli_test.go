package cli

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

func TestVideoICEServersFromFlags(t *testing.T) {
	const secret = "s3cret-turn-password"
	dir := t.TempDir()
	credFile := filepath.Join(dir, "turn-credential")
	if err := os.WriteFile(credFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openFile := filepath.Join(dir, "world-readable")
	if err := os.WriteFile(openFile, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openFile, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	turnURL := "turn:127.0.0.1:3478?transport=udp"

	t.Run("no flags make no servers", func(t *testing.T) {
		got, err := videoICEServers(nil, "", "")
		if err != nil || got != nil {
			t.Fatalf("videoICEServers = %v, %v", got, err)
		}
	})
	t.Run("a TURN server takes the user and the credential file's first line", func(t *testing.T) {
		got, err := videoICEServers([]string{"stun:127.0.0.1:3478", turnURL}, "cam", credFile)
		want := []signal.ICEServer{
			{URLs: []string{"stun:127.0.0.1:3478"}},
			{URLs: []string{turnURL}, Username: "cam", Credential: secret},
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("videoICEServers = %v, %v", got, err)
		}
	})
	for _, tt := range []struct {
		name     string
		urls     []string
		user     string
		credFile string
	}{
		{"a TURN server without a user", []string{turnURL}, "", credFile},
		{"a TURN server without a credential", []string{turnURL}, "cam", ""},
		{"a user without a TURN server", []string{"stun:127.0.0.1:3478"}, "cam", credFile},
		{"a credential file others may read", []string{turnURL}, "cam", openFile},
		{"a missing credential file", []string{turnURL}, "cam", filepath.Join(dir, "none")},
		{"credentials in the URL", []string{"turn:cam:" + secret + "@127.0.0.1:3478"}, "", ""},
		{"a URL of another scheme", []string{"http://127.0.0.1"}, "", ""},
		{"more servers than an offer may carry", []string{"stun:a", "stun:b", "stun:c", "stun:d", "stun:e"}, "", ""},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			got, err := videoICEServers(tt.urls, tt.user, tt.credFile)
			if err == nil {
				t.Fatalf("videoICEServers = %v, want an error", got)
			}
			if !strings.Contains(err.Error(), "--video-ice-") {
				t.Errorf("the error names no flag: %v", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error carries the credential: %v", err)
			}
		})
	}
}

// -h and --help on any command print its flags and succeed, as they do for the whole
// program: a person asking for help has made no mistake.
func TestHelpOnACommandSucceeds(t *testing.T) {
	for _, cmd := range []string{"enroll", "run", "selftest", "onboard", "reset"} {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr strings.Builder
			if err := Run(context.Background(), []string{cmd, h}, &stdout, &stderr); err != nil {
				t.Errorf("camagent %s %s: %v", cmd, h, err)
			}
			if !strings.Contains(stderr.String(), "-state") {
				t.Errorf("camagent %s %s printed no flags:\n%s", cmd, h, stderr.String())
			}
		}
	}
}
