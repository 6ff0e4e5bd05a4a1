package signer_test

import (
	"os"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// A rollout state that does not parse (cut short, edited by hand, written by another version)
// makes the signers fail closed and tell the operator to run fleetctl rollout resume; that
// command must then clear it, or the fleet is stuck with no way out but deleting the file.
func TestResumeClearsARolloutStateThatDoesNotParse(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	if err := os.WriteFile(f.RolloutPath(), []byte(`{"aborted": tr`), 0o600); err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartEmbedded(t, pki)
	s := startSigner(t, f, b.URL(), "a", nil)
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	req, key := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, req)
	if r := d.AwaitFor(t, req.ReqID); r.Error != wire.ErrCodeRefused {
		t.Fatalf("answer %+v, want refused while the rollout state is unreadable", r)
	}
	s.log.WaitFor(t, fleettest.Timeout, "run fleetctl rollout resume")

	before, after, err := signer.Resume(s.reg, f.RolloutPath(), time.Now())
	if err != nil {
		t.Fatalf("fleetctl rollout resume, as the signer says to run: %v", err)
	}
	if !before.Aborted || before.Reason == "" || after.Aborted {
		t.Fatalf("Resume: before %+v, after %+v", before, after)
	}
	if st, err := signer.LoadRollout(f.RolloutPath()); err != nil || st.Aborted {
		t.Fatalf("rollout state after resume: %+v, %v", st, err)
	}
	d.Send(t, req)
	fleettest.Certificate(t, f, d.AwaitFor(t, req.ReqID), "cam-0001", key)
}
