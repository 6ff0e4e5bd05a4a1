package onboard

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/camagent/camagent/internal/cappedfile"
)

// Prefix starts every setup payload.
const Prefix = "CAMSETUP:"

// keys maps each payload key to its field name, in the order Encode writes them.
var keys = []struct {
	key  byte
	name string
}{
	{'V', fVersion}, {'S', fSSID}, {'T', fSecurity}, {'P', fPassphrase},
	{'C', fClaim}, {'N', fNickname}, {'Z', fTimeZone}, {'H', fHidden},
}

func keyIndex(k byte) int {
	for i, e := range keys {
		if e.key == k {
			return i
		}
	}
	return -1
}

// Parse parses a setup payload (see the package doc for the format). Every error is a
// *FieldError matching ErrInvalid and never quotes a value from the payload.
func Parse(payload []byte) (Setup, error) {
	if len(payload) > MaxPayload {
		return Setup{}, fieldErr(fPayload, fmt.Sprintf("%d bytes, over the %d-byte cap", len(payload), MaxPayload))
	}
	if !utf8.Valid(payload) {
		return Setup{}, fieldErr(fPayload, "not valid UTF-8")
	}
	p := string(payload)
	if q, ok := strings.CutSuffix(p, "\r\n"); ok {
		p = q
	} else {
		p = strings.TrimSuffix(p, "\n")
	}
	p, ok := strings.CutPrefix(p, Prefix)
	if !ok {
		return Setup{}, fieldErr(fPayload, "does not start with "+Prefix)
	}
	var vals [8]string
	var seen [8]bool
	for n := 1; ; n++ {
		if p == "" {
			return Setup{}, fieldErr(fPayload, "ends without the final \";;\"")
		}
		if p[0] == ';' {
			if len(p) > 1 {
				return Setup{}, fieldErr(fPayload, "data after the final \";;\"")
			}
			break
		}
		if len(p) < 2 || p[1] != ':' {
			return Setup{}, fieldErr(fPayload, fmt.Sprintf("field %d: want a one-letter key and ':'", n))
		}
		i := keyIndex(p[0])
		if i < 0 {
			// The key is not quoted: a passphrase with an unescaped ';' would put its own
			// characters here.
			return Setup{}, fieldErr(fPayload, fmt.Sprintf("field %d: unknown key (known: V S T P C N Z H)", n))
		}
		name := keys[i].name
		if n == 1 && keys[i].key != 'V' {
			return Setup{}, fieldErr(fVersion, "must be the first field")
		}
		if seen[i] {
			return Setup{}, fieldErr(name, "given twice")
		}
		v, rest, err := readValue(p[2:], name)
		if err != nil {
			return Setup{}, err
		}
		vals[i], seen[i], p = v, true, rest
	}
	return build(vals, seen)
}

// readValue reads an escaped value up to its unescaped ';' and returns it unescaped with the
// rest of the payload after the ';'.
func readValue(p, name string) (v, rest string, err error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case ';':
			return b.String(), p[i+1:], nil
		case '\\':
			if i+1 == len(p) {
				return "", "", fieldErr(name, "ends in a lone backslash")
			}
			i++
			if !needsEscape(p[i]) {
				return "", "", fieldErr(name, `backslash before a character that needs no escape (escape only \ ; , : ")`)
			}
			b.WriteByte(p[i])
		case ',', ':', '"':
			return "", "", fieldErr(name, fmt.Sprintf(`unescaped %q (escape \ ; , : " with a backslash)`, c))
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fieldErr(name, "no ';' after the value")
}

func needsEscape(c byte) bool { return c == '\\' || c == ';' || c == ',' || c == ':' || c == '"' }

// build checks the fields read by Parse and makes the Setup.
func build(vals [8]string, seen [8]bool) (Setup, error) {
	get := func(k byte) (string, bool) { i := keyIndex(k); return vals[i], seen[i] }
	if v, ok := get('V'); !ok {
		return Setup{}, fieldErr(fVersion, "missing (the payload starts CAMSETUP:V:1;)")
	} else if v != "1" {
		return Setup{}, fieldErr(fVersion, "unsupported, want 1")
	}
	var s Setup
	var ok bool
	if s.SSID, ok = get('S'); !ok {
		return Setup{}, fieldErr(fSSID, "missing")
	}
	if err := checkSSID(s.SSID); err != nil {
		return Setup{}, err
	}
	sec, ok := get('T')
	if !ok {
		return Setup{}, fieldErr(fSecurity, "missing (T:WPA or T:nopass)")
	}
	pass, hasPass := get('P')
	switch sec {
	case SecurityWPA:
		if !hasPass {
			return Setup{}, fieldErr(fPassphrase, "missing (required for T:WPA)")
		}
		if err := checkPassphrase(pass); err != nil {
			return Setup{}, err
		}
	case SecurityNoPass:
		if pass != "" {
			return Setup{}, fieldErr(fPassphrase, "given for an open network (T:nopass)")
		}
	default:
		return Setup{}, fieldErr(fSecurity, "want WPA or nopass (WEP and other types are refused)")
	}
	s.Passphrase = pass
	if s.Claim, ok = get('C'); !ok {
		return Setup{}, fieldErr(fClaim, "missing")
	}
	if err := checkClaim(s.Claim); err != nil {
		return Setup{}, err
	}
	s.Nickname, _ = get('N')
	if err := checkNickname(s.Nickname); err != nil {
		return Setup{}, err
	}
	s.TimeZone, _ = get('Z')
	if err := checkTimeZone(s.TimeZone); err != nil {
		return Setup{}, err
	}
	if h, ok := get('H'); ok {
		switch h {
		case "true":
			s.Hidden = true
		case "false":
		default:
			return Setup{}, fieldErr(fHidden, "want true or false")
		}
	}
	return s, nil
}

// ReadFile reads and parses a setup payload from a file of at most MaxPayload bytes.
func ReadFile(path string) (Setup, error) {
	b, err := cappedfile.Read(path, MaxPayload)
	if errors.Is(err, cappedfile.ErrTooLarge) {
		return Setup{}, fieldErr(fPayload, fmt.Sprintf("%s is over the %d-byte cap", path, MaxPayload))
	}
	if err != nil {
		return Setup{}, fmt.Errorf("onboard: %w", err)
	}
	return Parse(b)
}

// Encode writes s as a setup payload that Parse reads back to s, after checking it with
// Validate. The result holds the passphrase in the clear: it is for the phone app's side and
// tests, never for a log.
func Encode(s Setup) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(Prefix)
	field := func(k byte, v string) {
		b.WriteByte(k)
		b.WriteByte(':')
		for i := range len(v) {
			if needsEscape(v[i]) {
				b.WriteByte('\\')
			}
			b.WriteByte(v[i])
		}
		b.WriteByte(';')
	}
	field('V', "1")
	field('S', s.SSID)
	field('T', s.Security())
	if s.Passphrase != "" {
		field('P', s.Passphrase)
	}
	field('C', s.Claim)
	if s.Nickname != "" {
		field('N', s.Nickname)
	}
	if s.TimeZone != "" {
		field('Z', s.TimeZone)
	}
	if s.Hidden {
		field('H', "true")
	}
	b.WriteByte(';')
	return b.String(), nil
}
