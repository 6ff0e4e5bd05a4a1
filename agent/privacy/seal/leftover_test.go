package seal

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/internal/atomicfile"
)

// A new secret written and not yet linked into place when a SIGKILL or a power cut came stays
// behind under its private name, the device's key in a file nothing uses. That name is an
// atomicfile temporary's, so the agent's next start removes it with the others.
func TestALeftoverNewSecretIsRemovedWithTheTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tag := range []uint64{0, 1234, math.MaxUint64} {
		name := newSecretName(tag)
		if !atomicfile.IsTemp(name) {
			t.Fatalf("%q is not an atomicfile temporary name", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, 32), 0o600); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(filepath.Join(dir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadOrCreateSecret(dir); err != nil {
		t.Fatal(err)
	}
	if n, err := atomicfile.RemoveTemps(dir, time.Minute); err != nil || n != 3 {
		t.Fatalf("RemoveTemps = %d, %v; want the 3 leftover secrets", n, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != SecretFile {
		t.Fatalf("left in the directory: %v", ents)
	}
}
