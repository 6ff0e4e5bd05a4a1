package wire

import (
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

const tokenHash = "0000000000000000000000000000000000000000000000000000000000000000"

func pemOf(typ string, headers map[string]string) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: []byte(strings.Repeat("\x30\x82", 40))}))
}

// A PEM field is one block exactly as pem.EncodeToMemory writes it: pem.Decode alone skips any
// text before the block and returns what follows it, and keeps RFC 1421 headers, so checking
// only its first block would let a CSR or certificate field carry free text (P1).
func TestPEMFieldsCannotCarryFreeText(t *testing.T) {
	csr := pemOf("CERTIFICATE REQUEST", nil)
	cert := pemOf("CERTIFICATE", nil)
	smuggle := func(block string) map[string]string {
		typ := "CERTIFICATE"
		if strings.Contains(block, "REQUEST") {
			typ = "CERTIFICATE REQUEST"
		}
		return map[string]string{
			"text before the block":          "ssid=HomeNet pass=hunter22\n" + block,
			"text after the block":           block + "ssid=HomeNet pass=hunter22\n",
			"a header in the block":          pemOf(typ, map[string]string{"Ssid": "HomeNet"}),
			"a second block after the first": block + pemOf("NOTE", nil),
			"no final newline":               strings.TrimSuffix(block, "\n"),
		}
	}
	if _, err := Encode(&CertRequest{V: 1, Kind: KindRequest, ReqID: "0123456789abcdef", CSR: csr, TokenHash: tokenHash}); err != nil {
		t.Fatalf("a plain CSR is refused: %v", err)
	}
	if _, err := Encode(&CertResponse{V: 1, ReqID: "0123456789abcdef", Cert: cert}); err != nil {
		t.Fatalf("a plain certificate is refused: %v", err)
	}
	for name, v := range smuggle(csr) {
		t.Run("a CSR with "+name, func(t *testing.T) {
			m := &CertRequest{V: 1, Kind: KindRequest, ReqID: "0123456789abcdef", CSR: v, TokenHash: tokenHash}
			if _, err := Encode(m); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Encode = %v, want ErrMalformed", err)
			}
		})
	}
	for name, v := range smuggle(cert) {
		t.Run("a certificate with "+name, func(t *testing.T) {
			m := &CertResponse{V: 1, ReqID: "0123456789abcdef", Cert: v}
			if _, err := Encode(m); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Encode = %v, want ErrMalformed", err)
			}
		})
	}
}
