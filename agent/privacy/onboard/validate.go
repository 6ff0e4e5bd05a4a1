package onboard

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the fields.
const (
	// MaxPayload caps a whole setup payload, in bytes, including a trailing newline.
	MaxPayload = 2048
	// MaxSSID is 802.11's limit on an SSID, in bytes.
	MaxSSID = 32
	// MinPassphrase and MaxPassphrase bound a WPA passphrase (IEEE 802.11-2020 J.4.1); a
	// 64-character passphrase must be a hex PSK.
	MinPassphrase, MaxPassphrase = 8, 63
	// MinClaim and MaxClaim bound the claim token, in characters.
	MinClaim, MaxClaim = 16, 128
	// MaxNickname caps the nickname, in characters (runes).
	MaxNickname = 64
	// MaxTimeZone caps the time zone name, in bytes.
	MaxTimeZone = 64
)

// Field names used in errors.
const (
	fPayload    = "payload"
	fVersion    = "version"
	fSSID       = "ssid"
	fSecurity   = "security"
	fPassphrase = "passphrase"
	fClaim      = "claim"
	fNickname   = "nickname"
	fTimeZone   = "time zone"
	fHidden     = "hidden"
)

// Validate checks every field of s against the limits of the payload format, as Parse does.
func (s Setup) Validate() error {
	if err := checkSSID(s.SSID); err != nil {
		return err
	}
	if s.Passphrase != "" {
		if err := checkPassphrase(s.Passphrase); err != nil {
			return err
		}
	}
	if err := checkClaim(s.Claim); err != nil {
		return err
	}
	if err := checkNickname(s.Nickname); err != nil {
		return err
	}
	return checkTimeZone(s.TimeZone)
}

func checkSSID(v string) error {
	switch {
	case v == "":
		return fieldErr(fSSID, "empty, need 1..32 bytes")
	case len(v) > MaxSSID:
		return fieldErr(fSSID, fmt.Sprintf("%d bytes, need 1..%d", len(v), MaxSSID))
	case !utf8.ValidString(v):
		return fieldErr(fSSID, "not valid UTF-8")
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return fieldErr(fSSID, "contains a control character")
	}
	return nil
}

func checkPassphrase(v string) error {
	if len(v) == 2*32 {
		for i := range len(v) {
			if !isHex(v[i]) {
				return fieldErr(fPassphrase, "64 characters must be hex digits (a raw PSK); a passphrase has 8..63")
			}
		}
		return nil
	}
	for i := range len(v) {
		if v[i] < 0x20 || v[i] > 0x7e {
			return fieldErr(fPassphrase, "only printable ASCII characters are allowed")
		}
	}
	if len(v) < MinPassphrase || len(v) > MaxPassphrase {
		return fieldErr(fPassphrase, fmt.Sprintf("%d characters, need %d..%d or 64 hex digits", len(v), MinPassphrase, MaxPassphrase))
	}
	return nil
}

func checkClaim(v string) error {
	if len(v) < MinClaim || len(v) > MaxClaim {
		return fieldErr(fClaim, fmt.Sprintf("%d characters, need %d..%d", len(v), MinClaim, MaxClaim))
	}
	for i := range len(v) {
		if !isBase64URL(v[i]) {
			return fieldErr(fClaim, "only base64url characters (A-Z a-z 0-9 - _) are allowed")
		}
	}
	return nil
}

func checkNickname(v string) error {
	if !utf8.ValidString(v) {
		return fieldErr(fNickname, "not valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > MaxNickname {
		return fieldErr(fNickname, fmt.Sprintf("%d characters, at most %d", n, MaxNickname))
	}
	if strings.IndexFunc(v, badNicknameRune) >= 0 {
		return fieldErr(fNickname, "contains a control, line separator or bidirectional formatting character")
	}
	return nil
}

// badNicknameRune reports runes refused in a nickname: controls (C0, DEL, C1), the line and
// paragraph separators, and the bidirectional embedding, override, isolate and mark
// characters, which can make a name display as something else ("Trojan Source", CVE-2021-42574).
func badNicknameRune(r rune) bool {
	switch {
	case unicode.IsControl(r), r == '\u2028', r == '\u2029':
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	case r == '\u200e', r == '\u200f', r == '\u061c':
		return true
	}
	return false
}

// checkTimeZone checks the syntax of an IANA time zone name (https://data.iana.org/time-zones/
// theory.html, "Names of timezones"): one to four components separated by '/', each starting
// with a letter and made of letters, digits and . _ + -. It does not look the name up: the
// device may have no tz database, and the agent falls back to UTC for a name it cannot load.
// "Local" is refused: Go's time.LoadLocation gives it a special meaning.
func checkTimeZone(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > MaxTimeZone {
		return fieldErr(fTimeZone, fmt.Sprintf("%d bytes, at most %d", len(v), MaxTimeZone))
	}
	if v == "Local" {
		return fieldErr(fTimeZone, "Local is not a time zone name")
	}
	parts := strings.Split(v, "/")
	if len(parts) > 4 {
		return fieldErr(fTimeZone, "not an IANA time zone name (too many components)")
	}
	for _, p := range parts {
		if p == "" || !isLetter(p[0]) {
			return fieldErr(fTimeZone, "not an IANA time zone name (each component starts with a letter)")
		}
		for i := range len(p) {
			if c := p[i]; !isLetter(c) && !isDigit(c) && c != '.' && c != '_' && c != '+' && c != '-' {
				return fieldErr(fTimeZone, "not an IANA time zone name (letters, digits and . _ + - only)")
			}
		}
	}
	return nil
}

func isLetter(c byte) bool    { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool     { return c >= '0' && c <= '9' }
func isHex(c byte) bool       { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
func isBase64URL(c byte) bool { return isLetter(c) || isDigit(c) || c == '-' || c == '_' }
