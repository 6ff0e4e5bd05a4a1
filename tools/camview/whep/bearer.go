package whep

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// maxTokenSize is the length of the largest grant in base64url without padding.
var maxTokenSize = base64.RawURLEncoding.EncodedLen(signal.MaxGrantSize)

// ParseBearer returns the signed grant an Authorization header value carries: "Bearer"
// (any case), one space, and the grant in base64url without padding (RFC 6750 §2.1, RFC 4648
// §5). The grant is at most signal.MaxGrantSize bytes. Errors never quote the header.
func ParseBearer(header string) ([]byte, error) {
	if header == "" {
		return nil, ErrNoGrant
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, fmt.Errorf("%w: not a Bearer authorization", ErrBadGrant)
	}
	return DecodeGrant(token)
}

// DecodeGrant decodes a signed grant written in base64url without padding, as `fleetctl
// grant` prints it: at most signal.MaxGrantSize bytes. Errors never quote the token.
func DecodeGrant(token string) ([]byte, error) {
	switch {
	case token == "":
		return nil, fmt.Errorf("%w: empty", ErrBadGrant)
	case len(token) > maxTokenSize:
		return nil, fmt.Errorf("%w: %d characters, at most %d", ErrBadGrant, len(token), maxTokenSize)
	case strings.IndexFunc(token, notBase64URL) >= 0:
		// The decoder would skip CR and LF; nothing but the alphabet is a grant.
		return nil, fmt.Errorf("%w: not base64url without padding", ErrBadGrant)
	}
	grant, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil {
		// The decoder's error names an offset, never the bytes.
		return nil, fmt.Errorf("%w: not base64url without padding: %v", ErrBadGrant, err)
	}
	return grant, nil
}

// notBase64URL reports whether r is outside the base64url alphabet (RFC 4648 §5).
func notBase64URL(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
}
