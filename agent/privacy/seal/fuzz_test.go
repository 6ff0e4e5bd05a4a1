package seal

import (
	"bytes"
	"testing"
)

// fuzzSecret is fixed so that the committed corpus holds messages that really open.
func fuzzSecret() *Secret {
	s, _ := NewSecret([]byte("camagent seal fuzz secret 32 b!!"))
	return s
}

// FuzzOpen feeds arbitrary bytes, as read from a sealed file, to Open: it must never panic,
// and anything it opens must be exactly what was sealed, so changing one byte of it must make
// it fail.
func FuzzOpen(f *testing.F) {
	s := fuzzSecret()
	f.Add(s.Seal(PurposeSettings, []byte(`{"v":1,"ssid":"x"}`)))
	f.Add([]byte{Version})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := s.Open(PurposeSettings, b)
		if err != nil {
			return
		}
		if len(pt) != len(b)-Overhead {
			t.Fatalf("opened %d bytes from %d", len(pt), len(b))
		}
		c := bytes.Clone(b)
		c[len(c)-1] ^= 1
		if _, err := s.Open(PurposeSettings, c); err == nil {
			t.Fatal("an altered message still opens")
		}
	})
}
