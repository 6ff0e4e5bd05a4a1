// Package fuzzseed keeps a package's committed fuzz seed corpora (testdata/fuzz/<Target>) in
// step with the seeds its TestSeedCorpus makes: without -update the test checks each corpus
// exists; with -update it rewrites them.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Bytes encodes one []byte argument in the corpus file format ("go test fuzz v1").
func Bytes(b []byte) string { return fmt.Sprintf("[]byte(%q)\n", b) }

// String encodes one []byte argument given as a string.
func String(s string) string { return Bytes([]byte(s)) }

// Sync checks (update false) or rewrites (update true) testdata/fuzz/<target>/seed-N for each
// target, each seed being its encoded arguments, one per line (see Bytes).
func Sync(t *testing.T, update bool, corpora map[string][]string) {
	t.Helper()
	for target, seeds := range corpora {
		dir := filepath.Join("testdata", "fuzz", target)
		if !update {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) == 0 {
				t.Errorf("no seed corpus in %s; run go test -run TestSeedCorpus -update", dir)
			}
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, args := range seeds {
			body := "go test fuzz v1\n" + args
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// BytesSeeds encodes each of bs as a single-argument seed.
func BytesSeeds(bs ...[]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = Bytes(b)
	}
	return out
}
