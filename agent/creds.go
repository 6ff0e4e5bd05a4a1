package agent

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
)

// Credential generations. Generation 0 is what enrollment made: device.key, device.token and
// the certificate in bundle.json. Every rotation makes generation n+1 under creds/<n+1>/:
// device.key, device.token and, once issued, device.crt. The journal in state.json says which
// generation is active; files of the active generation are never modified, only removed after
// a later generation was committed.
const (
	credsDir       = "creds"
	TokenFile      = "device.token"
	certFile       = "device.crt"
	BootstrapKey   = "bootstrap.key"
	tokenBytes     = 32
	maxCertPEMSize = 16 << 10
)

func genDir(stateDir string, gen uint64) string {
	if gen == 0 {
		return stateDir
	}
	return filepath.Join(stateDir, credsDir, strconv.FormatUint(gen, 10))
}

// credential is one generation's key and certificate.
type credential struct {
	gen  uint64
	key  crypto.Signer
	cert *x509.Certificate // nil while a rotation waits for it
	// lost marks an active generation whose key or certificate could not be loaded (a
	// storage fault): key and cert are then the bootstrap identity's, held meanwhile so that
	// everything that reads the certificate in use has one. The MQTT client does not present
	// them as the device (their identity is not its client id), and the rotation asks for a
	// new generation through the bootstrap identity (R6, R7).
	lost bool
	// badToken marks a generation whose device token is damaged (not tokenBytes long): its
	// key and certificate work, but a rotation is due to give the device a token again.
	badToken bool
}

// newToken makes a 256-bit device token in dir and returns its SHA-256.
func newToken(dir string) ([32]byte, error) {
	var tok [tokenBytes]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return [32]byte{}, fmt.Errorf("agent: token: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, TokenFile), tok[:], 0o600); err != nil {
		return [32]byte{}, fmt.Errorf("agent: token: %w", err)
	}
	return sha256.Sum256(tok[:]), nil
}

// tokenHash returns the SHA-256 of a generation's device token. A token file that is not
// tokenBytes long is damaged (truncated by a storage fault) and an error: its hash would
// register a short, guessable token.
func tokenHash(stateDir string, gen uint64) ([32]byte, error) {
	p := filepath.Join(genDir(stateDir, gen), TokenFile)
	b, err := cappedfile.Read(p, tokenBytes)
	if err != nil {
		return [32]byte{}, fmt.Errorf("agent: token: %w", err)
	}
	if len(b) != tokenBytes {
		return [32]byte{}, fmt.Errorf("agent: token: %s is %d bytes, want %d", p, len(b), tokenBytes)
	}
	// Zeroed by a storage fault (flash that lost a block reads as zeros or ones); a random
	// token is either with probability 2^-255.
	if !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) || !slices.ContainsFunc(b, func(c byte) bool { return c != 0xff }) {
		return [32]byte{}, fmt.Errorf("agent: token: %s holds %d bytes of %#02x: damaged", p, len(b), b[0])
	}
	return sha256.Sum256(b), nil
}

// makeGeneration creates generation gen's key and token, replacing any half-made leftovers of
// an earlier attempt at the same generation. It returns the key and the token hash.
func makeGeneration(stateDir string, gen uint64) (crypto.Signer, [32]byte, error) {
	dir := genDir(stateDir, gen)
	if err := os.RemoveAll(dir); err != nil {
		return nil, [32]byte{}, fmt.Errorf("agent: %w", err)
	}
	if err := atomicfile.EnsurePrivateDir(filepath.Join(stateDir, credsDir)); err != nil {
		return nil, [32]byte{}, err
	}
	if err := atomicfile.EnsurePrivateDir(dir); err != nil {
		return nil, [32]byte{}, err
	}
	key, err := certs.GenerateKey()
	if err != nil {
		return nil, [32]byte{}, err
	}
	if err := certs.WriteKeyFile(filepath.Join(dir, KeyFile), key); err != nil {
		return nil, [32]byte{}, err
	}
	h, err := newToken(dir)
	if err != nil {
		return nil, [32]byte{}, err
	}
	return key, h, atomicfile.SyncDir(filepath.Dir(dir))
}

// loadGeneration loads generation gen's key and, if present, its certificate. For
// generation 0 the certificate is the bundle's (vb, which readBundle verified); any other
// generation's must chain to the bundle's fleet CA, at its own NotBefore as readBundle checks
// the bundle's: a storage fault that changed a byte of it (its NotBefore years ahead, which
// kept the agent waiting for a clock that never comes; its NotAfter) breaks the CA's
// signature, and such a certificate is damaged. A damaged token is no error: the credential
// comes back with badToken set.
func loadGeneration(stateDir string, gen uint64, vb *certs.VerifiedBundle) (*credential, error) {
	dir := genDir(stateDir, gen)
	key, err := certs.LoadKeyFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	c := &credential{gen: gen, key: key}
	if gen == 0 {
		c.cert = vb.Cert
	} else {
		b, err := os.ReadFile(filepath.Join(dir, certFile))
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("agent: %w", err)
		default:
			if c.cert, err = certs.ParseCertPEM(b); err != nil {
				return nil, fmt.Errorf("agent: generation %d certificate: %w", gen, err)
			}
			if _, err := certs.VerifyClient(c.cert, vb.Pool, c.cert.NotBefore); err != nil {
				return nil, fmt.Errorf("agent: generation %d certificate: %w", gen, err)
			}
		}
	}
	if c.cert != nil && !certs.SamePublicKey(c.cert, key) {
		return nil, fmt.Errorf("agent: generation %d: %w", gen, certs.ErrKeyMismatch)
	}
	_, err = tokenHash(stateDir, gen)
	c.badToken = err != nil
	return c, nil
}

// writeCert stores generation gen's issued certificate.
func writeCert(stateDir string, gen uint64, c *x509.Certificate) error {
	return atomicfile.WriteFile(filepath.Join(genDir(stateDir, gen), certFile), certs.EncodeCertPEM(c), 0o600)
}

// wipeGeneration destroys a generation's secrets: the key and token files are overwritten with
// zeros and synced before they are removed, so a later disk image is less likely to hold them.
// Generation 0 keeps bundle.json (the fleet CA, root key and bootstrap certificate live there).
func wipeGeneration(stateDir string, gen uint64) error {
	dir := genDir(stateDir, gen)
	for _, name := range []string{KeyFile, TokenFile} {
		p := filepath.Join(dir, name)
		if err := shred(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("agent: wipe %s: %w", p, err)
		}
	}
	if gen != 0 {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("agent: wipe: %w", err)
		}
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}

func shred(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.WriteAt(make([]byte, fi.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		return err
	}
	return os.Remove(p)
}
