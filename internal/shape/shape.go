// Package shape checks that a string has a simple shape: a length range and a pattern without
// counted repetition.
//
// A counted repetition such as [a-z0-9]{1,64} compiles into 64 copies of its class, so a
// dozen such validators cost hundreds of kilobytes of memory at program start, on a camera
// that has a few megabytes to spend. A Pattern keeps the regular expression to its uncounted
// form and checks the length itself.
package shape

import (
	"regexp"
	"strconv"
)

// Pattern matches strings of min to max bytes that match an uncounted regular expression.
type Pattern struct {
	re       *regexp.Regexp
	min, max int
}

// New compiles expr, which should be anchored and use * or + where a count would be, and
// bounds the length in bytes to min..max. It panics if expr does not compile, like
// regexp.MustCompile, so it is meant for package-level variables.
func New(expr string, min, max int) Pattern {
	return Pattern{re: regexp.MustCompile(expr), min: min, max: max}
}

// MatchString reports whether s has the pattern's length and shape.
func (p Pattern) MatchString(s string) bool {
	return len(s) >= p.min && len(s) <= p.max && p.re.MatchString(s)
}

// String describes the pattern for error messages: the expression and the length range.
func (p Pattern) String() string {
	return p.re.String() + " (" + strconv.Itoa(p.min) + ".." + strconv.Itoa(p.max) + " bytes)"
}
