package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// fastRotation tunes an agent for tests: short timeouts and retries.
func fastRotation(c *agent.Config) {
	c.RetryMin, c.RetryMax = 100*time.Millisecond, time.Second
	c.RequestTimeout, c.SwitchTimeout = 10*time.Second, 10*time.Second
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// currentCredential reads the key and certificate an agent presents now, so a test can try
// them after the agent has rotated (and wiped) them.
func currentCredential(t testing.TB, dir string, a *runningAgent) *tls.Certificate {
	t.Helper()
	var key []byte
	var err error
	// Generation 0 lives in the state directory itself; later ones under creds/<n>.
	matches, _ := filepath.Glob(filepath.Join(dir, "creds", "*", agent.KeyFile))
	for _, p := range append([]string{filepath.Join(dir, agent.KeyFile)}, matches...) {
		if key, err = os.ReadFile(p); err != nil {
			continue
		}
		k, err := certs.ParseKeyPEM(key)
		if err == nil && certs.SamePublicKey(a.Certificate(), k) {
			c, err := certs.TLSCertificate(a.Certificate(), k)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	t.Fatal("no key file matches the agent's certificate")
	return nil
}

// connectWith tries one MQTT connection with cert and reports the broker's answer.
func connectWith(t testing.TB, e *env, cert *tls.Certificate) error {
	host, _ := certs.BrokerHost(e.url)
	o := paho.NewClientOptions().
		AddBroker(strings.Replace(e.url, "mqtts://", "ssl://", 1)).
		SetClientID(certs.CertIdentity(cert.Leaf)).
		SetTLSConfig(certs.ClientTLSConfig(e.f.Pool, host, certs.NewHolder(cert))).
		SetCleanSession(true).SetAutoReconnect(false).SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(0)
	return nil
}

func statusReport(t testing.TB, e *env) status.Report {
	t.Helper()
	var r status.Report
	out := fleetctl(t, "status", "--dir", e.f.Dir, "--broker", e.url, "--json")
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return r
}

func TestOneDeviceRotatesAndTheBrokerRefusesItsOldCertificate(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dir := enroll(t, e.f, "cam-0001")
		a := startAgent(t, dir, e.url, fastRotation)
		a.waitConnected(t)
		old := currentCredential(t, dir, a)

		fleetctl(t, "rotate", "--dir", e.f.Dir, "--broker", e.url, "--device", "cam-0001")
		waitFor(t, 30*time.Second, "the rotation to commit", func() bool { return a.Rotations() == 1 })
		if a.Epoch() != 1 {
			t.Fatalf("epoch %d after one rotation", a.Epoch())
		}
		if a.Certificate().SerialNumber.Cmp(old.Leaf.SerialNumber) == 0 {
			t.Fatal("serial unchanged")
		}
		if _, err := os.Stat(filepath.Join(dir, agent.KeyFile)); !os.IsNotExist(err) {
			t.Fatalf("old key still on disk: %v", err)
		}
		// The signer revokes the old certificate once the device confirmed the new one.
		waitFor(t, 20*time.Second, "the old certificate to be revoked", func() bool {
			reg, err := e.f.OpenRegistry(nil)
			if err != nil {
				return false
			}
			defer reg.Close()
			return reg.Revoked(old.Leaf.SerialNumber)
		})
		e.applyCRL(t)
		if err := connectWith(t, e, old); err == nil {
			t.Fatal("the broker accepted the old certificate after the rotation")
		} else {
			t.Logf("old certificate refused: %v", err)
		}
		// And the device works with the new one.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		op, err := e.f.Dial(ctx, fleet.OperatorOptions{Broker: e.url})
		if err != nil {
			t.Fatal(err)
		}
		defer op.Close()
		r, _, err := op.Ping(ctx, "cam-0001")
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.CertSerial != a.Certificate().SerialNumber.Text(16) {
			t.Fatalf("ping reports serial %s, agent uses %s", r.Status.CertSerial, a.Certificate().SerialNumber.Text(16))
		}
	})
}

// A fleet of 200 agents converges after a breach; 20 that were offline during it converge when
// they return; grants issued before the breach are refused after it (S7, R2).
func TestFleetConvergesAfterBreachIncludingOfflineDevices(t *testing.T) {
	const n, offline = 200, 20
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dirs := make([]string, n)
		agents := make([]*runningAgent, n)
		var wg sync.WaitGroup
		for i := range n {
			dirs[i] = enroll(t, e.f, fmt.Sprintf("cam-%04d", i))
		}
		for i := range n {
			agents[i] = startAgent(t, dirs[i], e.url, fastRotation)
		}
		for _, a := range agents {
			a.waitConnected(t)
		}
		// A viewer grant issued before the breach works now.
		grant := signGrant(t, e.f, "cam-0000", 0)
		if _, err := agents[0].CheckGrant(grant, certs.ScopeView); err != nil {
			t.Fatalf("grant before the breach: %v", err)
		}
		for i := n - offline; i < n; i++ {
			agents[i].stop(t)
		}

		fleetctl(t, "breach", "--dir", e.f.Dir, "--broker", e.url, "--incident", "INC-2019-12")
		waitFor(t, 3*time.Minute, "the online devices to converge", func() bool {
			for _, a := range agents[:n-offline] {
				if a.Epoch() < 1 {
					return false
				}
			}
			return true
		})
		if _, err := agents[0].CheckGrant(grant, certs.ScopeView); !errors.Is(err, certs.ErrOldEpoch) {
			t.Fatalf("grant from before the breach: %v, want ErrOldEpoch", err)
		}
		if _, err := agents[0].CheckGrant(signGrant(t, e.f, "cam-0000", 1), certs.ScopeView); err != nil {
			t.Fatalf("grant at the new epoch: %v", err)
		}

		// The offline devices come back and converge from the retained breach notice.
		for i := n - offline; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				agents[i] = startAgent(t, dirs[i], e.url, fastRotation)
			}()
		}
		wg.Wait()
		waitFor(t, 2*time.Minute, "the returning devices to converge", func() bool {
			for _, a := range agents[n-offline:] {
				if a.Epoch() < 1 {
					return false
				}
			}
			return true
		})
		waitFor(t, time.Minute, "status to report the whole fleet converged", func() bool {
			r := statusReport(t, e)
			return r.Converged && r.Total == n && r.Counts.Converged == n
		})
		for _, a := range agents {
			if a.Rotations() != 1 {
				t.Fatalf("%s rotated %d times for one breach", a.DeviceID(), a.Rotations())
			}
		}
	})
}

// A device away longer than the broker's session expiry comes back to no session: the breach
// notice queued for it went with the session. It converges all the same, from the retained
// notice, since it subscribes again on every connect (R2). Embedded broker only: Mosquitto's
// persistent_client_expiration counts in hours (its rendering is checked with every Mosquitto
// test, which refuses to start on a value it cannot read).
func TestADeviceWhoseSessionExpiredConvergesWhenItReturns(t *testing.T) {
	f, _ := newFleet(t)
	addr := fleettest.FreeAddr(t)
	brokerOut := fleettest.Background(t, "broker", "--dir", f.Dir, "--listen", addr, "--session-expiry", "1s")
	fleettest.WaitTLS(t, f, addr)
	e := &env{name: "embedded", f: f, url: "mqtts://" + addr, applyCRL: func(testing.TB) {}}
	fleettest.StartSigner(t, f, e.url, "--log-level", "warn")

	stays := startAgent(t, enroll(t, f, "cam-0000"), e.url, fastRotation)
	awayDir := enroll(t, f, "cam-0001")
	away := startAgent(t, awayDir, e.url, fastRotation)
	stays.waitConnected(t)
	away.waitConnected(t)
	away.stop(t)

	fleetctl(t, "breach", "--dir", f.Dir, "--broker", e.url, "--incident", "INC-2019-12")
	waitFor(t, time.Minute, "the device still online to converge", func() bool { return stays.Epoch() >= 1 })
	brokerOut.WaitFor(t, `msg="broker: session expired" client_id=cam-0001 `)
	if strings.Contains(brokerOut.String(), "client_id=cam-0000 ") {
		t.Fatalf("the session of the device that stayed expired:\n%s", brokerOut.String())
	}

	away = startAgent(t, awayDir, e.url, fastRotation)
	waitFor(t, time.Minute, "the device whose session expired to converge", func() bool { return away.Epoch() >= 1 })
	waitFor(t, time.Minute, "status to report the whole fleet converged", func() bool {
		r := statusReport(t, e)
		return r.Converged && r.Total == 2
	})
	if away.Rotations() != 1 {
		t.Fatalf("the returning device rotated %d times for one breach", away.Rotations())
	}
}

// signGrant signs a viewer grant with the fleet's grant key.
func signGrant(t testing.TB, f *fleet.Fleet, device string, epoch uint64) []byte {
	t.Helper()
	b, err := f.SignGrant(certs.Grant{Device: device, Epoch: epoch, Scope: certs.ScopeView, Subject: "viewer-1", IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForgedAndReplayedDesiredStateIsIgnored(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dir := enroll(t, e.f, "cam-0001")
		a := startAgent(t, dir, e.url, fastRotation)
		a.waitConnected(t)
		op := dialReplies(t, e.f, e.url)
		pub := func(topic string, b []byte) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := op.client.Publish(ctx, topic, 1, true, b); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		fleetDesired := topic.FleetDesired(topic.FleetShard("cam-0001")) // the device's shard
		rogue, _ := certs.NewSigningKey()
		forged, _ := certs.SignDesired(rogue, certs.Desired{Target: certs.TargetFleet, Version: uint64(now.UnixNano()), Epoch: 5, IssuedAt: now.Unix()})
		pub(fleetDesired, forged)
		a.log.WaitFor(t, 10*time.Second, "desired state refused", "unknown key id")

		// A genuine notice raises the epoch to 1.
		v1 := uint64(now.UnixNano()) + 1
		genuine, err := e.f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: v1, Epoch: 1, IssuedAt: now.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		pub(fleetDesired, genuine)
		waitFor(t, 30*time.Second, "rotation to epoch 1", func() bool { return a.Epoch() == 1 && a.Rotations() == 1 })

		// A document for another device on this device's topic, and an old version replayed,
		// change nothing.
		other, _ := e.f.SignDesired(certs.Desired{Target: "cam-0002", Version: v1 + 1, Epoch: 9, IssuedAt: now.Unix()})
		pub(topic.DeviceDesired("cam-0001"), other)
		a.log.WaitFor(t, 10*time.Second, "desired state refused", "wrong target")
		old, _ := e.f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: v1 - 10, Epoch: 7, IssuedAt: now.Unix()})
		pub(fleetDesired, old)
		pub(fleetDesired, genuine) // a duplicate
		// A genuine notice on another shard never reaches the device: it reads its own shard
		// only, which is what spares the broker a walk over the whole fleet (topic.FleetShards).
		elsewhere, _ := e.f.SignDesired(certs.Desired{Target: certs.TargetFleet, Version: v1 + 2, Epoch: 4, IssuedAt: now.Unix()})
		for _, sh := range topic.Shards() {
			if sh != topic.FleetShard("cam-0001") {
				pub(topic.FleetDesired(sh), elsewhere)
				break
			}
		}
		// A ping is answered after the agent handled everything before it (in order).
		env2, seq, _ := e.f.SignCommand("ping", "cam-0001", nil, time.Now(), time.Minute)
		op.publish(t, "cam-0001", env2)
		op.await(t, seq, 20*time.Second)
		if a.Epoch() != 1 || a.Rotations() != 1 {
			t.Fatalf("epoch %d, rotations %d after forged, foreign, old and duplicate documents and another shard's", a.Epoch(), a.Rotations())
		}
	})
}

// Scheduled renewal: at about two thirds of its certificate's lifetime the agent renews key,
// certificate and token without any operator, and without raising the epoch.
func TestScheduledRenewalWithFakeClock(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dir := enroll(t, e.f, "cam-0001")
		clk := clocktest.New(time.Now())
		a := startAgent(t, dir, e.url, func(c *agent.Config) { fastRotation(c); c.Clock = clk })
		a.waitConnected(t)
		first := a.Certificate()
		life := first.NotAfter.Sub(first.NotBefore)
		clk.Set(first.NotBefore.Add(life / 2))
		// Halfway: nothing happens. The agent answers a ping (issued at its clock's time, or
		// it would be refused as expired) after it looked at its clock.
		op := dialReplies(t, e.f, e.url)
		env2, seq, _ := e.f.SignCommand("ping", "cam-0001", nil, clk.Now(), time.Minute)
		op.publish(t, "cam-0001", env2)
		op.await(t, seq, 20*time.Second)
		if a.Rotations() != 0 {
			t.Fatal("renewed at half the lifetime")
		}
		clk.Set(first.NotBefore.Add(life * 3 / 4))
		// The reconcile loop may register its next timer just after the jump; nudging the
		// clock a minute per poll fires it (negligible against a 30-day lifetime). Nudging
		// stops once the rotation started: its own timeouts run on the same clock. (A failed
		// attempt would wait for its retry on this clock too; nudging resumes then.)
		waitFor(t, 30*time.Second, "the scheduled renewal", func() bool {
			if l := a.log.Text(); !strings.Contains(l, "rotating credentials") || strings.Contains(l, "will retry") {
				clk.Advance(time.Minute)
			}
			return a.Rotations() == 1
		})
		if a.Epoch() != 0 {
			t.Fatalf("renewal raised the epoch to %d", a.Epoch())
		}
		if a.Certificate().SerialNumber.Cmp(first.SerialNumber) == 0 {
			t.Fatal("serial unchanged by renewal")
		}
		// The signer dates the new certificate by its own clock, three quarters of a lifetime
		// behind the agent's: by the agent's clock it is due for renewal at once. The agent
		// renews once per third of a lifetime by its own clock, not back to back.
		clk.Advance(time.Hour)
		env3, seq3, _ := e.f.SignCommand("ping", "cam-0001", nil, clk.Now(), time.Minute)
		op.publish(t, "cam-0001", env3)
		op.await(t, seq3, 20*time.Second)
		if n := a.Rotations(); n != 1 {
			t.Fatalf("%d renewals: the agent renewed back to back", n)
		}
	})
}

// A device whose certificate expired while it was offline recovers through its bootstrap
// identity, with nobody touching it (R7).
func TestRebootstrapAfterCertificateExpiredOffline(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		// Enroll with a certificate that expires in a few seconds; the signer then issues
		// normal ones.
		short, err := fleet.Open(e.f.Dir)
		if err != nil {
			t.Fatal(err)
		}
		short.Meta.DeviceValidity = 3
		dir := filepath.Join(t.TempDir(), "cam-0001")
		csr, err := agent.Enroll(dir, "cam-0001")
		if err != nil {
			t.Fatal(err)
		}
		bundle, c, err := short.Enroll(csr, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := agent.InstallBundle(dir, bundle, time.Now()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the certificate to expire", func() bool { return time.Now().After(c.NotAfter.Add(time.Second)) })

		a := startAgent(t, dir, e.url, fastRotation)
		a.log.WaitFor(t, 30*time.Second, "bootstrap identity")
		waitFor(t, 60*time.Second, "recovery through the bootstrap identity", func() bool { return a.Rotations() == 1 })
		a.waitConnected(t)
		if !a.Certificate().NotAfter.After(time.Now().Add(time.Hour)) {
			t.Fatalf("recovered certificate expires at %v", a.Certificate().NotAfter)
		}
	}, "cam-0001")
}

// After a key-set rotation that drops the old command key, commands signed by it are refused
// and commands signed by the new key are obeyed.
func TestKeySetRotationDropsTheOldCommandKey(t *testing.T) {
	forEachFleetBroker(t, func(t *testing.T, e *env) {
		dir := enroll(t, e.f, "cam-0001")
		a := startAgent(t, dir, e.url, fastRotation)
		a.waitConnected(t)
		op := dialReplies(t, e.f, e.url)
		oldKID := e.f.KeySet().CommandKeys[0].ID
		// An envelope signed by the old key, to replay later.
		oldEnv, oldSeq, err := e.f.SignCommand("ping", "cam-0001", nil, time.Now(), 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		path := strings.TrimSpace(fleetctl(t, "keys", "rotate", "--dir", e.f.Dir, "--drop", oldKID))
		fleetctl(t, "breach", "--dir", e.f.Dir, "--broker", e.url, "--incident", "KEYS-1", "--keyset", path)
		waitFor(t, 30*time.Second, "the new key set and rotation", func() bool { return a.Epoch() == 1 })
		a.log.WaitFor(t, 10*time.Second, "key set accepted", "version=2")

		op.publish(t, "cam-0001", oldEnv)
		f2, err := fleet.Open(e.f.Dir)
		if err != nil {
			t.Fatal(err)
		}
		newEnv, newSeq, err := f2.SignCommand("ping", "cam-0001", nil, time.Now(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		op.publish(t, "cam-0001", newEnv)
		r := op.await(t, newSeq, 20*time.Second)
		if !r.OK || r.Status.KeySet != 2 {
			t.Fatalf("reply %+v", r.Status)
		}
		if !strings.Contains(a.log.Text(), "unknown key id") || strings.Contains(a.log.Text(), fmt.Sprintf("seq=%d kid", oldSeq)) {
			t.Fatalf("the dropped key's command was not refused; log:\n%s", a.log.Text())
		}
	})
}
