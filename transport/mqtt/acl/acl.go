// Package acl is the fleet's MQTT access control list: which certificate identity may publish
// to which topic and subscribe to which topic filter (docs/protocol.md, "ACL"; S3 in
// SECURITY-BAR.md).
//
// It is the single source of truth for both brokers the fleet runs on: the embedded broker
// (transport/mqtt/broker) calls Allowed for every publish, subscription and delivery, and the
// Mosquitto renderer (transport/mqtt/mosquitto) turns the same Rules into an acl_file.
//
// The package is pure: no I/O, no logging, no state. It must never grant anything to an
// identity that certs.ParseIdentity refuses, never grant a publish to a topic filter holding a
// wildcard, and never grant a subscription that could match a single topic the identity may not
// read.
package acl

import (
	"strings"
	"unicode/utf8"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// Access is what a rule grants on the topics its pattern matches.
type Access uint8

// The accesses. A subscription needs Read, a publish needs Write.
const (
	Read Access = 1 << iota
	Write
	ReadWrite = Read | Write
)

// String returns the Mosquitto acl_file keyword for a: "read", "write" or "readwrite".
func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "readwrite"
	}
	return "none"
}

// NamePlaceholder stands, inside a Rule's Pattern, for the name part of the identity as
// certs.ParseIdentity returns it: the device id for RoleDevice (which is also the whole
// identity, so device rules can become Mosquitto "pattern" lines where %u is the username) and
// for RoleBootstrap, the operator's name for RoleOperator, and so on.
const NamePlaceholder = "%u"

// Rule grants Access on every topic matching Pattern to every identity of Role.
type Rule struct {
	Role certs.Role
	// Pattern is an MQTT topic filter ("+" and "#" wildcards), in which NamePlaceholder, when
	// present, fills a whole topic level.
	Pattern string
	Access  Access
}

// Expand returns the rule's pattern with NamePlaceholder replaced by name.
func (r Rule) Expand(name string) string {
	return strings.ReplaceAll(r.Pattern, NamePlaceholder, name)
}

// rules is the table of docs/protocol.md, "Identities". Nothing is allowed that is not listed.
var rules = append(deviceWrites(), []Rule{
	{certs.RoleDevice, "dev/%u/down/#", Read},
	{certs.RoleDevice, "fleet/down/#", Read},

	{certs.RoleOperator, "dev/#", ReadWrite},
	{certs.RoleOperator, "fleet/#", ReadWrite},

	{certs.RoleSigner, "dev/+/up/csr", Read},
	{certs.RoleSigner, "dev/+/down/cert", Write},
	{certs.RoleSigner, "boot/+/up/csr", Read},
	{certs.RoleSigner, "boot/+/down/cert", Write},
	{certs.RoleSigner, "fleet/signers/+", Write},

	{certs.RoleViewer, "dev/+/down/signal", Write},
	{certs.RoleViewer, "dev/+/up/signal", Read},
	{certs.RoleViewer, topic.FleetKeySet, Read},

	{certs.RoleBootstrap, "boot/%u/up/csr", Write},
	{certs.RoleBootstrap, "boot/%u/down/#", Read},
}...)

// deviceWrites are a device's publish rules: the leaves the protocol defines
// (topic.UpLeaves), not all of dev/<id>/up/#, so a stolen device certificate cannot leave
// retained messages on any number of topics of its own for both brokers to keep (each leaf
// holds at most one).
func deviceWrites() []Rule {
	var out []Rule
	for _, l := range topic.UpLeaves() {
		out = append(out, Rule{certs.RoleDevice, "dev/%u/up/" + l, Write})
	}
	return out
}

// Rules returns a copy of the whole rule table.
func Rules() []Rule { return append([]Rule(nil), rules...) }

// RulesFor returns a copy of the rules of one role; none for a role that is not a client role.
func RulesFor(role certs.Role) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.Role == role {
			out = append(out, r)
		}
	}
	return out
}

// MaxTopicLen is the longest topic name or filter MQTT can carry (a UTF-8 string with a 16-bit
// length prefix, MQTT 3.1.1 section 1.5.3).
const MaxTopicLen = 65535

// sharePrefix starts a shared subscription, "$share/<group>/<filter>" (MQTT 5.0 section 4.8.2;
// Mosquitto and the embedded broker accept it from 3.1.1 clients as well).
const sharePrefix = "$share/"

// Allowed reports whether identity (a certificate CN) may publish to the topic name filter
// (write) or subscribe to the topic filter filter (!write).
//
// A publish is allowed only to a topic name without wildcards that a Write rule of the
// identity's role matches. A subscription is allowed only when every topic the filter could
// match is matched by a Read rule, so a device may subscribe to "dev/<own id>/down/#" but not
// to "dev/+/down/cmd" or "#". For a shared subscription, "$share/<group>/<filter>", the inner
// filter is checked. A concrete topic name passed with write false asks whether a message on
// that topic may be delivered to identity.
//
// Anything malformed is refused: an identity certs.ParseIdentity rejects, an empty or
// over-long topic, invalid UTF-8, U+0000, a "#" that is not the whole last level, a "+" that is
// not a whole level. Topics starting with "$" (such as "$SYS") match no rule.
func Allowed(identity, filter string, write bool) bool {
	role, name, err := certs.ParseIdentity(identity)
	if err != nil {
		return false
	}
	if write {
		if !validTopicName(filter) {
			return false
		}
		topic := strings.Split(filter, "/")
		for _, r := range rules {
			if r.Role == role && r.Access&Write != 0 && matches(strings.Split(r.Expand(name), "/"), topic) {
				return true
			}
		}
		return false
	}
	if strings.HasPrefix(filter, sharePrefix) {
		group, inner, ok := strings.Cut(filter[len(sharePrefix):], "/")
		if !ok || group == "" || strings.ContainsAny(group, "+#") {
			return false
		}
		filter = inner
	}
	if !validFilter(filter) {
		return false
	}
	var grants [][]string
	for _, r := range rules {
		if r.Role == role && r.Access&Read != 0 {
			grants = append(grants, strings.Split(r.Expand(name), "/"))
		}
	}
	return covered(strings.Split(filter, "/"), grants, 0)
}

// validString reports whether s can be an MQTT topic name or filter at all (MQTT 3.1.1
// section 1.5.3 and 4.7.3).
func validString(s string) bool {
	return s != "" && len(s) <= MaxTopicLen && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// validTopicName reports whether s is a topic name a client may publish to.
func validTopicName(s string) bool {
	return validString(s) && !strings.ContainsAny(s, "+#")
}

// validFilter reports whether s is a well-formed topic filter (MQTT 3.1.1 section 4.7.1).
func validFilter(s string) bool {
	if !validString(s) {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		switch {
		case l == "#":
			if i != len(levels)-1 {
				return false
			}
		case l == "+":
		case strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}

// matches reports whether the topic filter pattern matches the topic name topic, both split
// into levels (MQTT 3.1.1 section 4.7). Wildcards in the first level do not match a topic
// starting with "$" (section 4.7.2).
func matches(pattern, topic []string) bool {
	if len(topic) > 0 && strings.HasPrefix(topic[0], "$") && len(pattern) > 0 && (pattern[0] == "+" || pattern[0] == "#") {
		return false
	}
	for i, p := range pattern {
		if p == "#" {
			return true // "#" also matches its parent level: "a/#" matches "a".
		}
		if i >= len(topic) {
			return false
		}
		if p != "+" && p != topic[i] {
			return false
		}
	}
	return len(pattern) == len(topic)
}

// fresh stands for "any topic level not literally named by a grant". It cannot appear in a
// real topic, which never holds U+0000.
const fresh = "\x00"

// covered reports whether every topic matched by the filter levels f is matched by at least
// one of grants (levels of filters without the first depth levels). depth is how many levels
// have been consumed, for the "$" rule of the first level.
//
// It walks both level by level. Where f has a wildcard, it tries every literal the grants
// name at that level plus one fresh value that only their wildcards match; that finite set
// stands for every possible level value. Each step shortens every grant or drops it, except a
// lone "#" which covers everything and ends the walk, so the recursion is bounded by the
// longest grant.
func covered(f []string, grants [][]string, depth int) bool {
	if len(grants) == 0 {
		return false
	}
	// A lone "#" grant covers every topic, except that in the first level it does not match a
	// topic starting with "$" (a filter's own first-level wildcard never does either).
	if depth > 0 || len(f) == 0 || !strings.HasPrefix(f[0], "$") {
		for _, g := range grants {
			if len(g) == 1 && g[0] == "#" {
				return true
			}
		}
	}
	if len(f) == 0 {
		// The filter matches the topic ending here; a grant covers it if it also ends here
		// (a trailing "#" was handled above).
		for _, g := range grants {
			if len(g) == 0 {
				return true
			}
		}
		return false
	}
	switch f[0] {
	case "#":
		// "#" matches the topic ending here (its parent level) and every longer one.
		if depth > 0 && !covered(nil, grants, depth) {
			return false
		}
		for _, v := range candidates(grants, depth) {
			if !covered(f, advance(grants, v, depth), depth+1) {
				return false
			}
		}
		return true
	case "+":
		for _, v := range candidates(grants, depth) {
			if !covered(f[1:], advance(grants, v, depth), depth+1) {
				return false
			}
		}
		return true
	default:
		return covered(f[1:], advance(grants, f[0], depth), depth+1)
	}
}

// candidates returns the level values that stand for all others at this level: every literal
// the grants name, and fresh. In the first level, where a filter's wildcard never matches a
// topic starting with "$", literals starting with "$" are left out.
func candidates(grants [][]string, depth int) []string {
	out := []string{fresh}
	for _, g := range grants {
		if len(g) == 0 || g[0] == "+" || g[0] == "#" {
			continue
		}
		if depth == 0 && strings.HasPrefix(g[0], "$") {
			continue
		}
		out = append(out, g[0])
	}
	return out
}

// advance returns what is left of each grant once a topic level of value v is consumed, and
// drops the grants that do not match v.
func advance(grants [][]string, v string, depth int) [][]string {
	var out [][]string
	dollar := depth == 0 && strings.HasPrefix(v, "$")
	for _, g := range grants {
		if len(g) == 0 {
			continue
		}
		switch {
		case g[0] == "#" && !dollar:
			out = append(out, g)
		case g[0] == "+" && !dollar, g[0] == v:
			out = append(out, g[1:])
		}
	}
	return out
}
