package egress

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

func b64std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// FuzzCheck feeds arbitrary payloads to Check and Redact: neither may panic, Redact's result
// must pass Check, and a payload Check accepts must come out of Redact unchanged.
func FuzzCheck(f *testing.F) {
	for _, p := range benignPayloads() {
		f.Add([]byte(p))
	}
	f.Add([]byte(`{"n":"Caf\u00e9 Gr\u00fcn 7","p":"tr0ub4dor%263%2Fhorse"}`))
	f.Add([]byte("Q2FuYXJ5TmV0LTVH"))
	g := canaryGuard(f)
	g.Set(KindBSSID, canaryMAC)
	g.Set(KindAddress, "10.0.0.7")
	g.Set(KindEmail, "ab") // a short value too
	f.Fuzz(func(t *testing.T, p []byte) {
		err := g.Check(p)
		r := g.Redact(string(p))
		if e := g.Check([]byte(r)); e != nil {
			t.Fatalf("Redact left a value behind (%v): %q", e, r)
		}
		if err == nil && r != string(p) {
			t.Fatalf("Redact changed a clean payload: %q", r)
		}
	})
}

// FuzzEmbedded writes a canary between arbitrary bytes, in one of the encodings the guard
// promises to see, and checks that Check refuses it whatever surrounds it: this is what makes
// the base64 alignment argument, the normalization and the decoded passes sound.
func FuzzEmbedded(f *testing.F) {
	f.Add([]byte(`{"a":"`), []byte(`"}`), byte(0))
	f.Add([]byte("x"), []byte("yz"), byte(7))
	f.Add([]byte{}, []byte{0xff}, byte(23))
	g := canaryGuard(f)
	values := []string{canarySSID, canaryPass, canaryNick}
	encoders := []func([]byte) string{
		func(b []byte) string { return string(b) },
		func(b []byte) string { return strings.ToUpper(string(b)) },
		func(b []byte) string { return strings.ToLower(string(b)) },
		hex.EncodeToString,
		func(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) },
		b64std,
		b64url,
		base64.RawStdEncoding.EncodeToString,
		func(b []byte) string { return url.QueryEscape(string(b)) },
		func(b []byte) string { return url.PathEscape(string(b)) },
		func(b []byte) string {
			j, _ := json.Marshal(string(b))
			return string(j)
		},
		func(b []byte) string { return url.QueryEscape(b64std(b)) },
		func(b []byte) string { // a JSON document carried in a JSON string
			j, _ := json.Marshal(string(b))
			j, _ = json.Marshal(`{"v":` + string(j) + `}`)
			return string(j)
		},
		func(b []byte) string { // a path-escaped URL marshalled into JSON
			j, _ := json.Marshal("https://example.net/" + url.PathEscape(string(b)))
			return string(j)
		},
	}
	f.Fuzz(func(t *testing.T, prefix, suffix []byte, how byte) {
		if len(prefix)+len(suffix) > 4096 {
			return
		}
		v := values[int(how)%len(values)]
		enc := encoders[int(how)/len(values)%len(encoders)]
		data := append(append(append([]byte{}, prefix...), v...), suffix...)
		p := enc(data)
		if err := g.Check([]byte(p)); err == nil {
			t.Fatalf("encoder %d of %q not refused: %q", int(how)/len(values)%len(encoders), v, p)
		}
	})
}
