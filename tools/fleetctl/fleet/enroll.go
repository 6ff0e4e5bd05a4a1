package fleet

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// MaxEnrollmentSize caps an enrollment request read from outside: two PEM CSRs.
const MaxEnrollmentSize = 2 * certs.MaxCSRSize

// Enroll signs a device's enrollment request and returns the device bundle and the device
// certificate. The request is what `camagent enroll` writes: two PEM CSRs, one for the device
// identity <id> (a valid device id) carrying the SHA-256 of the device token as an extension,
// and one for bootstrap:<id> with a different key. Enroll issues both — the device certificate
// for fleet.json's device lifetime, the bootstrap certificate for
// certs.DefaultBootstrapValidity — records both in the registry with the token hash (never the
// token), and puts the bootstrap certificate in the bundle's BootstrapCertPEM. It refuses a
// device that was retired (ErrRetired) until it is reinstated (Reinstate).
func (f *Fleet) Enroll(req []byte, now time.Time) ([]byte, *x509.Certificate, error) {
	dev, boot, err := parseEnrollment(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	id := dev.Subject.CommonName
	th, ok := certs.CSRTokenHash(dev)
	if !ok {
		return nil, nil, fmt.Errorf("fleet: enroll %s: the device CSR carries no device-token hash; run camagent enroll again", id)
	}
	c, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: dev, Now: now, Validity: time.Duration(f.Meta.DeviceValidity) * time.Second})
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	bc, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleBootstrap, Name: id, CSR: boot, Now: now})
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	devRec, err := registry.IssuedRecord(c, id, registry.ViaEnroll, 0, hex.EncodeToString(th), "", now)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	bootRec, err := registry.IssuedRecord(bc, id, registry.ViaEnroll, 0, "", "", now)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	reg, err := f.enrollRegistry()
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	// Recorded before the bundle exists: a certificate the registry does not know is never
	// handed out.
	if err := reg.Update(func(tx *registry.Tx) error {
		if since, ok := tx.Retired(id); ok {
			return fmt.Errorf("%w on %s: run fleetctl enroll --reinstate to enroll it again", ErrRetired, since.UTC().Format(time.RFC3339))
		}
		if err := tx.Append(devRec); err != nil {
			return err
		}
		return tx.Append(bootRec)
	}); err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	b, err := json.MarshalIndent(certs.Bundle{
		V:                1,
		DeviceID:         id,
		CertPEM:          string(certs.EncodeCertPEM(c)),
		CAPEM:            string(f.CAPEM),
		RootKey:          f.root,
		KeySet:           f.keySet,
		Broker:           f.Meta.Broker,
		BootstrapCertPEM: string(certs.EncodeCertPEM(bc)),
	}, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: enroll: %w", err)
	}
	return b, c, nil
}

// EnrollmentDevice returns the device id an enrollment request is for, after the checks
// Enroll makes of the request itself.
func EnrollmentDevice(req []byte) (string, error) {
	dev, _, err := parseEnrollment(req)
	if err != nil {
		return "", fmt.Errorf("fleet: enroll: %w", err)
	}
	return dev.Subject.CommonName, nil
}

// parseEnrollment splits an enrollment request into the device CSR and the bootstrap CSR and
// checks that they belong together.
func parseEnrollment(b []byte) (dev, boot *x509.CertificateRequest, err error) {
	if len(b) > MaxEnrollmentSize {
		return nil, nil, fmt.Errorf("%w: request of %d bytes, cap %d", certs.ErrTooLarge, len(b), MaxEnrollmentSize)
	}
	for n := 0; ; n++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if n == 2 || blk.Type != "CERTIFICATE REQUEST" {
			return nil, nil, fmt.Errorf("%w: want exactly two CERTIFICATE REQUEST blocks", certs.ErrMalformed)
		}
		csr, err := certs.ParseCSR(pem.EncodeToMemory(blk))
		if err != nil {
			return nil, nil, err
		}
		role, _, err := certs.ParseIdentity(csr.Subject.CommonName)
		switch {
		case err != nil:
			return nil, nil, err
		case role == certs.RoleDevice && dev == nil:
			dev = csr
		case role == certs.RoleBootstrap && boot == nil:
			boot = csr
		default:
			return nil, nil, fmt.Errorf("%w: unexpected CSR for %q", certs.ErrBadIdentity, csr.Subject.CommonName)
		}
	}
	if dev == nil {
		return nil, nil, fmt.Errorf("%w: no device CSR", certs.ErrMalformed)
	}
	if boot == nil {
		return nil, nil, fmt.Errorf("%w: no bootstrap CSR for %s; the agent must be recent enough to make one", certs.ErrMalformed, dev.Subject.CommonName)
	}
	if want, _ := certs.IdentityFor(certs.RoleBootstrap, dev.Subject.CommonName); boot.Subject.CommonName != want {
		return nil, nil, fmt.Errorf("%w: bootstrap CSR for %q with a device CSR for %q", certs.ErrBadIdentity, boot.Subject.CommonName, dev.Subject.CommonName)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := dev.PublicKey.(equaler); ok && k.Equal(boot.PublicKey) {
		return nil, nil, fmt.Errorf("%w: the bootstrap CSR reuses the device key", certs.ErrKeyMismatch)
	}
	return dev, boot, nil
}

// enrollRegistry returns the registry Enroll records into, opened on first use and kept: it
// reads only what was appended since, so enrolling many devices from one process costs
// O(records) in total, not O(records) per device. Close releases it.
func (f *Fleet) enrollRegistry() (*registry.Registry, error) {
	f.regMu.Lock()
	defer f.regMu.Unlock()
	if f.reg == nil {
		reg, err := f.OpenRegistry(nil)
		if err != nil {
			return nil, err
		}
		f.reg = reg
	}
	return f.reg, nil
}

// Close releases what Enroll keeps open. It is idempotent; the Fleet stays usable.
func (f *Fleet) Close() error {
	f.regMu.Lock()
	defer f.regMu.Unlock()
	if f.reg == nil {
		return nil
	}
	err := f.reg.Close()
	f.reg = nil
	return err
}
