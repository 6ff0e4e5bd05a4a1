package signal

import (
	"crypto/rand"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"
)

// Sizes of sealed answers.
const (
	// answerKeySize is the size of an X25519 public key, Offer.AnswerKey.
	answerKeySize = 32
	// minSealedSize and maxSealedSize bound SealedAnswer.Sealed: a session id of 16 to 64
	// digits, a line feed and an SDP of "v=0\n" to MaxSDPSize bytes, sealed.
	minSealedSize = 16 + 1 + len("v=0\n") + box.AnonymousOverhead
	maxSealedSize = 64 + 1 + MaxSDPSize + box.AnonymousOverhead
)

// AnswerKey is a viewer's X25519 key pair for one session: the offer carries its public half
// (Offer.AnswerKey), the camera seals its answer to it (Seal), and only the holder of the
// private half opens it (Open). Make one per offer with NewAnswerKey; its private half never
// leaves the viewer.
type AnswerKey struct {
	public, private *[32]byte
}

// NewAnswerKey makes a fresh AnswerKey from crypto/rand.
func NewAnswerKey() *AnswerKey {
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		panic("signal: crypto/rand failed: " + err.Error()) // crypto/rand.Reader never fails (Go 1.24+)
	}
	return &AnswerKey{public: pub, private: priv}
}

// Public returns a copy of the public half, for Offer.AnswerKey.
func (k *AnswerKey) Public() []byte { return append([]byte(nil), k.public[:]...) }

// probeScalar is any scalar: X25519 with it fails exactly for the low-order points.
var probeScalar = [32]byte{9}

// checkAnswerKey checks that key is an X25519 public key of the right size and not of low
// order: sealed to a low-order point, a box's shared secret is all zeros, and anyone could
// open the answer. what names the key in the errors.
func checkAnswerKey(what string, key []byte) error {
	if len(key) != answerKeySize {
		return fmt.Errorf("%w: %s of %d bytes, want %d", ErrMalformed, what, len(key), answerKeySize)
	}
	if _, err := curve25519.X25519(probeScalar[:], key); err != nil {
		return fmt.Errorf("%w: %s is a low-order point", ErrMalformed, what)
	}
	return nil
}

// String names the key by nothing secret.
func (k *AnswerKey) String() string { return "signal.AnswerKey" }

// Open opens a SealedAnswer sealed to k and returns the Answer, which it validates. It fails
// with ErrMalformed when the answer was sealed to another key, was altered, or is for another
// session than the one it names.
func (k *AnswerKey) Open(s SealedAnswer) (Answer, error) {
	if err := s.Validate(); err != nil {
		return Answer{}, err
	}
	pt, ok := box.OpenAnonymous(nil, s.Sealed, k.public, k.private)
	if !ok {
		return Answer{}, fmt.Errorf("%w: the sealed answer does not open with this session's answer key", ErrMalformed)
	}
	session, sdp, found := strings.Cut(string(pt), "\n")
	if !found || session != s.Session {
		return Answer{}, fmt.Errorf("%w: the sealed answer is for another session", ErrMalformed)
	}
	a := Answer{V: s.V, Session: session, SDP: sdp}
	if err := a.Validate(); err != nil {
		return Answer{}, err
	}
	return a, nil
}

// Seal seals a to the viewer's answer key (an Offer.AnswerKey) for sending: only the holder of
// that key's private half can open it. It validates a and the key's size.
func Seal(a Answer, answerKey []byte) (SealedAnswer, error) {
	if err := a.Validate(); err != nil {
		return SealedAnswer{}, err
	}
	if err := checkAnswerKey("answer key", answerKey); err != nil {
		return SealedAnswer{}, err
	}
	to := (*[32]byte)(answerKey)
	sealed, err := box.SealAnonymous(nil, []byte(a.Session+"\n"+a.SDP), to, rand.Reader)
	if err != nil {
		return SealedAnswer{}, fmt.Errorf("signal: seal answer: %w", err)
	}
	return SealedAnswer{V: a.V, Session: a.Session, Sealed: sealed}, nil
}
