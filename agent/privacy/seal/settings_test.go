package seal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var canarySettings = Settings{
	SSID:       "CanarySSID-7f3a",
	Passphrase: "canary-pass-9d2e",
	Hidden:     true,
	Nickname:   "Canary Nick 51c0",
	TimeZone:   "Europe/Paris",
	Claim:      "canaryClaimToken_0123456789",
}

func canaries() []string {
	return []string{canarySettings.SSID, canarySettings.Passphrase, canarySettings.Nickname, canarySettings.Claim}
}

func TestSettingsSurviveASaveAndALoad(t *testing.T) {
	dir := t.TempDir()
	sec := testSecret(t, 4)
	if err := SaveSettings(dir, sec, canarySettings); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSettings(dir, sec)
	if err != nil {
		t.Fatal(err)
	}
	if got != canarySettings {
		t.Fatalf("loaded %+v", got) // redacted, but enough to see it differs
	}
	fi, _ := os.Stat(filepath.Join(dir, SettingsFile))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(filepath.Join(dir, SettingsFile))
	for _, c := range canaries() {
		if bytes.Contains(raw, []byte(c)) {
			t.Fatalf("the sealed file shows a canary in the clear")
		}
	}
}

func TestLoadSettingsOfANeverOnboardedDeviceSaysNotExist(t *testing.T) {
	if _, err := LoadSettings(t.TempDir(), testSecret(t, 4)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v, want fs.ErrNotExist", err)
	}
}

func TestLoadSettingsRefusesATamperedFile(t *testing.T) {
	dir := t.TempDir()
	sec := testSecret(t, 4)
	SaveSettings(dir, sec, canarySettings)
	path := filepath.Join(dir, SettingsFile)
	b, _ := os.ReadFile(path)
	b[len(b)-20] ^= 0x40
	os.WriteFile(path, b, 0o600)
	if _, err := LoadSettings(dir, sec); !errors.Is(err, ErrOpen) {
		t.Fatalf("%v, want ErrOpen", err)
	}
}

func TestLoadSettingsRefusesValidlySealedGarbage(t *testing.T) {
	dir := t.TempDir()
	sec := testSecret(t, 4)
	path := filepath.Join(dir, SettingsFile)
	for _, pt := range []string{`not json`, `{"v":2,"ssid":"x"}`, `{"v":1,"ssid":"x","extra":1}`, `{"v":1}{}`} {
		sec.WriteFile(path, PurposeSettings, []byte(pt))
		_, err := LoadSettings(dir, sec)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", pt, err)
		}
	}
}

func TestSettingsNeverPrintTheirPersonalFields(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "settings", canarySettings)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "settings", &canarySettings)
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		fmt.Fprintf(&buf, f, canarySettings)
		fmt.Fprintf(&buf, f, &canarySettings)
	}
	j, _ := json.Marshal(canarySettings)
	buf.Write(j)
	out := buf.String()
	for _, c := range canaries() {
		if strings.Contains(out, c) {
			t.Fatalf("a canary was printed: %s", out)
		}
	}
	if !strings.Contains(out, "Europe/Paris") || !strings.Contains(out, "[redacted]") {
		t.Fatalf("redacted form lost its shape: %s", out)
	}
}

func TestWipeShredsSealedData(t *testing.T) {
	dir := t.TempDir()
	sec, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveSettings(dir, sec, canarySettings); err != nil {
		t.Fatal(err)
	}
	sealed, _ := os.ReadFile(filepath.Join(dir, SettingsFile))
	// Leftovers of interrupted writes, and a file Wipe must not touch.
	os.WriteFile(filepath.Join(dir, "."+SecretFile+".new-0011"), make([]byte, SecretSize), 0o600)
	os.WriteFile(filepath.Join(dir, ".."+SecretFile+".new-0011.tmp-42"), make([]byte, SecretSize), 0o600)
	os.WriteFile(filepath.Join(dir, "."+SettingsFile+".tmp-123"), sealed, 0o600)
	os.WriteFile(filepath.Join(dir, "device.key"), []byte("not ours"), 0o600)

	if err := Wipe(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "device.key" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("after Wipe the dir holds %v, want only device.key", names)
	}
	// A copy of the sealed file kept elsewhere (a stale flash block, a backup) no longer opens
	// once a new secret is made.
	sec2, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sec2.Open(PurposeSettings, sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("old sealed settings after a wipe: %v, want ErrOpen", err)
	}
	if err := Wipe(dir); err != nil {
		t.Fatalf("second wipe: %v", err)
	}
	if err := Wipe(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("wipe of a missing dir: %v", err)
	}
}
