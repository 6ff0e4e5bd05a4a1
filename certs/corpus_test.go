package certs

import (
	"encoding/json"
	"flag"
	"testing"

	"github.com/camagent/camagent/internal/fuzzseed"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// TestSeedCorpus keeps testdata/fuzz seeded with valid envelopes made by the fixed fuzz key;
// run with -update to regenerate. Without -update it checks the corpus exists.
func TestSeedCorpus(t *testing.T) {
	k := fuzzKey()
	cmd, _ := SignCommand(k, ping("cam-0001", 7, t0))
	fleet, _ := SignCommand(k, Command{Type: "rotate", Target: TargetFleet, Seq: 1 << 62, IssuedAt: t0.Unix(), ExpiresAt: t0.Unix() + 60, Args: []byte(`{"reason":"breach"}`)})
	ks, _ := SignKeySet(k, KeySet{Version: 3, CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}})
	key, _ := GenerateKey()
	csr, _ := NewCSR(key, "cam-0001")
	grant, _ := SignGrant(k, Grant{Device: "cam-0001", Epoch: 2, Scope: ScopeView, Subject: "viewer-1", IssuedAt: t0.Unix(), ExpiresAt: t0.Unix() + 3600})
	desired, _ := SignDesired(k, Desired{Target: TargetFleet, Version: 9, Epoch: 2, Incident: "INC-1", KeySet: ks, IssuedAt: t0.Unix()})
	ca, _ := NewCA("fuzz", t0, 0)
	dc, _ := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", PublicKey: key.Public(), Now: t0})
	bundle, _ := json.Marshal(Bundle{V: 1, DeviceID: "cam-0001", CertPEM: string(EncodeCertPEM(dc)), CAPEM: string(EncodeCertPEM(ca.Cert)), RootKey: k.Public().Key, KeySet: ks, Broker: "mqtts://127.0.0.1:8883"})
	vc, _ := ca.Issue(IssueRequest{Role: RoleViewer, Name: "web", PublicKey: key.Public(), Now: t0})
	viewer, _ := json.Marshal(ViewerBundle{V: 1, Identity: "viewer:web", CertPEM: string(EncodeCertPEM(vc)), CAPEM: string(EncodeCertPEM(ca.Cert)), Broker: "mqtts://127.0.0.1:8883"})
	seeds := map[string][][]byte{
		"FuzzParseBundle":       {bundle},
		"FuzzParseViewerBundle": {viewer},
		"FuzzOpenGrant":         {grant},
		"FuzzOpenDesired":       {desired},
		"FuzzOpenCommand":       {cmd, fleet, []byte(`{"v":1,"kid":"k-0123456789abcdef","body":"e30","sig":"AA"}`)},
		"FuzzOpenKeySet":        {ks},
		"FuzzParseCSR":          {csr},
	}
	corpora := map[string][]string{}
	for name, list := range seeds {
		corpora[name] = fuzzseed.BytesSeeds(list...)
	}
	fuzzseed.Sync(t, *update, corpora)
}
