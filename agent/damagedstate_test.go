package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// A state file that still parses but whose journal a storage fault changed (a flipped bit in
// a phase, a generation or a number of the replay window) is corrupt as much as one that does
// not parse: the agent quarantines it and recovers as it does for those, and converges. It
// must not act on the damaged journal: before, an unknown phase made the agent commit a
// generation it never loaded (a nil-pointer panic at every start: a camera restarting for
// good), and a replay window out of order let a command already executed through again.
func TestAStateFileThatParsesButIsDamagedIsRecovered(t *testing.T) {
	for _, tc := range []struct {
		name string
		cred state.Cred // generation 1 is on disk, active unless the case says otherwise
	}{
		{"an unknown phase", state.Cred{Active: 1, Epoch: 1, Phase: "pendinf", Next: 2, TargetEpoch: 2, ReqID: "0123456789abcdef"}},
		{"a pending rotation to the active generation", state.Cred{Active: 1, Epoch: 1, Phase: state.PhasePending, Next: 1, TargetEpoch: 2, ReqID: "0123456789abcdef"}},
		{"an issued rotation to generation 0", state.Cred{Active: 1, Epoch: 1, Phase: state.PhaseIssued, Next: 0, TargetEpoch: 2, ReqID: "0123456789abcdef"}},
		{"a rotation without its request id", state.Cred{Active: 1, Epoch: 1, Phase: state.PhasePending, Next: 2, TargetEpoch: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "cam-0001"
			pki := mqtttest.NewPKI(t)
			b := mqtttest.StartEmbedded(t, pki)
			now := time.Now()
			dir := enrolledWithBootstrap(t, pki, b.URL(), id, now, 0)
			rotatedByHand(t, pki, dir, id, now)
			if tc.cred.Next == 2 {
				if _, _, err := makeGeneration(dir, 2); err != nil {
					t.Fatal(err)
				}
			}
			if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: tc.cred}); err != nil {
				t.Fatal(err)
			}
			fullSigner(t, b, pki, id)

			// The rebuilt journal names generation 1, whose certificate the broker takes.
			a, rec := recovering(t, dir)
			waitRecovered(t, a, rec, 0)
			if !strings.Contains(rec.Text(), "state file was corrupt") {
				t.Fatalf("the damaged journal was taken as it is; log:\n%s", rec.Text())
			}
			if m, _ := filepath.Glob(filepath.Join(dir, StateFile+".corrupt-*")); len(m) != 1 {
				t.Fatalf("quarantined copies: %v", m)
			}
			if c := a.Certificate(); certs.CertIdentity(c) != id {
				t.Fatalf("connected as %q", certs.CertIdentity(c))
			}
			got, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load()
			if err != nil || got.Cred.Active != 1 || got.Cred.Phase != state.PhaseNone {
				t.Fatalf("journal: %+v, %v", got.Cred, err)
			}
		})
	}
}

// A replay window a storage fault put out of order must not let a command already executed
// through again: the file is corrupt, and the recovery's high-water mark refuses it. Privacy
// mode the owner turned on stays on through the rebuild: the camera must not stream again.
func TestAReplayWindowOutOfOrderDoesNotLetAnExecutedCommandThrough(t *testing.T) {
	const id = "cam-0001"
	now := time.Now()
	f := enrolled(t, id, now, closedPort(t))
	mark := uint64(now.Add(-time.Minute).UnixNano())
	executed := mark + uint64(time.Second)
	store := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.CommandHWM, st.SeenCommands = mark, []uint64{executed + uint64(time.Second), executed}
	st.Privacy = true
	if err := store.Save(st); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatalf("the agent does not start: %v", err)
	}
	if !strings.Contains(rec.Text(), "state file was corrupt") {
		t.Fatalf("the damaged window was taken as it is; log:\n%s", rec.Text())
	}
	if !a.Privacy() {
		t.Fatalf("privacy mode off after the state was rebuilt; log:\n%s", rec.Text())
	}
	if got, err := store.Load(); err != nil || !got.Privacy {
		t.Fatalf("the rebuilt state saved %+v, %v; want privacy on", got, err)
	}
	again, _ := certs.SignCommand(f.cmdKey, certs.Command{Type: "ping", Target: id, Seq: executed, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	a.handleCommand(context.Background(), "dev/"+id+"/down/cmd", again)
	if a.cmdsRejected.Load() != 1 || a.cmdsOK.Load() != 0 {
		t.Fatalf("a command already executed: ok=%d rejected=%d", a.cmdsOK.Load(), a.cmdsRejected.Load())
	}
}

// A journal rebuilt from the disk (the state file corrupt, lost, or naming a generation that
// is not there) with two working generations on it tries the newest and keeps the one before
// as the fallback, as a rotation killed after its certificate arrived does. Before, the newest
// alone became active and the one before was wiped as stale: when the newest had expired while
// the device was off, a device without a bootstrap identity held no working credential again.
func TestARebuiltJournalTriesTheNewestGenerationAndFallsBackToTheOneBefore(t *testing.T) {
	for _, tc := range []struct {
		name        string
		expired     bool        // generation 1's certificate expired while the device was off
		damage      state.State // what is on disk as state.json; Active 0 is the working one
		wantRotated bool        // generation 1 was given up for a new one
	}{
		{"a journal with one flipped bit, the newest expired", true,
			state.State{Cred: state.Cred{Active: 0, Phase: state.PhaseIssued, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdeg"}}, true},
		{"a journal naming a generation not on disk, the newest expired", true,
			state.State{Cred: state.Cred{Active: 9, Epoch: 1}}, true},
		{"a journal with one flipped bit, the newest working", false,
			state.State{Cred: state.Cred{Active: 0, Phase: state.PhaseIssued, Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdeg"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id = "cam-0001"
			now := time.Now()
			pki := pkiSince(t, now.Add(-30*24*time.Hour))
			b := mqtttest.StartEmbedded(t, pki)
			dir := enrolledWith(t, pki, b.URL(), id, now.Add(-time.Hour), 0, false) // no bootstrap identity
			issued, validity := now.Add(-time.Minute), time.Duration(0)
			if tc.expired {
				issued, validity = now.Add(-9*24*time.Hour), time.Hour
			}
			newest := writeGeneration(t, pki, dir, id, 1, issued, validity)
			if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(tc.damage); err != nil {
				t.Fatal(err)
			}
			fullSigner(t, b, pki, id)

			a, rec := recovering(t, dir)
			waitRecovered(t, a, rec, 1)
			if !strings.Contains(rec.Text(), "recovered") {
				t.Fatalf("the journal was taken as it is; log:\n%s", rec.Text())
			}
			// Generation 1 active: the newest, or (given up) the next one made, numbered again.
			got, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load()
			if err != nil || got.Cred.Active != 1 || got.Cred.Phase != state.PhaseNone {
				t.Fatalf("journal %+v, %v; want generation 1 active; log:\n%s", got.Cred, err, rec.Text())
			}
			if serial := serialHex(a.Certificate()); (serial == serialHex(newest)) == tc.wantRotated {
				t.Fatalf("connected with %s; the newest generation's is %s, given up: %v", serial, serialHex(newest), tc.wantRotated)
			}
			if _, err := os.Stat(filepath.Join(dir, KeyFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the enrollment key is still there after the commit: %v", err)
			}
		})
	}
}

// Installing the bundle again over a state file that parses but fails the check (what the
// agent tells the owner to do after an interrupted enrollment) journals the enrollment from
// scratch: privacy mode the file had on stays on there too.
func TestInstallingTheBundleAgainOverADamagedStateKeepsPrivacyModeOn(t *testing.T) {
	const id = "cam-0001"
	now := time.Now()
	f := enrolled(t, id, now, closedPort(t))
	store := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	// A journal a storage fault damaged where it still parses (as in
	// TestAStateFileThatParsesButIsDamagedIsRecovered), with privacy mode on.
	if err := store.Save(state.State{Privacy: true, Cred: state.Cred{Phase: "pendinf", Next: 1, TargetEpoch: 1, ReqID: "0123456789abcdef"}}); err != nil {
		t.Fatal(err)
	}
	bundle := mustRead(t, filepath.Join(f.dir, BundleFile))
	if _, err := InstallBundle(f.dir, bundle, now); err != nil {
		t.Fatalf("install the bundle again: %v", err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Privacy() {
		t.Fatalf("privacy mode off after the bundle was installed again over a damaged state that had it on; log:\n%s", rec.Text())
	}
}

// One flipped bit in a key name ("time_floor" becomes "time_fmoor") makes the strict parse
// fail while "privacy":true is intact in the file: most single-bit faults in the file are of
// this kind. Privacy mode stays on through the rebuild.
func TestPrivacyModeSurvivesAStateFileThatNoLongerParses(t *testing.T) {
	const id = "cam-0001"
	now := time.Now()
	f := enrolled(t, id, now, closedPort(t))
	p := filepath.Join(f.dir, StateFile)
	store := state.NewFileStore(p, nil)
	if err := store.Save(state.State{Privacy: true, CommandHWM: uint64(now.UnixNano()), TimeFloor: now.Unix()}); err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, p)
	i := bytes.Index(raw, []byte(`"time_floor"`))
	if i < 0 || !bytes.Contains(raw, []byte(`"privacy":true`)) {
		t.Fatalf("unexpected state file %s", raw)
	}
	raw[i+len(`"time_f`)] ^= 0x01 // 'l' -> 'm'
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.Text(), "state file was corrupt") {
		t.Fatalf("not recovered; log:\n%s", rec.Text())
	}
	if !a.Privacy() {
		t.Fatalf("privacy mode off, though the damaged file %s still says \"privacy\":true", raw)
	}
}
