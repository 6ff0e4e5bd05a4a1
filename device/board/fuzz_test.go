package board_test

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/camagent/camagent/device/board"
)

// FuzzReadCPUInfo feeds arbitrary /proc/cpuinfo contents to Read: it must not panic, and a
// serial it returns must be 8 to 32 lower-case hex digits.
func FuzzReadCPUInfo(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/proc/cpuinfo")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("Serial: \nSerial:::\n: \x00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := board.Read(fstest.MapFS{"proc/cpuinfo": {Data: b}})
		if err != nil {
			return
		}
		if id.Source != board.SourceCPUInfo {
			t.Fatalf("serial from %s with only a cpuinfo", id.Source)
		}
		if n := len(id.Serial); n < 8 || n > 32 || strings.ToLower(id.Serial) != id.Serial {
			t.Fatalf("bad serial %q", id.Serial)
		}
		if _, err := hex.DecodeString(strings.Repeat("0", len(id.Serial)%2) + id.Serial); err != nil {
			t.Fatalf("serial %q is not hex", id.Serial)
		}
	})
}
