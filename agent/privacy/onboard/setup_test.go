package onboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSetupNeverPrintsItsPersonalFields(t *testing.T) {
	s := Setup{SSID: "CanarySSID-1", Passphrase: "canary-pass-2", Claim: "canaryClaimToken-3", Nickname: "Canary Nick 4", TimeZone: "Europe/Paris"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("onboarded", "setup", s)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("onboarded", "setup", &s)
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		fmt.Fprintf(&buf, f+"\n", s)
		fmt.Fprintf(&buf, f+"\n", &s)
	}
	fmt.Fprintln(&buf, s, []Setup{s}, map[string]Setup{"k": s}, struct{ S Setup }{s})
	j, err := json.Marshal(struct{ S Setup }{s})
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(j)
	out := buf.String()
	for _, c := range []string{"Canary", "canary", "Q2FuYXJ5", "43616e617279"} {
		if strings.Contains(out, c) {
			t.Fatalf("%q printed:\n%s", c, out)
		}
	}
	if !strings.Contains(out, s.ClaimHash()) || !strings.Contains(out, "Europe/Paris") {
		t.Fatalf("the redacted form lost the claim hash or time zone:\n%s", out)
	}
}

func TestClaimHashIsShortAndStable(t *testing.T) {
	a := Setup{Claim: claim}.ClaimHash()
	if !strings.HasPrefix(a, "sha256:") || len(a) != len("sha256:")+8 {
		t.Fatalf("ClaimHash = %q", a)
	}
	if b := (Setup{Claim: claim}).ClaimHash(); a != b {
		t.Fatal("ClaimHash is not stable")
	}
	if (Setup{}).ClaimHash() != "" {
		t.Fatal("no claim should hash to \"\"")
	}
}

func TestSecurityFollowsThePassphrase(t *testing.T) {
	if (Setup{}).Security() != SecurityNoPass || (Setup{Passphrase: "password"}).Security() != SecurityWPA {
		t.Fatal("Security does not follow Passphrase")
	}
}
