package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/agent/privacy/onboard"
	"github.com/camagent/camagent/agent/privacy/seal"
)

// The values of the setup payloads below: none may appear in anything onboard prints.
const (
	testSSID  = "Zoë's Wi-Fi, \"5G\"; 7e1f"
	testPass  = "correct horse: battery staple 7e1f"
	testNick  = "Baby's room (upstairs) 7e1f"
	testClaim = "ClaimTok_7e1f_0123456789abcdef"
)

func testPayload(t *testing.T) string {
	t.Helper()
	p, err := onboard.Encode(onboard.Setup{SSID: testSSID, Passphrase: testPass, Nickname: testNick, Claim: testClaim, TimeZone: "Europe/Berlin"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leaked returns the values of secrets that s carries, raw, case-folded or JSON-escaped.
func leaked(s string, secrets ...string) []string {
	low := strings.ToLower(s)
	var out []string
	for _, v := range secrets {
		j, _ := json.Marshal(v)
		if strings.Contains(low, strings.ToLower(v)) || strings.Contains(low, strings.ToLower(strings.Trim(string(j), `"`))) {
			out = append(out, v)
		}
	}
	return out
}

func TestOnboardReadsTheSetupAndPrintsNothingPersonal(t *testing.T) {
	payload := testPayload(t)
	for _, tt := range []struct {
		name  string
		args  func(dir string) []string
		stdin string
	}{
		{"from standard input", func(dir string) []string { return []string{"--state", dir, "--file", "-"} }, payload + "\n"},
		{"from a file", func(dir string) []string {
			f := filepath.Join(t.TempDir(), "setup.txt")
			if err := os.WriteFile(f, []byte(payload), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"--state", dir, "--file", f}
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			var out, errb bytes.Buffer
			if err := onboardCmd(tt.args(dir), strings.NewReader(tt.stdin), &out, &errb); err != nil {
				t.Fatalf("onboard: %v\n%s", err, errb.String())
			}
			if !strings.Contains(out.String(), "onboarded") || !strings.Contains(out.String(), onboard.Setup{Claim: testClaim}.ClaimHash()) {
				t.Fatalf("output %q does not say what was onboarded", out.String())
			}
			if l := leaked(out.String()+errb.String(), testSSID, testPass, testNick, testClaim); l != nil {
				t.Fatalf("onboard printed %q:\n%s%s", l, out.String(), errb.String())
			}
			sec, err := seal.LoadSecret(dir)
			if err != nil {
				t.Fatal(err)
			}
			st, err := seal.LoadSettings(dir, sec)
			if err != nil || st.SSID != testSSID || st.Passphrase != testPass || st.Nickname != testNick || st.Claim != testClaim || st.TimeZone != "Europe/Berlin" {
				t.Fatalf("sealed settings %v: %v", st, err)
			}
		})
	}
}

// A bad payload gets the parser's error naming the field; nothing onboard prints repeats a
// value from it, and nothing is written.
func TestOnboardRefusesBadPayloadsWithoutEchoingThem(t *testing.T) {
	const secret = "S3cretValue-9d2c"
	for _, tt := range []struct {
		name    string
		args    []string // after --state DIR
		stdin   string
		field   string // the field the error names, "" for a usage error
		wantErr string
	}{
		{name: "a short passphrase", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:WPA;P:S3cret;C:" + testClaim + ";;", field: "passphrase"},
		{name: "a passphrase with an unescaped separator", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:WPA;P:" + secret + ";" + secret + ";C:" + testClaim + ";;", field: "payload"},
		{name: "a passphrase with a non-ASCII character", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:WPA;P:" + secret + "é;C:" + testClaim + ";;", field: "passphrase"},
		{name: "an SSID over 32 bytes", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:" + secret + secret + secret + ";T:nopass;C:" + testClaim + ";;", field: "ssid"},
		{name: "a nickname with a control character", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:nopass;C:" + testClaim + ";N:" + secret + "\x07;;", field: "nickname"},
		{name: "a claim token with a bad character", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:nopass;C:" + secret + "!!;;", field: "claim"},
		{name: "an unknown key", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:nopass;C:" + testClaim + ";X:" + secret + ";;", field: "payload"},
		{name: "a Wi-Fi QR code instead of a setup payload", args: []string{"--file", "-"}, stdin: "WIFI:S:HomeNet;T:WPA;P:" + secret + ";;", field: "payload"},
		{name: "a payload over the size cap", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:WPA;P:" + strings.Repeat(secret, 200) + ";;", field: "payload"},
		{name: "invalid UTF-8", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:" + secret + "\xff;T:nopass;C:" + testClaim + ";;", field: "payload"},
		{name: "a missing final separator", args: []string{"--file", "-"}, stdin: "CAMSETUP:V:1;S:HomeNet;T:WPA;P:" + secret + ";C:" + testClaim + ";", field: "payload"},
		{name: "the payload given as --file", args: []string{"--file", "CAMSETUP:V:1;S:HomeNet;T:WPA;P:" + secret + ";C:" + testClaim + ";;"}, wantErr: "not the payload itself"},
		{name: "the payload given as an argument", args: []string{"CAMSETUP:V:1;S:HomeNet;T:WPA;P:" + secret + ";C:" + testClaim + ";;"}, wantErr: "never from an argument"},
		{name: "a file that does not exist", args: []string{"--file", "/nonexistent/" + secret}, wantErr: "no such file"},
		{name: "no --file", args: nil, wantErr: "--file is required"},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			var out, errb bytes.Buffer
			err := onboardCmd(append([]string{"--state", dir}, tt.args...), strings.NewReader(tt.stdin), &out, &errb)
			if err == nil {
				t.Fatal("accepted")
			}
			var fe *onboard.FieldError
			switch {
			case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
				t.Fatalf("error %q, want one naming the %s", err, tt.field)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q, want it to say %q", err, tt.wantErr)
			}
			all := err.Error() + out.String() + errb.String()
			if l := leaked(all, secret, "S3cret", "HomeNet"); l != nil {
				t.Fatalf("onboard repeated %q: %s", l, all)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Fatal("a refused payload made the state directory")
			}
		})
	}
}

// camagent run's logger redacts what onboarding sealed, whatever the log format.
func TestOnboardedValuesAreRedactedFromRunLogs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := onboardCmd([]string{"--state", dir, "--file", "-"}, strings.NewReader(testPayload(t)), new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	guard := egress.New()
	if err := agent.LoadPrivacy(dir, guard); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := newLogger(&buf, "debug", format, guard)
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("joining "+testSSID, "ssid", testSSID, "err", fmt.Errorf("wrap: %s", strings.ToUpper(testNick)))
			log.With("name", testNick).Info("x", "psk", []byte(testPass))
			if l := leaked(buf.String(), testSSID, testPass, testNick); l != nil {
				t.Fatalf("the run log carries %q:\n%s", l, buf.String())
			}
			if !strings.Contains(buf.String(), egress.Redacted) {
				t.Fatalf("nothing redacted:\n%s", buf.String())
			}
		})
	}
}

func TestResetNeedsYesThenWipes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := onboardCmd([]string{"--state", dir, "--file", "-"}, strings.NewReader(testPayload(t)), new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := resetCmd([]string{"--state", dir}, &out, &errb); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("reset without --yes: %v", err)
	}
	if _, err := seal.LoadSecret(dir); err != nil {
		t.Fatalf("reset without --yes touched the device secret: %v", err)
	}
	if err := resetCmd([]string{"--state", dir, "--yes"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "wiped") {
		t.Fatalf("output %q", out.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d files left after reset, the first %s", len(ents), ents[0].Name())
	}
}
