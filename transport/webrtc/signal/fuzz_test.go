package signal_test

import (
	"bytes"
	"testing"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// fuzzRoundTrip checks what every decoder promises: no panic, and a decoded message validates
// and survives re-encoding.
func fuzzRoundTrip(t *testing.T, m signal.Message, err error) {
	t.Helper()
	if err != nil {
		return
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("decoded message does not validate: %v", err)
	}
	b, err := signal.Encode(m)
	if err != nil {
		t.Fatalf("decoded message does not encode: %v", err)
	}
	again, err := signal.Decode(b)
	if err != nil {
		t.Fatalf("re-encoded message does not decode: %v", err)
	}
	b2, err := signal.Encode(again)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("encoding is not stable: %s vs %s (%v)", b, b2, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.Decode(b)
		fuzzRoundTrip(t, m, err)
	})
}

func FuzzDecodeOffer(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.DecodeOffer(b)
		fuzzRoundTrip(t, m, err)
	})
}

func FuzzDecodeSealedAnswer(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.DecodeSealedAnswer(b)
		fuzzRoundTrip(t, m, err)
		if err == nil {
			// Opening bytes from outside with a key they were not sealed to fails cleanly.
			if _, err := signal.NewAnswerKey().Open(m); err == nil {
				t.Fatal("a sealed answer opened with a fresh key")
			}
		}
	})
}

func FuzzDecodeCandidate(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.DecodeCandidate(b)
		fuzzRoundTrip(t, m, err)
	})
}

func FuzzDecodeBye(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.DecodeBye(b)
		fuzzRoundTrip(t, m, err)
	})
}

func FuzzDecodeRefusal(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := signal.DecodeRefusal(b)
		fuzzRoundTrip(t, m, err)
	})
}
