package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// enrollHolding enrolls cam-0001 on broker with a bundle whose key set retires the broker
// certificates issued before brokerNotBefore, and returns the state directory.
func enrollHolding(t *testing.T, pki *mqtttest.PKI, broker string, brokerNotBefore time.Time) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	csrPEM, err := agent.Enroll(dir, "cam-0001")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c, err := pki.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: "cam-0001", CSR: csr, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := certs.NewSigningKey()
	cmdKey, _ := certs.NewSigningKey()
	ks, err := certs.SignKeySet(root, certs.KeySet{Version: 1, CommandKeys: []certs.PublicKey{cmdKey.Public()},
		GrantKeys: []certs.PublicKey{cmdKey.Public()}, BrokerNotBefore: brokerNotBefore.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(certs.Bundle{V: 1, DeviceID: "cam-0001", CertPEM: string(certs.EncodeCertPEM(c)), CAPEM: string(pki.CAPEM),
		RootKey: root.Public().Key, KeySet: ks, Broker: broker})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.InstallBundle(dir, b, now); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The self-test's broker check refuses, as the agent does, a broker presenting a certificate
// the device's key set retired, and says so; a broker whose certificate was issued at the
// floor passes. Before, the check passed where the agent could never connect.
func TestSelftestFailsABrokerWhoseCertificateTheFleetRetired(t *testing.T) {
	pki := mqtttest.NewPKI(t)
	b := mqtttest.StartEmbedded(t, pki)
	issued := pki.ServerCert(t).Leaf.NotBefore

	dir := enrollHolding(t, pki, b.URL(), issued.Add(time.Second))
	rep, _, err := selftestRun(t, synced, nil, "--state", dir, "--timeout", "5s")
	res, det := results(rep)
	if err == nil || res["broker"] != resultFail || !strings.Contains(det["broker"], "retired: the broker presents a certificate the fleet retired") {
		t.Fatalf("err = %v, broker %s (%s)", err, res["broker"], det["broker"])
	}

	dir = enrollHolding(t, pki, b.URL(), issued)
	rep, _, _ = selftestRun(t, synced, nil, "--state", dir, "--timeout", "5s")
	if res, det := results(rep); res["broker"] != resultPass {
		t.Fatalf("a broker issued at the floor: %s (%s)", res["broker"], det["broker"])
	}
}
