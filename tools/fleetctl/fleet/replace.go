package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// Replaced is what Replace did.
type Replaced struct {
	// Identity is the identity replaced, operator:<name> or signer:<name>; for the broker,
	// "broker" (its certificate names no fleet identity).
	Identity string
	// Cert is its new certificate, kept in the fleet directory with its new key.
	Cert *x509.Certificate
	// Old is the certificate the fleet directory kept before; nil if it kept none.
	Old *x509.Certificate
	// Revoked are the serials of every earlier certificate of the identity that had not
	// expired, in the order recorded. Always empty for the broker: a broker certificate is
	// retired by a key set (certs.KeySet.BrokerNotBefore), not revoked.
	Revoked []*big.Int
}

// Replace gives one of the fleet's own client identities, the operator (certs.RoleOperator)
// or the signer (certs.RoleSigner), a new key and certificate in place of those in the fleet
// directory, and then revokes every earlier certificate of the identity that has not expired:
// the one the directory kept, those renewals left behind (each lasts 90 days), and any a copy
// of the directory holds. It is what an operator runs when a machine that held one of them is
// lost or broken into. The caller writes the CRL for Mosquitto.
//
// The new certificate is recorded and its files written before anything is revoked, so the
// identity is never left without a working credential; if Replace stops in between, running it
// again issues another and revokes all the earlier ones. A fleet made before these identities
// were recorded has only the kept certificate to revoke: earlier renewals of it were never
// recorded, and stay valid until they expire.
//
// For the broker (certs.RoleServer) it is ReplaceBroker: nothing is revoked.
func (f *Fleet) Replace(role certs.Role, now time.Time) (Replaced, error) {
	var name, certName, keyName string
	switch role {
	case certs.RoleOperator:
		name, certName, keyName = DefaultOperator, operatorCert, operatorKey
	case certs.RoleSigner:
		name, certName, keyName = DefaultSigner, signerCert, signerKey
	case certs.RoleServer:
		return f.ReplaceBroker(now)
	default:
		return Replaced{}, fmt.Errorf("fleet: replace: %q is not an identity of the fleet's own: give operator, signer or broker", role)
	}
	identity, err := certs.IdentityFor(role, name)
	if err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace: %w", err)
	}
	// The renewal lock: a process renewing this identity at the same moment would otherwise
	// write its key and certificate over these.
	unlock, err := lockDir(filepath.Join(f.Dir, renewLock))
	if err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace %s: %w", identity, err)
	}
	defer unlock()
	var kept *x509.Certificate
	if b, err := os.ReadFile(filepath.Join(f.Dir, certName)); err == nil {
		if kept, err = certs.ParseCertPEM(b); err != nil {
			return Replaced{}, fmt.Errorf("fleet: replace %s: %s: %w", identity, certName, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return Replaced{}, fmt.Errorf("fleet: replace %s: %w", identity, err)
	}
	if err := atomicfile.EnsurePrivateDir(filepath.Join(f.Dir, filepath.Dir(certName))); err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace %s: %w", identity, err)
	}
	var issued *x509.Certificate
	record := func(c *x509.Certificate) error {
		issued = c
		return f.recordIdentity(c, now)
	}
	if err := issueKeyPair(f.Dir, f.CA, certs.IssueRequest{Role: role, Name: name, Now: now}, certName, keyName, record); err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace %s: %w", identity, err)
	}
	reg, err := f.enrollRegistry()
	if err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace %s: %w", identity, err)
	}
	res := Replaced{Identity: identity, Cert: issued}
	newSerial := registry.SerialHex(issued.SerialNumber)
	err = reg.Update(func(tx *registry.Tx) error {
		r, err := revokeIdentity(tx, identity, kept, newSerial, now)
		res.Revoked = r
		return err
	})
	if err != nil {
		return res, fmt.Errorf("fleet: replace %s: the new certificate is in place, but the earlier ones are not revoked (run it again): %w", identity, err)
	}
	return res, nil
}

// ReplaceBroker gives the broker identity of the fleet directory (broker/server.crt and
// broker/server.key) a new key and certificate for the same names (common name, DNS names and
// addresses), issued at now: what an operator runs when a breach may have reached the broker's
// private key. Broker certificates are not in the registry and nothing is revoked: the old
// one is retired by a key set whose floor is the new one's NotBefore (RotateKeysWith with
// RetireBrokers, then breach --keyset), once every broker presents the new one.
//
// The new key is written before the certificate, as a renewal does: a stop in between leaves
// the new key beside the old certificate, a pair that does not match, which the next load
// (ServerCertificate) repairs by issuing another certificate for the same names.
func (f *Fleet) ReplaceBroker(now time.Time) (Replaced, error) {
	unlock, err := lockDir(filepath.Join(f.Dir, renewLock))
	if err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace broker: %w", err)
	}
	defer unlock()
	old, err := f.BrokerCertificate()
	if err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace broker: %w", err)
	}
	req, err := renewalRequest(old, now)
	if err != nil || req.Role != certs.RoleServer {
		return Replaced{}, fmt.Errorf("fleet: replace broker: %s is not a broker certificate (%v)", serverCert, err)
	}
	var issued *x509.Certificate
	keep := func(c *x509.Certificate) error { issued = c; return nil }
	if err := issueKeyPair(f.Dir, f.CA, req, serverCert, serverKey, keep); err != nil {
		return Replaced{}, fmt.Errorf("fleet: replace broker: %w", err)
	}
	return Replaced{Identity: "broker", Cert: issued, Old: old}, nil
}

// BrokerCertificate reads the broker's certificate the fleet directory keeps
// (broker/server.crt) as it is: it renews nothing, unlike ServerCertificate.
func (f *Fleet) BrokerCertificate() (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(f.Dir, serverCert))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	c, err := certs.ParseCertPEM(b)
	if err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", serverCert, err)
	}
	return c, nil
}

// revokeIdentity revokes, in tx, every certificate of identity (recorded under its name) that
// has not expired and is not revoked yet, and kept, the one the fleet directory keeps for it
// if any, which an older fleet may never have recorded; except is a serial to leave alone. It
// returns the serials revoked, in the order recorded.
func revokeIdentity(tx *registry.Tx, identity string, kept *x509.Certificate, except string, now time.Time) ([]*big.Int, error) {
	var order []string
	seen := map[string]bool{except: true}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			order = append(order, s)
		}
	}
	for _, c := range tx.DeviceCerts(identity) {
		if !c.IsRevoked() && now.Before(c.NotAfter) {
			add(c.Serial)
		}
	}
	if kept != nil && certs.CertIdentity(kept) == identity && now.Before(kept.NotAfter) {
		if c, ok := tx.Cert(registry.SerialHex(kept.SerialNumber)); !ok || !c.IsRevoked() {
			add(registry.SerialHex(kept.SerialNumber))
		}
	}
	revoked := make([]*big.Int, 0, len(order))
	for _, s := range order {
		if err := tx.Append(registry.Record{Type: registry.TypeRevoked, Serial: s, Device: identity, Time: now.UTC()}); err != nil {
			return nil, err
		}
		n, _ := new(big.Int).SetString(s, 16)
		revoked = append(revoked, n)
	}
	return revoked, nil
}

// LoadAtHandshake returns a tls.Config.GetClientCertificate callback for a long-running
// client of the fleet's own (fleetctl serve, an operator session, a camview relay): each
// handshake presents what load returns now, so a certificate renewed or replaced (Replace)
// while the process runs is used from its next connection on. If load fails, the one held
// is presented and the failure logged.
func LoadAtHandshake(h *certs.Holder, load func() (*tls.Certificate, error), log *slog.Logger) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := load()
		if err != nil {
			log.Warn("fleet: cannot load the certificate from the fleet directory; presenting the one held", "err", err)
			return h.GetClientCertificate(cri)
		}
		if cur := h.Get(); cur == nil || cur.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
			log.Info("fleet: presenting a new certificate", "identity", certs.CertIdentity(c.Leaf), "serial", registry.SerialHex(c.Leaf.SerialNumber), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
			h.Set(c)
		}
		return c, nil
	}
}
