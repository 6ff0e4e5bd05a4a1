package cli_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/mosquitto"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// run runs one fleetctl command to completion.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*fleettest.Timeout)
	defer cancel()
	err := cli.Run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

// mustRun runs a command that must succeed and returns its standard output.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, args...)
	if err != nil {
		t.Fatalf("fleetctl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// output is a concurrency-safe buffer a test can wait on.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.changed)
	o.changed = make(chan struct{})
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output matches re and returns the submatches.
func (o *output) waitFor(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(fleettest.Timeout)
	for {
		o.mu.Lock()
		m := rx.FindStringSubmatch(o.buf.String())
		ch := o.changed
		o.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no output matching %q within %s; got:\n%s", re, fleettest.Timeout, o.String())
		}
	}
}

// start runs a long-running fleetctl command until the test ends.
func start(t *testing.T, args ...string) (stdout, stderr *output) {
	t.Helper()
	stdout, stderr = newOutput(), newOutput()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, args, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fleetctl %s: %v", args[0], err)
		}
		if t.Failed() {
			t.Logf("fleetctl %s stderr:\n%s", args[0], stderr.String())
		}
	})
	return stdout, stderr
}

func initFleet(t *testing.T) (string, *fleet.Fleet) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fleet")
	mustRun(t, "init", "--dir", dir, "--name", "cli test")
	f, err := fleet.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, f
}

// runAgent runs a real agent until the returned stop is called or the test ends.
func runAgent(t *testing.T, stateDir, url string) (a *agent.Agent, stop func()) {
	t.Helper()
	log, rec := logtest.New()
	a, err := agent.New(agent.Config{
		StateDir: stateDir, BrokerURL: url, Logger: log,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		RequestTimeout: 10 * time.Second, SwitchTimeout: 10 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
			if t.Failed() {
				t.Logf("agent log:\n%s", rec.Text())
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// following runs fleetctl status --wait in the background and returns once it has read the
// retained state (its progress bar is up), with a channel for its result.
func following(t *testing.T, args ...string) (stdout *output, done <-chan error) {
	t.Helper()
	stdout, stderr := newOutput(), newOutput()
	ch := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*fleettest.Timeout)
	go func() {
		defer cancel()
		ch <- cli.Run(ctx, append([]string{"status"}, args...), stdout, stderr)
	}()
	stderr.waitFor(t, "converged")
	return stdout, ch
}

// One real agent rotates through the real fleetctl — the embedded broker with its revocation
// enforcement, the signer, rotate, breach and status --wait — and, offline during each
// rotation request, converges when it comes back (R2).
//
// (Every retained publish here is ordered against every wildcard subscription: mochi 2.7.9
// races between the two, see the report of the rotation issue.)
func TestOneDeviceRotatesThroughFleetctl(t *testing.T) {
	dir, f := initFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	brokerOut, _ := start(t, "broker", "--dir", dir, "--listen", "127.0.0.1:0", "--data", t.TempDir())
	url := brokerOut.waitFor(t, `broker listening on (mqtts://\S+)`)[1]
	serveOut, _ := start(t, "serve", "--dir", dir, "--broker", url, "--name", "one")
	serveOut.waitFor(t, `signer "one" serving`)

	// The device is offline when the operator asks it to rotate.
	out := mustRun(t, "rotate", "--dir", dir, "--broker", url, "--device", "cam-0001")
	if !strings.Contains(out, "raised to 1") {
		t.Fatalf("rotate said %q", out)
	}
	statusOut, done := following(t, "--dir", dir, "--broker", url, "--wait", "30s", "--json")
	a, stop := runAgent(t, e.StateDir, url)
	if err := <-done; err != nil {
		t.Fatalf("status --wait: %v\n%s", err, statusOut.String())
	}
	var r status.Report
	if err := json.Unmarshal([]byte(statusOut.String()), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, statusOut.String())
	}
	old := e.Cert.Leaf
	if !r.Converged || r.Total != 1 || r.Devices[0].Epoch != 1 || r.Devices[0].DesiredEpoch != 1 || r.Devices[0].CertSerial == old.SerialNumber.Text(16) {
		t.Fatalf("status after rotation: %s", statusOut.String())
	}
	if a.Epoch() != 1 || a.Certificate().SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatalf("agent at epoch %d with serial %s", a.Epoch(), a.Certificate().SerialNumber.Text(16))
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if !reg.Revoked(old.SerialNumber) {
		t.Fatal("the old certificate was not revoked")
	}
	if _, err := fleettest.TryConnect(t, f, url, e.Cert); err == nil {
		t.Fatal("fleetctl broker accepts the replaced certificate")
	}
	rotated := a.Certificate()

	// A breach while the device is offline again: it rotates when it returns.
	stop()
	out = mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")
	if !strings.Contains(out, "to epoch 2") {
		t.Fatalf("breach said %q", out)
	}
	statusOut, done = following(t, "--dir", dir, "--broker", url, "--wait", "30s")
	a, _ = runAgent(t, e.StateDir, url)
	if err := <-done; err != nil {
		t.Fatalf("status --wait after the breach: %v\n%s", err, statusOut.String())
	}
	if !strings.Contains(statusOut.String(), "incident INC-1") || a.Epoch() != 2 {
		t.Fatalf("after the breach the agent is at epoch %d; status:\n%s", a.Epoch(), statusOut.String())
	}
	if !reg.Revoked(rotated.SerialNumber) {
		t.Fatal("the certificate replaced by the breach rotation was not revoked")
	}
}

// publishState publishes a retained device state as the device itself.
func publishState(t *testing.T, f *fleet.Fleet, url, id string, s wire.DeviceState) {
	t.Helper()
	cert := fleettest.Issue(t, f, certs.RoleDevice, id)
	sess, err := fleettest.TryConnect(t, f, url, cert)
	if err != nil {
		t.Fatal(err)
	}
	s.V, s.Firmware, s.CertSerial, s.CertNotAfter = wire.Version, "1.0.0", cert.Leaf.SerialNumber.Text(16), cert.Leaf.NotAfter.Unix()
	if s.Updated == 0 {
		s.Updated = time.Now().Unix()
	}
	b, err := wire.Encode(&s)
	if err != nil {
		t.Fatal(err)
	}
	if tok := sess.Client.Publish(topic.State(id), 1, true, b); !tok.WaitTimeout(fleettest.Timeout) || tok.Error() != nil {
		t.Fatalf("publish state: %v", tok.Error())
	}
	sess.Client.Disconnect(0)
}

func TestStatusReportsRetainedDeviceState(t *testing.T) {
	dir, f := initFleet(t)
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	mqtttest.ForEachBroker(t, pki, func(t *testing.T, b mqtttest.Broker) {
		url := b.URL()
		if out := mustRun(t, "rotate", "--dir", dir, "--broker", url, "--all"); !strings.Contains(out, "every device raised to 1") {
			t.Fatalf("rotate --all said %q", out)
		}
		publishState(t, f, url, "cam-0001", wire.DeviceState{Epoch: 1, Rotation: wire.RotationIdle})
		publishState(t, f, url, "cam-0002", wire.DeviceState{Epoch: 0, Rotation: wire.RotationPending})
		publishState(t, f, url, "cam-0003", wire.DeviceState{Epoch: 0, Rotation: wire.RotationFailed, LastError: wire.ErrCodeRateLimited})
		publishState(t, f, url, "cam-0004", wire.DeviceState{Epoch: 0, Rotation: wire.RotationIdle})

		js := mustRun(t, "status", "--dir", dir, "--broker", url, "--json")
		var r status.Report
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			t.Fatalf("%v\n%s", err, js)
		}
		if want := (status.Counts{Converged: 1, Rotating: 1, Failed: 1, Behind: 1}); r.Counts != want || r.FleetEpoch != 1 || r.Total != 4 || r.Converged {
			t.Fatalf("status --json:\n%s", js)
		}
		ids := []string{}
		for _, d := range r.Devices {
			ids = append(ids, d.ID+"="+d.State)
		}
		if want := []string{"cam-0001=converged", "cam-0002=rotating", "cam-0003=failed", "cam-0004=behind"}; !slices.Equal(ids, want) {
			t.Fatalf("devices %v, want %v", ids, want)
		}
		if r.Devices[2].LastError != wire.ErrCodeRateLimited {
			t.Fatalf("last error %q", r.Devices[2].LastError)
		}
		table := mustRun(t, "status", "--dir", dir, "--broker", url)
		if !strings.Contains(table, "4 devices: 1 converged, 1 rotating, 1 failed, 1 behind") || !strings.Contains(table, "cam-0003  failed") {
			t.Fatalf("status table:\n%s", table)
		}
		// Not converged: --wait gives up at its deadline and says so in its exit status, and
		// why nothing moves: no signer runs here.
		_, _, err := run(t, "status", "--dir", dir, "--broker", url, "--wait", "300ms")
		if err == nil || !strings.Contains(err.Error(), "not converged") || !strings.Contains(err.Error(), "no signer has said it serves") {
			t.Fatalf("status --wait on a fleet that is not converged: %v", err)
		}
		// The stragglers converge while status --wait follows them.
		_, done := following(t, "--dir", dir, "--broker", url, "--wait", "20s")
		for _, id := range []string{"cam-0002", "cam-0003", "cam-0004"} {
			publishState(t, f, url, id, wire.DeviceState{Epoch: 1, Rotation: wire.RotationIdle})
		}
		if err := <-done; err != nil {
			t.Fatalf("status --wait: %v", err)
		}
	}, fleettest.Identities())
}

func TestKeysRotateAndBreachPublishTheNextKeySet(t *testing.T) {
	dir, f := initFleet(t)
	v1 := f.KeySet()
	path := strings.TrimSpace(mustRun(t, "keys", "rotate", "--dir", dir))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := certs.AcceptKeySet(f.RootKey(), b, v1.Version)
	if err != nil || v2.Version != v1.Version+1 || len(v2.CommandKeys) != 2 {
		t.Fatalf("keys rotate made %+v, %v", v2, err)
	}
	if _, _, err := run(t, "keys", "rotate", "--dir", dir); err == nil {
		t.Fatal("a second keys rotate before the first was published succeeded")
	}
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	brk := mqtttest.StartEmbedded(t, pki)
	out := mustRun(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "INC-2026-11", "--keyset", path)
	if !strings.Contains(out, "breach INC-2026-11") || !strings.Contains(out, "key set v2 published and in force") {
		t.Fatalf("breach said %q", out)
	}
	f2, err := fleet.Open(dir)
	if err != nil || f2.KeySet().Version != 2 {
		t.Fatalf("key set in force after breach: %v", err)
	}
	// The same command again, as an operator does who is not sure it went through: the
	// pending copy is gone (it is in force), and nothing is published again.
	again := mustRun(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "INC-2026-11", "--keyset", path)
	if !strings.Contains(again, "already published") || !strings.Contains(again, "key set v2 is already in force") {
		t.Fatalf("breach run again said %q", again)
	}
	// The retained breach notice carries the key set and verifies with it, and viewer relays
	// find the set retained on fleet/keyset, both runs having sent it.
	if !strings.Contains(out, "key set v2 sent to viewer relays") || !strings.Contains(again, "key set v2 sent to viewer relays") {
		t.Fatalf("breach did not say it sent the key set to viewer relays:\n%s\n%s", out, again)
	}
	col := status.NewCollector(f.RootKey(), v1)
	var mu sync.Mutex
	var retainedKeySet []byte
	op, err := f2.Dial(context.Background(), fleet.OperatorOptions{Broker: brk.URL(), Subscriptions: append(status.Filters(), topic.FleetKeySet), OnMessage: func(tp string, b []byte) {
		if tp == topic.FleetKeySet {
			mu.Lock()
			retainedKeySet = bytes.Clone(b)
			mu.Unlock()
			return
		}
		col.Add(tp, b)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	ctx, cancel := context.WithTimeout(context.Background(), fleettest.Timeout)
	defer cancel()
	if err := op.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if r := col.Report(); r.FleetEpoch != 1 || r.Incident != "INC-2026-11" {
		t.Fatalf("retained breach notice: epoch %d incident %q (rejected %d)", r.FleetEpoch, r.Incident, col.Rejected())
	}
	mu.Lock()
	if ks, err := certs.OpenKeySet(f.RootKey(), retainedKeySet); err != nil || ks.Version != 2 {
		t.Fatalf("retained on %s: %v, %+v", topic.FleetKeySet, err, ks)
	}
	mu.Unlock()
	// Next: drop the first command key.
	path3 := strings.TrimSpace(mustRun(t, "keys", "rotate", "--dir", dir, "--drop", v1.CommandKeys[0].ID))
	b3, _ := os.ReadFile(path3)
	v3, err := certs.AcceptKeySet(f.RootKey(), b3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(v3.CommandKeys, func(k certs.PublicKey) bool { return k.ID == v1.CommandKeys[0].ID }) {
		t.Fatal("--drop did not drop the key")
	}
	if _, _, err := run(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "x", "--keyset", filepath.Join(dir, "keyset.json")); err == nil {
		t.Fatal("breach accepted a key set that is not newer")
	}
}

func TestEnrollWritesABundleWithTheBootstrapCertificate(t *testing.T) {
	dir, _ := initFleet(t)
	state := filepath.Join(t.TempDir(), "cam")
	req, err := agent.Enroll(state, "cam-0001")
	if err != nil {
		t.Fatal(err)
	}
	csr := filepath.Join(t.TempDir(), "device.csr")
	os.WriteFile(csr, req, 0o600)
	bundle := filepath.Join(t.TempDir(), "cam.bundle.json")
	mustRun(t, "enroll", "--dir", dir, "--csr", csr, "--out", bundle)
	b, _ := os.ReadFile(bundle)
	vb, err := agent.InstallBundle(state, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if vb.Bootstrap == nil {
		t.Fatal("no bootstrap certificate in the bundle")
	}
}

func TestMosquittoConfigNamesTheSignerAndBootstrapIdentities(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	fleettest.Enroll(t, f, "cam-0002")
	if _, err := f.ViewerCertificate("lobby"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "mosquitto")
	said := mustRun(t, "mosquitto-config", "--dir", dir, "--out", out, "--port", "18883", "--viewer", "qa")
	// Mosquitto runs with OPENSSL_CONF naming the file written beside its configuration.
	ossl, err := filepath.Abs(filepath.Join(out, mosquitto.OpenSSLConfFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(ossl); err != nil || !bytes.Equal(got, mosquitto.RenderOpenSSLConf()) {
		t.Errorf("%s: %v, want RenderOpenSSLConf's output:\n%s", ossl, err, got)
	}
	if !strings.Contains(said, "OPENSSL_CONF="+ossl) {
		t.Errorf("mosquitto-config does not say to run Mosquitto with OPENSSL_CONF=%s:\n%s", ossl, said)
	}
	acl, _ := os.ReadFile(filepath.Join(out, "acl"))
	for _, want := range []string{"user operator:admin\n", "user signer:default\n", "user bootstrap:cam-0001\n", "user bootstrap:cam-0002\n", "topic write boot/cam-0001/up/csr\n", "topic read dev/+/up/csr\n",
		"user viewer:web\n", "user viewer:lobby\n", "user viewer:qa\n", "topic write dev/+/down/signal\n"} {
		if !bytes.Contains(acl, []byte(want)) {
			t.Errorf("acl lacks %q:\n%s", want, acl)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(out, "mosquitto.conf"))
	if !bytes.Contains(conf, []byte("crlfile "+f.CRLPath())) && !regexp.MustCompile(`crlfile /\S+/crl.pem`).Match(conf) {
		t.Errorf("mosquitto.conf has no crlfile:\n%s", conf)
	}
	b, err := os.ReadFile(f.CRLPath())
	if err != nil || !bytes.Contains(b, []byte("X509 CRL")) {
		t.Fatalf("no CRL written: %v", err)
	}
}

func TestRolloutResumeAndCRL(t *testing.T) {
	dir, f := initFleet(t)
	if out := mustRun(t, "rollout", "status", "--dir", dir); !strings.Contains(out, "running") {
		t.Fatalf("rollout status: %q", out)
	}
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	// An aborted rollout, as a signer leaves it.
	os.WriteFile(f.RolloutPath(), []byte(`{"aborted":true,"reason":"3 of 4 not confirmed","aborted_at":"2026-11-01T12:00:00Z"}`), 0o600)
	if out := mustRun(t, "rollout", "status", "--dir", dir); !strings.Contains(out, "aborted at") {
		t.Fatalf("rollout status: %q", out)
	}
	if out := mustRun(t, "rollout", "resume", "--dir", dir); !strings.Contains(out, "rollout resumed") {
		t.Fatalf("rollout resume: %q", out)
	}
	st, err := signer.LoadRollout(f.RolloutPath())
	if err != nil || st.Aborted || st.ResumedAt.IsZero() {
		t.Fatalf("after resume: %+v, %v", st, err)
	}
	crl := filepath.Join(t.TempDir(), "crl.pem")
	mustRun(t, "crl", "--dir", dir, "--out", crl)
	if b, _ := os.ReadFile(crl); !bytes.Contains(b, []byte("BEGIN X509 CRL")) {
		t.Fatalf("crl --out wrote %q", b)
	}
}

func TestUsage(t *testing.T) {
	out := mustRun(t, "help")
	for _, c := range []string{"serve", "rotate", "breach", "status", "keys rotate", "crl", "rollout resume"} {
		if !strings.Contains(out, "\n  "+c) {
			t.Errorf("usage lacks %q", c)
		}
	}
	if _, _, err := run(t, "rotate", "--dir", t.TempDir(), "--all", "--device", "cam-0001"); err == nil {
		t.Error("rotate with both --all and --device succeeded")
	}
	if _, _, err := run(t, "keys"); err == nil {
		t.Error("keys without a subcommand succeeded")
	}
}

func TestServeRetireDiscardsTheInstanceSession(t *testing.T) {
	dir, f := initFleet(t)
	brk := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool})
	out := mustRun(t, "serve", "--dir", dir, "--broker", brk.URL(), "--name", "old", "--retire")
	if !strings.Contains(out, `signer "old" retired`) {
		t.Fatalf("serve --retire said %q", out)
	}
}

func TestGrantIsForTheEpochTheDeviceWillHold(t *testing.T) {
	dir, f := initFleet(t)
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	b := mqtttest.StartEmbedded(t, pki)
	url := b.URL()

	// Unknown device: its epoch is unknown, so no grant.
	if _, _, err := run(t, "grant", "--dir", dir, "--broker", url, "--device", "cam-0001"); err == nil || !strings.Contains(err.Error(), "published no state") {
		t.Fatalf("grant for a device that never connected: %v", err)
	}
	open := func(out string) *certs.Grant {
		t.Helper()
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("grant printed %q: %v", out, err)
		}
		g, err := certs.OpenGrant(f.KeySet().GrantVerifier(), raw)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	publishState(t, f, url, "cam-0001", wire.DeviceState{Epoch: 2, Rotation: wire.RotationIdle})
	g := open(mustRun(t, "grant", "--dir", dir, "--broker", url, "--device", "cam-0001", "--ttl", "10m", "--subject", "viewer-7"))
	if g.Device != "cam-0001" || g.Epoch != 2 || g.Scope != certs.ScopeView || g.Subject != "viewer-7" || g.ExpiresAt-g.IssuedAt != 600 {
		t.Fatalf("grant %+v", g)
	}
	if err := certs.CheckGrant(g, "cam-0001", 2, certs.ScopeView, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A rotation is asked for: the grant is made for the epoch the device is going to, so it
	// still works after the rotation (and no earlier grant does).
	mustRun(t, "rotate", "--dir", dir, "--broker", url, "--device", "cam-0001")
	if g := open(mustRun(t, "grant", "--dir", dir, "--broker", url, "--device", "cam-0001")); g.Epoch != 3 {
		t.Fatalf("grant epoch %d after rotate, want 3", g.Epoch)
	}
	page := mustRun(t, "grant", "--dir", dir, "--broker", url, "--device", "cam-0001", "--url", "http://127.0.0.1:8889/")
	if !regexp.MustCompile(`^http://127\.0\.0\.1:8889/#device=cam-0001&grant=[A-Za-z0-9_-]+\n$`).MatchString(page) {
		t.Fatalf("grant --url printed %q", page)
	}
	for _, bad := range [][]string{
		{"--device", "cam-0001", "--ttl", "0s"},
		{"--device", "cam-0001", "--ttl", "800h"},
		{"--device", "bad id"},
		{"--device", "cam-0001", "--url", "ftp://x/"},
	} {
		if _, _, err := run(t, append([]string{"grant", "--dir", dir, "--broker", url}, bad...)...); err == nil {
			t.Errorf("grant %v succeeded", bad)
		}
	}
}

// When fleetctl broker stops, --cpuprofile has written a CPU profile, gzip-compressed as pprof
// reads it, and with --max-connect-rate it says the most connections it admitted in a second.
func TestBrokerStopWritesTheProfileAndTheAdmissionPeak(t *testing.T) {
	dir, f := initFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	path := filepath.Join(t.TempDir(), "broker.prof")
	stdout, stderr := newOutput(), newOutput()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- cli.Run(ctx, []string{"broker", "--dir", dir, "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--cpuprofile", path, "--max-connect-rate", "50"}, stdout, stderr)
	}()
	url := stdout.waitFor(t, `broker listening on (mqtts://\S+)`)[1]
	a, stop := runAgent(t, e.StateDir, url)
	<-a.Connected()
	stop()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no profile file while the broker runs: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("fleetctl broker: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "most connections admitted in one second 1 (budget 50 a second); closed over the budget 0, of which turns taken by a source that weighed less 0; closed before their TLS ClientHello, too many waiting for one 0; gone before their turn, the turn passed on 0") {
		t.Errorf("fleetctl broker said:\n%s", stdout.String())
	}
	pf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	z, err := gzip.NewReader(pf)
	if err != nil {
		t.Fatalf("the profile is not what pprof reads: %v", err)
	}
	if n, err := io.Copy(io.Discard, z); err != nil || n == 0 {
		t.Fatalf("the profile holds %d bytes (%v)", n, err)
	}
}

// With the rollout aborted, breach still publishes, and says loudly what stops the devices.
func TestBreachWarnsOfAnAbortedRollout(t *testing.T) {
	dir, f := initFleet(t)
	pki := &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
	brk := mqtttest.StartEmbedded(t, pki)
	_, stderr, err := run(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "INC-1")
	if err != nil || strings.Contains(stderr, "aborted") {
		t.Fatalf("breach with the rollout running: %v\n%s", err, stderr)
	}
	st := `{"aborted":true,"reason":"12 of 40 certificates not confirmed","aborted_at":"2026-11-27T03:00:00Z"}`
	if err := os.WriteFile(f.RolloutPath(), []byte(st), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := run(t, "breach", "--dir", dir, "--broker", brk.URL(), "--incident", "INC-2")
	if err != nil || !strings.Contains(stdout, "breach INC-2") {
		t.Fatalf("breach with the rollout aborted: %v\n%s", err, stdout)
	}
	want := "the signers aborted the last rollout at 2026-11-27T03:00:00Z (12 of 40 certificates not confirmed): no device rotates until you run: fleetctl rollout resume --dir " + dir
	if !strings.Contains(stderr, want) {
		t.Fatalf("breach did not warn of the aborted rollout:\n%s", stderr)
	}
	if _, stderr, _ := run(t, "status", "--dir", dir, "--broker", brk.URL()); !strings.Contains(stderr, want) {
		t.Errorf("status did not warn of the aborted rollout:\n%s", stderr)
	}
}
