package whep_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/camview/whep"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// FuzzParseBearer checks what ParseBearer promises for any Authorization header: no panic; a
// grant of 1 to signal.MaxGrantSize bytes that encodes back to the token exactly; errors that
// match a sentinel and never quote the header.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{
		"",
		"Bearer ",
		"Bearer eyJncmFudCI6MX0",
		"bearer eyJncmFudCI6MX0",
		"Bearer eyJncmFudCI6MX0=",
		"Bearer eyJn\ncmFudCI6MX0",
		"Bearer a+b/c",
		"Basic dXNlcjpwYXNz",
		"Bearer  eyJncmFudCI6MX0",
		"Bearer " + strings.Repeat("A", 5462),
		"Bearer " + strings.Repeat("A", 5463),
		" Bearer a",
		"Bearer base64url",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		grant, err := whep.ParseBearer(header)
		if err != nil {
			if !errors.Is(err, whep.ErrNoGrant) && !errors.Is(err, whep.ErrBadGrant) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			// A token made only of characters the messages use may be one of their words: " Bearer
			// a" is in "not a Bearer authorization", and "base64url" in "not base64url without
			// padding". Any other token must not appear.
			if _, token, ok := strings.Cut(header, " "); ok && len(token) >= 8 &&
				strings.ContainsFunc(token, notInMessages) && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q quotes the token", err)
			}
			return
		}
		if len(grant) == 0 || len(grant) > signal.MaxGrantSize {
			t.Fatalf("grant of %d bytes", len(grant))
		}
		_, token, _ := strings.Cut(header, " ")
		if again := base64.RawURLEncoding.EncodeToString(grant); again != token {
			t.Fatalf("token %q decodes to bytes that encode as %q", token, again)
		}
		if b, err := whep.DecodeGrant(token); err != nil || !bytes.Equal(b, grant) {
			t.Fatalf("DecodeGrant disagrees: %v", err)
		}
	})
}

// notInMessages reports whether r is a character ParseBearer's messages never use.
func notInMessages(r rune) bool {
	return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789 :,<>AB", r)
}
