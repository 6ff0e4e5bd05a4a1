// Package shape checks that a string has a simple shape: a length range and a pattern without
// counted repetition.
//
// A counted repetition such as [a-z0-9]{1,64} compiles into 64 copies of its class, so a
// dozen such validators cost hundreds of kilobytes of memory at program start, on a camera
// that has a few megabytes to spend. A Pattern keeps the regular expression to its uncounted
// form and checks the length itself.
//
// The shapes camagent uses, ^[first][rest]*$ and ^[rest]*$ with ASCII classes, are checked
// byte by byte against two tables; a broker checks a device id on every message it routes.
// Any other expression goes to package regexp.
package shape

import (
	"regexp"
	"regexp/syntax"
	"strconv"
	"unicode/utf8"
)

// Pattern matches strings of min to max bytes that match an uncounted regular expression.
type Pattern struct {
	re       *regexp.Regexp
	min, max int
	// classes, when set, is the expression as two byte sets: the first byte's and the
	// others'. Nil means re does the matching.
	classes *classes
}

// classes is ^[first][rest]*$ (hasFirst) or ^[rest]*$, with ASCII classes.
type classes struct {
	hasFirst    bool
	first, rest [utf8.RuneSelf]bool
}

// New compiles expr, which should be anchored and use * or + where a count would be, and
// bounds the length in bytes to min..max. It panics if expr does not compile, like
// regexp.MustCompile, so it is meant for package-level variables.
func New(expr string, min, max int) Pattern {
	return Pattern{re: regexp.MustCompile(expr), min: min, max: max, classes: classesOf(expr)}
}

// MatchString reports whether s has the pattern's length and shape.
func (p Pattern) MatchString(s string) bool {
	if len(s) < p.min || len(s) > p.max {
		return false
	}
	if p.classes == nil {
		return p.re.MatchString(s)
	}
	return p.classes.match(s)
}

// match checks s byte by byte. A byte of a multi-byte sequence (or of invalid UTF-8) is never
// in an ASCII class, as the rune it belongs to is not, so the answer is regexp's.
func (c *classes) match(s string) bool {
	i := 0
	if c.hasFirst {
		if len(s) == 0 || s[0] >= utf8.RuneSelf || !c.first[s[0]] {
			return false
		}
		i = 1
	}
	for ; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf || !c.rest[s[i]] {
			return false
		}
	}
	return true
}

// classesOf returns expr as byte sets when it is ^[first][rest]*$ or ^[rest]*$ with classes
// of ASCII characters only, and nil otherwise.
func classesOf(expr string) *classes {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil || re.Op != syntax.OpConcat {
		return nil
	}
	subs := re.Sub
	if len(subs) < 3 || subs[0].Op != syntax.OpBeginText || subs[len(subs)-1].Op != syntax.OpEndText {
		return nil
	}
	subs = subs[1 : len(subs)-1]
	c := &classes{}
	switch len(subs) {
	case 2:
		if !asciiSet(subs[0], &c.first) {
			return nil
		}
		c.hasFirst = true
		subs = subs[1:]
	case 1:
	default:
		return nil
	}
	star := subs[0]
	if star.Op != syntax.OpStar || len(star.Sub) != 1 || !asciiSet(star.Sub[0], &c.rest) {
		return nil
	}
	return c
}

// asciiSet fills set from re when re is one character or a class of ASCII characters.
func asciiSet(re *syntax.Regexp, set *[utf8.RuneSelf]bool) bool {
	var ranges []rune
	switch re.Op {
	case syntax.OpCharClass:
		ranges = re.Rune
	case syntax.OpLiteral:
		if len(re.Rune) != 1 || re.Flags&syntax.FoldCase != 0 {
			return false
		}
		ranges = []rune{re.Rune[0], re.Rune[0]}
	default:
		return false
	}
	if len(ranges) == 0 || len(ranges)%2 != 0 {
		return false
	}
	for i := 0; i < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if lo < 0 || hi >= utf8.RuneSelf || lo > hi {
			return false
		}
		for r := lo; r <= hi; r++ {
			set[r] = true
		}
	}
	return true
}

// String describes the pattern for error messages: the expression and the length range.
func (p Pattern) String() string {
	return p.re.String() + " (" + strconv.Itoa(p.min) + ".." + strconv.Itoa(p.max) + " bytes)"
}
