package egress

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Canaries: long values (matched anywhere), with a mixed-case ASCII one, one with a space and
// non-ASCII letters, and a passphrase with characters JSON and URLs escape.
const (
	canarySSID = "CanaryNet-5G"
	canaryPass = "tr0ub4dor&3/horse"
	canaryNick = "Café Grün 7"
	canaryMAC  = "a4:2b:b0:11:22:33"
)

func canaryGuard(t testing.TB) *Guard {
	t.Helper()
	g := New()
	g.Set(KindSSID, canarySSID)
	g.Set(KindPassphrase, canaryPass)
	g.Set(KindNickname, canaryNick)
	return g
}

// anyLayer in an expectation accepts any Layer.
const anyLayer Encoding = "*"

// encodings returns the ways a value can be written into a payload, each with the Encoding
// (and Layer) Check must report.
func encodings(v string) []struct {
	name      string
	text      string
	enc, layr Encoding
} {
	b := []byte(v)
	allPct := func(upper bool) string {
		var s strings.Builder
		for _, c := range b {
			f := "%%%02x"
			if upper {
				f = "%%%02X"
			}
			fmt.Fprintf(&s, f, c)
		}
		return s.String()
	}
	allU := func() string {
		var s strings.Builder
		for _, r := range v {
			fmt.Fprintf(&s, `\u%04X`, r)
		}
		return s.String()
	}
	js, _ := json.Marshal(v)
	type e = struct {
		name      string
		text      string
		enc, layr Encoding
	}
	out := []e{
		{"raw", v, Raw, ""},
		{"upper case", strings.ToUpper(v), CaseFolded, ""},
		{"lower case", strings.ToLower(v), CaseFolded, ""},
		{"lower hex", hex.EncodeToString(b), Hex, ""},
		{"upper hex", strings.ToUpper(hex.EncodeToString(b)), Hex, ""},
		{"hex of the lower-case value", hex.EncodeToString([]byte(strings.ToLower(v))), Hex, ""},
		{"padded base64", base64.StdEncoding.EncodeToString(b), Base64, ""},
		{"unpadded base64", base64.RawStdEncoding.EncodeToString(b), Base64, ""},
		{"padded base64url", base64.URLEncoding.EncodeToString(b), Base64, ""},
		{"unpadded base64url", base64.RawURLEncoding.EncodeToString(b), Base64, ""},
		{"base64 of the lower-case value", base64.StdEncoding.EncodeToString([]byte(strings.ToLower(v))), Base64, ""},
		{"query escaping (+ for space)", url.QueryEscape(v), PercentEncoded, ""},
		{"path escaping (%20 for space)", url.PathEscape(v), PercentEncoded, ""},
		{"every byte percent-encoded, lower hex", allPct(false), PercentEncoded, ""},
		{"every byte percent-encoded, upper hex", allPct(true), PercentEncoded, ""},
		{"every character \\u-escaped", allU(), JSONEscaped, ""},
		{"base64 inside query escaping", url.QueryEscape(base64.StdEncoding.EncodeToString(b)), Base64, anyLayer},
	}
	if string(js[1:len(js)-1]) != v {
		out = append(out, e{"encoding/json escaping", string(js[1 : len(js)-1]), JSONEscaped, ""})
	}
	if strings.Contains(v, "/") {
		out = append(out, e{"\\/ escaping", strings.ReplaceAll(v, "/", `\/`), JSONEscaped, ""})
	}
	// Inside a longer base64 run, at each of the three alignments, in both alphabets.
	for o := range 3 {
		data := append(append([]byte("xyz"[:o]), b...), "tail?>~"...)
		out = append(out,
			e{fmt.Sprintf("inside base64 at alignment %d", o), base64.StdEncoding.EncodeToString(data), Base64, ""},
			e{fmt.Sprintf("inside base64url at alignment %d", o), base64.RawURLEncoding.EncodeToString(data), Base64, ""})
	}
	return out
}

func TestCheckRefusesEveryEncodingOfEveryCanary(t *testing.T) {
	g := canaryGuard(t)
	for _, c := range []struct {
		kind Kind
		v    string
	}{{KindSSID, canarySSID}, {KindPassphrase, canaryPass}, {KindNickname, canaryNick}} {
		for _, e := range encodings(c.v) {
			t.Run(string(c.kind)+" "+e.name, func(t *testing.T) {
				payload := []byte(`{"v":1,"fw":"1.2.3","note":"` + e.text + `","n":42}`)
				err := g.Check(payload)
				var se *SensitiveError
				if !errors.As(err, &se) || !errors.Is(err, ErrSensitive) {
					t.Fatalf("not refused: %v", err)
				}
				want, layer := e.enc, e.layr
				if e.text == c.v {
					want = Raw // this encoding leaves the value as it is
				}
				if layer == anyLayer {
					layer = se.Layer // base64 inside percent-encoding may not need the decoding
				}
				if se.Kind != c.kind || se.Encoding != want || se.Layer != layer {
					t.Fatalf("refused as %s/%s/%s, want %s/%s/%s", se.Kind, se.Encoding, se.Layer, c.kind, want, layer)
				}
				if strings.Contains(err.Error(), c.v) || strings.Contains(err.Error(), e.text) {
					t.Fatalf("the error quotes the value: %v", err)
				}
			})
		}
	}
}

func TestCheckAcceptsNearMisses(t *testing.T) {
	g := canaryGuard(t)
	for _, v := range []string{canarySSID, canaryPass, canaryNick} {
		r := []rune(v)
		misses := map[string]string{
			"the value without its last character":  string(r[:len(r)-1]),
			"the value without its first character": string(r[1:]),
			"the value with a character changed":    string(r[:3]) + "#" + string(r[4:]),
			"the value cut by a space":              string(r[:4]) + " " + string(r[4:]),
		}
		for name, m := range misses {
			for _, e := range encodings(m) {
				if strings.HasPrefix(e.name, "inside base64") {
					continue // the filler around it may spell anything
				}
				payload := []byte(`{"note":"` + e.text + `"}`)
				if err := g.Check(payload); err != nil {
					t.Errorf("%s of %s, %s: refused: %v", name, v, e.name, err)
				}
			}
		}
	}
}

func TestCheckAcceptsOrdinaryMessages(t *testing.T) {
	g := canaryGuard(t)
	g.Set(KindBSSID, canaryMAC)
	g.Set(KindSSID, canarySSID, "home") // a short one too
	for name, p := range benignPayloads() {
		if err := g.Check([]byte(p)); err != nil {
			t.Errorf("%s refused: %v", name, err)
		}
	}
	if g.Refusals() != 0 {
		t.Fatalf("Refusals = %d", g.Refusals())
	}
}

// benignPayloads are messages of the shapes the agent sends, with no sensitive value.
func benignPayloads() map[string]string {
	return map[string]string{
		"device state": `{"v":1,"fw":"v0.9.1-3-gabc1234","cert_serial":"5a1f3c9e0b7d44e2a8c6f1b3d5e7a9c1","cert_not_after":1798675200,"keyset":3,"epoch":2,"rotation":"idle","streams":{"active":1,"viewers":2},"rssi_dbm":-61,"network_tag":"9f86d081884c7d659a2feaa0c55ad015"}`,
		"certificate":  `{"v":1,"cert":"-----BEGIN CERTIFICATE-----\nMIIBgTCCASegAwIBAgIQQrxZ4Gs2FA9j8NNEDOsJlTAKBggqhkjOPQQDAjAoMRcw\nFQYDVQQKEw5jYW1hZ2VudCBmbGVldDENMAsGA1UEAxMEZnV6ejAeFw0yNjExMDEx\nMTU1MDBaFw0yNjEyMDExMjAwMDBaMBMxETAPBgNVBAMTCGNhbS0wMDAxMFkwEwYH\nKoZIzj0CAQYIKoZIzj0DAQcDQgAECZKm2vmKUUvYxnwP93YUmDcqMEsX7NqGSrie\n-----END CERTIFICATE-----\n"}`,
		"sdp offer":    `{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\na=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A:BB:EA:33:0C:A4:60:A8:8E\r\na=rtpmap:96 H264/90000\r\n"}`,
		"form-encoded": `a=1&b=two+words&c=%7B%22x%22%3A1%7D`,
		"empty":        ``,
	}
}

func TestMatchesAreRawOnlyWhenExact(t *testing.T) {
	g := canaryGuard(t)
	var se *SensitiveError
	errors.As(g.Check([]byte("x "+canarySSID+" y")), &se)
	if se == nil || se.Encoding != Raw {
		t.Fatalf("exact match reported as %v", se)
	}
	errors.As(g.Check([]byte("x canarynet-5g y")), &se)
	if se == nil || se.Encoding != CaseFolded {
		t.Fatalf("folded match reported as %v", se)
	}
	errors.As(g.Check([]byte("x CAFÉ GRÜN 7 y")), &se)
	if se == nil || se.Kind != KindNickname || se.Encoding != CaseFolded {
		t.Fatalf("non-ASCII folded match reported as %v", se)
	}
}

func TestShortValuesMatchOnlyAsWholeWordsOrStrings(t *testing.T) {
	g := New()
	g.Set(KindSSID, "home")   // 4 bytes: words, hex words, base64 tokens
	g.Set(KindNickname, "Ab") // 2 bytes: whole JSON strings only
	refused := map[string]string{
		"the SSID as a JSON string":     `{"s":"home"}`,
		"the SSID in upper case":        `{"s":"HOME"}`,
		"the SSID after a dash":         `my-home`,
		"the SSID as a hex word":        `{"s":"686F6D65"}`,
		"the SSID as a base64 token":    `{"s":"aG9tZQ=="}`,
		"the SSID as unpadded base64":   `{"s":"aG9tZQ"}`,
		"the SSID percent-encoded":      `q=%68%6f%6d%65&x=1`,
		"the SSID JSON-escaped":         `{"s":"\u0068ome"}`,
		"the nickname as a JSON string": `{"n":"ab"}`,
		"the nickname JSON-escaped":     `"\u0061\u0062"`,
		"the nickname percent-encoded":  `%61b`,
	}
	for name, p := range refused {
		if err := g.Check([]byte(p)); err == nil {
			t.Errorf("%s: not refused", name)
		}
	}
	accepted := map[string]string{
		"the SSID inside a word":             `homepage`,
		"the SSID at the end of a word":      `athome`,
		"its hex inside a longer hex string": `00686f6d6500`,
		"its base64 inside a longer token":   `xaG9tZQ`,
		"the nickname inside a word":         `about`,
		"the nickname's hex as a word":       `"4162"`,
		"the nickname's base64 as a token":   `"QWI="`,
		"a certificate":                      benignPayloads()["certificate"],
		"an SDP offer":                       benignPayloads()["sdp offer"],
	}
	for name, p := range accepted {
		if err := g.Check([]byte(p)); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

func TestATinyNicknameDoesNotStopTheDevicesOwnMessages(t *testing.T) {
	g := New()
	g.Set(KindNickname, "Cam")
	for _, p := range []string{`dev/cam-0001/up/state`, `{"device":"cam-0001","msg":"cam ok"}`} {
		if err := g.Check([]byte(p)); err != nil {
			t.Errorf("%s refused: %v", p, err)
		}
	}
	if g.Check([]byte(`{"nickname":"cam"}`)) == nil || g.Redact("Cam") != Redacted {
		t.Fatal("the nickname itself was not caught")
	}
}

func TestBSSIDsAreFoundInEverySpelling(t *testing.T) {
	g := New()
	g.Set(KindBSSID, "A4-2B-B0-11-22-33")
	for _, p := range []string{
		"a4:2b:b0:11:22:33", "A4:2B:B0:11:22:33", "a4-2b-b0-11-22-33", "a42bb0112233",
		"A42BB0112233", "a42b.b011.2233", "\xa4\x2b\xb0\x11\x22\x33",
		base64.StdEncoding.EncodeToString([]byte("\xa4\x2b\xb0\x11\x22\x33")),
		`{"b":"a4%3A2b%3Ab0%3A11%3A22%3A33"}`,
	} {
		var se *SensitiveError
		if !errors.As(g.Check([]byte(p)), &se) || se.Kind != KindBSSID {
			t.Errorf("%q: not refused as a bssid: %v", p, se)
		}
	}
	if err := g.Check([]byte("a4:2b:b0:11:22:34")); err != nil {
		t.Errorf("a neighbouring BSSID refused: %v", err)
	}
}

func TestAddressesAreFoundInEverySpelling(t *testing.T) {
	g := New()
	g.Set(KindAddress, "192.168.1.23", "fe80::1:2")
	for _, p := range []string{
		`{"ip":"192.168.1.23"}`, `::ffff:192.168.1.23`, `"FE80::1:2"`,
		`fe80:0000:0000:0000:0000:0000:0001:0002`,
	} {
		var se *SensitiveError
		if !errors.As(g.Check([]byte(p)), &se) || se.Kind != KindAddress {
			t.Errorf("%q: not refused as an address: %v", p, se)
		}
	}
	for _, p := range []string{`192.168.1.230`, `10.192.168.1`, `fe80::1:20`} {
		if err := g.Check([]byte(p)); err != nil {
			t.Errorf("%q refused: %v", p, err)
		}
	}
}

func TestSetReplacesTheValuesOfAKind(t *testing.T) {
	g := New()
	g.Set(KindSSID, "OldNetwork-1")
	g.Set(KindNickname, "Front door cam")
	g.Set(KindSSID, "NewNetwork-2")
	if err := g.Check([]byte("OldNetwork-1")); err != nil {
		t.Fatalf("the replaced SSID is still refused: %v", err)
	}
	if g.Check([]byte("NewNetwork-2")) == nil || g.Check([]byte("Front door cam")) == nil {
		t.Fatal("a current value is not refused")
	}
	if g.Len() != 2 {
		t.Fatalf("Len = %d, want 2", g.Len())
	}
	g.Set(KindNickname)
	if err := g.Check([]byte("Front door cam")); err != nil || g.Len() != 1 {
		t.Fatalf("Set with no values did not forget the kind: %v, Len %d", err, g.Len())
	}
	g.Clear()
	if err := g.Check([]byte("NewNetwork-2")); err != nil || g.Len() != 0 {
		t.Fatalf("Clear did not forget: %v, Len %d", err, g.Len())
	}
}

func TestZeroGuardRefusesNothing(t *testing.T) {
	var g Guard
	if err := g.Check([]byte("anything")); err != nil || g.Redact("anything") != "anything" {
		t.Fatal("an empty guard refused or redacted")
	}
	g.Set(KindSSID, "", "")
	if g.Len() != 0 {
		t.Fatal("empty strings were registered")
	}
}

func TestRefusalsAreCounted(t *testing.T) {
	g := canaryGuard(t)
	g.Check([]byte("fine"))
	g.Check([]byte(canarySSID))
	g.Check([]byte(hex.EncodeToString([]byte(canaryPass))))
	g.Redact(canarySSID)
	if g.Refusals() != 2 {
		t.Fatalf("Refusals = %d, want 2", g.Refusals())
	}
	if g.Redactions() != 1 {
		t.Fatalf("Redactions = %d, want 1", g.Redactions())
	}
}

func TestGuardNeverPrintsItsValues(t *testing.T) {
	g := canaryGuard(t)
	for _, f := range []string{"%v", "%+v", "%s"} {
		if s := fmt.Sprintf(f, g); strings.Contains(s, "Canary") || strings.Contains(s, "canary") {
			t.Fatalf("%s printed a value: %s", f, s)
		}
	}
}

func TestCheckIsSafeWhileValuesChange(t *testing.T) {
	g := canaryGuard(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if g.Check([]byte(canaryPass)) == nil {
					t.Error("the passphrase, never replaced, passed")
					return
				}
				g.Redact("x " + canaryNick)
			}
		})
	}
	for i := range 200 {
		g.Set(KindSSID, fmt.Sprintf("Network-%04d", i))
	}
	close(stop)
	wg.Wait()
	if g.Check([]byte("Network-0199")) == nil || g.Check([]byte("Network-0198")) != nil {
		t.Fatal("the last Set did not win")
	}
}

func TestRedactReplacesEachValueAndKeepsTheRest(t *testing.T) {
	g := canaryGuard(t)
	tests := []struct{ name, in, want string }{
		{"a raw value", "joined " + canarySSID + " ok", "joined [redacted] ok"},
		{"a case-folded value", "joined canarynet-5g ok", "joined [redacted] ok"},
		{"a non-ASCII value folded", "name=CAFÉ GRÜN 7;", "name=[redacted];"},
		{"two values", canarySSID + "/" + canaryNick, "[redacted]/[redacted]"},
		{"the same value twice", canarySSID + canarySSID, "[redacted]"},
		{"a hex value", "h=" + hex.EncodeToString([]byte(canarySSID)) + ".", "h=[redacted]."},
		{"an error string", "connect " + canarySSID + ": wrong password", "connect [redacted]: wrong password"},
		{"nothing sensitive", "all fine", "all fine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := g.Redact(tt.in); got != tt.want {
				t.Fatalf("Redact = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRedactLeavesNoEncodingBehind(t *testing.T) {
	g := canaryGuard(t)
	for _, v := range []string{canarySSID, canaryPass, canaryNick} {
		for _, e := range encodings(v) {
			in := "before " + e.text + " after"
			got := g.Redact(in)
			if g.Check([]byte(got)) != nil {
				t.Errorf("%s: %q still carries the value", e.name, got)
			}
			if !strings.Contains(got, Redacted) {
				t.Errorf("%s: nothing redacted in %q", e.name, got)
			}
		}
	}
}
