package shape

import (
	"regexp"
	"testing"
)

// exprs are the shapes camagent's packages use, and a few more the byte tables must agree on.
var exprs = []string{
	`^[A-Za-z0-9_-]*$`,
	`^[A-Za-z0-9._+-]*$`,
	`^[0-9a-f]*$`,
	`^[a-z][a-z0-9_.-]*$`,
	`^[a-z0-9_]*$`,
	`^[A-Za-z0-9._-]*$`,
	`^[a-z0-9][a-z0-9-]*$`,
	`^[a-z0-9][a-z0-9._-]*$`,
	`^[0-9a-z]*$`,
	`^[A-Za-z0-9._:-]*$`,
	`^a[b]*$`,
	`^[^a-z]*$`,    // a negated class holds non-ASCII runes: regexp's
	`^[a-z]+$`,     // not a star: regexp's
	`^(?i)[a-z]*$`, // folds to ſ and the Kelvin sign: regexp's
	`^[a-z]*`,
}

// Every shape in use is checked by the byte tables; the others go to regexp.
func TestTheShapesInUseAreMatchedByteByByte(t *testing.T) {
	for _, expr := range exprs {
		fast := classesOf(expr) != nil
		want := true
		switch expr {
		case `^[^a-z]*$`, `^[a-z]+$`, `^[a-z]*`, `^(?i)[a-z]*$`:
			want = false
		}
		if fast != want {
			t.Errorf("%s: byte tables %v, want %v", expr, fast, want)
		}
	}
}

// FuzzPatternAgreesWithRegexp: whatever the bytes, a Pattern answers as its length range and
// its regular expression do.
func FuzzPatternAgreesWithRegexp(f *testing.F) {
	for _, s := range []string{"", "a", "cam-0001", "-cam", "Cam", "a\xffb", "é", "a.b_c", "0123456789abcdef", "a\x00", "a\n"} {
		f.Add(s)
	}
	res := make([]*regexp.Regexp, len(exprs))
	for i, e := range exprs {
		res[i] = regexp.MustCompile(e)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, e := range exprs {
			p := New(e, 1, 40)
			want := len(s) >= 1 && len(s) <= 40 && res[i].MatchString(s)
			if got := p.MatchString(s); got != want {
				t.Fatalf("%s on %q: %v, regexp says %v", e, s, got, want)
			}
		}
	})
}

func BenchmarkDeviceID(b *testing.B) {
	p := New(`^[a-z0-9][a-z0-9-]*$`, 3, 63)
	slow := p
	slow.classes = nil
	for _, c := range []struct {
		name string
		p    Pattern
	}{{"tables", p}, {"regexp", slow}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if !c.p.MatchString("cam-000123") {
					b.Fatal("no match")
				}
			}
		})
	}
}
