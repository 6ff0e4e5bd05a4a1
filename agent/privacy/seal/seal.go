package seal

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
)

// Version is the sealed format's version, its first byte.
const Version byte = 1

// Overhead is how many bytes sealing adds to a plaintext: the version byte, the 24-byte nonce
// and the 16-byte tag.
const Overhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// MaxFileSize caps a sealed file read by ReadFile.
const MaxFileSize = 64 << 10

// aead returns the XChaCha20-Poly1305 instance for purpose, keyed through HKDF with
// "camagent/v1/seal/<purpose>".
func (s *Secret) aead(purpose string) cipher.AEAD {
	a, err := chacha20poly1305.NewX(s.derive("camagent/v1/seal/"+purpose, chacha20poly1305.KeySize))
	if err != nil {
		panic("seal: " + err.Error()) // only a wrong key size fails
	}
	return a
}

// additionalData binds the format version and the purpose. The key already depends on the
// purpose; binding it here too keeps a message tied to its purpose even if keys were ever
// shared between purposes.
func additionalData(v byte, purpose string) []byte {
	ad := make([]byte, 0, 16+len(purpose))
	ad = append(ad, "camagent-seal"...)
	ad = append(ad, 0, v)
	return append(ad, purpose...)
}

// Seal encrypts and authenticates plaintext for purpose (a constant naming what is sealed,
// such as PurposeSettings) with a fresh random nonce. The result is len(plaintext)+Overhead
// bytes and opens only with Open, the same Secret and the same purpose.
func (s *Secret) Seal(purpose string, plaintext []byte) []byte {
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, Overhead+len(plaintext))
	out[0] = Version
	nonce := out[1:]
	rand.Read(nonce) // never fails (crypto/rand, Go 1.24+)
	return s.aead(purpose).Seal(out, nonce, plaintext, additionalData(Version, purpose))
}

// Open checks and decrypts a message from Seal for purpose. It returns ErrVersion for an
// unknown format and ErrOpen for anything that does not authenticate: another device's or a
// reset device's secret, another purpose, a truncated or altered message.
func (s *Secret) Open(purpose string, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte overhead", ErrOpen, len(sealed), Overhead)
	}
	if sealed[0] != Version {
		return nil, fmt.Errorf("%w: %d", ErrVersion, sealed[0])
	}
	nonce := sealed[1 : 1+chacha20poly1305.NonceSizeX]
	pt, err := s.aead(purpose).Open(nil, nonce, sealed[1+chacha20poly1305.NonceSizeX:], additionalData(sealed[0], purpose))
	if err != nil {
		return nil, fmt.Errorf("%w: wrong device secret or purpose, or altered data", ErrOpen)
	}
	return pt, nil
}

// WriteFile seals plaintext for purpose and writes it to path atomically with mode 0600. The
// directory must exist (and should be the 0700 state directory). A plaintext over
// MaxFileSize-Overhead bytes is refused, leaving path as it was: ReadFile could not read it.
func (s *Secret) WriteFile(path, purpose string, plaintext []byte) error {
	if n := len(plaintext) + Overhead; n > MaxFileSize {
		return fmt.Errorf("seal: %s: %d bytes sealed, over the %d-byte cap", path, n, MaxFileSize)
	}
	if err := atomicfile.WriteFile(path, s.Seal(purpose, plaintext), 0o600); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	return nil
}

// ReadFile reads a file written by WriteFile, at most MaxFileSize bytes, and opens it for
// purpose. A missing file is reported with an error matching fs.ErrNotExist.
func (s *Secret) ReadFile(path, purpose string) ([]byte, error) {
	b, err := cappedfile.Read(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	pt, err := s.Open(purpose, b)
	if err != nil {
		return nil, fmt.Errorf("seal: %s: %w", path, err)
	}
	return pt, nil
}
