// Package fleet is the operator's side of a camagent fleet: the fleet directory (CA, offline
// root key, command and grant signing keys, key set, operator, signer and broker
// certificates, the signer's registry), device enrollment, key-set rotation, command and
// desired-state signing, and the operator's MQTT session.
//
// The fleet directory holds the fleet's secrets. It is 0700 and every key file in it 0600; the
// offline root key lives in its own subdirectory so it can be moved off the machine after
// `fleetctl init` (it is needed again only by `fleetctl keys rotate`). Nothing here ever
// handles a device's private key or device token: enrollment records the certificates and the
// token's hash only (S6).
//
// Layout:
//
//	fleet.json              public settings (name, broker URL, device certificate lifetime)
//	ca.crt, ca.key          the fleet CA (ca.key only where certificates are issued)
//	offline/root.key        the offline root key (move it off the machine)
//	root.pub                its public half
//	keyset.json             the root-signed key set in force
//	keysets/keyset-vN.json  key sets made by `keys rotate`, not yet published
//	keys/                   command and grant signing keys
//	operator/, broker/      the operator's client and the broker's server certificates
//	signer/signer.{crt,key} the signer identity (signer:default)
//	signer/log.jsonl        the registry of issued, confirmed and revoked certificates
//	signer/rollout.json     the rollout-control state (aborted or not)
//	crl.pem                 the CRL for Mosquitto's crlfile
//	seq                     the last command sequence / desired-state version handed out
package fleet

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/internal/strictjson"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// Files in the fleet directory.
const (
	fleetFile    = "fleet.json"
	caCertFile   = "ca.crt"
	caKeyFile    = "ca.key"
	rootKeyFile  = "offline/root.key"
	keySetFile   = "keyset.json"
	keysDir      = "keys"
	operatorCert = "operator/operator.crt"
	operatorKey  = "operator/operator.key"
	serverCert   = "broker/server.crt"
	serverKey    = "broker/server.key"
	signerDir    = "signer"
	viewerDir    = "viewer"
	signerCert   = "signer/signer.crt"
	signerKey    = "signer/signer.key"
	registryFile = "signer/log.jsonl"
	rolloutFile  = "signer/rollout.json"
	crlFile      = "crl.pem"
	keySetsDir   = "keysets"
	seqFile      = "seq"
	seqLock      = ".seq.lock"
)

// DefaultOperator is the operator identity name `fleetctl init` issues for itself.
const DefaultOperator = "admin"

// DefaultSigner is the signer identity name `fleetctl init` issues: signer:default. Every
// `fleetctl serve` instance of the fleet presents it; instances differ by MQTT client id
// (SignerClientID).
const DefaultSigner = "default"

// ErrNoFleet reports a directory that holds no fleet.
var ErrNoFleet = errors.New("fleet: no fleet in directory")

// Meta is fleet.json: the fleet's public settings.
type Meta struct {
	Name string `json:"name"`
	// Broker is the URL devices and operators connect to, mqtts://host:port.
	Broker string `json:"broker"`
	// DeviceValidity is the lifetime of device certificates, in seconds.
	DeviceValidity int64 `json:"device_validity_s"`
}

// InitOptions configures Init.
type InitOptions struct {
	// Name names the fleet CA; "" means "camagent fleet".
	Name string
	// Broker is the broker URL written into device bundles; "" means mqtts://127.0.0.1:8883.
	Broker string
	// BrokerHosts are the names and addresses the broker's server certificate covers;
	// nil means localhost, 127.0.0.1 and ::1 plus the Broker URL's host.
	BrokerHosts []string
	// DeviceValidity is the device certificate lifetime; 0 means certs.DefaultDeviceValidity.
	DeviceValidity time.Duration
	// Now is the creation time; zero means time.Now().
	Now time.Time
}

// Init creates a new fleet in dir, which must not hold one already.
func Init(dir string, o InitOptions) (*Fleet, error) {
	if o.Name == "" {
		o.Name = "camagent fleet"
	}
	if o.Broker == "" {
		o.Broker = "mqtts://127.0.0.1:8883"
	}
	host, err := certs.BrokerHost(o.Broker)
	if err != nil {
		return nil, fmt.Errorf("fleet: init: %w", err)
	}
	if o.BrokerHosts == nil {
		o.BrokerHosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	if !contains(o.BrokerHosts, host) {
		o.BrokerHosts = append(o.BrokerHosts, host)
	}
	if o.DeviceValidity == 0 {
		o.DeviceValidity = certs.DefaultDeviceValidity
	}
	// fleet.json keeps whole seconds, and zero there means the default: anything else would be
	// changed behind the operator's back, or issue certificates expired at birth.
	if o.DeviceValidity < time.Second || o.DeviceValidity%time.Second != 0 {
		return nil, fmt.Errorf("fleet: init: InitOptions.DeviceValidity %v: want a positive whole number of seconds", o.DeviceValidity)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if _, err := os.Stat(filepath.Join(dir, fleetFile)); err == nil {
		return nil, fmt.Errorf("fleet: init: %s already holds a fleet", dir)
	}
	for _, d := range []string{dir, filepath.Join(dir, "offline"), filepath.Join(dir, keysDir), filepath.Join(dir, "operator"), filepath.Join(dir, "broker"), filepath.Join(dir, signerDir)} {
		if err := atomicfile.EnsurePrivateDir(d); err != nil {
			return nil, fmt.Errorf("fleet: init: %w", err)
		}
	}
	ca, err := certs.NewCA(o.Name, o.Now, 0)
	if err != nil {
		return nil, err
	}
	if err := writeFile(dir, caCertFile, certs.EncodeCertPEM(ca.Cert), 0o644); err != nil {
		return nil, err
	}
	if err := certs.WriteKeyFile(filepath.Join(dir, caKeyFile), ca.Key); err != nil {
		return nil, err
	}
	root, err := certs.NewSigningKey()
	if err != nil {
		return nil, err
	}
	if err := writeSigningKey(dir, rootKeyFile, root); err != nil {
		return nil, err
	}
	cmdKey, err := newKeyFile(dir, "command")
	if err != nil {
		return nil, err
	}
	grantKey, err := newKeyFile(dir, "grant")
	if err != nil {
		return nil, err
	}
	ks, err := certs.SignKeySet(root, certs.KeySet{
		Version:     1,
		IssuedAt:    o.Now.Unix(),
		CommandKeys: []certs.PublicKey{cmdKey.Public()},
		GrantKeys:   []certs.PublicKey{grantKey.Public()},
	})
	if err != nil {
		return nil, err
	}
	if err := writeFile(dir, keySetFile, ks, 0o644); err != nil {
		return nil, err
	}
	// The operator's and the signer's certificates are recorded, so that fleetctl replace can
	// revoke them all, renewals included.
	reg, err := registry.Open(filepath.Join(dir, registryFile), registry.Options{})
	if err != nil {
		return nil, fmt.Errorf("fleet: init: %w", err)
	}
	defer reg.Close()
	record := func(c *x509.Certificate) error {
		rec, err := registry.IdentityIssuedRecord(c, o.Now)
		if err != nil {
			return err
		}
		return reg.Update(func(tx *registry.Tx) error { return tx.Append(rec) })
	}
	if err := issueKeyPair(dir, ca, certs.IssueRequest{Role: certs.RoleOperator, Name: DefaultOperator, Now: o.Now}, operatorCert, operatorKey, record); err != nil {
		return nil, err
	}
	if err := issueKeyPair(dir, ca, certs.IssueRequest{Role: certs.RoleSigner, Name: DefaultSigner, Now: o.Now}, signerCert, signerKey, record); err != nil {
		return nil, err
	}
	sreq := certs.IssueRequest{Role: certs.RoleServer, Name: "camagent broker", Now: o.Now}
	for _, h := range o.BrokerHosts {
		if ip := net.ParseIP(h); ip != nil {
			sreq.IPs = append(sreq.IPs, ip)
		} else {
			sreq.DNSNames = append(sreq.DNSNames, h)
		}
	}
	if err := issueKeyPair(dir, ca, sreq, serverCert, serverKey, nil); err != nil {
		return nil, err
	}
	meta, _ := json.MarshalIndent(Meta{Name: o.Name, Broker: o.Broker, DeviceValidity: int64(o.DeviceValidity / time.Second)}, "", "  ")
	if err := writeFile(dir, fleetFile, meta, 0o644); err != nil {
		return nil, err
	}
	return Open(dir)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func writeFile(dir, name string, b []byte, mode os.FileMode) error {
	if err := atomicfile.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	return nil
}

func writeSigningKey(dir, name string, k *certs.SigningKey) error {
	b, err := certs.MarshalSigningKeyPEM(k)
	if err != nil {
		return err
	}
	return writeFile(dir, name, b, 0o600)
}

func newKeyFile(dir, kind string) (*certs.SigningKey, error) {
	k, err := certs.NewSigningKey()
	if err != nil {
		return nil, err
	}
	return k, writeSigningKey(dir, filepath.Join(keysDir, kind+"-"+k.ID()+".key"), k)
}

// issueKeyPair makes a key, has ca issue req's certificate for it, and keeps both in dir as
// keyName and certName. record, if not nil, sees the certificate before any file is written
// and can stop it: a certificate the registry does not know is never kept.
func issueKeyPair(dir string, ca *certs.CA, req certs.IssueRequest, certName, keyName string, record func(*x509.Certificate) error) error {
	key, err := certs.GenerateKey()
	if err != nil {
		return err
	}
	req.PublicKey = key.Public()
	c, err := ca.Issue(req)
	if err != nil {
		return err
	}
	if record != nil {
		if err := record(c); err != nil {
			return err
		}
	}
	if err := certs.WriteKeyFile(filepath.Join(dir, keyName), key); err != nil {
		return err
	}
	return writeFile(dir, certName, certs.EncodeCertPEM(c), 0o644)
}

// Fleet is an opened fleet directory. Its methods may be called from several goroutines,
// except InstallKeySet, which changes the key set the others sign with.
type Fleet struct {
	Dir    string
	Meta   Meta
	CA     *certs.CA
	CAPEM  []byte
	Pool   *x509.CertPool
	keySet []byte
	ks     *certs.KeySet
	root   []byte

	seqMu sync.Mutex

	regMu sync.Mutex
	reg   *registry.Registry // kept open by Enroll
}

// Open loads the fleet in dir. It does not load the offline root key. The CA key (ca.key) may
// be missing: see HasCAKey.
func Open(dir string) (*Fleet, error) {
	mb, err := os.ReadFile(filepath.Join(dir, fleetFile))
	if errors.Is(err, os.ErrNotExist) {
		// Most often a wrong --dir, or a command run from another directory: fleetctl init
		// would make a new fleet, with a CA no camera trusts, so it is not the advice.
		abs, aerr := filepath.Abs(dir)
		if aerr != nil {
			abs = dir
		}
		return nil, fmt.Errorf("%w %s (no %s in %s): give the fleet's directory with --dir (default ./fleet); only for a fleet that does not exist yet, fleetctl init makes one", ErrNoFleet, dir, fleetFile, abs)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var meta Meta
	if err := strictjson.Unmarshal(mb, &meta); err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", fleetFile, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	// A copy of the directory without ca.key (the broker's host, an operator's laptop) can do
	// everything but issue certificates and sign CRLs, which fail with certs.ErrNoCAKey.
	var ca *certs.CA
	caKey, err := certs.LoadKeyFile(filepath.Join(dir, caKeyFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		ca, err = certs.LoadCACert(caPEM)
	case err == nil:
		caKeyPEM, _ := certs.MarshalKeyPEM(caKey)
		ca, err = certs.LoadCA(caPEM, caKeyPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	pool, err := certs.NewPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	ksb, err := os.ReadFile(filepath.Join(dir, keySetFile))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	f := &Fleet{Dir: dir, Meta: meta, CA: ca, CAPEM: caPEM, Pool: pool, keySet: ksb}
	if err := f.loadKeySet(); err != nil {
		return nil, err
	}
	return f, nil
}

// HasCAKey reports whether this fleet directory holds the CA's private key. Without it, the
// directory serves whatever only checks certificates (fleetctl broker, operator commands);
// issuing or renewing a certificate and signing a CRL fail with certs.ErrNoCAKey.
func (f *Fleet) HasCAKey() bool { return f.CA.Key != nil }

// loadKeySet parses the signed key set without the root private key: its root public key is
// recorded beside it when the set is written.
func (f *Fleet) loadKeySet() error {
	rootPub, err := f.rootPublic()
	if err != nil {
		return err
	}
	ks, err := certs.OpenKeySet(rootPub, f.keySet)
	if err != nil {
		return fmt.Errorf("fleet: %s: %w", keySetFile, err)
	}
	f.ks, f.root = ks, rootPub
	return nil
}

// rootPublic returns the root public key: from root.pub if present (written when the root key
// is moved offline), else from the root private key.
func (f *Fleet) rootPublic() ([]byte, error) {
	if b, err := os.ReadFile(filepath.Join(f.Dir, "root.pub")); err == nil {
		return b, nil
	}
	k, err := f.loadRoot()
	if err != nil {
		return nil, err
	}
	pub := k.Public().Key
	if err := writeFile(f.Dir, "root.pub", pub, 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

func (f *Fleet) loadRoot() (*certs.SigningKey, error) {
	b, err := os.ReadFile(filepath.Join(f.Dir, rootKeyFile))
	if err != nil {
		return nil, fmt.Errorf("fleet: offline root key: %w", err)
	}
	return certs.ParseSigningKeyPEM(b)
}

// ReadKeySet reads the key set in force in the fleet directory dir, checked against the root
// public key recorded beside it, without loading anything else of the fleet (no CA key): for a
// process that only checks grants, such as camview serve, reading it again and again.
func ReadKeySet(dir string) (*certs.KeySet, error) {
	root, err := os.ReadFile(filepath.Join(dir, "root.pub"))
	if errors.Is(err, os.ErrNotExist) {
		// Written beside the key set by the first Open since the fleet was made.
		f, err := Open(dir)
		if err != nil {
			return nil, err
		}
		return f.KeySet(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	b, err := cappedfile.Read(filepath.Join(dir, keySetFile), certs.MaxKeySetSize)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	ks, err := certs.OpenKeySet(root, b)
	if err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", keySetFile, err)
	}
	return ks, nil
}

// KeySet returns the fleet's current key set.
func (f *Fleet) KeySet() *certs.KeySet { return f.ks }

// RootKey returns the offline root's public key, which devices pin.
func (f *Fleet) RootKey() ed25519.PublicKey { return ed25519.PublicKey(slices.Clone(f.root)) }

// signingKey loads the newest key of a kind ("command" or "grant") that the key set in force
// trusts.
func (f *Fleet) signingKey(kind string) (*certs.SigningKey, error) { return f.signingKeyOf(f.ks, kind) }

// signingKeyOf loads the newest key of a kind that ks trusts and whose private half is in keys/.
func (f *Fleet) signingKeyOf(ks *certs.KeySet, kind string) (*certs.SigningKey, error) {
	trusted := ks.CommandKeys
	if kind == "grant" {
		trusted = ks.GrantKeys
	}
	for i := len(trusted) - 1; i >= 0; i-- {
		b, err := os.ReadFile(filepath.Join(f.Dir, keysDir, kind+"-"+trusted[i].ID+".key"))
		if err != nil {
			continue
		}
		return certs.ParseSigningKeyPEM(b)
	}
	return nil, fmt.Errorf("fleet: no %s signing key in %s that key set v%d trusts", kind, filepath.Join(f.Dir, keysDir), ks.Version)
}

// OperatorCertificate loads the operator's TLS client certificate, renewing it first within
// RenewBefore of its expiry.
func (f *Fleet) OperatorCertificate() (*tls.Certificate, error) {
	return f.loadRenewing(operatorCert, operatorKey, time.Now())
}

// ServerCertificate loads the broker's TLS server certificate, renewing it first within
// RenewBefore of its expiry (for Mosquitto, `fleetctl mosquitto-config` calls it).
func (f *Fleet) ServerCertificate() (*tls.Certificate, error) {
	return f.loadRenewing(serverCert, serverKey, time.Now())
}

// ServerFiles returns the paths of the broker's certificate and key, for Mosquitto.
func (f *Fleet) ServerFiles() (caFile, certFile, keyFile string) {
	return filepath.Join(f.Dir, caCertFile), filepath.Join(f.Dir, serverCert), filepath.Join(f.Dir, serverKey)
}

func loadPair(dir, certName, keyName string) (*tls.Certificate, error) {
	cb, err := os.ReadFile(filepath.Join(dir, certName))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	c, err := certs.ParseCertPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", certName, err)
	}
	k, err := certs.LoadKeyFile(filepath.Join(dir, keyName))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return certs.TLSCertificate(c, k)
}

// NextSeq returns a command sequence above every one this fleet directory handed out before:
// max(now in Unix nanoseconds, last+1). Sequences from several operator machines stay ordered
// as long as their clocks roughly agree. Processes sharing the directory take turns, under a
// lock, so no two get the same one.
func (f *Fleet) NextSeq(now time.Time) (uint64, error) {
	return f.updateSeq(func(last uint64) uint64 {
		seq := uint64(max(now.UnixNano(), 0))
		if seq <= last {
			seq = last + 1
		}
		return seq
	})
}

// AdvanceSeq makes every later NextSeq return a sequence above floor: the version of a
// desired state another copy of the fleet directory published (another operator's machine,
// whose clock may be ahead of this one's). A device ignores a desired state whose version is
// not above the last it accepted, so a version below the retained one would never reach a
// device that read that one.
func (f *Fleet) AdvanceSeq(floor uint64) error {
	_, err := f.updateSeq(func(last uint64) uint64 { return max(last, floor) })
	return err
}

// updateSeq replaces the last sequence handed out by next(last), under the sequence lock.
func (f *Fleet) updateSeq(next func(last uint64) uint64) (uint64, error) {
	f.seqMu.Lock()
	defer f.seqMu.Unlock()
	unlock, err := lockDir(filepath.Join(f.Dir, seqLock))
	if err != nil {
		return 0, fmt.Errorf("fleet: sequence: %w", err)
	}
	defer unlock()
	var last uint64
	if b, err := os.ReadFile(filepath.Join(f.Dir, seqFile)); err == nil {
		last, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	seq := next(last)
	if seq == last {
		return seq, nil
	}
	if err := writeFile(f.Dir, seqFile, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
		return 0, err
	}
	return seq, nil
}

// SignCommand makes a signed command envelope for target (a device id or certs.TargetFleet)
// valid for ttl.
func (f *Fleet) SignCommand(typ, target string, args json.RawMessage, now time.Time, ttl time.Duration) ([]byte, uint64, error) {
	k, err := f.signingKey("command")
	if err != nil {
		return nil, 0, err
	}
	seq, err := f.NextSeq(now)
	if err != nil {
		return nil, 0, err
	}
	b, err := certs.SignCommand(k, certs.Command{
		Type: typ, Target: target, Seq: seq,
		IssuedAt: now.Unix(), ExpiresAt: now.Add(ttl).Unix(), Args: args,
	})
	return b, seq, err
}
