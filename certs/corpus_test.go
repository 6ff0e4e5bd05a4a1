package certs

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
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
	seeds := map[string][][]byte{
		"FuzzOpenCommand": {cmd, fleet, []byte(`{"v":1,"kid":"k-0123456789abcdef","body":"e30","sig":"AA"}`)},
		"FuzzOpenKeySet":  {ks},
		"FuzzParseCSR":    {csr},
	}
	for name, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if !*update {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) == 0 {
				t.Errorf("no seed corpus in %s; run go test -run TestSeedCorpus -update", dir)
			}
			continue
		}
		os.MkdirAll(dir, 0o755)
		for i, b := range list {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
