package onboard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
)

// Setup is what a setup payload tells a new camera. Its personal fields (SSID, Passphrase,
// Nickname) are sealed at rest by the caller and never leave the device; Claim is forwarded
// once to the cloud.
//
// A Setup never prints its SSID, passphrase or nickname: String, GoString, Format (every verb),
// LogValue and MarshalJSON redact them and show Claim only as ClaimHash. Encode is the one way
// to get the values back out as text.
type Setup struct {
	// SSID is the Wi-Fi network name, 1–32 bytes.
	SSID string
	// Passphrase is the WPA passphrase (8–63 printable ASCII) or PSK (64 hex digits); "" means
	// an open network (T:nopass).
	Passphrase string
	// Hidden says the network does not broadcast its SSID, so the camera must probe for it.
	Hidden bool
	// Claim is the owner's opaque claim token: 16–128 base64url characters.
	Claim string
	// Nickname is the owner's name for the camera, at most 64 characters; "" if none.
	Nickname string
	// TimeZone is an IANA time zone name (syntax-checked only); "" means UTC.
	TimeZone string
}

var (
	_ fmt.Stringer   = Setup{}
	_ fmt.Formatter  = Setup{}
	_ slog.LogValuer = Setup{}
	_ json.Marshaler = Setup{}
)

// Security types, the T field.
const (
	SecurityWPA    = "WPA"
	SecurityNoPass = "nopass"
)

// Security returns SecurityWPA when s has a passphrase, SecurityNoPass otherwise.
func (s Setup) Security() string {
	if s.Passphrase == "" {
		return SecurityNoPass
	}
	return SecurityWPA
}

// ClaimHash identifies the claim token in logs without revealing it: "sha256:" and the first
// 8 hex digits of its SHA-256, or "" if there is none. A claim token has at least 96 bits of
// entropy, so 32 bits of its hash cannot be inverted, yet two logs can be matched.
func (s Setup) ClaimHash() string {
	if s.Claim == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s.Claim))
	return "sha256:" + hex.EncodeToString(sum[:4])
}

func redacted(v string) string {
	if v == "" {
		return ""
	}
	return "[redacted]"
}

// String describes s with its personal fields redacted.
func (s Setup) String() string {
	return fmt.Sprintf("onboard.Setup{ssid:%s security:%s passphrase:%s hidden:%t claim:%s nickname:%s tz:%s}",
		redacted(s.SSID), s.Security(), redacted(s.Passphrase), s.Hidden, s.ClaimHash(), redacted(s.Nickname), s.TimeZone)
}

// GoString is String, so %#v redacts too.
func (s Setup) GoString() string { return s.String() }

// Format prints String for every verb, so no verb reaches the fields.
func (s Setup) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue implements slog.LogValuer with the redacted form.
func (s Setup) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("ssid", redacted(s.SSID)),
		slog.String("security", s.Security()),
		slog.String("passphrase", redacted(s.Passphrase)),
		slog.Bool("hidden", s.Hidden),
		slog.String("claim", s.ClaimHash()),
		slog.String("nickname", redacted(s.Nickname)),
		slog.String("tz", s.TimeZone),
	)
}

// MarshalJSON marshals the redacted form: a Setup never reaches JSON in the clear by accident.
// To store a Setup, seal it (agent/privacy/seal.Settings).
func (s Setup) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"ssid": redacted(s.SSID), "security": s.Security(), "passphrase": redacted(s.Passphrase),
		"hidden": s.Hidden, "claim": s.ClaimHash(), "nickname": redacted(s.Nickname), "tz": s.TimeZone,
	})
}
