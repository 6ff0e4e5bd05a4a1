package seal

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/camagent/camagent/internal/atomicfile"
)

// SecretFile is the device secret's file name in the state directory.
const SecretFile = "device.secret"

// SecretSize is the device secret's size in bytes.
const SecretSize = 32

// Secret is the device secret. It cannot be compared with ==, and it prints as
// "seal.Secret([redacted])" in every format and log.
type Secret struct {
	_   [0]func() // not comparable
	key [SecretSize]byte
}

var (
	_ fmt.Stringer   = (*Secret)(nil)
	_ fmt.GoStringer = (*Secret)(nil)
	_ slog.LogValuer = (*Secret)(nil)
)

// NewSecret returns a Secret holding a copy of b, which must be SecretSize bytes. It is for
// tests and for a secret kept outside the state directory (a secure element); devices use
// LoadOrCreateSecret.
func NewSecret(b []byte) (*Secret, error) {
	if len(b) != SecretSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadSecret, len(b), SecretSize)
	}
	s := &Secret{}
	copy(s.key[:], b)
	return s, nil
}

// String returns a fixed placeholder: the secret never reaches a log or an error.
func (s *Secret) String() string { return "seal.Secret([redacted])" }

// GoString is String, so %#v redacts too.
func (s *Secret) GoString() string { return s.String() }

// LogValue implements slog.LogValuer with the placeholder.
func (s *Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// derive returns n bytes of key material for info through HKDF-SHA256 (RFC 5869 §2) with no
// salt: the secret is already uniformly random, so the extract step needs none.
func (s *Secret) derive(info string, n int) []byte {
	k, err := hkdf.Key(sha256.New, s.key[:], nil, info, n)
	if err != nil {
		// Only a length over 255*32 bytes fails, and every caller asks for 32.
		panic("seal: hkdf: " + err.Error())
	}
	return k
}

// LoadSecret reads the device secret from dir. A missing file is reported with an error
// matching fs.ErrNotExist. A file that is not a regular file, is not exactly SecretSize bytes
// or has any group or other permission bit set is refused with ErrBadSecret and its path,
// so a secret that may have been read by someone else is never used.
func LoadSecret(dir string) (*Secret, error) {
	path := filepath.Join(dir, SecretFile)
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	if err := checkSecretInfo(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	defer f.Close()
	// Check what was opened, in case the file was swapped between Lstat and Open.
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	if err := checkSecretInfo(path, fi); err != nil {
		return nil, err
	}
	s := &Secret{}
	if _, err := io.ReadFull(f, s.key[:]); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadSecret, path, err)
	}
	return s, nil
}

func checkSecretInfo(path string, fi fs.FileInfo) error {
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file (mode %s)", ErrBadSecret, path, fi.Mode())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%w: %s has mode %#o, which lets group or others at it; want 0600", ErrBadSecret, path, fi.Mode().Perm())
	case fi.Size() != SecretSize:
		return fmt.Errorf("%w: %s is %d bytes, want %d", ErrBadSecret, path, fi.Size(), SecretSize)
	}
	return nil
}

// newSecretName is the private name a new secret is written under before it is linked into
// place: a temporary file's name as internal/atomicfile makes them, so that one a SIGKILL or a
// power cut left behind (the secret itself, or a second link to it) is removed at the agent's
// next start with the others (atomicfile.RemoveTemps).
func newSecretName(tag uint64) string {
	return "." + SecretFile + ".tmp-" + strconv.FormatUint(tag, 10)
}

// LoadOrCreateSecret returns the device secret in dir, making it first if there is none: 32
// bytes from crypto/rand written 0600, atomically, in dir (made 0700 if needed). Making it is
// exclusive: if two processes race, both end up with the one that was linked into place
// first. A secret that exists but is unusable is refused as LoadSecret refuses it; it is never
// replaced, because replacing it would silently make every sealed file unreadable.
func LoadOrCreateSecret(dir string) (*Secret, error) {
	s, err := LoadSecret(dir)
	if !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	if err := atomicfile.EnsurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	s = &Secret{}
	rand.Read(s.key[:]) // never fails (crypto/rand, Go 1.24+)
	var tag [8]byte
	rand.Read(tag[:])
	// Write the secret durably under a private name, then hard-link it into place: unlike a
	// rename, a link fails if the target exists, so a secret is never replaced once made.
	tmp := filepath.Join(dir, newSecretName(binary.BigEndian.Uint64(tag[:])))
	if err := atomicfile.WriteFile(tmp, s.key[:], 0o600); err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	defer os.Remove(tmp)
	path := filepath.Join(dir, SecretFile)
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		return LoadSecret(dir)
	} else if err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	if err := os.Remove(tmp); err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, fmt.Errorf("seal: device secret: %w", err)
	}
	return s, nil
}
