//go:build unix

package signer_test

import (
	"crypto"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// heldKey is the fleet CA's key in a signing device (an HSM) that can be made slow: once held,
// every signature waits until released.
type heldKey struct {
	crypto.Signer
	mu      sync.Mutex
	gate    chan struct{} // nil: sign at once
	entered chan struct{} // receives when a signature starts waiting
}

var _ crypto.Signer = (*heldKey)(nil)

func newHeldKey(k crypto.Signer) *heldKey {
	return &heldKey{Signer: k, entered: make(chan struct{}, 1)}
}

func (k *heldKey) hold() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gate = make(chan struct{})
}

func (k *heldKey) release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gate != nil {
		close(k.gate)
		k.gate = nil
	}
}

func (k *heldKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.Lock()
	gate := k.gate
	k.mu.Unlock()
	if gate != nil {
		select {
		case k.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	return k.Signer.Sign(rand, digest, opts)
}

// registryLocked reports whether some process holds the registry's file lock now.
func registryLocked(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true
	}
	t.Fatal(err)
	return false
}

// The CRL file is shared by every signer of the fleet directory and by the operator's commands
// (fleetctl revoke, retire, mosquitto-config), which write it under the registry's lock. A
// signer whose CRL was signed from an older view of the registry must not replace a newer one:
// a revocation missing from the CRL is a certificate a restarted Mosquitto accepts again.
func TestASignersCRLNeverReplacesANewerOne(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	stolen := fleettest.Enroll(t, f, "cam-0002")
	b := mqtttest.StartEmbedded(t, pki)
	key := newHeldKey(f.CA.Key)
	t.Cleanup(key.release)
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.CA, c.Clock = &certs.CA{Cert: f.CA.Cert, Key: key}, newClock(time.Now())
	})
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	req, k := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, req)
	newCert := fleettest.Certificate(t, f, d.AwaitFor(t, req.ReqID), "cam-0001", k)

	// The confirmation revokes the old certificate; the signer's CRL for it is being signed.
	key.hold()
	d.Send(t, fleettest.Confirmation(req.ReqID, 1, newCert.Leaf, e.Cert.Leaf))
	select {
	case <-key.entered:
	case <-time.After(fleettest.Timeout):
		t.Fatalf("the signer wrote no CRL after the revocation\n%s", s.log.Text())
	}
	// Meanwhile the operator revokes a stolen camera's certificate, as fleetctl revoke does.
	operatorRevokes := func() {
		reg := fleetRegistry(t, f)
		err := reg.Update(func(tx *registry.Tx) error {
			rec := registry.Record{Type: registry.TypeRevoked, Serial: registry.SerialHex(stolen.Cert.Leaf.SerialNumber), Device: "cam-0002", Time: time.Now().UTC()}
			if err := tx.Append(rec); err != nil {
				return err
			}
			_, err := signer.WriteCRL(f.CRLPath(), f.CA, tx, time.Now())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if registryLocked(t, f.RegistryPath()) {
		// The signer writes its CRL under the lock: the operator's comes after it.
		key.release()
		operatorRevokes()
	} else {
		operatorRevokes()
		key.release()
	}
	s.log.WaitFor(t, fleettest.Timeout, "crl written", "listed=1")
	crl := readCRL(t, f.CRLPath())
	if !crlLists(crl, stolen.Cert.Leaf) {
		t.Fatalf("the signer's CRL replaced the operator's newer one: the revoked %s is missing (CRL lists %d)", registry.SerialHex(stolen.Cert.Leaf.SerialNumber), len(crl.RevokedCertificateEntries))
	}
	if !crlLists(crl, e.Cert.Leaf) {
		t.Fatal("the CRL misses the certificate the rotation replaced")
	}
}

// A CRL write that fails (a full disk, a file in the way) is tried again: the revocation must
// reach the CRL without waiting for another one.
func TestACRLThatCouldNotBeWrittenIsWrittenLater(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	b := mqtttest.StartEmbedded(t, pki)
	clk := newClock(time.Now())
	crlPath := filepath.Join(t.TempDir(), "crl.pem")
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) { c.CRLPath, c.Clock = crlPath, clk })
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	req, k := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, req)
	newCert := fleettest.Certificate(t, f, d.AwaitFor(t, req.ReqID), "cam-0001", k)

	// Something takes the CRL's place: the signer's next write fails.
	if err := os.Remove(crlPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(crlPath, 0o700); err != nil {
		t.Fatal(err)
	}
	d.Send(t, fleettest.Confirmation(req.ReqID, 1, newCert.Leaf, e.Cert.Leaf))
	s.log.WaitFor(t, fleettest.Timeout, "cannot write the CRL")
	if err := os.Remove(crlPath); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(fleettest.Timeout)
	for {
		if _, err := os.Stat(crlPath); err == nil && crlLists(readCRL(t, crlPath), e.Cert.Leaf) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revocation never reached the CRL after a failed write\n%s", s.log.Text())
		}
		clk.Advance(time.Second)
		time.Sleep(10 * time.Millisecond) // polling a file with a deadline, the clock moving on
	}
}
