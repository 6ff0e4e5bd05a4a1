package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// scriptedSigner answers id's certificate requests on b with what answer returns for each
// (nil: no answer, as a signer that drops the request); issue makes the certificate for one.
// It returns the versions the requests came in, in order.
func scriptedSigner(t *testing.T, b mqtttest.Broker, pki *mqtttest.PKI, id string, answer func(n int, req wire.CertRequest, issue func() string) *wire.CertResponse) func() []int {
	t.Helper()
	var mu sync.Mutex
	var versions []int
	// It reconnects to its session after a broker restart.
	signer := mqtttest.Connect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleSigner, "test")), "signer:test").SetAutoReconnect(true).SetMaxReconnectInterval(100*time.Millisecond))
	tok := signer.Subscribe(topic.CSR(id), 1, func(cl paho.Client, m paho.Message) {
		var req wire.CertRequest
		if err := wire.Decode(m.Payload(), &req); err != nil || req.Kind != wire.KindRequest {
			return
		}
		mu.Lock()
		versions = append(versions, req.V)
		n := len(versions)
		mu.Unlock()
		issue := func() string {
			r, err := certs.ParseCSR([]byte(req.CSR))
			if err != nil {
				t.Errorf("csr: %v", err)
				return ""
			}
			c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: r, Now: time.Now()})
			if err != nil {
				t.Errorf("issue: %v", err)
				return ""
			}
			return string(certs.EncodeCertPEM(c))
		}
		if resp := answer(n, req, issue); resp != nil {
			b, err := wire.Encode(resp)
			if err != nil {
				t.Errorf("encode: %v", err)
				return
			}
			cl.Publish(topic.Cert(id), 1, false, b)
		}
	})
	mqtttest.Wait(t, tok, "signer subscribe")
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), versions...)
	}
}

// silentSigner takes id's certificate requests on b and never answers; the channel it returns
// receives when the first comes.
func silentSigner(t *testing.T, b mqtttest.Broker, pki *mqtttest.PKI, id string) <-chan struct{} {
	t.Helper()
	first := make(chan struct{}, 1)
	scriptedSigner(t, b, pki, id, func(n int, _ wire.CertRequest, _ func() string) *wire.CertResponse {
		if n == 1 {
			first <- struct{}{}
		}
		return nil
	})
	return first
}

// startRotation asks a for epoch 1 and waits until the signer has had its first request
// (first receives, or is closed).
func startRotation(t *testing.T, a *Agent, rec *logtest.Recorder, first <-chan struct{}) {
	t.Helper()
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		t.Fatalf("no request; log:\n%s", rec.Text())
	}
}

// A device told rate_limited with the signer's hint asks again after that hint, not after its
// own backoff (here an hour): the signer knows when it will have a place.
func TestTheSignersRetryHintSetsTheWait(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	versions := scriptedSigner(t, b, pki, "cam-0001", func(n int, req wire.CertRequest, issue func() string) *wire.CertResponse {
		if n == 1 {
			return &wire.CertResponse{V: req.V, ReqID: req.ReqID, Error: wire.ErrCodeRateLimited, RetryAfter: 1}
		}
		return &wire.CertResponse{V: req.V, ReqID: req.ReqID, Cert: issue()}
	})
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RetryMin: time.Hour, RetryMax: time.Hour,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.poke()
	rec.WaitFor(t, 20*time.Second, "rotation step failed", wire.ErrCodeRateLimited)
	rec.WaitFor(t, 20*time.Second, "rotation committed")
	if took := time.Since(start); took < time.Second {
		t.Errorf("committed %s after the first request, before the hint of 1 s", took)
	}
	if v := versions(); len(v) != 2 || v[0] != wire.CertVersion || v[1] != wire.CertVersion {
		t.Errorf("requests in versions %v, want two in version %d", v, wire.CertVersion)
	}
}

// A signer from before version 2 of the request drops it as malformed. The device, whose
// request went unanswered, asks in version 1 and gets its certificate; its next rotation
// asks in version 2 first again (the signer may have been upgraded).
func TestAnUnansweredRequestIsAskedInTheOtherVersion(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	versions := scriptedSigner(t, b, pki, "cam-0001", func(_ int, req wire.CertRequest, issue func() string) *wire.CertResponse {
		if req.V != wire.Version {
			return nil // what a version 1 signer's strict decoder does
		}
		return &wire.CertResponse{V: wire.Version, ReqID: req.ReqID, Cert: issue()}
	})
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: 300 * time.Millisecond, RetryMin: 100 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	for epoch := uint64(1); epoch <= 2; epoch++ {
		if err := a.save(func(st *state.State) { st.DesiredEpoch = epoch }); err != nil {
			t.Fatal(err)
		}
		a.poke()
		waitRecovered(t, a, rec, epoch)
	}
	want := []int{wire.CertVersion, wire.Version, wire.CertVersion, wire.Version}
	if v := versions(); !slices.Equal(v, want) {
		t.Fatalf("requests in versions %v, want %v; log:\n%s", v, want, rec.Text())
	}
}

// The version of the next request: 2 until a request goes unanswered, then the other one;
// once a signer answered in version 2, only after three unanswered in a row; 2 again after a
// rotation completes.
func TestCertVersionChoice(t *testing.T) {
	var c certVersion
	step := func(what string, switched, wantSwitch bool, want int) {
		t.Helper()
		if switched != wantSwitch || c.next() != want {
			t.Fatalf("%s: switched %v, next version %d; want %v and %d", what, switched, c.next(), wantSwitch, want)
		}
	}
	step("at first", false, false, wire.CertVersion)
	step("a version 2 request unanswered", c.unanswered(wire.CertVersion), true, wire.Version)
	c.answered(wire.Version)
	step("a version 1 request unanswered", c.unanswered(wire.Version), true, wire.CertVersion)
	c.answered(wire.CertVersion) // this signer speaks version 2
	step("unanswered once", c.unanswered(wire.CertVersion), false, wire.CertVersion)
	step("unanswered twice", c.unanswered(wire.CertVersion), false, wire.CertVersion)
	c.answered(wire.CertVersion)
	step("answered: the count starts again", c.unanswered(wire.CertVersion), false, wire.CertVersion)
	step("twice", c.unanswered(wire.CertVersion), false, wire.CertVersion)
	step("three times in a row", c.unanswered(wire.CertVersion), true, wire.Version)
	step("a late report about the version left", c.unanswered(wire.CertVersion), false, wire.Version)
	c.committed()
	step("after a rotation", false, false, wire.CertVersion)
}

// A request whose connection dropped while it waited says nothing about the signer's
// version (a broker restart loses requests and answers by the thousand): the next request
// goes in the same version. Only one that went unanswered on a connection that stayed up
// switches it.
func TestARequestLostWithItsConnectionKeepsTheVersion(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	first := make(chan struct{}, 1)
	versions := scriptedSigner(t, b, pki, "cam-0001", func(n int, req wire.CertRequest, issue func() string) *wire.CertResponse {
		if n == 1 {
			first <- struct{}{}
		}
		if req.V != wire.Version {
			return nil // a version 1 signer
		}
		return &wire.CertResponse{V: wire.Version, ReqID: req.ReqID, Cert: issue()}
	})
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: time.Second, RetryMin: 100 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	startRotation(t, a, rec, first)
	a.client.Reconnect() // the connection the request went out on ends while it waits
	waitRecovered(t, a, rec, 1)
	want := []int{wire.CertVersion, wire.CertVersion, wire.Version}
	if v := versions(); !slices.Equal(v, want) {
		t.Fatalf("requests in versions %v, want %v; log:\n%s", v, want, rec.Text())
	}
}

// A device whose connection ends while it waits for the signer sends its request again, with
// the same req_id, as soon as it is back, rather than after its request timeout (here an
// hour): a broker restart loses the requests it holds and the answers to devices offline.
func TestARequestIsSentAgainWhenTheConnectionComesBack(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	first := make(chan struct{}, 1)
	var mu sync.Mutex
	var ids []string
	scriptedSigner(t, b, pki, "cam-0001", func(n int, req wire.CertRequest, issue func() string) *wire.CertResponse {
		mu.Lock()
		ids = append(ids, req.ReqID)
		mu.Unlock()
		if n == 1 {
			first <- struct{}{}
			return nil // lost
		}
		return &wire.CertResponse{V: req.V, ReqID: req.ReqID, Cert: issue()}
	})
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: time.Hour, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	startRotation(t, a, rec, first)
	a.client.Reconnect()
	rec.WaitFor(t, 20*time.Second, "rotation committed")
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("requests %v, want the same one twice; log:\n%s", ids, rec.Text())
	}
}

// heldCSR is the agent's publisher with its first certificate request held until the test
// lets it go.
type heldCSR struct {
	Publisher
	once    sync.Once
	reached chan struct{} // closed when the first request reaches Publish
	resume  chan struct{} // the test closes it to let the request go
	result  chan error    // the first request's Publish error
}

func (p *heldCSR) Publish(ctx context.Context, t string, qos byte, retained bool, b []byte) error {
	first := false
	if strings.HasSuffix(t, "/up/"+topic.LeafCSR) {
		p.once.Do(func() { first = true })
	}
	if !first {
		return p.Publisher.Publish(ctx, t, qos, retained, b)
	}
	close(p.reached)
	<-p.resume
	err := p.Publisher.Publish(ctx, t, qos, retained, b)
	p.result <- err
	return err
}

// A request the device could not send, its connection gone as it published (a broker
// restart), goes out as soon as the connection is back, rather than after the rotation's
// retry backoff (here an hour).
func TestARequestNotSentGoesOutOnReconnection(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	versions := scriptedSigner(t, b, pki, "cam-0001", func(_ int, req wire.CertRequest, issue func() string) *wire.CertResponse {
		return &wire.CertResponse{V: req.V, ReqID: req.ReqID, Cert: issue()}
	})
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: time.Hour, RetryMin: time.Hour, RetryMax: time.Hour,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	rec.WaitFor(t, 20*time.Second, "connected to broker")
	held := &heldCSR{Publisher: a.pub.Load().Publisher, reached: make(chan struct{}), resume: make(chan struct{}), result: make(chan error, 1)}
	a.pub.Store(&publisherBox{held})
	startRotation(t, a, rec, held.reached)
	b.Stop(t)
	deadline := time.Now().Add(20 * time.Second)
	for a.client.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("still connected to a stopped broker")
		}
		time.Sleep(10 * time.Millisecond) // polling the connection with a deadline
	}
	close(held.resume)
	if err := <-held.result; !errors.Is(err, mqtt.ErrNotConnected) {
		t.Fatalf("the request's publish: %v, want mqtt.ErrNotConnected", err)
	}
	rec.WaitFor(t, 20*time.Second, "not connected; the certificate request goes out when the connection is back")
	b.Restart(t)
	rec.WaitFor(t, 20*time.Second, "rotation committed")
	if v := versions(); len(v) != 1 {
		t.Fatalf("%d requests, want 1; log:\n%s", len(v), rec.Text())
	}
}

// A link that keeps dropping while the device waits for the signer sends the request again
// after each reconnection, but the attempt still ends, after two request timeouts at most:
// Alive must not take a rotation waiting on a flapping link for a wedged loop.
func TestAFlappingLinkDoesNotKeepARequestWaitingForever(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	first := silentSigner(t, b, pki, "cam-0001")
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: 2 * time.Second, RetryMin: time.Hour, RetryMax: time.Hour,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	startRotation(t, a, rec, first)
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // each connection cut 200 ms after it is up, as long as the test runs
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if a.client.Connected() {
					a.client.Reconnect()
				}
			}
		}
	}()
	rec.WaitFor(t, 30*time.Second, "rotation step failed", wire.ErrCodeTimeout)
	// Two request timeouts are 4 s; without the bound the wait would last as long as the
	// flapping (30 s here, the WaitFor's limit).
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("the attempt ended %s after the request, want about 4 s", took)
	}
	if n := strings.Count(rec.Text(), "certificate request sent"); n == 0 {
		t.Fatalf("the request was not sent again after a reconnection; log:\n%s", rec.Text())
	}
}

// A request whose wait ends while the device is offline says so: the signer is most likely
// not the one to blame.
func TestATimeoutWhileOfflineSaysSo(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	first := silentSigner(t, b, pki, "cam-0001")
	log, rec := logtest.New()
	a := running(t, Config{StateDir: dir, Logger: log, RequestTimeout: time.Second, RetryMin: time.Hour, RetryMax: time.Hour,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	startRotation(t, a, rec, first)
	b.Stop(t)
	rec.WaitFor(t, 20*time.Second, "rotation step failed", "no certificate from the signer within 1s, and not connected now")
}
