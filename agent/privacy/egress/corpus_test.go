package egress

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/camagent/camagent/internal/fuzzseed"
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
	for how := range 3 * 14 { // three values times the fourteen encoders of FuzzEmbedded
		embedded = append(embedded, fmt.Sprintf("[]byte(%q)\n[]byte(%q)\nbyte(%q)\n", `{"a":"`[:how%6], `"}xyz`[:how%5], byte(how)))
	}
	seeds := map[string][]string{"FuzzCheck": check, "FuzzEmbedded": embedded}
	fuzzseed.Sync(t, *update, seeds)
}
