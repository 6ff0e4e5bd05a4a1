package onboard

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const claim = "Zm9vYmFyLWNsYWltLXRva2Vu"

func TestParseAcceptsValidPayloads(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    Setup
	}{
		{"a minimal WPA payload", "CAMSETUP:V:1;S:HomeNet;T:WPA;P:correct horse;C:" + claim + ";;",
			Setup{SSID: "HomeNet", Passphrase: "correct horse", Claim: claim}},
		{"every field", "CAMSETUP:V:1;S:HomeNet;T:WPA;P:password;C:" + claim + ";N:Front door;Z:Europe/Paris;H:true;;",
			Setup{SSID: "HomeNet", Passphrase: "password", Claim: claim, Nickname: "Front door", TimeZone: "Europe/Paris", Hidden: true}},
		{"fields after V in any order", "CAMSETUP:V:1;Z:UTC;C:" + claim + ";N:Cam;P:password;T:WPA;S:HomeNet;;",
			Setup{SSID: "HomeNet", Passphrase: "password", Claim: claim, Nickname: "Cam", TimeZone: "UTC"}},
		{"an open network with no P", "CAMSETUP:V:1;S:Cafe;T:nopass;C:" + claim + ";;",
			Setup{SSID: "Cafe", Claim: claim}},
		{"an open network with an empty P", "CAMSETUP:V:1;S:Cafe;T:nopass;P:;C:" + claim + ";;",
			Setup{SSID: "Cafe", Claim: claim}},
		{"every escape", `CAMSETUP:V:1;S:a\;b\,c\:d\"e\\f;T:WPA;P:p\;a\:s\,s\"\\;C:` + claim + ";;",
			Setup{SSID: `a;b,c:d"e\f`, Passphrase: `p;a:s,s"\`, Claim: claim}},
		{"a 64-hex-digit PSK", "CAMSETUP:V:1;S:x;T:WPA;P:" + strings.Repeat("aB", 32) + ";C:" + claim + ";;",
			Setup{SSID: "x", Passphrase: strings.Repeat("aB", 32), Claim: claim}},
		{"a 63-character passphrase", "CAMSETUP:V:1;S:x;T:WPA;P:" + strings.Repeat("~", 63) + ";C:" + claim + ";;",
			Setup{SSID: "x", Passphrase: strings.Repeat("~", 63), Claim: claim}},
		{"a 32-byte UTF-8 SSID", "CAMSETUP:V:1;S:" + strings.Repeat("é", 16) + ";T:nopass;C:" + claim + ";;",
			Setup{SSID: strings.Repeat("é", 16), Claim: claim}},
		{"a 64-character emoji nickname", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";N:" + strings.Repeat("👨‍👩", 21) + "x;;",
			Setup{SSID: "x", Claim: claim, Nickname: strings.Repeat("👨‍👩", 21) + "x"}},
		{"a hex claim of 128 characters", "CAMSETUP:V:1;S:x;T:nopass;C:" + strings.Repeat("0f", 64) + ";;",
			Setup{SSID: "x", Claim: strings.Repeat("0f", 64)}},
		{"H:false", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";H:false;;", Setup{SSID: "x", Claim: claim}},
		{"empty N and Z", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";N:;Z:;;", Setup{SSID: "x", Claim: claim}},
		{"time zones with digits and signs", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";Z:Etc/GMT+5;;",
			Setup{SSID: "x", Claim: claim, TimeZone: "Etc/GMT+5"}},
		{"a three-part time zone", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";Z:America/Argentina/Buenos_Aires;;",
			Setup{SSID: "x", Claim: claim, TimeZone: "America/Argentina/Buenos_Aires"}},
		{"a trailing newline", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";;\n", Setup{SSID: "x", Claim: claim}},
		{"a trailing CRLF", "CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";;\r\n", Setup{SSID: "x", Claim: claim}},
		{"spaces kept as they are in an SSID", "CAMSETUP:V:1;S: My Net ;T:nopass;C:" + claim + ";;",
			Setup{SSID: " My Net ", Claim: claim}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %#v\nwant %#v", got, tt.want) // redacted, but the visible fields help
			}
		})
	}
}

func TestParseRefusesEachInvalidField(t *testing.T) {
	ok := func(fields string) string { return "CAMSETUP:V:1;" + fields + ";;" }
	base := "S:HomeNet;T:WPA;P:password;C:" + claim
	tests := []struct {
		name    string
		payload string
		field   string
		reason  string
	}{
		{"an empty payload", "", "payload", "does not start with CAMSETUP:"},
		{"a Wi-Fi QR instead", "WIFI:S:x;T:WPA;P:password;;", "payload", "does not start with CAMSETUP:"},
		{"a lower-case prefix", "camsetup:V:1;;", "payload", "does not start"},
		{"a payload over 2 KiB", ok(base + ";N:" + strings.Repeat("a", MaxPayload)), "payload", "over the 2048-byte cap"},
		{"invalid UTF-8", ok(base + ";N:\xff"), "payload", "not valid UTF-8"},
		{"no final ;;", "CAMSETUP:V:1;" + base + ";", "payload", `without the final ";;"`},
		{"data after ;;", ok(base) + "x", "payload", `data after the final ";;"`},
		{"two newlines", ok(base) + "\n\n", "payload", `data after the final ";;"`},
		{"a long key", ok(base + ";SS:x"), "payload", "field 6: want a one-letter key"},
		{"an unknown key", ok(base + ";Q:x"), "payload", "field 6: unknown key"},
		{"a lower-case key", ok(base + ";s:x"), "payload", "unknown key"},
		{"a field without ':'", ok(base + ";N"), "payload", "want a one-letter key"},
		{"V not first", "CAMSETUP:S:x;V:1;T:nopass;C:" + claim + ";;", "version", "must be the first field"},
		{"no V at all", "CAMSETUP:;", "version", "missing"},
		{"version 2", "CAMSETUP:V:2;" + base + ";;", "version", "unsupported, want 1"},
		{"a repeated SSID", ok(base + ";S:y"), "ssid", "given twice"},
		{"a repeated V", ok(base + ";V:1"), "version", "given twice"},
		{"an unescaped comma", ok("S:a,b;T:nopass;C:" + claim), "ssid", `unescaped ','`},
		{"an unescaped colon", ok("S:HomeNet;T:WPA;P:pass:word;C:" + claim), "passphrase", `unescaped ':'`},
		{"an unescaped quote", ok("S:\"x\";T:nopass;C:" + claim), "ssid", `unescaped '"'`},
		{"a needless escape", ok(`S:a\b;T:nopass;C:` + claim), "ssid", "needs no escape"},
		{"a lone backslash at the end", `CAMSETUP:V:1;S:a\`, "ssid", "lone backslash"},
		{"a value without ';'", "CAMSETUP:V:1;S:abc", "ssid", "no ';' after the value"},
		{"no SSID", ok("T:nopass;C:" + claim), "ssid", "missing"},
		{"an empty SSID", ok("S:;T:nopass;C:" + claim), "ssid", "empty, need 1..32 bytes"},
		{"a 33-byte SSID", ok("S:" + strings.Repeat("s", 33) + ";T:nopass;C:" + claim), "ssid", "33 bytes, need 1..32"},
		{"a control character in the SSID", ok("S:a\tb;T:nopass;C:" + claim), "ssid", "control character"},
		{"no T", ok("S:x;P:password;C:" + claim), "security", "missing"},
		{"WEP", ok("S:x;T:WEP;P:password;C:" + claim), "security", "want WPA or nopass"},
		{"T:wpa in lower case", ok("S:x;T:wpa;P:password;C:" + claim), "security", "want WPA or nopass"},
		{"WPA without P", ok("S:x;T:WPA;C:" + claim), "passphrase", "missing (required for T:WPA)"},
		{"WPA with an empty P", ok("S:x;T:WPA;P:;C:" + claim), "passphrase", "0 characters, need 8..63"},
		{"a 5-character passphrase", ok("S:x;T:WPA;P:short;C:" + claim), "passphrase", "5 characters, need 8..63 or 64 hex digits"},
		{"a 65-character passphrase", ok("S:x;T:WPA;P:" + strings.Repeat("p", 65) + ";C:" + claim), "passphrase", "65 characters"},
		{"64 characters that are not hex", ok("S:x;T:WPA;P:" + strings.Repeat("g", 64) + ";C:" + claim), "passphrase", "must be hex digits"},
		{"a non-ASCII passphrase", ok("S:x;T:WPA;P:pässwörd;C:" + claim), "passphrase", "printable ASCII"},
		{"a control character in the passphrase", ok("S:x;T:WPA;P:pass\x7fword;C:" + claim), "passphrase", "printable ASCII"},
		{"a passphrase on an open network", ok("S:x;T:nopass;P:password;C:" + claim), "passphrase", "open network"},
		{"no claim", ok("S:x;T:nopass"), "claim", "missing"},
		{"a 15-character claim", ok("S:x;T:nopass;C:" + strings.Repeat("c", 15)), "claim", "15 characters, need 16..128"},
		{"a 129-character claim", ok("S:x;T:nopass;C:" + strings.Repeat("c", 129)), "claim", "129 characters"},
		{"a claim in standard base64", ok("S:x;T:nopass;C:abc+def/ghijklmnop"), "claim", "only base64url"},
		{"a padded claim", ok("S:x;T:nopass;C:abcdefghijklmnop=="), "claim", "only base64url"},
		{"a 65-character nickname", ok(base + ";N:" + strings.Repeat("é", 65)), "nickname", "65 characters, at most 64"},
		{"a newline in the nickname", ok(base + ";N:a\nb"), "nickname", "control"},
		{"a bidi override in the nickname", ok(base + ";N:abc\u202edef"), "nickname", "bidirectional"},
		{"a line separator in the nickname", ok(base + ";N:a\u2028b"), "nickname", "line separator"},
		{"a C1 control in the nickname", ok(base + ";N:a\u0085b"), "nickname", "control"},
		{"a time zone with a space", ok(base + ";Z:Europe/New York"), "time zone", "not an IANA time zone name"},
		{"a time zone with ..", ok(base + ";Z:../../etc/passwd"), "time zone", "not an IANA time zone name"},
		{"an absolute path as time zone", ok(base + ";Z:/etc/localtime"), "time zone", "not an IANA time zone name"},
		{"a time zone with an empty component", ok(base + ";Z:Europe//Paris"), "time zone", "not an IANA time zone name"},
		{"Local as time zone", ok(base + ";Z:Local"), "time zone", "Local is not"},
		{"a time zone of five components", ok(base + ";Z:A/B/C/D/E"), "time zone", "too many components"},
		{"a 65-byte time zone", ok(base + ";Z:" + strings.Repeat("A", 65)), "time zone", "65 bytes"},
		{"H:yes", ok(base + ";H:yes"), "hidden", "want true or false"},
		{"an empty H", ok(base + ";H:"), "hidden", "want true or false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.payload))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v, want ErrInvalid", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *FieldError", err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Reason, tt.reason) {
				t.Fatalf("got %q, want field %q saying %q", err, tt.field, tt.reason)
			}
		})
	}
}

// TestErrorsNeverQuoteAValue parses broken payloads whose values are canaries and checks that
// no error carries a canary or a piece of one.
func TestErrorsNeverQuoteAValue(t *testing.T) {
	const pass = "Kx7PASSqz" // 9 characters
	payloads := []string{
		"CAMSETUP:V:1;S:x;T:WPA;P:" + pass[:5] + ";C:" + claim + ";;",
		"CAMSETUP:V:1;S:x;T:WPA;P:" + pass + "é;C:" + claim + ";;",
		"CAMSETUP:V:1;S:x;T:WPA;P:" + pass + ";Qz:" + pass + ";C:" + claim + ";;",
		"CAMSETUP:V:1;S:x;T:WPA;P:" + pass + ";QPASS:x;;",
		"CAMSETUP:V:1;S:x;T:WPA;P:" + pass + ";" + pass + ";;",
		"CAMSETUP:V:1;S:x;T:WPA;P:" + pass + ":" + pass + ";;",
		"CAMSETUP:V:1;S:" + pass + strings.Repeat("Kx7P", 8) + ";T:nopass;C:" + claim + ";;",
		"CAMSETUP:V:1;S:x;T:" + pass + ";C:" + claim + ";;",
		"CAMSETUP:V:" + pass + ";;",
		"CAMSETUP:V:1;S:x;T:nopass;C:" + pass + "!" + pass + ";;",
		"CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";Z:" + pass + " x;;",
		"CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";H:" + pass + ";;",
		"CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";N:" + pass + "\x01;;",
	}
	for _, p := range payloads {
		_, err := Parse([]byte(p))
		if err == nil {
			t.Fatalf("%q parsed", p)
		}
		for _, piece := range []string{"Kx7", "PASS", "qz"} {
			if strings.Contains(err.Error(), piece) {
				t.Fatalf("error %q quotes a value", err)
			}
		}
	}
}

func TestEncodeWritesWhatParseReads(t *testing.T) {
	setups := []Setup{
		{SSID: "HomeNet", Passphrase: "password", Claim: claim},
		{SSID: `a;b,c:d"e\f`, Passphrase: `p;a:s,s"\`, Claim: claim, Nickname: `Cam "1"; hall: left\right`, TimeZone: "Etc/GMT-14", Hidden: true},
		{SSID: "x", Claim: claim},
	}
	for _, s := range setups {
		p, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse([]byte(p))
		if err != nil {
			t.Fatalf("Parse(Encode()): %v", err)
		}
		if got != s {
			t.Fatalf("round trip changed the setup: %#v", got)
		}
	}
	if p, _ := Encode(setups[0]); p != "CAMSETUP:V:1;S:HomeNet;T:WPA;P:password;C:"+claim+";;" {
		t.Fatalf("Encode = %s", p)
	}
}

func TestEncodeRefusesAnInvalidSetup(t *testing.T) {
	for _, s := range []Setup{
		{Claim: claim},
		{SSID: "x", Passphrase: "short", Claim: claim},
		{SSID: "x"},
		{SSID: "x", Claim: claim, TimeZone: "no spaces allowed"},
		{SSID: "x", Claim: claim, Nickname: "a\x00b"},
	} {
		if _, err := Encode(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v, want ErrInvalid", s, err)
		}
	}
}

func TestReadFileReadsAPayloadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "setup.txt")
	os.WriteFile(path, []byte("CAMSETUP:V:1;S:x;T:nopass;C:"+claim+";;\n"), 0o600)
	s, err := ReadFile(path)
	if err != nil || s.SSID != "x" {
		t.Fatalf("ReadFile = %v, %v", s, err)
	}
	os.WriteFile(path, make([]byte, MaxPayload+1), 0o600)
	if _, err := ReadFile(path); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "cap") {
		t.Fatalf("an oversized file: %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
}
