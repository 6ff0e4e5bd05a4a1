package shape_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/camagent/camagent/internal/shape"
)

// A Pattern accepts exactly what the counted regular expression it replaces accepts.
func TestPatternMatchesItsCountedForm(t *testing.T) {
	for _, c := range []struct {
		counted string
		p       shape.Pattern
	}{
		{`^[a-z0-9][a-z0-9-]{2,62}$`, shape.New(`^[a-z0-9][a-z0-9-]*$`, 3, 63)},
		{`^[0-9a-f]{16,32}$`, shape.New(`^[0-9a-f]*$`, 16, 32)},
		{`^[a-z][a-z0-9_.-]{0,31}$`, shape.New(`^[a-z][a-z0-9_.-]*$`, 1, 32)},
	} {
		re := regexp.MustCompile(c.counted)
		for n := 0; n <= 70; n++ {
			for _, s := range []string{strings.Repeat("a", n), "-" + strings.Repeat("a", n), strings.Repeat("0", n) + "Z", strings.Repeat("f", n)} {
				if got, want := c.p.MatchString(s), re.MatchString(s); got != want {
					t.Errorf("%s on %q: %v, want %v", c.counted, s, got, want)
				}
			}
		}
	}
}
