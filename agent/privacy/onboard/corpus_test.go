package onboard

import (
	"flag"
	"strings"
	"testing"

	"github.com/camagent/camagent/internal/fuzzseed"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// TestSeedCorpus keeps testdata/fuzz seeded with valid payloads of every shape and a few
// near-misses; run with -update to regenerate. Without -update it checks the corpus exists.
func TestSeedCorpus(t *testing.T) {
	seeds := map[string][]string{
		"FuzzParse": {
			"CAMSETUP:V:1;S:HomeNet;T:WPA;P:correct horse battery;C:" + claim + ";N:Front door;Z:Europe/Paris;H:true;;",
			"CAMSETUP:V:1;Z:UTC;C:" + claim + ";N:Cam;P:password;T:WPA;S:HomeNet;;\r\n",
			`CAMSETUP:V:1;S:a\;b\,c\:d\"e\\f;T:nopass;P:;C:` + claim + ";H:false;;\n",
			"CAMSETUP:V:1;S:" + strings.Repeat("é", 16) + ";T:WPA;P:" + strings.Repeat("0a", 32) + ";C:" + strings.Repeat("0f", 64) + ";N:👨‍👩‍👧 Küche;Z:America/Argentina/Buenos_Aires;;",
			"CAMSETUP:V:1;S:x;T:WPA;P:short;C:" + claim + ";;",
			"CAMSETUP:V:1;S:x;T:nopass;C:" + claim + ";S:y;;",
			"CAMSETUP:V:2;;",
			"WIFI:S:HomeNet;T:WPA;P:password;;",
		},
	}
	corpora := map[string][]string{}
	for name, list := range seeds {
		for _, s := range list {
			corpora[name] = append(corpora[name], fuzzseed.String(s))
		}
	}
	fuzzseed.Sync(t, *update, corpora)
}
