package agent

import (
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// If the broker refuses the new certificate, the agent goes back to the old one, keeps
// serving, and keeps the issued certificate journaled to try again (rotation issue, item 3).
func TestBrokerRefusingTheNewCertificateFallsBackToTheOldOne(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	now := time.Now()

	dir := enrolledOn(t, pki, b, "cam-0001", now)
	// A signer that answers with a certificate valid from one minute ahead: within the
	// device's clock tolerance, so the device accepts it, but the broker refuses it.
	testSigner(t, b, pki, "cam-0001", func() time.Time { return time.Now().Add(certs.Backdate + time.Minute) })

	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, SwitchTimeout: 2 * time.Second, RetryMin: time.Hour, RetryMax: time.Hour,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	old := a.Certificate().SerialNumber

	// Ask for a rotation as a desired epoch would.
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	rec.WaitFor(t, 20*time.Second, "rotation issued")
	rec.WaitFor(t, 20*time.Second, "broker did not accept certificate", "back on "+old.Text(16))
	waitConn := time.Now().Add(20 * time.Second)
	for !a.client.Connected() || a.Certificate().SerialNumber.Cmp(old) != 0 {
		if time.Now().After(waitConn) {
			t.Fatalf("not back on the old certificate; log:\n%s", rec.Text())
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.mu.Lock()
	phase, epoch := a.st.Cred.Phase, a.st.Cred.Epoch
	a.mu.Unlock()
	if phase != state.PhaseIssued || epoch != 0 {
		t.Fatalf("journal phase %q epoch %d; want the issued certificate kept for a later try at epoch 0", phase, epoch)
	}
	rec.WaitFor(t, 10*time.Second, "rotation step failed", wire.ErrCodeBrokerRefuse)
	// And it stays there, backing off, instead of retrying at once: the reconnect on the old
	// certificate (which pokes the rotation loop) did not start another attempt.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(rec.Text(), "connected to broker") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect on the old certificate logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(rec.Text(), "rotating credentials"); n != 1 {
		t.Fatalf("%d rotation attempts during the backoff; log:\n%s", n, rec.Text())
	}
}

// enrolledOn enrolls id against pki (the broker b's fleet) and returns its state directory.
func enrolledOn(t *testing.T, pki *mqtttest.PKI, b mqtttest.Broker, id string, now time.Time) string {
	t.Helper()
	return enrolledWith(t, pki, b.URL(), id, now, 0, false)
}

// testSigner answers id's certificate requests on b with certificates issued at issuedAt();
// confirmations get no answer.
func testSigner(t *testing.T, b mqtttest.Broker, pki *mqtttest.PKI, id string, issuedAt func() time.Time) {
	t.Helper()
	answerRequests(t, b, pki, id, issuedAt, topic.CSR(id))
}

// answerRequests answers id's certificate requests on b, on each of the request topics given
// (topic.CSR, topic.BootCSR), with certificates issued at issuedAt(); confirmations get no
// answer.
func answerRequests(t *testing.T, b mqtttest.Broker, pki *mqtttest.PKI, id string, issuedAt func() time.Time, requests ...string) {
	t.Helper()
	signer := mqtttest.Connect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleSigner, "test")), "signer:test"))
	for _, reqTopic := range requests {
		respTopic := topic.Cert(id)
		if reqTopic == topic.BootCSR(id) {
			respTopic = topic.BootCert(id)
		}
		tok := signer.Subscribe(reqTopic, 1, func(cl paho.Client, m paho.Message) {
			var req wire.CertRequest
			if wire.Decode(m.Payload(), &req) != nil || req.Kind != wire.KindRequest {
				return
			}
			r, err := certs.ParseCSR([]byte(req.CSR))
			if err != nil {
				return
			}
			c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: r, Now: issuedAt()})
			if err != nil {
				return
			}
			resp, _ := wire.Encode(&wire.CertResponse{V: 1, ReqID: req.ReqID, Cert: string(certs.EncodeCertPEM(c))})
			cl.Publish(respTopic, 1, false, resp)
		})
		mqtttest.Wait(t, tok, "signer subscribe")
	}
}

// running starts an agent on cfg, stops it when the test ends, and returns once it connected.
func running(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a := startAgent(t, cfg)
	<-a.Connected()
	return a
}

// A certificate the signer sends after the agent stopped waiting for it (a busy signer) is
// used by the next attempt, which does not ask again: the journal still holds the request.
func TestALateAnswerIsUsedWithoutAskingAgain(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())

	var mu sync.Mutex
	asked := 0
	signer := mqtttest.Connect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleSigner, "test")), "signer:test"))
	tok := signer.Subscribe(topic.CSR("cam-0001"), 1, func(cl paho.Client, m paho.Message) {
		var req wire.CertRequest
		if wire.Decode(m.Payload(), &req) != nil || req.Kind != wire.KindRequest {
			return
		}
		mu.Lock()
		asked++
		mu.Unlock()
		r, err := certs.ParseCSR([]byte(req.CSR))
		if err != nil {
			return
		}
		c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: "cam-0001", CSR: r, Now: time.Now()})
		if err != nil {
			return
		}
		resp, _ := wire.Encode(&wire.CertResponse{V: 1, ReqID: req.ReqID, Cert: string(certs.EncodeCertPEM(c))})
		go func() {
			time.Sleep(time.Second) // past the agent's RequestTimeout
			cl.Publish(topic.Cert("cam-0001"), 1, false, resp)
		}()
	})
	mqtttest.Wait(t, tok, "signer subscribe")

	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: 300 * time.Millisecond, RetryMin: 3 * time.Second, RetryMax: 3 * time.Second,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	rec.WaitFor(t, 20*time.Second, "no certificate from the signer within 300ms")
	rec.WaitFor(t, 20*time.Second, "using the signer's answer that came after the last attempt stopped waiting")
	rec.WaitFor(t, 20*time.Second, "rotation committed")
	mu.Lock()
	defer mu.Unlock()
	if asked != 1 {
		t.Fatalf("the signer was asked %d times; log:\n%s", asked, rec.Text())
	}
}
