package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// These tests lay out on disk what a SIGKILL between two writes leaves behind, then start the
// agent on it.

// enrolledWithBootstrap enrolls id on broker with a device certificate issued at issued for
// validity (zero: the default) and a bootstrap certificate issued at the same time, and
// returns the state directory.
func enrolledWithBootstrap(t *testing.T, pki *mqtttest.PKI, broker, id string, issued time.Time, validity time.Duration) string {
	t.Helper()
	return enrolledWith(t, pki, broker, id, issued, validity, true)
}

// enrolledWith enrolls id on broker with a device certificate from pki issued at issued for
// validity (zero: the default), and a bootstrap certificate too if bootstrap is set, and
// returns the state directory.
func enrolledWith(t *testing.T, pki *mqtttest.PKI, broker, id string, issued time.Time, validity time.Duration, bootstrap bool) string {
	t.Helper()
	return enrolledFleet(t, pki, broker, id, issued, validity, bootstrap).dir
}

// enrolledFleet is enrolledWith, returning the fleet keys that made the enrollment too.
func enrolledFleet(t *testing.T, pki *mqtttest.PKI, broker, id string, issued time.Time, validity time.Duration, bootstrap bool) *fixture {
	t.Helper()
	root, _ := certs.NewSigningKey()
	cmdKey, _ := certs.NewSigningKey()
	ks, _ := certs.SignKeySet(root, certs.KeySet{Version: 1, CommandKeys: []certs.PublicKey{cmdKey.Public()}, GrantKeys: []certs.PublicKey{cmdKey.Public()}})
	dir := filepath.Join(t.TempDir(), "state")
	csrPEM, err := Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := certs.ParseCSR(csrPEM)
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: csr, Now: issued, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	bu := certs.Bundle{V: 1, DeviceID: id, CertPEM: string(certs.EncodeCertPEM(c)), CAPEM: string(pki.CAPEM),
		RootKey: root.Public().Key, KeySet: ks, Broker: broker}
	if bootstrap {
		bkey, err := certs.LoadKeyFile(filepath.Join(dir, BootstrapKey))
		if err != nil {
			t.Fatal(err)
		}
		bc, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleBootstrap, Name: id, PublicKey: bkey.Public(), Now: issued})
		if err != nil {
			t.Fatal(err)
		}
		bu.BootstrapCertPEM = string(certs.EncodeCertPEM(bc))
	}
	bundle, _ := json.Marshal(bu)
	if _, err := InstallBundle(dir, bundle, issued); err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, ca: pki.CA, cmdKey: cmdKey, root: root}
}

// writeGeneration lays out generation gen as makeGeneration and request leave it: key and
// token, and a certificate from pki issued at issued for validity.
func writeGeneration(t *testing.T, pki *mqtttest.PKI, dir, id string, gen uint64, issued time.Time, validity time.Duration) *x509.Certificate {
	t.Helper()
	if _, _, err := makeGeneration(dir, gen); err != nil {
		t.Fatal(err)
	}
	key, err := certs.LoadKeyFile(filepath.Join(genDir(dir, gen), KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, PublicKey: key.Public(), Now: issued, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeCert(dir, gen, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// fullSigner answers id's certificate requests on b, on the operational and the bootstrap
// topics, with certificates valid from now; confirmations get no answer.
func fullSigner(t *testing.T, b mqtttest.Broker, pki *mqtttest.PKI, id string) {
	t.Helper()
	answerRequests(t, b, pki, id, time.Now, topic.CSR(id), topic.BootCSR(id))
}

// startAgent starts an agent on cfg without waiting for it to connect, and stops it when the
// test ends.
func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// rotatedByHand lays out what a committed rotation to generation 1 leaves on disk for id in
// dir: generation 1's key, token and certificate (issued at now), and generation 0 wiped. The
// journal is the caller's.
func rotatedByHand(t *testing.T, pki *mqtttest.PKI, dir, id string, now time.Time) {
	t.Helper()
	writeGeneration(t, pki, dir, id, 1, now, 0)
	if err := wipeGeneration(dir, 0); err != nil {
		t.Fatal(err)
	}
}

// recovering starts an agent on dir with the short timeouts and retries of the recovery tests
// (startAgent), and returns it with its log.
func recovering(t *testing.T, dir string) (*Agent, *logtest.Recorder) {
	t.Helper()
	log, rec := logtest.New()
	return startAgent(t, Config{StateDir: dir, Logger: log, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}), rec
}

// waitRecovered waits until a is connected, not rotating, with rotations committed since it
// started, or fails with its log.
func waitRecovered(t *testing.T, a *Agent, rec *logtest.Recorder, rotations uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for st := a.Status(); a.Rotations() != rotations || !st.Connected || st.Rotating; st = a.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery (connected=%v, rotating=%v, rotations=%d, want %d); log:\n%s", st.Connected, st.Rotating, a.Rotations(), rotations, rec.Text())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pkiSince is an mqtttest.PKI whose CA is valid from start, so it can issue certificates that
// expired long ago.
func pkiSince(t *testing.T, start time.Time) *mqtttest.PKI {
	t.Helper()
	ca, err := certs.NewCA("agent crash test", start, 0)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := certs.EncodeCertPEM(ca.Cert)
	pool, err := certs.NewPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &mqtttest.PKI{CA: ca, CAPEM: caPEM, Pool: pool}
}

// A device killed after journaling "issued" that stays off until both its old and its issued
// certificate expired must not retry the dead issued certificate forever: it gives it up and
// recovers through its bootstrap identity (R1, R7).
func TestAnIssuedCertificateThatExpiredOfflineIsGivenUpAndTheDeviceRebootstraps(t *testing.T) {
	now := time.Now()
	pki := pkiSince(t, now.Add(-30*24*time.Hour))
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledWithBootstrap(t, pki, b.URL(), "cam-0001", now.Add(-10*24*time.Hour), time.Hour)
	writeGeneration(t, pki, dir, "cam-0001", 1, now.Add(-9*24*time.Hour), time.Hour)
	st := state.NewFileStore(filepath.Join(dir, StateFile), nil)
	if err := st.Save(state.State{Cred: state.Cred{Active: 0, Phase: state.PhaseIssued, Next: 1, ReqID: "0123456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	fullSigner(t, b, pki, "cam-0001")

	log, rec := logtest.New()
	a := startAgent(t, Config{StateDir: dir, Logger: log, SwitchTimeout: time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	deadline := time.Now().Add(30 * time.Second)
	for a.Rotations() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery from an expired issued certificate; log:\n%s", rec.Text())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c := a.Certificate(); !c.NotAfter.After(time.Now().Add(time.Hour)) {
		t.Fatalf("recovered certificate expires at %v", c.NotAfter)
	}
	got, err := st.Load()
	if err != nil || got.Cred.Phase != state.PhaseNone {
		t.Fatalf("journal after recovery: %+v, %v", got.Cred, err)
	}
}

// The first rotation wipes generation 0's key and then its token. A SIGKILL between the two
// leaves the token; the next start must still wipe it (the journal no longer names it).
func TestAGenerationZeroTokenLeftByAKilledWipeIsWipedAtStart(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	now := time.Now()
	dir := enrolledWithBootstrap(t, pki, closedPort(t), "cam-0001", now, 0)
	writeGeneration(t, pki, dir, "cam-0001", 1, now, 0)
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: 1, Epoch: 1}}); err != nil {
		t.Fatal(err)
	}
	// Killed inside wipeGeneration(0): the key is gone, the token not yet.
	if err := shred(filepath.Join(dir, KeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, TokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("generation 0's token survived the start after a killed wipe: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, BootstrapKey)); err != nil {
		t.Fatalf("the bootstrap key was wiped: %v", err)
	}
}

// SIGKILL at each step of a rotation, then a start on what is left: the agent comes up on a
// working credential, converges to the new generation, and no other generation's secrets
// remain on disk (R1).
func TestARotationKilledAtEveryStepConvergesAfterRestart(t *testing.T) {
	for _, step := range Steps {
		t.Run("killed after "+step, func(t *testing.T) {
			pki := mqtttest.NewPKI(t)
			b := mqtttest.StartEmbedded(t, pki)
			dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
			fullSigner(t, b, pki, "cam-0001")
			cfg := Config{StateDir: dir, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
				RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}

			// The first run stops dead at step: its loop never gets past the hook.
			killed := make(chan struct{})
			release := make(chan struct{})
			first := cfg
			first.AfterStep = func(s string) {
				if s == step {
					close(killed)
					<-release
				}
			}
			a, err := New(first)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			<-a.Connected()
			if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
				t.Fatal(err)
			}
			a.poke()
			select {
			case <-killed:
			case <-time.After(30 * time.Second):
				t.Fatal("the rotation never reached " + step)
			}
			// What is on disk now is what a SIGKILL would leave. Copy it before the first
			// run stops (stopping could write more).
			crashed := filepath.Join(t.TempDir(), "state")
			copyDir(t, dir, crashed)
			cancel()
			close(release)
			<-done

			log, rec := logtest.New()
			second := cfg
			second.StateDir, second.Logger = crashed, log
			b2 := startAgent(t, second)
			deadline := time.Now().Add(30 * time.Second)
			for st := b2.Status(); st.Epoch != 1 || !st.Connected || st.Rotating; st = b2.Status() {
				if time.Now().After(deadline) {
					t.Fatalf("did not converge after a kill at %s; log:\n%s", step, rec.Text())
				}
				time.Sleep(20 * time.Millisecond)
			}
			got, err := state.NewFileStore(filepath.Join(crashed, StateFile), nil).Load()
			if err != nil || got.Cred.Phase != state.PhaseNone || got.Cred.Active == 0 {
				t.Fatalf("journal: %+v, %v", got.Cred, err)
			}
			ents, _ := os.ReadDir(filepath.Join(crashed, credsDir))
			if len(ents) != 1 {
				t.Fatalf("generations left on disk: %v", ents)
			}
			for _, f := range []string{KeyFile, TokenFile} {
				if _, err := os.Stat(filepath.Join(crashed, f)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("generation 0's %s survived: %v", f, err)
				}
			}
		})
	}
}

// copyDir copies the regular files of src (recursively) to dst, keeping their modes.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(out, fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return atomicfile.WriteFile(out, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The watchdog's heartbeat is taken only by the loops Alive vouches for: a reconcile loop
// stuck in a rotation step far past its timeouts is reported, even while telemetry, which
// also waits on the clock, is idle (R9).
func TestAliveReportsAWedgedRotationWhileTelemetryIdles(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledOn(t, pki, b, "cam-0001", time.Now())
	clk := clocktest.New(time.Now())
	stuck := make(chan struct{})
	release := make(chan struct{})
	a := running(t, Config{StateDir: dir, Clock: clk, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		AfterStep: func(s string) {
			if s == StepPending {
				close(stuck)
				<-release
			}
		}})
	t.Cleanup(func() { close(release) }) // runs before running's cleanup waits for Run
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	a.poke()
	select {
	case <-stuck:
	case <-time.After(20 * time.Second):
		t.Fatal("the rotation never started")
	}
	clk.Advance(a.maxBusy() + time.Minute)
	if err := aliveWithin(a, 500*time.Millisecond); err == nil {
		t.Fatal("Alive = nil for a rotation wedged past its timeouts")
	}
}

// The same with the active certificate still good: the dead issued certificate presented at
// start is dropped for the active one, and the rotation asks again over the live session.
func TestAnIssuedCertificateThatExpiredIsGivenUpForTheActiveOne(t *testing.T) {
	now := time.Now()
	pki := pkiSince(t, now.Add(-30*24*time.Hour))
	b := mqtttest.StartEmbedded(t, pki)
	dir := enrolledWithBootstrap(t, pki, b.URL(), "cam-0001", now.Add(-9*24*time.Hour), 0)
	writeGeneration(t, pki, dir, "cam-0001", 1, now.Add(-9*24*time.Hour), time.Hour)
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{DesiredEpoch: 1,
		Cred: state.Cred{Active: 0, Phase: state.PhaseIssued, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	fullSigner(t, b, pki, "cam-0001")

	log, rec := logtest.New()
	a := startAgent(t, Config{StateDir: dir, Logger: log, SwitchTimeout: time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	deadline := time.Now().Add(30 * time.Second)
	for a.Rotations() != 1 || a.Epoch() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no rotation after an expired issued certificate; log:\n%s", rec.Text())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(rec.Text(), "bootstrap identity") {
		t.Fatalf("went through the bootstrap identity with a working certificate; log:\n%s", rec.Text())
	}
}

// A storage fault that damages a file of the active generation — the key, the certificate —
// must not leave the camera restarting for good: it starts, gets a new generation through its
// bootstrap identity, and ends on it with the damaged generation wiped (R6, R7). Before, New
// failed on the file at every start.
func TestADamagedActiveCredentialIsReplacedThroughTheBootstrapIdentity(t *testing.T) {
	rotatedKey, rotatedCert := filepath.Join(credsDir, "1", KeyFile), filepath.Join(credsDir, "1", certFile)
	for _, tc := range []struct {
		name    string
		rotated bool   // generation 1 is active, generation 0 wiped
		file    string // relative to the state directory
		spoil   func(t *testing.T, p string)
	}{
		{"the enrollment key truncated", false, KeyFile, writeOver([]byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI"))},
		{"a rotated generation's certificate truncated", true, rotatedCert, writeOver([]byte("-----BEGIN CERTIFICATE-----\nMIIB"))},
		{"a rotated generation's key zeroed", true, rotatedKey, writeOver(make([]byte, 227))},
		{"a rotated generation's key gone", true, rotatedKey, writeOver(nil)},
		{"a rotated generation's certificate gone", true, rotatedCert, writeOver(nil)},
		// A bit flipped by a storage fault: the file still loads and parses. Before, a rotated
		// generation's certificate was not checked against the fleet CA when loaded, and one
		// whose NotBefore moved ten years ahead kept the agent waiting for its clock, never
		// connecting; and a key that no longer matched its certificate was taken for an
		// interrupted re-enrollment, which made New fail at every start.
		{"a rotated generation's certificate valid from ten years later", true, rotatedCert, flipNotBeforeDecade},
		{"a rotated generation's key with a bit flipped", true, rotatedKey, flipInKey},
		{"the enrollment key with a bit flipped", false, KeyFile, flipInKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "cam-0001"
			pki := mqtttest.NewPKI(t)
			b := mqtttest.StartEmbedded(t, pki)
			now := time.Now()
			dir := enrolledWithBootstrap(t, pki, b.URL(), id, now, 0)
			active := uint64(0)
			if tc.rotated {
				active = 1
				rotatedByHand(t, pki, dir, id, now)
			}
			if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: state.Cred{Active: active, Epoch: 1}}); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, tc.file)
			tc.spoil(t, p)
			fullSigner(t, b, pki, id)

			a, rec := recovering(t, dir)
			waitRecovered(t, a, rec, 1)
			if c := a.Certificate(); certs.CertIdentity(c) != id {
				t.Fatalf("connected as %q", certs.CertIdentity(c))
			}
			got, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load()
			if err != nil || got.Cred.Phase != state.PhaseNone || got.Cred.Active != active+1 || got.Cred.Epoch != 1 {
				t.Fatalf("journal: %+v, %v", got.Cred, err)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the damaged file is still there: %v", err)
			}
			if !strings.Contains(rec.Text(), "through the bootstrap identity") {
				t.Fatalf("did not go through the bootstrap identity; log:\n%s", rec.Text())
			}
		})
	}
}

// writeOver returns a spoil that writes content over a file, or removes it for nil.
func writeOver(content []byte) func(t *testing.T, p string) {
	return func(t *testing.T, p string) {
		t.Helper()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if content != nil {
			if err := os.WriteFile(p, content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// aheadClock is the system clock moved ahead by d: a device clock that jumped (a bad time
// source), while the broker and the signer keep the right time.
type aheadClock struct{ d time.Duration }

func (c aheadClock) Now() time.Time                         { return time.Now().Add(c.d) }
func (c aheadClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// A device killed after its confirmation (the signer then revokes the old certificate) that
// restarts with a clock jumped past the issued certificate's end must not throw that
// certificate away on its own clock's word: the broker, whose clock is right, takes it, and it
// is the only one left that works. Before, the agent gave it up unasked and went back to the
// revoked one; without a bootstrap identity it could never connect again.
func TestAnIssuedCertificateIsGivenUpOnlyWhenTheBrokerRefusesIt(t *testing.T) {
	const id = "cam-0001"
	now := time.Now()
	pki := mqtttest.NewPKI(t)
	dir := enrolledWith(t, pki, closedPort(t), id, now, 0, false)
	old, err := certs.ParseBundle(mustRead(t, filepath.Join(dir, BundleFile)))
	if err != nil {
		t.Fatal(err)
	}
	oldCert, err := certs.ParseCertPEM([]byte(old.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	issued := writeGeneration(t, pki, dir, id, 1, now, time.Hour)
	if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{DesiredEpoch: 1,
		Cred: state.Cred{Active: 0, Phase: state.PhaseIssued, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithCRL(pki.CRL(t, oldCert.SerialNumber)))
	fullSigner(t, b, pki, id)

	log, rec := logtest.New()
	a, err := New(Config{StateDir: dir, BrokerURL: b.URL(), Logger: log, Clock: aheadClock{2 * time.Hour}, SwitchTimeout: 2 * time.Second, RequestTimeout: 5 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	committed := make(chan string, 8)
	a.OnCommit(func(uint64) { committed <- serialHex(a.activeCred().cert) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case s := <-committed:
		if s != serialHex(issued) {
			t.Fatalf("committed certificate %s, want the issued one %s; log:\n%s", s, serialHex(issued), rec.Text())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no commit; log:\n%s", rec.Text())
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A device token damaged on disk (truncated) is never registered with the signer, whose
// registry would then hold the hash of a short, guessable token, and is replaced: a pending
// generation with one is started over, an active one is renewed. Before, the pending
// generation's hash went out as it was, and an active one stayed damaged for good.
func TestADamagedDeviceTokenIsReplacedAndNeverRegistered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pending bool   // a rotation to generation 1 is pending, and its token is the damaged one
		content []byte // what the damaged token file holds
	}{
		{"the active generation's token, truncated", false, []byte{0x5a, 0x01, 0x02}},
		{"a pending generation's token, truncated", true, []byte{0x5a, 0x01, 0x02}},
		{"the active generation's token, zeroed", false, make([]byte, tokenBytes)},
		{"a pending generation's token, zeroed", true, make([]byte, tokenBytes)},
		{"the active generation's token, erased to ones", false, bytes.Repeat([]byte{0xff}, tokenBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "cam-0001"
			pki := mqtttest.NewPKI(t)
			b := mqtttest.StartEmbedded(t, pki)
			dir := enrolledOn(t, pki, b, id, time.Now())
			damaged := filepath.Join(dir, TokenFile)
			if tc.pending {
				if _, _, err := makeGeneration(dir, 1); err != nil {
					t.Fatal(err)
				}
				if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{DesiredEpoch: 1,
					Cred: state.Cred{Phase: state.PhasePending, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdef"}}); err != nil {
					t.Fatal(err)
				}
				damaged = filepath.Join(genDir(dir, 1), TokenFile)
			}
			if err := os.WriteFile(damaged, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var sent []string
			observer := mqtttest.Connect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleSigner, "observer")), "signer:observer"))
			mqtttest.Wait(t, observer.Subscribe(topic.CSR(id), 1, func(_ paho.Client, m paho.Message) {
				var req wire.CertRequest
				if wire.Decode(m.Payload(), &req) == nil && req.Kind == wire.KindRequest {
					mu.Lock()
					sent = append(sent, req.TokenHash)
					mu.Unlock()
				}
			}), "observer subscribe")
			fullSigner(t, b, pki, id)

			a, rec := recovering(t, dir)
			waitRecovered(t, a, rec, 1)
			got, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load()
			if err != nil {
				t.Fatal(err)
			}
			tok, err := os.ReadFile(filepath.Join(genDir(dir, got.Cred.Active), TokenFile))
			if err != nil || len(tok) != tokenBytes || bytes.Equal(tok, make([]byte, tokenBytes)) {
				t.Fatalf("the active generation's token after the rotation: %d bytes (%x), %v", len(tok), tok, err)
			}
			want := sha256.Sum256(tok)
			mu.Lock()
			defer mu.Unlock()
			for _, h := range sent {
				if h != hex.EncodeToString(want[:]) {
					t.Fatalf("a request registered the hash of another token than the device's (%d requests)", len(sent))
				}
			}
		})
	}
}
