package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
)

// Credentials are the device's identity as its state directory holds it: what `camagent
// selftest` checks and connects with.
type Credentials struct {
	// DeviceID is the device's id.
	DeviceID string
	// Broker is the enrollment bundle's broker URL.
	Broker string
	// CopyBroker is the broker URL of the bundle's copy when the two hold the same
	// enrollment but disagree on it (a storage fault in one of them): the agent tries it
	// after Broker. "" when they agree.
	CopyBroker string
	// Pool holds the pinned fleet CA.
	Pool *x509.CertPool
	// Cert is the certificate the agent presents to the broker, with its private key: the
	// active generation's, or the next one's when a rotation has it issued but not committed.
	Cert *tls.Certificate
	// Generation is Cert's credential generation; 0 is the enrollment key and bundle.
	Generation uint64
	// TimeFloor is the persisted time floor (R5); zero when none was persisted.
	TimeFloor time.Time
	// KeySet is the key set the device holds: the newest it accepted, else its bundle's.
	// Its BrokerNotBefore retires broker certificates, as in the agent's connections.
	KeySet *certs.KeySet
}

// ReadCredentials reads the device's credentials from dir without changing anything in it:
// unlike New it neither quarantines a corrupt state file nor wipes stale generations, so it is
// safe while an agent runs on the same directory. A device without a bundle reports
// ErrNotEnrolled.
func ReadCredentials(dir string) (*Credentials, error) {
	id, err := loadIdentity(dir)
	if err != nil {
		return nil, err
	}
	var st state.State
	b, err := cappedfile.Read(filepath.Join(dir, StateFile), state.MaxFileSize)
	corrupt := fmt.Sprintf("agent: %s is corrupt (the agent quarantines it and recovers at its next start)", StateFile)
	switch {
	case err != nil && isLink(filepath.Join(dir, StateFile)):
		// A link to nothing readable, which the agent moves aside (state.FileStore.Load).
		return nil, fmt.Errorf("%s: a symbolic link to nothing readable: %w", corrupt, err)
	case errors.Is(err, fs.ErrNotExist) && stateLost(dir):
		return nil, fmt.Errorf("agent: %s is gone although the device wrote one (%s, a quarantined %s or an issued generation is there); the agent rebuilds it at its next start", StateFile, FloorFile, StateFile)
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("agent: %w", err)
	default:
		if st, err = state.Parse(b); err != nil {
			return nil, fmt.Errorf("%s: %w", corrupt, err)
		}
	}
	gen := st.Cred.Active
	c, err := loadGeneration(dir, gen, id.bundle)
	if err != nil {
		return nil, fmt.Errorf("agent: active credential (generation %d): %w", gen, err)
	}
	if st.Cred.Phase == state.PhaseIssued {
		if next, err := loadGeneration(dir, st.Cred.Next, id.bundle); err == nil && next.cert != nil {
			c, gen = next, st.Cred.Next
		}
	}
	if c.cert == nil {
		return nil, fmt.Errorf("agent: generation %d has no certificate", gen)
	}
	tc, err := certs.TLSCertificate(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	ks, err := heldKeySet(id, st.KeySet)
	if err != nil {
		return nil, err
	}
	cr := &Credentials{
		DeviceID:   id.bundle.Bundle.DeviceID,
		Broker:     id.bundle.Bundle.Broker,
		Pool:       id.bundle.Pool,
		Cert:       tc,
		Generation: gen,
		KeySet:     ks,
	}
	if id.disputed != cr.Broker {
		cr.CopyBroker = id.disputed
	}
	if st.TimeFloor > 0 {
		cr.TimeFloor = time.Unix(st.TimeFloor, 0)
	}
	return cr, nil
}

// isLink reports whether p is a symbolic link.
func isLink(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}
