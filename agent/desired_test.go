package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/logtest"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// inode returns the state file's inode: every save writes a new file and renames it.
func inode(t *testing.T, dir string) uint64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// The broker delivers the retained breach notice again on every connect. A copy the agent has
// applied changes nothing, so it costs neither a signature check nor a state write; a newer
// notice, or the same one after the keys changed, is checked and applied as before.
func TestARedeliveredDesiredStateIsNotAppliedAgain(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now, closedPort(t))
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	notice := func(version, epoch uint64) []byte {
		b, err := certs.SignDesired(f.cmdKey, certs.Desired{Target: certs.TargetFleet, Version: version, Epoch: epoch, Incident: "INC-1"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ctx := context.Background()
	first := notice(10, 1)
	a.handleDesired(ctx, fleetDesired(a), first)
	if a.st.DesiredEpoch != 1 || a.st.FleetDesired != 10 {
		t.Fatalf("after the notice: desired epoch %d, version %d", a.st.DesiredEpoch, a.st.FleetDesired)
	}
	ino := inode(t, f.dir)

	a.handleDesired(ctx, fleetDesired(a), first)
	if got := inode(t, f.dir); got != ino {
		t.Fatal("a redelivered notice rewrote the state file")
	}
	// An older notice is checked and ignored: nothing to write either.
	a.handleDesired(ctx, fleetDesired(a), notice(9, 5))
	if got := inode(t, f.dir); got != ino || a.st.DesiredEpoch != 1 {
		t.Fatalf("an older notice changed the state (epoch %d)", a.st.DesiredEpoch)
	}
	// A forged copy of a newer notice is refused, not mistaken for the applied one.
	forged := notice(11, 2)
	forged[len(forged)/2] ^= 1
	a.handleDesired(ctx, fleetDesired(a), forged)
	if a.st.DesiredEpoch != 1 {
		t.Fatalf("a forged notice raised the epoch to %d", a.st.DesiredEpoch)
	}
	a.handleDesired(ctx, fleetDesired(a), notice(11, 2))
	if got := inode(t, f.dir); got == ino || a.st.DesiredEpoch != 2 {
		t.Fatalf("a newer notice was not applied (epoch %d)", a.st.DesiredEpoch)
	}
	// After the verifier changes (a new key set), the same bytes are checked again: here
	// under a key set that trusts no key, so the copy is refused.
	third := notice(12, 3)
	a.handleDesired(ctx, fleetDesired(a), third)
	if a.st.DesiredEpoch != 3 {
		t.Fatalf("epoch %d after the third notice", a.st.DesiredEpoch)
	}
	none := certs.KeySet{Version: 2}
	a.mu.Lock()
	a.verifier = none.CommandVerifier()
	a.mu.Unlock()
	before := refusals(rec)
	a.handleDesired(ctx, fleetDesired(a), third)
	if refusals(rec) != before+1 {
		t.Fatal("the applied notice was not checked again under the new keys")
	}
}

// refusals counts the desired-state refusals logged so far.
func refusals(rec *logtest.Recorder) int {
	n := 0
	for _, l := range rec.Lines() {
		if strings.Contains(l, "desired state refused") {
			n++
		}
	}
	return n
}

// A breach notice voids the grants issued before it as soon as the device has it, and closes
// live viewers then: not once its rotation commits, which a signer that is down (as here: no
// broker at all) or a rollout's rate limit can delay for hours. Grants issued since, at the
// epoch the device is told to reach, work at once.
func TestABreachNoticeVoidsEarlierGrantsBeforeTheRotation(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now.Add(-time.Hour), closedPort(t))
	a, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	var raised, committed []uint64
	a.OnEpoch(func(e uint64) { raised = append(raised, e) })
	a.OnCommit(func(e uint64) { committed = append(committed, e) })
	grant := func(epoch uint64) []byte {
		b, err := certs.SignGrant(f.cmdKey, certs.Grant{Device: "cam-0001", Epoch: epoch, Scope: certs.ScopeView, Subject: "v",
			IssuedAt: now.Add(-time.Minute).Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	leaked := grant(0)
	if _, err := a.CheckGrant(leaked, certs.ScopeView); err != nil {
		t.Fatalf("a grant of the device's epoch before any breach: %v", err)
	}
	notice, err := certs.SignDesired(f.cmdKey, certs.Desired{Target: certs.TargetFleet, Version: 10, Epoch: 1, Incident: "INC-1"})
	if err != nil {
		t.Fatal(err)
	}
	a.handleDesired(context.Background(), fleetDesired(a), notice)
	if _, err := a.CheckGrant(leaked, certs.ScopeView); !errors.Is(err, certs.ErrOldEpoch) {
		t.Fatalf("a grant from before the breach notice, with the rotation not done: %v, want ErrOldEpoch", err)
	}
	if _, err := a.CheckGrant(grant(1), certs.ScopeView); err != nil {
		t.Fatalf("a grant issued after the notice: %v", err)
	}
	if a.Epoch() != 0 || a.GrantEpoch() != 1 {
		t.Fatalf("credential epoch %d, grant epoch %d; want 0 (no rotation yet) and 1", a.Epoch(), a.GrantEpoch())
	}
	if !slices.Equal(raised, []uint64{1}) {
		t.Fatalf("the epoch hooks ran for %v, want once for 1 (live viewers closed at the notice)", raised)
	}
	if len(committed) != 0 {
		t.Fatalf("the commit hooks ran for %v at the notice, with no rotation", committed)
	}
	// The same notice again, as the broker redelivers it on every connect: nothing more.
	a.handleDesired(context.Background(), fleetDesired(a), notice)
	if !slices.Equal(raised, []uint64{1}) {
		t.Fatalf("the epoch hooks ran again for a redelivered notice: %v", raised)
	}
	// A restart keeps it: the notice is persisted.
	b, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CheckGrant(leaked, certs.ScopeView); !errors.Is(err, certs.ErrOldEpoch) {
		t.Fatalf("after a restart, a grant from before the notice: %v, want ErrOldEpoch", err)
	}
}

// fleetDesired is the fleet-wide desired-state topic on a's shard, where a reads it.
func fleetDesired(a *Agent) string { return topic.FleetDesired(topic.FleetShard(a.DeviceID())) }
