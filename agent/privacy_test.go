package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/agent/privacy/onboard"
	"github.com/camagent/camagent/agent/privacy/seal"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// containsAny reports which of values b holds, raw or case-folded.
func containsAny(b []byte, values ...string) []string {
	low := bytes.ToLower(b)
	var found []string
	for _, v := range values {
		if bytes.Contains(low, bytes.ToLower([]byte(v))) {
			found = append(found, v)
		}
	}
	return found
}

// Onboarding seals the network, passphrase and nickname in 0600 files; LoadPrivacy gives the
// guard exactly those three values and not the claim token, which is meant to leave.
func TestOnboardSealsTheSetupAndLoadPrivacyGuardsIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := testSetup("c0ffee")
	if err := Onboard(dir, s); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{seal.SecretFile, seal.SettingsFile} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want 0600", name, fi, err)
		}
		b, _ := os.ReadFile(p)
		if found := containsAny(b, s.SSID, s.Passphrase, s.Nickname, s.Claim, s.TimeZone); len(found) > 0 {
			t.Fatalf("%s holds %q in the clear", name, found)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, %v; want 0700", fi, err)
	}

	g := egress.New()
	if err := LoadPrivacy(dir, g); err != nil {
		t.Fatal(err)
	}
	if g.Len() != 3 {
		t.Fatalf("guard holds %d values, want the SSID, the passphrase and the nickname", g.Len())
	}
	for name, v := range map[string]string{"ssid": s.SSID, "passphrase": s.Passphrase, "nickname": s.Nickname} {
		if err := g.Check([]byte(`{"x":"` + v + `"}`)); !errors.Is(err, egress.ErrSensitive) {
			t.Errorf("guard passes the %s: %v", name, err)
		}
	}
	if err := g.Check([]byte(`{"v":1,"claim":"` + s.Claim + `"}`)); err != nil {
		t.Errorf("guard refuses the claim token, which must reach the cloud: %v", err)
	}

	t.Run("a device never onboarded has nothing to guard", func(t *testing.T) {
		g := egress.New()
		if err := LoadPrivacy(t.TempDir(), g); err != nil || g.Len() != 0 {
			t.Fatalf("LoadPrivacy = %v with %d values", err, g.Len())
		}
	})
	t.Run("an invalid setup is refused and nothing is written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		bad := s
		bad.Passphrase = "short"
		err := Onboard(dir, bad)
		var fe *onboard.FieldError
		if !errors.As(err, &fe) || fe.Field != "passphrase" || strings.Contains(err.Error(), "short") {
			t.Fatalf("Onboard = %v, want a passphrase error that does not quote it", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("state directory made for a refused setup: %v", err)
		}
	})
	t.Run("onboarding again replaces the guarded values", func(t *testing.T) {
		s2 := testSetup("beef42")
		if err := Onboard(dir, s2); err != nil {
			t.Fatal(err)
		}
		g := egress.New()
		if err := LoadPrivacy(dir, g); err != nil {
			t.Fatal(err)
		}
		if g.Check([]byte(s.SSID)) != nil || g.Check([]byte(s2.SSID)) == nil {
			t.Fatal("after onboarding again the guard does not hold the new network instead of the old")
		}
	})
}

// The claim token goes out once, in its typed message, and is then forgotten; a failed
// publish keeps it for the next connect.
func TestOnboardClaimIsForwardedOnceThenForgotten(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	s := testSetup("a1b2c3")
	if err := Onboard(f.dir, s); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubRecorder()
	a.pub.Store(&publisherBox{egress.Wrap(pub, a.guard)})
	ctx := context.Background()

	pub.fail(errors.New("broker gone"))
	a.forwardClaim(ctx)
	rec.WaitFor(t, time.Second, "could not forward the owner's claim token")
	if st := sealedSettings(t, f.dir); st.Claim != s.Claim {
		t.Fatal("a claim token that was not sent was forgotten")
	}

	pub.fail(nil)
	a.forwardClaim(ctx)
	a.forwardClaim(ctx) // e.g. the next connect
	msgs := pub.on(topic.Claim("cam-0001"))
	if len(msgs) != 1 {
		t.Fatalf("%d claim messages, want 1", len(msgs))
	}
	var c wire.Claim
	if err := wire.Decode(msgs[0].payload, &c); err != nil || c.Claim != s.Claim || msgs[0].retained {
		t.Fatalf("claim message %s (retained %v): %v", msgs[0].payload, msgs[0].retained, err)
	}
	st := sealedSettings(t, f.dir)
	if st.Claim != "" || st.SSID != s.SSID || st.Passphrase != s.Passphrase || st.Nickname != s.Nickname || st.TimeZone != s.TimeZone {
		t.Fatalf("after forwarding: %+v; want the claim gone and everything else kept", st)
	}
	if strings.Contains(rec.Text(), s.Claim) {
		t.Fatalf("the claim token reached the log:\n%s", rec.Text())
	}
	rec.WaitFor(t, time.Second, "forwarded the owner's claim token", onboard.Setup{Claim: s.Claim}.ClaimHash())

	// A restarted agent has nothing left to forward.
	b, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	b.pub.Store(&publisherBox{pub})
	b.forwardClaim(ctx)
	if n := len(pub.on(topic.Claim("cam-0001"))); n != 1 {
		t.Fatalf("%d claim messages after a restart, want still 1", n)
	}
}

// sealedSettings opens the settings sealed in dir.
func sealedSettings(t *testing.T, dir string) seal.Settings {
	t.Helper()
	sec, err := seal.LoadSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := seal.LoadSettings(dir, sec)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func ownerArgs(t *testing.T, key *certs.SigningKey, scope string, on bool) json.RawMessage {
	t.Helper()
	g, err := certs.SignGrant(key, certs.Grant{Device: "cam-0001", Scope: scope, Subject: "owner-app-1", IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"on": on, "grant": g})
	return b
}

// The privacy command needs the owner's grant; privacy mode is persisted and the cloud sees
// only the boolean in the retained device state.
func TestPrivacyCommandNeedsTheOwnersGrantAndPersists(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	log, _ := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubRecorder()
	a.pub.Store(&publisherBox{pub})
	ctx := context.Background()
	cmd := func(args json.RawMessage) *wire.Reply {
		t.Helper()
		r := a.execute(ctx, &certs.Command{Type: "privacy", Target: "cam-0001", Args: args})
		if err := r.Validate(); err != nil {
			t.Fatalf("reply %+v does not validate: %v", r, err)
		}
		return r
	}
	other, _ := certs.NewSigningKey()
	for _, tt := range []struct {
		name string
		args json.RawMessage
		want string
	}{
		{"a view grant is not the owner's", ownerArgs(t, f.cmdKey, certs.ScopeView, true), wire.ErrCodeGrant},
		{"an integration grant is not the owner's", ownerArgs(t, f.cmdKey, certs.ScopeIntegration, true), wire.ErrCodeGrant},
		{"a grant signed by an unknown key", ownerArgs(t, other, certs.ScopeOwner, true), wire.ErrCodeGrant},
		{"no grant", json.RawMessage(`{"on":true}`), wire.ErrCodeBadArgs},
		{"no switch", json.RawMessage(`{"grant":"AAAA"}`), wire.ErrCodeBadArgs},
		{"an unknown field", json.RawMessage(`{"on":true,"grant":"AAAA","ssid":"x"}`), wire.ErrCodeBadArgs},
		{"no arguments", nil, wire.ErrCodeBadArgs},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			if r := cmd(tt.args); r.OK || r.Error != tt.want {
				t.Fatalf("reply %+v, want error %q", r, tt.want)
			}
			if a.Privacy() {
				t.Fatal("privacy mode turned on")
			}
		})
	}
	if n := len(pub.on(topic.State("cam-0001"))); n != 0 {
		t.Fatalf("%d state messages for refused commands", n)
	}

	if r := cmd(ownerArgs(t, f.cmdKey, certs.ScopeOwner, true)); !r.OK {
		t.Fatalf("owner's command refused: %+v", r)
	}
	if !a.Privacy() {
		t.Fatal("privacy mode is off after the owner turned it on")
	}
	states := pub.on(topic.State("cam-0001"))
	if len(states) != 1 || !states[0].retained {
		t.Fatalf("%d state messages; want one, retained", len(states))
	}
	var ds wire.DeviceState
	if err := wire.Decode(states[0].payload, &ds); err != nil || !ds.Privacy {
		t.Fatalf("device state %s: %v", states[0].payload, err)
	}

	// It survives a restart.
	b, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Privacy() {
		t.Fatal("privacy mode lost across a restart")
	}
	b.pub.Store(&publisherBox{pub})
	if err := b.SetPrivacy(ctx, false, "local switch"); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if c.Privacy() {
		t.Fatal("privacy mode still on after the switch turned it off")
	}
}

// A publish the guard refuses is not sent, is counted, and leaves the agent serving. The case
// is a real one: a phone app that built the owner's claim token from the Wi-Fi network's name.
// The claim message carries the SSID, so the guard refuses it; the agent keeps the token for
// a later try, says so, and goes on answering commands.
func TestPrivacyGuardRefusalIsCountedAndTheAgentKeepsServing(t *testing.T) {
	const id = "cam-0001"
	f := enrolled(t, id, time.Now(), closedPort(t))
	caPEM := certs.EncodeCertPEM(f.ca.Cert)
	pool, err := certs.NewPool(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	pki := &mqtttest.PKI{CA: f.ca, CAPEM: caPEM, Pool: pool}
	var mu sync.Mutex
	var seen []string // topics the broker accepted from the device
	b := mqtttest.StartEmbedded(t, pki, mqtttest.WithOnPublish(func(clientID, tp string, _ []byte, _ bool) {
		if clientID == id {
			mu.Lock()
			seen = append(seen, tp)
			mu.Unlock()
		}
	}))

	s := onboard.Setup{SSID: "HomeNetwork2024", Passphrase: "correct horse battery", Claim: "HomeNetwork2024_9f8e7d6c5b", Nickname: "Hall"}
	if err := Onboard(f.dir, s); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, BrokerURL: b.URL(), Logger: log, TelemetryInterval: -1,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	line := rec.WaitFor(t, 20*time.Second, "could not forward the owner's claim token", "ssid")
	if found := containsAny([]byte(rec.Text()), s.SSID, s.Claim, s.Passphrase); len(found) > 0 {
		t.Fatalf("the log carries %q: %s", found, line)
	}
	if n := a.guard.Refusals(); n != 1 {
		t.Fatalf("%d refusals counted, want 1", n)
	}
	if tel := a.telemetry(); tel.EgressRefusals != 1 {
		t.Fatalf("telemetry reports %d refusals, want 1", tel.EgressRefusals)
	}
	if sealedSettings(t, f.dir).Claim != s.Claim {
		t.Fatal("a claim token that was refused was forgotten")
	}

	// The agent still serves: a ping is answered.
	replies := make(chan []byte, 4)
	op := mqtttest.Connect(t, mqtttest.ClientOptions(b, pki.ClientTLS(t, pki.ClientCert(t, certs.RoleOperator, "test")), "operator:test"))
	mqtttest.Wait(t, op.Subscribe(topic.Reply(id), 1, func(_ paho.Client, m paho.Message) { replies <- m.Payload() }), "subscribe")
	now := time.Now()
	env, err := certs.SignCommand(f.cmdKey, certs.Command{Type: "ping", Target: id, Seq: uint64(now.UnixNano()), IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	mqtttest.Wait(t, op.Publish(topic.DeviceCmd(id), 1, false, env), "publish ping")
	select {
	case p := <-replies:
		var r wire.Reply
		if err := wire.Decode(p, &r); err != nil || !r.OK || r.Status == nil {
			t.Fatalf("ping reply %s: %v", p, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no ping reply after a refused publish; log:\n%s", rec.Text())
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned after a refused publish: %v", err)
	default:
	}
	// The broker's hook may record the reply just after delivering it: wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		if slices.Contains(got, topic.Claim(id)) {
			t.Fatal("the broker received the refused claim message")
		}
		if slices.Contains(got, topic.Reply(id)) && slices.Contains(got, topic.State(id)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker saw only %v from the device", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A factory reset leaves nothing of the device's identity or settings: no key, token,
// certificate, bundle, journal, device secret or sealed file, nor their temporary files. Key
// and token files are overwritten before they go. Afterwards the agent will not start until
// the device is enrolled again (S10).
func TestResetWipesEverySecretAndTheDeviceMustEnrollAgain(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	s := testSetup("dd77ee")
	if err := Onboard(f.dir, s); err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.save(func(st *state.State) { st.Privacy = true }); err != nil {
		t.Fatal(err)
	}
	// A later credential generation, and the leftovers of interrupted writes.
	if _, _, err := makeGeneration(f.dir, 1); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(f.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".state.json.tmp-123", []byte(`{"v":1}`))
	write(".device.key.tmp-77", []byte("half a key"))
	write("."+seal.SecretFile+".new-0011223344556677", bytes.Repeat([]byte{7}, seal.SecretSize))
	write("."+seal.SettingsFile+".tmp-9", []byte("sealed leftovers"))
	write(StateFile+".corrupt-1700000000", []byte("{garbage"))
	write(PrivacyMarkerFile, nil) // a reset device streams once enrolled again
	write("operator-notes.txt", []byte("not the agent's"))

	// A second name for the key's inode shows whether it was overwritten before removal.
	keyLink := filepath.Join(t.TempDir(), "key-link")
	keyPEM, _ := os.ReadFile(filepath.Join(f.dir, KeyFile))
	if err := os.Link(filepath.Join(f.dir, KeyFile), keyLink); err != nil {
		t.Fatal(err)
	}

	left, err := Reset(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []string{"operator-notes.txt"}) {
		t.Fatalf("Reset left %v, want only the file that is not the agent's", left)
	}
	var remaining []string
	filepath.WalkDir(f.dir, func(p string, d fs.DirEntry, err error) error {
		if p != f.dir {
			remaining = append(remaining, strings.TrimPrefix(p, f.dir+"/"))
		}
		return nil
	})
	if !slices.Equal(remaining, left) {
		t.Fatalf("state directory holds %v after reset", remaining)
	}
	if b, _ := os.ReadFile(keyLink); bytes.Contains(b, keyPEM[10:60]) || len(bytes.Trim(b, "\x00")) != 0 {
		t.Fatal("the device key was removed without being overwritten first")
	}

	if _, err := New(Config{StateDir: f.dir, Logger: log}); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("New after reset = %v, want ErrNotEnrolled", err)
	}
	g := egress.New()
	if err := LoadPrivacy(f.dir, g); err != nil || g.Len() != 0 {
		t.Fatalf("LoadPrivacy after reset = %v with %d values", err, g.Len())
	}
	// Enrolling again makes a new key.
	if _, err := Enroll(f.dir, "cam-0001"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, KeyFile)); bytes.Equal(b, keyPEM) {
		t.Fatal("enrolling again after reset reused the old key")
	}
}

// `camagent onboard` may run while the agent runs: a camera whose agent was already running
// when its owner set it up, or an owner who onboards again after typing a wrong Wi-Fi
// passphrase. At its next connect the agent forwards the new claim token, keeps the new
// settings (never writing the ones it started with back over them), and guards the new values.
func TestOnboardWhileRunningIsPickedUpAtTheNextConnect(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first *onboard.Setup // before the agent starts; nil: never onboarded
	}{
		{"a camera onboarded for the first time", nil},
		{"a camera onboarded again", func() *onboard.Setup { s := testSetup("111111"); return &s }()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
			if tt.first != nil {
				if err := Onboard(f.dir, *tt.first); err != nil {
					t.Fatal(err)
				}
			}
			log, rec := logtest.New()
			a, err := New(Config{StateDir: f.dir, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			pub := newPubRecorder()
			a.pub.Store(&publisherBox{egress.Wrap(pub, a.guard)})

			s := testSetup("222222")
			if err := Onboard(f.dir, s); err != nil { // camagent onboard, meanwhile
				t.Fatal(err)
			}
			a.forwardClaim(context.Background()) // the next connect

			msgs := pub.on(topic.Claim("cam-0001"))
			var c wire.Claim
			if len(msgs) != 1 || wire.Decode(msgs[0].payload, &c) != nil || c.Claim != s.Claim {
				t.Fatalf("claim messages %d (%+v), want one with the new token", len(msgs), c)
			}
			st := sealedSettings(t, f.dir)
			if st.SSID != s.SSID || st.Passphrase != s.Passphrase || st.Nickname != s.Nickname || st.Claim != "" {
				t.Fatalf("sealed settings after forwarding: %v; want the new ones without their claim", st)
			}
			if err := a.guard.Check([]byte(`{"n":"` + s.Nickname + `"}`)); !errors.Is(err, egress.ErrSensitive) {
				t.Fatalf("the guard does not hold the new nickname: %v", err)
			}
			if tag := a.telemetry().NetworkTag; tag != seal.NetworkTag(a.secret, s.SSID, "") {
				t.Fatal("telemetry's network tag is not the new network's")
			}
			if found := containsAny([]byte(rec.Text()), s.SSID, s.Passphrase, s.Nickname, s.Claim); len(found) > 0 {
				t.Fatalf("the log carries %q", found)
			}
		})
	}
}

// failingStore is a state store whose saves fail, as on a full or failing flash.
type failingStore struct {
	state.Store
	fail bool
}

func (s *failingStore) Save(st state.State) error {
	if s.fail {
		return errors.New("write state: no space left on device")
	}
	return s.Store.Save(st)
}

// Privacy mode never waits on the disk: turned on while the state cannot be saved, it is on
// all the same (the camera stops, offers are refused, the cloud is told), and it is saved once
// the disk allows; turned off while that cannot be saved, it stays on.
func TestPrivacyGoesOnEvenWhenItCannotBeSaved(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	pub := newPubRecorder()
	a.pub.Store(&publisherBox{pub})
	store := &failingStore{Store: a.store, fail: true}
	a.store = store
	ctx := context.Background()

	if err := a.SetPrivacy(ctx, true, "switch"); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("SetPrivacy(on) on a full disk = %v, want the save's error", err)
	}
	if !a.Privacy() || !a.Status().Privacy || !a.telemetry().Privacy {
		t.Fatal("privacy mode is off because it could not be saved")
	}
	if _, err := (&video{a: a}).check(nil); err == nil {
		t.Fatal("an offer is served in privacy mode")
	}
	states := pub.on(topic.State("cam-0001"))
	var ds wire.DeviceState
	if len(states) != 1 || wire.Decode(states[0].payload, &ds) != nil || !ds.Privacy {
		t.Fatalf("the cloud was not told privacy is on: %d state messages", len(states))
	}
	rec.WaitFor(t, time.Second, "privacy mode is on, but the state could not be saved; its marker keeps it on across a restart")
	// A restart before the disk allows keeps it on: the empty marker file could be made.
	if r, err := New(Config{StateDir: f.dir, Logger: log}); err != nil || !r.Privacy() {
		t.Fatalf("a restart before privacy mode was saved: %v, privacy on %v", err, err == nil && r.Privacy())
	}

	// Once the disk allows, the next SetPrivacy(on) saves it.
	store.fail = false
	if err := a.SetPrivacy(ctx, true, "switch"); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Privacy() {
		t.Fatal("privacy mode was not saved once the disk allowed it")
	}

	// Off is refused while it cannot be saved: the camera stays private.
	store.fail = true
	if err := a.SetPrivacy(ctx, false, "switch"); err == nil || !a.Privacy() {
		t.Fatalf("SetPrivacy(off) on a full disk = %v, privacy %v; want an error and privacy on", err, a.Privacy())
	}
}
