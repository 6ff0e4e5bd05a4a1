package egress

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// TestSeedCorpus keeps testdata/fuzz seeded with ordinary messages and with canaries in each
// encoding; run with -update to regenerate. Without -update it checks the corpus exists.
func TestSeedCorpus(t *testing.T) {
	var check []string
	benign := benignPayloads()
	for _, k := range slices.Sorted(maps.Keys(benign)) {
		check = append(check, fmt.Sprintf("[]byte(%q)\n", benign[k]))
	}
	for _, v := range []string{canarySSID, canaryPass, canaryNick} {
		for _, e := range encodings(v) {
			check = append(check, fmt.Sprintf("[]byte(%q)\n", `{"v":1,"note":"`+e.text+`"}`))
		}
	}
	var embedded []string
	for how := range 3 * 12 {
		embedded = append(embedded, fmt.Sprintf("[]byte(%q)\n[]byte(%q)\nbyte(%q)\n", `{"a":"`[:how%6], `"}xyz`[:how%5], byte(how)))
	}
	seeds := map[string][]string{"FuzzCheck": check, "FuzzEmbedded": embedded}
	for name, list := range seeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if !*update {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) == 0 {
				t.Errorf("no seed corpus in %s; run go test -run TestSeedCorpus -update", dir)
			}
			continue
		}
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o755)
		for i, args := range list {
			body := "go test fuzz v1\n" + args
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
