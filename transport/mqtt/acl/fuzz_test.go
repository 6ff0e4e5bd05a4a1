package acl

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAllowed checks that Allowed never panics, never grants a publish to a filter with a
// wildcard, and that a granted subscription only matches topics that may be delivered: the
// topic made by filling the filter's wildcards with level and tail must be allowed for read.
func FuzzAllowed(f *testing.F) {
	seeds := []struct {
		identity, filter string
		write            bool
		level, tail      string
	}{
		{"cam-a", "dev/cam-a/down/#", false, "cmd", "x/y"},
		{"cam-a", "dev/+/down/cmd", false, "cam-b", ""},
		{"cam-a", "#", false, "dev", "cam-b/down/cmd"},
		{"cam-a", "dev/cam-a/up/reply", true, "", ""},
		{"operator:alice", "dev/+/up/#", false, "cam-a", "state"},
		{"operator:alice", "$share/g/fleet/#", false, "", "down/cmd"},
		{"signer:s1", "boot/+/up/csr", false, "cam-a", ""},
		{"viewer:relay", "dev/+/down/signal", true, "", ""},
		{"bootstrap:cam-a", "boot/cam-a/down/+", false, "cert", ""},
		{"cam-a", "+/cam-a/down/#", false, "$SYS", ""},
	}
	for _, s := range seeds {
		f.Add(s.identity, s.filter, s.write, s.level, s.tail)
	}
	f.Fuzz(func(t *testing.T, identity, filter string, write bool, level, tail string) {
		ok := Allowed(identity, filter, write)
		if !ok {
			return
		}
		if write {
			if strings.ContainsAny(filter, "+#") {
				t.Fatalf("Allowed(%q, %q, write) granted a publish to a filter", identity, filter)
			}
			return
		}
		inner := filter
		if rest, shared := strings.CutPrefix(filter, sharePrefix); shared {
			_, inner, _ = strings.Cut(rest, "/")
		}
		topic, ok := fill(inner, level, tail)
		if !ok {
			return
		}
		if !Allowed(identity, topic, false) {
			t.Fatalf("Allowed(%q, %q, read) but not for the topic %q it matches", identity, filter, topic)
		}
	})
}

// fill makes a topic name the filter matches by putting level in place of every "+" and tail
// (which may be empty: "#" matches its parent level) in place of a trailing "#". It reports
// false when level or tail cannot be used that way.
func fill(filter, level, tail string) (string, bool) {
	if strings.ContainsAny(level, "/+#\x00") || strings.ContainsAny(tail, "+#\x00") ||
		!utf8.ValidString(level) || !utf8.ValidString(tail) {
		return "", false
	}
	levels := strings.Split(filter, "/")
	out := make([]string, 0, len(levels)+1)
	for i, l := range levels {
		switch l {
		case "+":
			if i == 0 && strings.HasPrefix(level, "$") {
				return "", false // a first-level wildcard never matches a $ topic.
			}
			out = append(out, level)
		case "#":
			if i == 0 && (tail == "" || strings.HasPrefix(tail, "$")) {
				return "", false
			}
			if tail != "" {
				out = append(out, tail)
			}
		default:
			out = append(out, l)
		}
	}
	topic := strings.Join(out, "/")
	return topic, len(topic) <= MaxTopicLen
}
