package seal

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/camagent/camagent/internal/strictjson"
)

// SettingsFile is the sealed settings' file name in the state directory.
const SettingsFile = "settings.sealed"

// PurposeSettings is the purpose the settings file is sealed for.
const PurposeSettings = "settings"

// settingsVersion is the version of the JSON inside the sealed settings file.
const settingsVersion = 1

// Settings are the personal settings a camera keeps, sealed at rest: what onboarding gave it.
// None of them may leave the device except Claim, which is forwarded once to the cloud and
// can then be cleared.
//
// Settings prints with every personal field redacted (String, GoString, Format, LogValue and
// MarshalJSON all redact), so a Settings value logged or marshalled by mistake leaks nothing;
// only SaveSettings writes the real values, sealed.
type Settings struct {
	// SSID is the Wi-Fi network name (1–32 bytes).
	SSID string
	// Passphrase is the WPA passphrase or 64-hex-digit PSK; "" for an open network.
	Passphrase string
	// Hidden says the network does not broadcast its SSID.
	Hidden bool
	// Nickname is the camera's name chosen by its owner; "" if none.
	Nickname string
	// TimeZone is an IANA time zone name; "" means UTC.
	TimeZone string
	// Claim is the owner's opaque claim token, kept until the cloud has acknowledged it;
	// "" once it has.
	Claim string
}

// settingsJSON is the JSON inside the sealed file.
type settingsJSON struct {
	V          int    `json:"v"`
	SSID       string `json:"ssid"`
	Passphrase string `json:"passphrase,omitempty"`
	Hidden     bool   `json:"hidden,omitempty"`
	Nickname   string `json:"nickname,omitempty"`
	TimeZone   string `json:"tz,omitempty"`
	Claim      string `json:"claim,omitempty"`
}

var (
	_ fmt.Formatter  = Settings{}
	_ slog.LogValuer = Settings{}
	_ json.Marshaler = Settings{}
)

func redacted(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// String describes s with every personal field redacted.
func (s Settings) String() string {
	return fmt.Sprintf("seal.Settings{ssid:%s passphrase:%s hidden:%t nickname:%s tz:%s claim:%s}",
		redacted(s.SSID), redacted(s.Passphrase), s.Hidden, redacted(s.Nickname), s.TimeZone, redacted(s.Claim))
}

// GoString is String, so %#v redacts too.
func (s Settings) GoString() string { return s.String() }

// Format prints String for every verb, so no verb (%v, %+v, %#v, %s, %q, %x) reaches the
// fields.
func (s Settings) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue implements slog.LogValuer with the redacted fields.
func (s Settings) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("ssid", redacted(s.SSID)),
		slog.String("passphrase", redacted(s.Passphrase)),
		slog.Bool("hidden", s.Hidden),
		slog.String("nickname", redacted(s.Nickname)),
		slog.String("tz", s.TimeZone),
		slog.String("claim", redacted(s.Claim)),
	)
}

// MarshalJSON marshals the redacted form: Settings never reaches JSON in the clear by accident.
func (s Settings) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{
		"ssid": redacted(s.SSID), "passphrase": redacted(s.Passphrase), "hidden": s.Hidden,
		"nickname": redacted(s.Nickname), "tz": s.TimeZone, "claim": redacted(s.Claim),
	})
}

// SaveSettings seals st for PurposeSettings and writes it to SettingsFile in dir, atomically
// and 0600.
func SaveSettings(dir string, sec *Secret, st Settings) error {
	b, err := json.Marshal(settingsJSON{
		V: settingsVersion, SSID: st.SSID, Passphrase: st.Passphrase, Hidden: st.Hidden,
		Nickname: st.Nickname, TimeZone: st.TimeZone, Claim: st.Claim,
	})
	if err != nil {
		return fmt.Errorf("seal: settings: %w", err)
	}
	return sec.WriteFile(filepath.Join(dir, SettingsFile), PurposeSettings, b)
}

// LoadSettings reads and opens SettingsFile in dir. A device never onboarded gets an error
// matching fs.ErrNotExist; a file sealed under another secret (the device was reset) or
// altered gets ErrOpen; a file that opens but holds no valid settings gets ErrMalformed.
func LoadSettings(dir string, sec *Secret) (Settings, error) {
	b, err := sec.ReadFile(filepath.Join(dir, SettingsFile), PurposeSettings)
	if err != nil {
		return Settings{}, err
	}
	var j settingsJSON
	if err := strictjson.Unmarshal(b, &j); err != nil {
		// The JSON error may quote the plaintext; it is not wrapped.
		return Settings{}, fmt.Errorf("%w: %s does not hold a settings object", ErrMalformed, SettingsFile)
	}
	if j.V != settingsVersion {
		return Settings{}, fmt.Errorf("%w: %s has version %d, want %d", ErrMalformed, SettingsFile, j.V, settingsVersion)
	}
	return Settings{
		SSID: j.SSID, Passphrase: j.Passphrase, Hidden: j.Hidden,
		Nickname: j.Nickname, TimeZone: j.TimeZone, Claim: j.Claim,
	}, nil
}
