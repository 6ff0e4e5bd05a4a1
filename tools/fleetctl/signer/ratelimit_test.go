package signer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// recordRotation appends the record of a rotation certificate issued to device at issued,
// valid for validity, as another signer of the fleet directory would.
func recordRotation(t *testing.T, f *fleet.Fleet, reg *registry.Registry, device string, n int, issued time.Time, validity time.Duration) {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: device, PublicKey: key.Public(), Now: issued, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := registry.IssuedRecord(c, device, registry.ViaCSR, 1, "", fmt.Sprintf("%016x", n+1), issued)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Update(func(tx *registry.Tx) error { return tx.Append(rec) }); err != nil {
		t.Fatal(err)
	}
}

// The rate limit is shared through the registry: every rotation certificate any signer issued
// takes a token. It must still count them after another signer compacted the registry, which
// every signer does daily.
func TestTheRateLimitCountsOtherSignersIssuesAfterACompaction(t *testing.T) {
	f, pki := fleettest.NewFleet(t)
	e := fleettest.Enroll(t, f, "cam-0001")
	now := time.Now()
	other := fleetRegistry(t, f) // another signer's handle on the log
	// Rotations of long ago, whose certificates expired 29 days ago: the next compaction but
	// one drops them.
	for i := range 5 {
		recordRotation(t, f, other, "cam-0009", i, now.Add(-120*24*time.Hour+time.Duration(i)*time.Hour), 91*24*time.Hour)
	}
	b := mqtttest.StartEmbedded(t, pki)
	clk := newClock(now)
	s := startSigner(t, f, b.URL(), "a", func(c *signer.Config) {
		c.MaxRate, c.Burst, c.Clock = 1, 2, clk
	})
	d := fleettest.Connect(t, f, b.URL(), e.Cert)
	first, key := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, first)
	fleettest.Certificate(t, f, d.AwaitFor(t, first.ReqID), "cam-0001", key)

	// Two days on, the other signer compacts the log, then issues the bucket's last token.
	res, err := other.Compact(now.Add(2 * 24 * time.Hour))
	if err != nil || res.Dropped == 0 {
		t.Fatalf("Compact: %+v, %v", res, err)
	}
	recordRotation(t, f, other, "cam-0002", 100, now, 0)

	second, _ := fleettest.NewRequest(t, "cam-0001", 1)
	d.Send(t, second)
	if r := d.AwaitFor(t, second.ReqID); r.Error != wire.ErrCodeRateLimited {
		t.Fatalf("answer %+v, want rate_limited: 3 certificates within a minute with a burst of 2", r)
	}
	if st := s.Stats(); st.Issued != 1 || st.RateLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
}
