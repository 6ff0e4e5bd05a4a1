package signer_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/broker"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// running is a signer running for one test.
type running struct {
	*signer.Signer
	reg  *registry.Registry
	log  *logtest.Recorder
	stop func() // stops it and waits; idempotent
}

// startSigner runs a signer instance named name against url, with its own registry handle on
// the fleet's log (as a separate process would have), until the test ends.
func startSigner(t testing.TB, f *fleet.Fleet, url, name string, tune func(*signer.Config)) *running {
	t.Helper()
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := f.SignerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	host, _ := certs.BrokerHost(url)
	cfg := signer.Config{
		CA:          f.CA,
		Registry:    reg,
		RolloutPath: f.RolloutPath(),
		CRLPath:     f.CRLPath(),
		Validity:    f.DeviceValidity(),
		BrokerURL:   url,
		ClientID:    fleet.SignerClientID(certs.CertIdentity(cert.Leaf), name),
		TLS:         certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert)),
		MinBackoff:  50 * time.Millisecond,
		MaxBackoff:  500 * time.Millisecond,
		Logger:      log,
	}
	if tune != nil {
		tune(&cfg)
	}
	s, err := signer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("signer %s: Run: %v", name, err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		reg.Close()
		if t.Failed() {
			t.Logf("signer %s log:\n%s", name, rec.Text())
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, fleettest.Timeout)
	defer wcancel()
	if err := s.WaitConnected(wctx); err != nil {
		t.Fatalf("signer %s did not connect: %v\n%s", name, err, rec.Text())
	}
	return &running{Signer: s, reg: reg, log: rec, stop: stop}
}

// noPrivateKeys fails the test if the registry ever held a private key (S6).
func noPrivateKeys(t testing.TB, f *fleet.Fleet) {
	t.Helper()
	b, err := os.ReadFile(f.RegistryPath())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatal("the registry is empty")
	}
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		t.Fatal("the registry holds a private key")
	}
}

func TestADeviceGetsAVerifiableCertificate(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		e := fleettest.Enroll(t, f, "cam-0001")
		startSigner(t, f, b.URL(), "a", nil)
		d := fleettest.Connect(t, f, b.URL(), e.Cert)
		req, key := fleettest.NewRequest(t, "cam-0001", 7)
		d.Send(t, req)
		resp := d.AwaitFor(t, req.ReqID)
		newCert := fleettest.Certificate(t, f, resp, "cam-0001", key)
		if newCert.Leaf.NotAfter.Sub(newCert.Leaf.NotBefore) != f.DeviceValidity()+certs.Backdate {
			t.Errorf("validity %v, want the fleet's %v", newCert.Leaf.NotAfter.Sub(newCert.Leaf.NotBefore), f.DeviceValidity())
		}
		c, ok := fleetRegistry(t, f).Cert(newCert.Leaf.SerialNumber.Text(16))
		if !ok || c.Via != registry.ViaCSR || c.Epoch != 7 || c.TokenHash != req.TokenHash || c.ReqID != req.ReqID || c.Role != certs.RoleDevice {
			t.Fatalf("registry holds %+v, %v", c, ok)
		}
		d.Close()
		if _, err := fleettest.TryConnect(t, f, b.URL(), newCert); err != nil {
			t.Fatalf("the broker refuses the new certificate: %v", err)
		}
		noPrivateKeys(t, f)
	}, fleettest.Identities("cam-0001"))
}

func fleetRegistry(t *testing.T, f *fleet.Fleet) *registry.Registry {
	t.Helper()
	r, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRequestsTheSignerMustRefuse(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	ghost := fleettest.Issue(t, f, certs.RoleBootstrap, "cam-ghost") // never enrolled
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		e := fleettest.Enroll(t, f, "cam-0001")
		s := startSigner(t, f, b.URL(), "a", nil)
		d := fleettest.Connect(t, f, b.URL(), e.Cert)

		t.Run("a CSR naming another device", func(t *testing.T) {
			req, _ := fleettest.NewRequest(t, "cam-0002", 1)
			d.Send(t, req)
			if r := d.AwaitFor(t, req.ReqID); r.Error != wire.ErrCodeRefused || r.Cert != "" {
				t.Fatalf("answer %+v, want refused", r)
			}
			s.log.WaitFor(t, fleettest.Timeout, "the csr names another identity", "cam-0002")
		})
		t.Run("a CSR naming the device's bootstrap identity", func(t *testing.T) {
			req, _ := fleettest.NewRequest(t, "bootstrap:cam-0001", 1)
			d.Send(t, req)
			if r := d.AwaitFor(t, req.ReqID); r.Error != wire.ErrCodeRefused {
				t.Fatalf("answer %+v, want refused", r)
			}
		})
		t.Run("a bootstrap request for a device that was never enrolled", func(t *testing.T) {
			g := fleettest.Connect(t, f, b.URL(), ghost)
			req, _ := fleettest.NewRequest(t, "cam-ghost", 1)
			g.Send(t, req)
			if r := g.AwaitFor(t, req.ReqID); r.Error != wire.ErrCodeRefused {
				t.Fatalf("answer %+v, want refused", r)
			}
			s.log.WaitFor(t, fleettest.Timeout, "never enrolled", "cam-ghost")
		})
		t.Run("a bootstrap request for an enrolled device is answered on its boot topic", func(t *testing.T) {
			bd := fleettest.Connect(t, f, b.URL(), e.Boot)
			req, key := fleettest.NewRequest(t, "cam-0001", 2)
			bd.Send(t, req)
			c := fleettest.Certificate(t, f, bd.AwaitFor(t, req.ReqID), "cam-0001", key)
			if got, _ := s.reg.Cert(c.Leaf.SerialNumber.Text(16)); got.Via != registry.ViaBoot {
				t.Fatalf("recorded via %q", got.Via)
			}
			// The bootstrap identity may not make the signer revoke anything.
			bd.Send(t, fleettest.Confirmation(req.ReqID, 2, c.Leaf, e.Cert.Leaf))
			s.log.WaitFor(t, fleettest.Timeout, "confirmation ignored: sent through the bootstrap identity")
			if s.reg.Revoked(e.Cert.Leaf.SerialNumber) {
				t.Fatal("a bootstrap confirmation revoked a certificate")
			}
		})
		t.Run("a confirmation of a certificate never issued to the device", func(t *testing.T) {
			other := fleettest.Issue(t, f, certs.RoleDevice, "cam-0002")
			d.Send(t, fleettest.Confirmation("0123456789abcdef", 1, other.Leaf, e.Cert.Leaf))
			s.log.WaitFor(t, fleettest.Timeout, "the certificate was not issued to this device")
			if s.reg.Revoked(e.Cert.Leaf.SerialNumber) {
				t.Fatal("a confirmation of a foreign serial revoked the device's certificate")
			}
		})
	}, fleettest.Identities("cam-0001", "cam-ghost"))
}

// A retired device gets no certificate, through its own identity or its factory bootstrap
// identity, even over connections its broker still lets through (Mosquitto until restarted
// with the CRL).
func TestARetiredDeviceGetsNoCertificateThroughEitherIdentity(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	ids := []string{"cam-0001", "cam-0002"} // one per broker: the fleet is shared, and a retired id stays retired
	n := 0
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		id := ids[n]
		n++
		e := fleettest.Enroll(t, f, id)
		s := startSigner(t, f, b.URL(), "a", nil)
		d := fleettest.Connect(t, f, b.URL(), e.Cert)
		bd := fleettest.Connect(t, f, b.URL(), e.Boot)
		if _, err := f.RetireDevices([]string{id}, time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*fleettest.Device{d, bd} {
			req, _ := fleettest.NewRequest(t, id, 1)
			c.Send(t, req)
			if r := c.AwaitFor(t, req.ReqID); r.Error != wire.ErrCodeRefused || r.Cert != "" {
				t.Fatalf("answer %+v, want refused", r)
			}
		}
		s.log.WaitFor(t, fleettest.Timeout, "the device was retired", id, "via=csr")
		s.log.WaitFor(t, fleettest.Timeout, "the device was retired", id, "via=boot")
		for _, c := range fleetRegistry(t, f).DeviceCerts(id) {
			if !c.IsRevoked() {
				t.Fatalf("the retired device's %s certificate %s is not revoked", c.Role, c.Serial)
			}
		}
	}, fleettest.Identities(ids...))
}

func TestARetriedRequestGetsTheSameCertificate(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	b := mqtttest.StartEmbedded(t, pki)
	s := startSigner(t, f, b.URL(), "a", nil)
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	req, key := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, req)
	first := d.AwaitFor(t, req.ReqID)
	fleettest.Certificate(t, f, first, "cam-0001", key)
	d.Send(t, req) // the device timed out and asks again
	again := d.AwaitFor(t, req.ReqID)
	if again.Cert != first.Cert {
		t.Fatal("a retried request got a different certificate")
	}
	if st := s.Stats(); st.Issued != 1 || st.Reissued != 1 {
		t.Fatalf("stats %+v, want 1 issued and 1 reissued", st)
	}
	// The same request id with another key is a new request.
	other, key2 := fleettest.NewRequest(t, "cam-0001", 1)
	other.ReqID = req.ReqID
	d.Send(t, other)
	third := fleettest.Certificate(t, f, d.AwaitFor(t, req.ReqID), "cam-0001", key2)
	if string(certs.EncodeCertPEM(third.Leaf)) == first.Cert {
		t.Fatal("a request with the same id but another key got the first certificate")
	}
}

// TestAConfirmationRevokesTheOldCertificate runs the embedded broker as fleetctl broker does:
// the registry decides Revoked, and an Enforcer cuts live sessions.
func TestAConfirmationRevokesTheOldCertificate(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	reg := fleetRegistry(t, f)
	brk, err := broker.New(broker.Config{Addr: "127.0.0.1:0", TLS: pki.ServerTLS(t), Revoked: reg.Revoked})
	if err != nil {
		t.Fatal(err)
	}
	if err := brk.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	enfDone := make(chan error, 1)
	go func() { enfDone <- (&signer.Enforcer{Registry: reg, Broker: brk}).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-enfDone
		brk.Close()
	})
	url := brk.URL()
	s := startSigner(t, f, url, "a", nil)

	// An abandoned attempt first: its certificate must go too.
	d := fleettest.Connect(t, f, url, e.Cert)
	abandoned, _ := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, abandoned)
	abandonedResp := d.AwaitFor(t, abandoned.ReqID)
	req, key := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, req)
	newCert := fleettest.Certificate(t, f, d.AwaitFor(t, req.ReqID), "cam-0001", key)
	d.Close()

	// A session still live on the old certificate sends the confirmation (as a device does
	// right after switching; here the switch and the old session are the same for brevity).
	live, err := fleettest.TryConnect(t, f, url, e.Cert)
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := wireEncode(t, fleettest.Confirmation(req.ReqID, 1, newCert.Leaf, e.Cert.Leaf))
	if tok := live.Client.Publish("dev/cam-0001/up/csr", 1, false, conf); !tok.WaitTimeout(fleettest.Timeout) || tok.Error() != nil {
		t.Fatalf("publish confirmation: %v", tok.Error())
	}
	select {
	case <-live.Lost:
	case <-time.After(fleettest.Timeout):
		t.Fatalf("the live session on the revoked certificate was not cut\n%s", s.log.Text())
	}
	if !reg.Revoked(e.Cert.Leaf.SerialNumber) {
		t.Fatal("the old certificate is not revoked")
	}
	abandonedCert, _ := certs.ParseCertPEM([]byte(abandonedResp.Cert))
	if !reg.Revoked(abandonedCert.SerialNumber) {
		t.Fatal("the certificate of the abandoned attempt is not revoked")
	}
	if reg.Revoked(newCert.Leaf.SerialNumber) {
		t.Fatal("the confirmed certificate was revoked")
	}
	if _, err := fleettest.TryConnect(t, f, url, e.Cert); err == nil {
		t.Fatal("the embedded broker accepts the revoked certificate")
	}
	if _, err := fleettest.TryConnect(t, f, url, newCert); err != nil {
		t.Fatalf("the embedded broker refuses the new certificate: %v", err)
	}
	// A duplicate, late confirmation changes nothing.
	d2 := fleettest.Connect(t, f, url, newCert)
	d2.Send(t, fleettest.Confirmation(req.ReqID, 1, newCert.Leaf, e.Cert.Leaf))
	d2.Send(t, fleettest.Confirmation(abandoned.ReqID, 1, abandonedCert, e.Cert.Leaf))
	s.log.WaitFor(t, fleettest.Timeout, "confirmation ignored: the certificate was revoked since")
	if reg.Revoked(newCert.Leaf.SerialNumber) {
		t.Fatal("a late confirmation of an older certificate revoked the current one")
	}
	if st := s.Stats(); st.Revoked != 2 || st.Confirmed != 1 {
		t.Fatalf("stats %+v, want 2 revoked and 1 confirmed", st)
	}
	crl := readCRL(t, f.CRLPath())
	if !crlLists(crl, e.Cert.Leaf) || !crlLists(crl, abandonedCert) || crlLists(crl, newCert.Leaf) {
		t.Fatalf("the CRL lists %v", crl.RevokedCertificateEntries)
	}
	noPrivateKeys(t, f)
}

func wireEncode(t *testing.T, r wire.CertRequest) ([]byte, error) {
	t.Helper()
	b, err := wire.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	return b, nil
}

func readCRL(t *testing.T, path string) *x509.RevocationList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("%s holds no X509 CRL", path)
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func crlLists(crl *x509.RevocationList, c *x509.Certificate) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// Mosquitto learns revocations only from its crlfile, which it reads when it starts.
func TestARestartedMosquittoRefusesARevokedCertificate(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	empty, err := signer.CRL(f.CA, nil, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, pki, mqtttest.WithCRL(empty), fleettest.Identities())
	crlPath := filepath.Join(m.Dir(), "crl.pem") // Mosquitto's crlfile
	s := startSigner(t, f, m.URL(), "a", func(c *signer.Config) { c.CRLPath = crlPath })

	d := fleettest.Connect(t, f, m.URL(), e.Cert)
	req, key := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, req)
	newCert := fleettest.Certificate(t, f, d.AwaitFor(t, req.ReqID), "cam-0001", key)
	d.Close()
	d2 := fleettest.Connect(t, f, m.URL(), newCert)
	d2.Send(t, fleettest.Confirmation(req.ReqID, 1, newCert.Leaf, e.Cert.Leaf))
	s.log.WaitFor(t, fleettest.Timeout, "crl written", "listed=1")
	d2.Close()
	crl := readCRL(t, crlPath)
	if err := crl.CheckSignatureFrom(f.CA.Cert); err != nil {
		t.Fatal(err)
	}
	if !crlLists(crl, e.Cert.Leaf) || crlLists(crl, newCert.Leaf) {
		t.Fatalf("the CRL lists %v", crl.RevokedCertificateEntries)
	}

	m.Restart(t)
	if _, err := fleettest.TryConnect(t, f, m.URL(), e.Cert); err == nil {
		t.Fatal("Mosquitto, restarted with the CRL, accepts the revoked certificate")
	}
	if _, err := fleettest.TryConnect(t, f, m.URL(), newCert); err != nil {
		t.Fatalf("Mosquitto refuses the new certificate: %v", err)
	}
}

// A Mosquitto that has run on one CRL for longer than a year still lets the fleet in: the CRL
// is valid until the CA expires. (Mosquitto refuses every client once its CRL is past
// nextUpdate, and reads the file only when it starts; a CRL valid for a year, as before, failed
// this test.)
func TestACRLOutlivesAnyMosquittoUptime(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	written := time.Now().Add(-400 * 24 * time.Hour)
	old, err := signer.CRL(f.CA, nil, written, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := mqtttest.StartMosquitto(t, pki, mqtttest.WithCRL(old), fleettest.Identities())
	if _, err := fleettest.TryConnect(t, f, m.URL(), e.Cert); err != nil {
		t.Fatalf("Mosquitto with a CRL written 400 days ago refuses a valid device: %v", err)
	}
	blk, _ := pem.Decode(old)
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !crl.NextUpdate.Equal(f.CA.Cert.NotAfter) {
		t.Fatalf("nextUpdate %v, want the CA's expiry %v", crl.NextUpdate, f.CA.Cert.NotAfter)
	}
}

func TestThreeSignersShareTheLoad(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	const devices, each = 10, 3
	var enrolled []*fleettest.Enrolled
	for i := range devices {
		enrolled = append(enrolled, fleettest.Enroll(t, f, fmt.Sprintf("cam-%04d", i)))
	}
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		var signers []*running
		for _, name := range []string{"a", "b", "c"} {
			signers = append(signers, startSigner(t, f, b.URL(), name, nil))
		}
		type sent struct {
			d   *fleettest.Device
			ids map[string]int
		}
		var all []sent
		for _, e := range enrolled {
			s := sent{d: fleettest.Connect(t, f, b.URL(), e.Cert), ids: map[string]int{}}
			for range each {
				req, _ := fleettest.NewRequest(t, e.ID, 1)
				s.ids[req.ReqID] = 0
				s.d.Send(t, req)
			}
			all = append(all, s)
		}
		for _, s := range all {
			for got := 0; got < each; got++ {
				r := s.d.Await(t)
				n, ok := s.ids[r.ReqID]
				if !ok || n > 0 || r.Error != "" {
					t.Fatalf("%s: unexpected answer %+v (answered %d times before)", s.d.ID, r, n)
				}
				s.ids[r.ReqID]++
			}
		}
		var issued, reissued, refused uint64
		for i, s := range signers {
			st := s.Stats()
			if st.Issued == 0 {
				t.Errorf("signer %d handled none of the requests", i)
			}
			issued, reissued, refused = issued+st.Issued, reissued+st.Reissued, refused+st.Refused
			t.Logf("signer %d: %+v", i, st)
		}
		if issued != devices*each || reissued != 0 || refused != 0 {
			t.Fatalf("%d issued, %d reissued, %d refused; want each of the %d requests handled exactly once", issued, reissued, refused, devices*each)
		}
	}, fleettest.Identities())
}

func TestTheRateLimitPacesARollout(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	b := mqtttest.StartEmbedded(t, pki)
	clk := newClock(time.Now())
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.MaxRate, c.Burst, c.Clock = 1, 1, clk
	})
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	first, key := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, first)
	fleettest.Certificate(t, f, d.AwaitFor(t, first.ReqID), "cam-0001", key)
	second, key2 := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, second)
	if r := d.AwaitFor(t, second.ReqID); r.Error != wire.ErrCodeRateLimited || r.V != wire.Version || r.RetryAfter != 0 {
		t.Fatalf("answer %+v, want rate_limited in version 1, without a retry hint", r)
	}
	// Asked in version 2, the signer says when to come back: when the limit has the next
	// certificate (60 s, at one a minute). The device told again gives its place up for the
	// new one: 60 s again, not a minute after its own (pace_internal_test.go spaces devices).
	for _, want := range []int{60, 60} {
		r2, _ := fleettest.NewRequest(t, "cam-0001", 1)
		r2.V = wire.CertVersion
		d.Send(t, r2)
		if r := d.AwaitFor(t, r2.ReqID); r.Error != wire.ErrCodeRateLimited || r.V != wire.CertVersion || r.RetryAfter != want {
			t.Fatalf("answer %+v, want rate_limited in version 2, retry after %d s", r, want)
		}
	}
	d.Send(t, first) // a retry is not a new certificate: never paced
	if r := d.AwaitFor(t, first.ReqID); r.Error != "" {
		t.Fatalf("a retried request was paced: %+v", r)
	}
	clk.Advance(61 * time.Second)
	d.Send(t, second)
	fleettest.Certificate(t, f, d.AwaitFor(t, second.ReqID), "cam-0001", key2)
	if st := s.Stats(); st.RateLimited != 3 || st.Issued != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTheRolloutAbortsPastTheFailureRatio(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	b := mqtttest.StartEmbedded(t, pki)
	clk := newClock(time.Now())
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.AbortRatio, c.AbortMin, c.ConfirmTimeout, c.CheckInterval, c.Clock = 0.5, 2, time.Minute, 24*time.Hour, clk
	})
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	issue := func() (wire.CertRequest, *wire.CertResponse) {
		t.Helper()
		req, _ := fleettest.NewRequest(t, "cam-0001", 1)
		d.Send(t, req)
		return req, d.AwaitFor(t, req.ReqID)
	}
	// A is confirmed in time, B never is: 1 failure in 2 is not above 0.5.
	reqA, a := issue()
	_, bResp := issue()
	if a.Error != "" || bResp.Error != "" {
		t.Fatalf("answers %+v %+v", a, bResp)
	}
	certA, _ := certs.ParseCertPEM([]byte(a.Cert))
	d.Send(t, fleettest.Confirmation(reqA.ReqID, 1, certA, e.Cert.Leaf))
	s.log.WaitFor(t, fleettest.Timeout, "certificate revoked")
	clk.Advance(2 * time.Minute)
	if _, c := issue(); c.Error != "" {
		t.Fatalf("refused at a failure ratio of 0.5: %+v", c)
	}
	// C is not confirmed either: 2 failures in 3.
	clk.Advance(2 * time.Minute)
	reqD, dResp := issue()
	if dResp.Error != wire.ErrCodeRefused {
		t.Fatalf("answer %+v, want refused once the ratio passed 0.5", dResp)
	}
	s.log.WaitFor(t, fleettest.Timeout, "ROLLOUT ABORTED", "2 of 3")
	st, err := signer.LoadRollout(f.RolloutPath())
	if err != nil || !st.Aborted || st.Failed != 2 || st.Issued != 3 {
		t.Fatalf("persisted rollout state %+v, %v", st, err)
	}
	// Another signer of the fleet directory, started now, refuses too.
	other := startSigner(t, f, b.URL(), "b", func(c *signer.Config) { c.AbortRatio, c.Clock = 0.5, clk })
	_ = other
	before, _, err := signer.Resume(s.reg, f.RolloutPath(), clk.Now())
	if err != nil || !before.Aborted {
		t.Fatalf("Resume: %+v, %v", before, err)
	}
	d.Send(t, reqD)
	if r := d.AwaitFor(t, reqD.ReqID); r.Error != "" {
		t.Fatalf("refused after resume: %+v", r)
	}
}

// A stopped signer's persistent session keeps its shared subscriptions, so the brokers keep
// handing it requests; Retire discards it.
func TestARetiredSignerIsHandedNoMoreRequests(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	cert, err := f.SignerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		live := startSigner(t, f, b.URL(), "live", nil)
		gone := startSigner(t, f, b.URL(), "gone", nil)
		gone.stop()
		ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
		defer cancel()
		host, _ := certs.BrokerHost(b.URL())
		if err := signer.Retire(ctx, b.URL(), fleet.SignerClientID(certs.CertIdentity(cert.Leaf), "gone"), certs.ClientTLSConfig(f.Pool, host, certs.NewHolder(cert)), nil); err != nil {
			t.Fatal(err)
		}
		d := fleettest.Connect(t, f, b.URL(), e.Cert)
		const n = 12
		for range n {
			req, _ := fleettest.NewRequest(t, "cam-0001", 1)
			d.Send(t, req)
			if r := d.AwaitFor(t, req.ReqID); r.Error != "" {
				t.Fatalf("answer %+v", r)
			}
		}
		if st := live.Stats(); st.Issued != n {
			t.Fatalf("the live signer issued %d of %d", st.Issued, n)
		}
	}, fleettest.Identities())
}

// waitHeld waits until the signer has held n requests for a place in the window.
func waitHeld(t *testing.T, s *running, n uint64) {
	t.Helper()
	deadline := time.Now().Add(fleettest.Timeout)
	for s.Stats().Held != n {
		if time.Now().After(deadline) {
			t.Fatalf("held %d requests, want %d\n%s", s.Stats().Held, n, s.log.Text())
		}
		time.Sleep(5 * time.Millisecond) // polling a counter with a deadline
	}
}

// advanceUntilAnswered moves clk on a second at a time until d hears an answer, and returns
// it with the time that passed on clk.
func advanceUntilAnswered(t *testing.T, clk interface{ Advance(time.Duration) }, d *fleettest.Device) (*wire.CertResponse, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(fleettest.Timeout)
	var passed time.Duration
	for {
		select {
		case r := <-d.Answers():
			return r, passed
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer for %s after %s on the signer's clock", d.ID, passed)
		}
		clk.Advance(time.Second)
		passed += time.Second
	}
}

// The window of Config.MaxPending: a request that needs a new certificate while the window is
// full waits, unanswered, until a confirmation frees a place, or until the unconfirmed
// certificates stop counting after PendingTimeout. Retries of answered requests never wait.
func TestTheWindowHoldsRequestsUntilAPlaceIsFree(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	ea := fleettest.Enroll(t, f, "cam-0001")
	eb := fleettest.Enroll(t, f, "cam-0002")
	ec := fleettest.Enroll(t, f, "cam-0003")
	b := mqtttest.StartEmbedded(t, pki)
	clk := newClock(time.Now())
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.MaxPending, c.PendingTimeout, c.HoldTimeout, c.Clock = 1, 30*time.Second, time.Hour, clk
	})
	da := fleettest.Connect(t, f, b.URL(), ea.Cert)
	db := fleettest.Connect(t, f, b.URL(), eb.Cert)
	dc := fleettest.Connect(t, f, b.URL(), ec.Cert)

	ra, ka := fleettest.NewRequest(t, "cam-0001", 1)
	da.Send(t, ra)
	certA := fleettest.Certificate(t, f, da.AwaitFor(t, ra.ReqID), "cam-0001", ka)

	rb, kb := fleettest.NewRequest(t, "cam-0002", 1)
	db.Send(t, rb)
	waitHeld(t, s, 1)
	da.Send(t, ra) // a retry: answered with the certificate issued before, at once
	if r := da.AwaitFor(t, ra.ReqID); r.Error != "" || r.Cert == "" {
		t.Fatalf("a retried request was held or refused: %+v", r)
	}
	select {
	case r := <-db.Answers():
		t.Fatalf("answered while the window is full: %+v", r)
	default:
	}
	da.Send(t, fleettest.Confirmation(ra.ReqID, 1, certA.Leaf, ea.Cert.Leaf))
	fleettest.Certificate(t, f, db.AwaitFor(t, rb.ReqID), "cam-0002", kb)

	// cam-0002 never confirms: its certificate holds the place for PendingTimeout.
	rc, kc := fleettest.NewRequest(t, "cam-0003", 1)
	dc.Send(t, rc)
	waitHeld(t, s, 2)
	r, passed := advanceUntilAnswered(t, clk, dc)
	fleettest.Certificate(t, f, r, "cam-0003", kc)
	if passed < 30*time.Second {
		t.Fatalf("cam-0003 was issued %s after it asked, while cam-0002's certificate still counted", passed)
	}
	if st := s.Stats(); st.Issued != 3 || st.Held != 2 || st.RateLimited != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A request held longer than HoldTimeout is answered rate_limited, before the agent's own
// request timeout, and the device retries after its backoff.
func TestARequestHeldTooLongIsToldToRetry(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	ea := fleettest.Enroll(t, f, "cam-0001")
	eb := fleettest.Enroll(t, f, "cam-0002")
	b := mqtttest.StartEmbedded(t, pki)
	clk := newClock(time.Now())
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.MaxPending, c.PendingTimeout, c.HoldTimeout, c.Clock = 1, time.Hour, 5*time.Second, clk
	})
	da := fleettest.Connect(t, f, b.URL(), ea.Cert)
	db := fleettest.Connect(t, f, b.URL(), eb.Cert)
	ra, ka := fleettest.NewRequest(t, "cam-0001", 1)
	da.Send(t, ra)
	fleettest.Certificate(t, f, da.AwaitFor(t, ra.ReqID), "cam-0001", ka)

	rb, _ := fleettest.NewRequest(t, "cam-0002", 1)
	rb.V = wire.CertVersion
	db.Send(t, rb)
	waitHeld(t, s, 1)
	r, passed := advanceUntilAnswered(t, clk, db)
	// The signer issued one certificate in the hold: its pace says a place a few seconds on.
	if r.ReqID != rb.ReqID || r.Error != wire.ErrCodeRateLimited || r.V != wire.CertVersion || r.RetryAfter < 1 || r.RetryAfter > 10 {
		t.Fatalf("answer %+v, want rate_limited for %s, in version 2 with a hint of a few seconds", r, rb.ReqID)
	}
	if passed < 5*time.Second || passed > 10*time.Second {
		t.Fatalf("answered after %s on the signer's clock, want about the hold timeout of 5s", passed)
	}
	if st := s.Stats(); st.Issued != 1 || st.Held != 1 || st.RateLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A device that reconnects while its request is held sends it again, with the same req_id:
// the signer holds one copy and answers once, and a copy that comes after the answer is
// answered again.
func TestACopyOfAHeldRequestIsHeldOnce(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	ea := fleettest.Enroll(t, f, "cam-0001")
	eb := fleettest.Enroll(t, f, "cam-0002")
	b := mqtttest.StartEmbedded(t, pki)
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.MaxPending, c.PendingTimeout, c.HoldTimeout = 1, time.Hour, time.Hour
	})
	da := fleettest.Connect(t, f, b.URL(), ea.Cert)
	db := fleettest.Connect(t, f, b.URL(), eb.Cert)
	ra, ka := fleettest.NewRequest(t, "cam-0001", 1)
	da.Send(t, ra)
	certA := fleettest.Certificate(t, f, da.AwaitFor(t, ra.ReqID), "cam-0001", ka)

	rb, kb := fleettest.NewRequest(t, "cam-0002", 1)
	db.Send(t, rb)
	waitHeld(t, s, 1)
	db.Send(t, rb)
	deadline := time.Now().Add(fleettest.Timeout)
	for st := s.Stats(); st.Ignored == 0 && st.Held == 1; st = s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the copy was neither dropped nor held: %+v", st)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter with a deadline
	}
	if st := s.Stats(); st.Ignored != 1 || st.Held != 1 {
		t.Fatalf("stats %+v, want the copy ignored and one request held", st)
	}
	da.Send(t, fleettest.Confirmation(ra.ReqID, 1, certA.Leaf, ea.Cert.Leaf))
	fleettest.Certificate(t, f, db.AwaitFor(t, rb.ReqID), "cam-0002", kb)
	if st := s.Stats(); st.Issued != 2 || st.Reissued != 0 {
		t.Fatalf("stats %+v, want two certificates issued and none again", st)
	}
	// A copy that comes after the answer (which the device may have missed) gets it again.
	db.Send(t, rb)
	if r := db.AwaitFor(t, rb.ReqID); r.Error != "" || r.Cert == "" {
		t.Fatalf("a copy sent after the answer: %+v", r)
	}
	if st := s.Stats(); st.Issued != 2 || st.Reissued != 1 {
		t.Fatalf("stats %+v, want the copy answered with the certificate issued before", st)
	}
}

// A signer compacts the registry as it starts: the records of a certificate that expired long
// ago move to the archive, the enrolled device's stay.
func TestTheSignerCompactsTheRegistry(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	key, _ := certs.GenerateKey()
	long := time.Now().Add(-200 * 24 * time.Hour)
	old, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleViewer, Name: "retired", PublicKey: key.Public(), Now: long})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := registry.ViewerIssuedRecord(old, long)
	if err != nil {
		t.Fatal(err)
	}
	reg := fleetRegistry(t, f)
	if err := reg.Update(func(tx *registry.Tx) error { return tx.Append(rec) }); err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartEmbedded(t, pki)
	s := startSigner(t, f, b.URL(), "a", nil)
	s.log.WaitFor(t, fleettest.Timeout, "registry compacted", "archived=1")
	if _, ok := reg.Cert(registry.SerialHex(old.SerialNumber)); ok {
		t.Error("the expired certificate is still in the log")
	}
	if _, ok := reg.Cert(registry.SerialHex(e.Cert.Leaf.SerialNumber)); !ok {
		t.Error("the enrolled device's certificate left the log")
	}
}

// A signer tells its operator, once, when the broker makes TLS session tickets: Mosquitto run
// without the openssl.cnf of fleetctl mosquitto-config. Brokers as deployed make none, and
// the signer says nothing of them.
func TestTheSignerWarnsOfABrokerThatMakesSessionTickets(t *testing.T) {
	const warning = "the broker makes TLS session tickets"
	f, pki := fleettest.NewFleet(t)
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		s := startSigner(t, f, b.URL(), "a", nil)
		// Tickets come right after the handshake, before the CONNACK: a connected signer
		// has seen any it was given.
		if strings.Contains(s.log.Text(), warning) {
			t.Fatalf("%s, as deployed, makes no tickets, but the signer says:\n%s", b.Name(), s.log.Text())
		}
	}, fleettest.Identities())
	t.Run("mosquitto with OpenSSL's defaults", func(t *testing.T) {
		m := mqtttest.StartMosquitto(t, pki, mqtttest.WithOpenSSLDefaults(), fleettest.Identities())
		s := startSigner(t, f, m.URL(), "a", nil)
		line := s.log.WaitFor(t, fleettest.Timeout, warning, "OPENSSL_CONF", "mosquitto-config")
		if !strings.Contains(line, m.URL()) {
			t.Errorf("the warning does not name the broker %s: %s", m.URL(), line)
		}
		// Once: a reconnection gets two more tickets, and the log says nothing new.
		m.Restart(t)
		s.log.WaitForNth(t, fleettest.Timeout, 2, "mqtt: connected")
		if n := strings.Count(s.log.Text(), warning); n != 1 {
			t.Errorf("the warning was logged %d times, want once:\n%s", n, s.log.Text())
		}
	})
}
