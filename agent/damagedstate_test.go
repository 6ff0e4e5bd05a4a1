package agent

import (
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
			writeGeneration(t, pki, dir, id, 1, now, 0)
			if err := wipeGeneration(dir, 0); err != nil {
				t.Fatal(err)
			}
			if tc.cred.Next == 2 {
				if _, _, err := makeGeneration(dir, 2); err != nil {
					t.Fatal(err)
				}
			}
			if err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Save(state.State{Cred: tc.cred}); err != nil {
				t.Fatal(err)
			}
			fullSigner(t, b, pki, id)

			log, rec := logtest.New()
			a, err := New(Config{StateDir: dir, Logger: log, SwitchTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second,
				RetryMin: 100 * time.Millisecond, RetryMax: 200 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
			if err != nil {
				t.Fatalf("the agent does not start: %v", err)
			}
			if !strings.Contains(rec.Text(), "state file was corrupt") {
				t.Fatalf("the damaged journal was taken as it is; log:\n%s", rec.Text())
			}
			if m, _ := filepath.Glob(filepath.Join(dir, StateFile+".corrupt-*")); len(m) != 1 {
				t.Fatalf("quarantined copies: %v", m)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			// The recovered journal names generation 1, whose certificate the broker takes.
			deadline := time.Now().Add(30 * time.Second)
			for !a.Status().Connected {
				if time.Now().After(deadline) {
					t.Fatalf("never connected; log:\n%s", rec.Text())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if c := a.Certificate(); certs.CertIdentity(c) != id {
				t.Fatalf("connected as %q", certs.CertIdentity(c))
			}
			got, err := state.NewFileStore(filepath.Join(dir, StateFile), nil).Load()
			if err != nil || got.Cred.Active != 1 || got.Cred.Phase != state.PhaseNone {
				t.Fatalf("journal: %+v, %v", got.Cred, err)
			}
			if _, err := os.Stat(filepath.Join(dir, StateFile)); errors.Is(err, os.ErrNotExist) {
				t.Fatal("no state file")
			}
		})
	}
}

// A replay window a storage fault put out of order must not let a command already executed
// through again: the file is corrupt, and the recovery's high-water mark refuses it.
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
	again, _ := certs.SignCommand(f.cmdKey, certs.Command{Type: "ping", Target: id, Seq: executed, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	a.handleCommand(context.Background(), "dev/"+id+"/down/cmd", again)
	if a.cmdsRejected.Load() != 1 || a.cmdsOK.Load() != 0 {
		t.Fatalf("a command already executed: ok=%d rejected=%d", a.cmdsOK.Load(), a.cmdsRejected.Load())
	}
}
