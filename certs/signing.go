package certs

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"regexp"

	"github.com/camagent/camagent/internal/strictjson"
)

// Domain-separation prefixes: a signature made for one kind of document can never be replayed
// as another kind.
const (
	domainCommand = "camagent/command/v1\n"
	domainKeySet  = "camagent/keyset/v1\n"
	domainGrant   = "camagent/grant/v1\n"
	domainState   = "camagent/desired/v1\n"
)

var keyIDRe = regexp.MustCompile(`^k-[0-9a-f]{16}$`)

// KeyID returns the id of an Ed25519 public key: "k-" and the first 8 bytes of its SHA-256
// in hex. Ids are derived, never chosen, so two different keys cannot share one.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "k-" + hex.EncodeToString(sum[:8])
}

// SigningKey is an Ed25519 private key with its id. Its String and LogValue never show the key.
// It cannot be compared with ==.
type SigningKey struct {
	_   [0]func() // not comparable
	id  string
	key ed25519.PrivateKey
}

// NewSigningKey makes a fresh Ed25519 signing key.
func NewSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate signing key: %w", err)
	}
	return signingKeyFrom(priv), nil
}

func signingKeyFrom(priv ed25519.PrivateKey) *SigningKey {
	return &SigningKey{id: KeyID(priv.Public().(ed25519.PublicKey)), key: priv}
}

// ID returns the key's id.
func (k *SigningKey) ID() string { return k.id }

// Public returns the key's public half with its id.
func (k *SigningKey) Public() PublicKey {
	return PublicKey{ID: k.id, Key: k.key.Public().(ed25519.PublicKey)}
}

// String names the key by id only.
func (k *SigningKey) String() string { return "SigningKey(" + k.id + ")" }

func (k *SigningKey) sign(domain string, body []byte) []byte {
	msg := make([]byte, 0, len(domain)+len(body))
	msg = append(append(msg, domain...), body...)
	return ed25519.Sign(k.key, msg)
}

// MarshalSigningKeyPEM encodes the key as PKCS#8 PEM, for a 0600 file.
func MarshalSigningKeyPEM(k *SigningKey) ([]byte, error) { return MarshalKeyPEM(k.key) }

// ParseSigningKeyPEM decodes a PKCS#8 PEM Ed25519 key.
func ParseSigningKeyPEM(b []byte) (*SigningKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: no PRIVATE KEY PEM block", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: signing key: %v", ErrMalformed, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: signing key is %T, want Ed25519", ErrMalformed, k)
	}
	return signingKeyFrom(priv), nil
}

// PublicKey is an Ed25519 verification key with its id, as it appears in a key set.
type PublicKey struct {
	ID  string `json:"kid"`
	Key []byte `json:"pub"`
}

func (p PublicKey) check() error {
	if len(p.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: key %q has %d bytes, want %d", ErrMalformed, p.ID, len(p.Key), ed25519.PublicKeySize)
	}
	if p.ID != KeyID(p.Key) {
		return fmt.Errorf("%w: key id %q does not match its key", ErrMalformed, p.ID)
	}
	return nil
}

// signed is the wire form of every signed document: the exact body bytes that were signed,
// the signer's key id and the signature, base64url without padding.
type signed struct {
	V    int    `json:"v"`
	KID  string `json:"kid"`
	Body string `json:"body"`
	Sig  string `json:"sig"`
}

func seal(k *SigningKey, domain string, body []byte) ([]byte, error) {
	return json.Marshal(signed{
		V:    1,
		KID:  k.id,
		Body: base64.RawURLEncoding.EncodeToString(body),
		Sig:  base64.RawURLEncoding.EncodeToString(k.sign(domain, body)),
	})
}

// openUnverified returns the body of a signed document of at most max bytes without looking
// at its key or signature. Only for bookkeeping that trusts nothing in it.
func openUnverified(b []byte, max int) ([]byte, error) {
	if len(b) > max {
		return nil, fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, len(b), max)
	}
	var s signed
	if err := strictjson.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	body, err := base64.RawURLEncoding.DecodeString(s.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	return body, nil
}

// open parses a signed document of at most max bytes, finds its key through lookup and checks
// the signature. It returns the signed body and the key id.
func open(b []byte, max int, domain string, lookup func(kid string) (ed25519.PublicKey, bool)) ([]byte, string, error) {
	if len(b) > max {
		return nil, "", fmt.Errorf("%w: %d bytes, cap %d", ErrTooLarge, len(b), max)
	}
	var s signed
	if err := strictjson.Unmarshal(b, &s); err != nil {
		return nil, "", fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if s.V != 1 {
		return nil, "", fmt.Errorf("%w: envelope version %d, want 1", ErrMalformed, s.V)
	}
	if !keyIDRe.MatchString(s.KID) {
		return nil, "", fmt.Errorf("%w: key id %q", ErrMalformed, s.KID)
	}
	body, err := base64.RawURLEncoding.DecodeString(s.Body)
	if err != nil {
		return nil, "", fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, "", fmt.Errorf("%w: signature encoding", ErrMalformed)
	}
	pub, ok := lookup(s.KID)
	if !ok {
		return nil, s.KID, fmt.Errorf("%w: %s", ErrUnknownKey, s.KID)
	}
	msg := append([]byte(domain), body...)
	if !ed25519.Verify(pub, msg, sig) {
		return nil, s.KID, fmt.Errorf("%w: key %s", ErrBadSignature, s.KID)
	}
	return body, s.KID, nil
}
