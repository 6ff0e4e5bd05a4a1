package seal

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// TestSeedCorpus keeps testdata/fuzz seeded with messages sealed under the fixed fuzz secret;
// run with -update to regenerate. Without -update it checks the corpus exists.
func TestSeedCorpus(t *testing.T) {
	s := fuzzSecret()
	seeds := map[string][][]byte{
		"FuzzOpen": {
			s.Seal(PurposeSettings, []byte(`{"v":1,"ssid":"x","passphrase":"12345678"}`)),
			s.Seal(PurposeSettings, nil),
			s.Seal("other", []byte("x")),
		},
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
