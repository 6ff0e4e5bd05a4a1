package egress

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// mustJSON marshals v as encoding/json does, which escapes & < > as \u0026 \u003c \u003e.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A value often reaches a payload through more than one layer of escaping: a JSON document
// carried as a string inside another (an error body, a forwarded message), or a URL built with
// url.PathEscape and then marshalled into JSON. Each layer is undone in turn.
func TestCheckRefusesValuesUnderSeveralLayersOfEscaping(t *testing.T) {
	g := canaryGuard(t)
	g.Set(KindEmail, "ab") // a short value: a whole JSON string only
	inner := mustJSON(t, map[string]string{"pass": canaryPass})
	twice := mustJSON(t, map[string]string{"detail": inner})
	short := mustJSON(t, map[string]string{"detail": mustJSON(t, map[string]string{"detail": mustJSON(t, map[string]string{"e": "ab"})})})
	for name, tc := range map[string]struct {
		payload string
		kind    Kind
	}{
		"a JSON document inside a JSON string": {
			payload: twice, kind: KindPassphrase,
		},
		"a JSON document inside a JSON string inside a JSON string": {
			payload: mustJSON(t, map[string]string{"outer": twice}), kind: KindPassphrase,
		},
		"a short value in a JSON document nested twice": {
			payload: short, kind: KindEmail,
		},
		"a path-escaped URL marshalled into JSON": {
			payload: mustJSON(t, map[string]string{"url": "https://example.net/p/" + url.PathEscape(canaryPass)}), kind: KindPassphrase,
		},
		"a percent-encoded JSON document": {
			payload: "q=" + url.QueryEscape(inner), kind: KindPassphrase,
		},
		"a query-escaped form in a JSON string": {
			payload: mustJSON(t, map[string]string{"form": "n=" + url.PathEscape(canaryNick) + "&p=" + url.PathEscape(canaryPass)}), kind: KindNickname,
		},
		"base64 inside a JSON document inside a JSON string": {
			payload: mustJSON(t, map[string]string{"detail": mustJSON(t, map[string]string{"b": base64.StdEncoding.EncodeToString([]byte("x<" + canaryPass))})}), kind: KindPassphrase,
		},
	} {
		t.Run(name, func(t *testing.T) {
			var se *SensitiveError
			if err := g.Check([]byte(tc.payload)); !errors.As(err, &se) {
				t.Fatalf("not refused: %s", tc.payload)
			}
			if se.Kind != tc.kind {
				t.Fatalf("refused as %s, want %s", se.Kind, tc.kind)
			}
			if r := g.Redact(tc.payload); g.Check([]byte(r)) != nil {
				t.Fatalf("Redact left the value behind: %q", r)
			}
		})
	}
}

// Hex and base64 are case-sensitive encodings of the bytes, so a value shouted in capitals
// (an SSID shown upper-case, a nickname in a title) and then encoded has neither the hex nor
// the base64 of the value as registered or of its lower-case form.
func TestCheckRefusesHexAndBase64OfTheUpperCaseValue(t *testing.T) {
	g := canaryGuard(t)
	for kind, v := range map[Kind]string{KindSSID: canarySSID, KindPassphrase: canaryPass, KindNickname: canaryNick} {
		up := []byte(strings.ToUpper(v))
		for name, p := range map[string]string{
			"hex":              hex.EncodeToString(up),
			"base64":           base64.StdEncoding.EncodeToString(up),
			"base64 in a blob": base64.RawURLEncoding.EncodeToString(append([]byte("xy"), up...)),
		} {
			var se *SensitiveError
			if !errors.As(g.Check([]byte(`{"b":"`+p+`"}`)), &se) || se.Kind != kind {
				t.Errorf("%s of the upper-case %s: not refused (%v)", name, kind, se)
			}
		}
	}
	g.Set(KindSSID, "Home") // a short value: hex words and whole base64 tokens
	for _, p := range []string{hex.EncodeToString([]byte("HOME")), base64.StdEncoding.EncodeToString([]byte("HOME"))} {
		if g.Check([]byte(`{"b":"`+p+`"}`)) == nil {
			t.Errorf("%s, the upper-case short SSID, not refused", p)
		}
	}
}
