package signer

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// The CRL the signer writes is valid (its nextUpdate) until the fleet CA expires, on
// purpose: Mosquitto (OpenSSL with X509_V_FLAG_CRL_CHECK) refuses every client certificate
// once the CRL it loaded is past nextUpdate, with the TLS alert "certificate expired", and it
// reads its crlfile only when it starts. With a nextUpdate a year out, a Mosquitto that ran for
// a year on one CRL would have cut off the whole fleet at once (checked on a real Mosquitto
// 2.0.11 with a CRL past its nextUpdate). Nothing else reads the CRL, and nothing fetches it
// again at nextUpdate: a shorter one buys nothing. The signer writes a fresh CRL at start and
// after every revocation; `fleetctl crl` writes one on demand.

// crlExpiredGrace is how long after its certificate expired a revoked serial stays on the CRL:
// a certificate past NotAfter is refused for that reason alone, but brokers' clocks may lag.
const crlExpiredGrace = 24 * time.Hour

// oidCertNotAfter names the CRL entry extension (non-critical, under the fleet's private
// arc, next to certs' token hash) that carries the revoked certificate's NotAfter as an ASN.1
// GeneralizedTime. RFC 5280 has no field for it; a reader of the CRL needs it to know when a
// serial may be forgotten (CRLFile, keepListed). Readers that do not know it ignore it, as
// RFC 5280 asks of non-critical extensions: OpenSSL (Mosquitto) does.
var oidCertNotAfter = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 2}

// CRL returns a PEM certificate revocation list (RFC 5280, section 5) signed by ca, listing the
// revoked serials, except those whose certificate expired more than a day before now. validity
// is the time to nextUpdate, capped at the CA's own expiry; zero means until the CA expires.
func CRL(ca *certs.CA, revoked []registry.Revocation, now time.Time, validity time.Duration) ([]byte, error) {
	next := now.Add(validity)
	if validity == 0 || next.After(ca.Cert.NotAfter) {
		next = ca.Cert.NotAfter
	}
	tmpl := &x509.RevocationList{
		// CRL numbers only need to grow (RFC 5280, section 5.2.3); several signers write the
		// same file, so a clock is the one counter they share.
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.Add(-certs.Backdate),
		NextUpdate: next,
	}
	for _, r := range CRLEntries(revoked, now) {
		at := r.Time
		if at.IsZero() {
			// A revocation salvaged from a damaged line of the log may have no time left;
			// x509 refuses an entry without one, which would stop every CRL.
			at = tmpl.ThisUpdate
		}
		e := x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: at}
		if !r.NotAfter.IsZero() {
			v, err := asn1.MarshalWithParams(r.NotAfter.UTC().Truncate(time.Second), "generalized")
			if err != nil {
				return nil, fmt.Errorf("signer: create crl: serial %s: expiry %v: %w", registry.SerialHex(r.Serial), r.NotAfter, err)
			}
			e.ExtraExtensions = []pkix.Extension{{Id: oidCertNotAfter, Value: v}}
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, e)
	}
	if ca.Key == nil {
		return nil, fmt.Errorf("signer: create crl: %w", certs.ErrNoCAKey)
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signer: create crl: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// ListedNotAfter returns the expiry of the certificate a CRL entry revokes, as the CRL's
// writer recorded it (oidCertNotAfter), and false if the entry does not say (a CRL written by
// a fleetctl before this extension, or a revocation whose certificate the log lacked). An
// extension that does not hold one GeneralizedTime is an error naming the serial.
func ListedNotAfter(e x509.RevocationListEntry) (time.Time, bool, error) {
	for _, ext := range e.Extensions {
		if !ext.Id.Equal(oidCertNotAfter) {
			continue
		}
		var t time.Time
		rest, err := asn1.UnmarshalWithParams(ext.Value, &t, "generalized")
		if err == nil && len(rest) > 0 {
			err = fmt.Errorf("%d bytes after the time", len(rest))
		}
		if err != nil {
			return time.Time{}, false, fmt.Errorf("signer: crl entry for serial %s: certificate expiry extension: %v", registry.SerialHex(e.SerialNumber), err)
		}
		return t, true, nil
	}
	return time.Time{}, false, nil
}

// CRLEntries returns the revocations a CRL made at now lists: all but those whose certificate
// expired more than a day before now.
func CRLEntries(revoked []registry.Revocation, now time.Time) []registry.Revocation {
	var out []registry.Revocation
	for _, r := range revoked {
		if !r.NotAfter.IsZero() && r.NotAfter.Add(crlExpiredGrace).Before(now) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// A revocation is never undone, and the CRL is its second copy: a fault that damages a
// revocation's line in the registry's log beyond what the log can salvage (the serial itself,
// or the word "revoked") must not drop the serial from the next CRL, nor let the embedded
// broker admit it (CRLFile). So every CRL written keeps the serials the one before it listed,
// read from the file and checked against the fleet CA's signature: those the log lacks stay
// listed while the log would have kept their revocation (the certificate's expiry plus a day
// when the log still holds the certificate or the CRL before recorded that expiry,
// registry.RevocationKeep after the revocation when neither does).

// ErrBadCRL reports a CRL file whose content is no CRL the fleet CA signed: not PEM, not a
// CRL, or another signature.
var ErrBadCRL = errors.New("signer: not a CRL of the fleet CA")

// CRLWritten says what WriteCRL or MergedCRL made.
type CRLWritten struct {
	// Listed counts the serials the CRL lists.
	Listed int
	// Kept lists the serials the CRL before listed and the registry's log lacks, kept on the
	// CRL: revocations the log lost to damage (fleetctl check says more).
	Kept []registry.Revocation
	// Unread says why the CRL before could not be read (nil when it was, or there was none):
	// its content is no CRL of the fleet CA (ErrBadCRL), and the new one was made from the
	// log alone.
	Unread error
	// MovedAside is where WriteCRL moved that unreadable CRL, so that what it held can still
	// be looked at; "" if it was not moved.
	MovedAside string
}

// Log reports w's news, if any: serials the log lost, or a CRL that could not be read.
func (w CRLWritten) Log(log *slog.Logger, path string) {
	if len(w.Kept) > 0 {
		serials := make([]string, 0, min(len(w.Kept), 20))
		for _, r := range w.Kept[:min(len(w.Kept), 20)] {
			serials = append(serials, registry.SerialHex(r.Serial))
		}
		log.Warn("crl: the registry's log lacks serials the CRL listed; they stay revoked (run fleetctl check: the log has damaged lines)", "path", path, "kept", len(w.Kept), "serials", serials)
	}
	if w.Unread != nil {
		log.Error("crl: the CRL on disk could not be read; it is written again from the registry's log alone", "path", path, "err", w.Unread, "moved_aside_to", w.MovedAside)
	}
}

// ReadCRL reads the PEM CRL at path and checks that ca signed it. Content that is no such
// CRL is an error matching ErrBadCRL; one reading the file is returned as it is.
func ReadCRL(path string, ca *x509.Certificate) (*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "X509 CRL" {
		return nil, fmt.Errorf("%w: %s: no PEM X509 CRL block", ErrBadCRL, path)
	}
	rl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadCRL, path, err)
	}
	if err := rl.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("%w: %s: not signed by the fleet CA: %v", ErrBadCRL, path, err)
	}
	return rl, nil
}

// MergedCRL returns the CRL (PEM, signed by ca) of the revocations tx holds and of those the
// CRL at prev lists that tx lacks and that are still to be listed at now. A missing prev, or
// one whose content is no CRL of the fleet's (ErrBadCRL: CRLWritten.Unread says why), is no
// error: the CRL is made from tx alone. A prev that cannot be read (an I/O error) is: what it
// lists would be lost.
func MergedCRL(prev string, ca *certs.CA, tx *registry.Tx, now time.Time) ([]byte, CRLWritten, error) {
	var w CRLWritten
	revoked := tx.Revocations()
	rl, err := ReadCRL(prev, ca.Cert)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, ErrBadCRL):
		w.Unread = err
	case err != nil:
		return nil, CRLWritten{}, fmt.Errorf("signer: read the crl before: %w", err)
	default:
		w.Kept = keepListed(rl, revoked, tx.Cert, now)
	}
	all := append(revoked, w.Kept...)
	b, err := CRL(ca, all, now, 0)
	if err != nil {
		return nil, CRLWritten{}, err
	}
	w.Listed = len(CRLEntries(all, now))
	return b, w, nil
}

// keepListed returns the entries of rl that revoked lacks and that are still to be listed at
// now, as revocations; lookup tells what the log holds of a certificate, and an entry's
// ListedNotAfter what the CRL's writer knew of it.
func keepListed(rl *x509.RevocationList, revoked []registry.Revocation, lookup func(serial string) (registry.Cert, bool), now time.Time) []registry.Revocation {
	have := make(map[string]bool, len(revoked))
	for _, r := range revoked {
		have[registry.SerialHex(r.Serial)] = true
	}
	var kept []registry.Revocation
	for _, e := range rl.RevokedCertificateEntries {
		hex := registry.SerialHex(e.SerialNumber)
		if e.SerialNumber.Sign() < 0 || have[hex] {
			continue
		}
		r := registry.Revocation{Serial: e.SerialNumber, Time: e.RevocationTime}
		if c, ok := lookup(hex); ok {
			r.Device, r.NotAfter = c.Device, c.NotAfter
		} else if notAfter, ok, err := ListedNotAfter(e); err == nil && ok {
			r.NotAfter = notAfter // the CRL before knew when the certificate expires
		} else if !e.RevocationTime.Add(registry.RevocationKeep).After(now) {
			continue
		}
		if len(CRLEntries([]registry.Revocation{r}, now)) == 0 {
			continue // its certificate expired over a day ago
		}
		have[hex] = true
		kept = append(kept, r)
	}
	return kept
}

// WriteCRL writes MergedCRL's output, the CRL at path kept on it, to path atomically, mode
// 0644 (a CRL is public). Call it under the registry's lock (in Registry.Update, with that
// transaction), as every writer of the CRL does, so that a CRL made from the revocations read
// before another process's newer CRL does not replace it.
//
// An unreadable CRL (CRLWritten.Unread) is moved aside first, to path.corrupt-<Unix time>:
// the new CRL lacks what it listed and the log lost, and CRLFile keeps refusing that until it
// restarts.
func WriteCRL(path string, ca *certs.CA, tx *registry.Tx, now time.Time) (CRLWritten, error) {
	b, w, err := MergedCRL(path, ca, tx, now)
	if err != nil {
		return CRLWritten{}, err
	}
	if w.Unread != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
		if err := os.Rename(path, aside); err != nil {
			return CRLWritten{}, fmt.Errorf("signer: move the unreadable crl aside: %w", err)
		}
		w.MovedAside = aside
	}
	if err := atomicfile.WriteFile(path, b, 0o644); err != nil {
		return CRLWritten{}, fmt.Errorf("signer: write crl: %w", err)
	}
	return w, nil
}
