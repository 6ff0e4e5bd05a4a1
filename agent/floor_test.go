package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/internal/strictjson"
)

// A breach notice that raised the grant epoch and replaced the keys, then a state file lost to
// corruption: the recovered device still refuses grants from before the breach and grants of
// the key the breach dropped, from its first moment and without hearing the notice again.
// Before the floor file, it started from grant epoch 0 and its enrollment's key set.
func TestACorruptStateFileDoesNotBringBackVoidedGrantsOrDroppedKeys(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now, closedPort(t))
	a, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	newKey, _ := certs.NewSigningKey()
	ks, err := certs.SignKeySet(f.root, certs.KeySet{Version: 2, CommandKeys: []certs.PublicKey{newKey.Public()}, GrantKeys: []certs.PublicKey{newKey.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	notice, err := certs.SignDesired(newKey, certs.Desired{Target: certs.TargetFleet, Version: 10, Epoch: 3, Incident: "INC-1", KeySet: ks})
	if err != nil {
		t.Fatal(err)
	}
	a.handleDesired(context.Background(), fleetDesired(a), notice)
	if a.GrantEpoch() != 3 {
		t.Fatalf("grant epoch %d after the notice, want 3", a.GrantEpoch())
	}

	if err := os.WriteFile(filepath.Join(f.dir, StateFile), []byte("{\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	b, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatalf("corrupt state stopped the agent: %v", err)
	}
	rec.WaitFor(t, time.Second, "state file was corrupt")
	if b.GrantEpoch() != 3 {
		t.Fatalf("after recovering from a corrupt state file the grant epoch is %d, want 3", b.GrantEpoch())
	}
	grant := func(k *certs.SigningKey, epoch uint64) []byte {
		g, err := certs.SignGrant(k, certs.Grant{Device: "cam-0001", Epoch: epoch, Scope: certs.ScopeView, Subject: "t",
			IssuedAt: now.Add(-time.Minute).Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	if _, err := b.CheckGrant(grant(f.cmdKey, 3), certs.ScopeView); !errors.Is(err, certs.ErrUnknownKey) {
		t.Errorf("a grant of the dropped key: %v, want ErrUnknownKey", err)
	}
	if _, err := b.CheckGrant(grant(newKey, 2), certs.ScopeView); err == nil {
		t.Error("a grant from before the breach was taken")
	}
	if _, err := b.CheckGrant(grant(newKey, 3), certs.ScopeView); err != nil {
		t.Errorf("a grant of the new key at the breach's epoch: %v", err)
	}
	// The floor survives the recovery and another start.
	c, err := New(Config{StateDir: f.dir})
	if err != nil || c.GrantEpoch() != 3 {
		t.Fatalf("next start: grant epoch %d, %v", c.GrantEpoch(), err)
	}
}

// A floor file that is itself damaged does not stop a recovery: the device starts from its
// enrollment's values, as before the floor existed, and says so.
func TestADamagedFloorFileDoesNotStopARecovery(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	for _, name := range []string{StateFile, FloorFile} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte("{\x00garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatalf("a damaged floor stopped the agent: %v", err)
	}
	rec.WaitFor(t, time.Second, "floor cannot be read either")
	if a.GrantEpoch() != 0 {
		t.Fatalf("grant epoch %d", a.GrantEpoch())
	}
}

// The floor keeps the form an agent older than the state file's checksum reads (strictly,
// refusing unknown members): after a rollback that agent finds the new state file corrupt and
// rebuilds it from the floor. Given a checksum too, the floor was lost with it, and the old
// agent wrote grant epoch 0 over it: grants voided by the last breach were honoured again.
func TestTheFloorKeepsTheFormAnOlderAgentReads(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	if err := state.NewFileStore(filepath.Join(f.dir, StateFile), nil).Save(state.State{Cred: state.Cred{Epoch: 3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: f.dir, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	// What the agents before the checksum read: exactly these members.
	var old struct {
		V          int    `json:"v"`
		GrantEpoch uint64 `json:"grant_epoch"`
		KeySet     string `json:"key_set,omitempty"`
	}
	b := mustRead(t, filepath.Join(f.dir, FloorFile))
	if err := strictjson.Unmarshal(b, &old); err != nil || old.V != 1 || old.GrantEpoch != 3 {
		t.Fatalf("an older agent reads the floor %s as %+v, %v", b, old, err)
	}
}

// FuzzRecoverFloor: whatever bytes a damaged disk leaves in the floor file, a recovery never
// panics, never lowers what it is given, and takes a key set only if the fleet root signed it.
func FuzzRecoverFloor(f *testing.F) {
	f.Add([]byte(`{"v":1,"grant_epoch":3}`))
	f.Add([]byte(`{"v":1,"grant_epoch":18446744073709551615,"key_set":"{}"}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte("{\x00"))
	fx := enrolled(f, "cam-0001", time.Now(), "mqtts://127.0.0.1:1")
	a, err := New(Config{StateDir: fx.dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(fx.dir, FloorFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		st := state.State{DesiredEpoch: 2}
		a.recoverFloor(&st)
		if st.DesiredEpoch < 2 {
			t.Fatalf("the desired epoch fell to %d", st.DesiredEpoch)
		}
		if st.KeySet != "" {
			if _, err := certs.OpenKeySet(fx.root.Public().Key, []byte(st.KeySet)); err != nil {
				t.Fatalf("took a key set the root did not sign: %v", err)
			}
		}
	})
}

// A key set damaged inside a state file that still parses (a flipped byte in its signature)
// must not keep the agent from starting: it takes the floor's copy, the same set, and goes
// on. Before, New failed on it at every start.
func TestADamagedStoredKeySetIsTakenFromTheFloor(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	a, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	newKey, _ := certs.NewSigningKey()
	ks, err := certs.SignKeySet(f.root, certs.KeySet{Version: 2, CommandKeys: []certs.PublicKey{newKey.Public()}, GrantKeys: []certs.PublicKey{newKey.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	notice, err := certs.SignDesired(newKey, certs.Desired{Target: certs.TargetFleet, Version: 10, Epoch: 1, KeySet: ks})
	if err != nil {
		t.Fatal(err)
	}
	a.handleDesired(context.Background(), fleetDesired(a), notice)
	store := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	st, err := store.Load()
	if err != nil || st.KeySet == "" {
		t.Fatalf("the accepted key set was not stored: %v", err)
	}
	b := []byte(st.KeySet)
	i := len(b) * 3 / 4 // inside the signature
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	st.KeySet = string(b)
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}

	log, rec := logtest.New()
	c, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatalf("a damaged stored key set stopped the agent: %v", err)
	}
	rec.WaitFor(t, time.Second, "stored key set does not open")
	if c.keySet != 2 {
		t.Fatalf("key set version %d, want the floor's 2", c.keySet)
	}
	if got, err := store.Load(); err != nil || got.KeySet != string(ks) {
		t.Fatalf("the state was not saved with the floor's key set: %v", err)
	}
}
