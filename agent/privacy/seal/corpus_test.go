package seal

import (
	"flag"
	"testing"

	"github.com/camagent/camagent/internal/fuzzseed"
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
	corpora := map[string][]string{}
	for name, list := range seeds {
		corpora[name] = fuzzseed.BytesSeeds(list...)
	}
	fuzzseed.Sync(t, *update, corpora)
}
