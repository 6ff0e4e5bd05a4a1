package mosquitto

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/acl"
)

var update = flag.Bool("update", false, "rewrite the golden files and the shipped examples")

// ExampleConf is the deployment camagent.conf.example shows.
var exampleConf = Conf{
	Port:           8883,
	CAFile:         "/etc/mosquitto/camagent/fleet-ca.pem",
	CertFile:       "/etc/mosquitto/camagent/broker.pem",
	KeyFile:        "/etc/mosquitto/camagent/broker.key",
	CRLFile:        "/etc/mosquitto/camagent/fleet-ca.crl",
	ACLFile:        "/etc/mosquitto/camagent/camagent.acl",
	PersistenceDir: "/var/lib/mosquitto",
	User:           "mosquitto",
}

// exampleIdentities are the non-device identities camagent.acl.example serves.
var exampleIdentities = []string{"operator:alice", "signer:fleet", "viewer:relay", "bootstrap:cam-0001"}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered output differs from %s (run go test -update if the change is intended):\n%s", path, got)
	}
}

func TestRenderingMatchesTheGoldenFiles(t *testing.T) {
	tests := []struct {
		name string
		path string
		got  []byte
	}{
		{"the shipped example configuration is what RenderConf renders", "camagent.conf.example", RenderConf(exampleConf)},
		{"the shipped example ACL is what RenderACL renders", "camagent.acl.example", RenderACL(exampleIdentities)},
		{"the shipped example OpenSSL configuration is what RenderOpenSSLConf renders", "camagent-openssl.cnf.example", RenderOpenSSLConf()},
		{"a minimal configuration gets every default", filepath.Join("testdata", "minimal.conf.golden"), RenderConf(Conf{
			Bind: "127.0.0.1", CAFile: "/c/ca.pem", CertFile: "/c/s.pem", KeyFile: "/c/s.key",
			ACLFile: "/c/acl", PersistenceDir: "/d/",
		})},
		{"an invalid configuration renders as one Mosquitto refuses", filepath.Join("testdata", "invalid.conf.golden"), RenderConf(Conf{
			CAFile: "/c/ca.pem\nallow_anonymous true", CertFile: "/c/s.pem", KeyFile: "/c/s.key",
			ACLFile: "/c/acl", PersistenceDir: "/d",
		})},
		{"an ACL without identities has the device patterns only", filepath.Join("testdata", "devices-only.acl.golden"), RenderACL(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { golden(t, tt.path, tt.got) })
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	ok := Conf{CAFile: "/ca", CertFile: "/crt", KeyFile: "/key", ACLFile: "/acl", PersistenceDir: "/data"}
	with := func(f func(*Conf)) Conf {
		c := ok
		f(&c)
		return c
	}
	tests := []struct {
		name string
		conf Conf
		want string // "" for valid
	}{
		{"a complete configuration is valid", ok, ""},
		{"the example configuration is valid", exampleConf, ""},
		{"a missing CA file is named", with(func(c *Conf) { c.CAFile = "" }), "Conf.CAFile is required"},
		{"a missing ACL file is named", with(func(c *Conf) { c.ACLFile = "" }), "Conf.ACLFile is required"},
		{"a missing persistence dir is named", with(func(c *Conf) { c.PersistenceDir = "" }), "Conf.PersistenceDir is required"},
		{"a line break in a path is refused", with(func(c *Conf) { c.KeyFile = "/key\nallow_anonymous true" }), "Conf.KeyFile holds a line break"},
		{"a carriage return in a path is refused", with(func(c *Conf) { c.CRLFile = "/crl\r" }), "Conf.CRLFile holds a line break"},
		{"a Unicode line separator is refused", with(func(c *Conf) { c.CertFile = "/crt\u2028x" }), "Conf.CertFile holds a line break"},
		{"a path Mosquitto would trim is refused", with(func(c *Conf) { c.CAFile = " /ca" }), "Conf.CAFile starts or ends with white space"},
		{"a bind address with a space is refused", with(func(c *Conf) { c.Bind = "0.0.0.0 x" }), "Conf.Bind"},
		{"a port out of range is refused", with(func(c *Conf) { c.Port = 70000 }), "Conf.Port"},
		{"a tiny packet cap is refused", with(func(c *Conf) { c.MaxPacketSize = 10 }), "Conf.MaxPacketSize"},
		{"a log file destination is refused", with(func(c *Conf) { c.LogDest = "file /tmp/x" }), "Conf.LogDest"},
		{"a user with a space is refused", with(func(c *Conf) { c.User = "root x" }), "Conf.User"},
		{"a session expiry in whole days is valid", with(func(c *Conf) { c.SessionExpiry = 7 * 24 * time.Hour }), ""},
		{"a session expiry finer than hours is refused", with(func(c *Conf) { c.SessionExpiry = 90 * time.Minute }), "Conf.SessionExpiry"},
		{"a negative session expiry is refused", with(func(c *Conf) { c.SessionExpiry = -time.Hour }), "Conf.SessionExpiry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.conf.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate accepted it")
			case tt.want != "" && (!strings.HasPrefix(err.Error(), "mosquitto: ") || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %q, want it to start with %q and contain %q", err, "mosquitto: ", tt.want)
			}
			out := RenderConf(tt.conf)
			if invalid := bytes.Contains(out, []byte(invalidDirective)); invalid != (tt.want != "") {
				t.Fatalf("invalid directive present = %v, want %v:\n%s", invalid, tt.want != "", out)
			}
		})
	}
}

func TestRenderACLLeavesOutWhatItCannotServe(t *testing.T) {
	out := string(RenderACL([]string{
		"operator:alice\ntopic readwrite #", // an injection attempt
		"cam-a",                             // a device: served by the patterns
		"operator:alice",
		"operator:alice", // twice: one block
		"admin:root",
	}))
	if strings.Contains(out, "topic readwrite #") {
		t.Fatalf("the injected line is in the ACL:\n%s", out)
	}
	if n := strings.Count(out, "\nuser "); n != 1 {
		t.Fatalf("%d user blocks, want 1:\n%s", n, out)
	}
	for _, want := range []string{"# identity #0 is not a valid", "# identity #1 is a device", "# identity #4 is not a valid"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "admin:root") {
		t.Fatalf("an invalid identity was echoed:\n%s", out)
	}
}

// mosquittoACL is a model of how Mosquitto 2.0's default ACL check (src/security_default.c)
// reads an acl_file: for a user with a block, "deny" entries first, then its grants; then the
// patterns with %u replaced by the username; else denied. It exists to compare the rendered
// file with acl.Allowed over many topics; the integration tests in transport/mqtt/mqtttest run
// the real Mosquitto on the important cases.
type mosquittoACL struct {
	patterns []aclEntry
	users    map[string][]aclEntry
}

type aclEntry struct {
	access string // read, write, readwrite or deny
	topic  string
}

func parseACL(t *testing.T, b []byte) mosquittoACL {
	t.Helper()
	m := mosquittoACL{users: make(map[string][]aclEntry)}
	user := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch {
		case f[0] == "user" && len(f) == 2:
			user = f[1]
			m.users[user] = nil
		case f[0] == "topic" && len(f) == 3 && user != "":
			m.users[user] = append(m.users[user], aclEntry{f[1], f[2]})
		case f[0] == "pattern" && len(f) == 3:
			m.patterns = append(m.patterns, aclEntry{f[1], f[2]})
		default:
			t.Fatalf("unexpected ACL line %q", line)
		}
	}
	return m
}

func (m mosquittoACL) allowed(username, topic string, write bool) bool {
	want := "read"
	if write {
		want = "write"
	}
	grants := func(e aclEntry) bool { return e.access == want || e.access == "readwrite" }
	entries := m.users[username]
	for _, e := range entries {
		if e.access == "deny" && topicMatches(e.topic, topic) {
			return false
		}
	}
	for _, e := range entries {
		if grants(e) && topicMatches(e.topic, topic) {
			return true
		}
	}
	for _, e := range m.patterns {
		if topicMatches(strings.ReplaceAll(e.topic, "%u", username), topic) {
			if e.access == "deny" {
				return false
			}
			if grants(e) {
				return true
			}
		}
	}
	return false
}

// topicMatches is mosquitto_topic_matches_sub for a concrete topic.
func topicMatches(filter, topic string) bool {
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tp) || (l != "+" && l != tp[i]) {
			return false
		}
	}
	return len(f) == len(tp)
}

func TestTheRenderedACLGrantsWhatAclAllowedGrants(t *testing.T) {
	identities := []string{"cam-a", "cam-b", "operator:alice", "signer:s1", "viewer:relay", "bootstrap:cam-a"}
	m := parseACL(t, RenderACL(identities[2:]))

	// Every topic of up to four levels over an alphabet that names each rule's levels, the
	// identities themselves (a pattern's %u can make them a level) and strangers.
	alphabet := [][]string{
		{"dev", "fleet", "boot", "$SYS", "other"},
		{"cam-a", "cam-b", "down", "up", "keyset", "x", ""},
		{"up", "down", "csr", "x"},
		{"cmd", "reply", "state", "csr", "cert", "signal"},
	}
	alphabet[1] = append(alphabet[1], identities...)
	var topics []string
	var walk func(prefix []string, depth int)
	walk = func(prefix []string, depth int) {
		if depth > 0 {
			topics = append(topics, strings.Join(prefix, "/"))
		}
		if depth == len(alphabet) {
			return
		}
		for _, l := range alphabet[depth] {
			walk(append(prefix, l), depth+1)
		}
	}
	walk(nil, 0)

	for _, id := range identities {
		for _, topic := range topics {
			for _, write := range []bool{false, true} {
				mosq := m.allowed(id, topic, write)
				goACL := acl.Allowed(id, topic, write)
				if mosq && !goACL {
					t.Errorf("Mosquitto lets %s %s %s; acl.Allowed does not", id, verb(write), topic)
				}
				if goACL && !mosq && deviceIDLevel(topic) {
					t.Errorf("acl.Allowed lets %s %s %s; Mosquitto does not", id, verb(write), topic)
				}
			}
		}
	}
}

func verb(write bool) string {
	if write {
		return "publish to"
	}
	return "read"
}

// deviceIDLevel reports whether topic's device-id level, if it has one, is a valid device id.
func deviceIDLevel(topic string) bool {
	l := strings.Split(topic, "/")
	if len(l) < 2 || (l[0] != "dev" && l[0] != "boot") {
		return true
	}
	return certs.ValidDeviceID(l[1]) == nil
}

// FuzzRenderConf checks that no field value can add a line of its own to the configuration:
// every line is blank, a comment, or one of the directives RenderConf writes, each once.
func FuzzRenderConf(f *testing.F) {
	f.Add("127.0.0.1", "/ca.pem", "/crl.pem", "/data", "root", 8883, 0, int64(0))
	f.Add("", "/ca.pem\nallow_anonymous true", "", "/data\r\nlistener 1883", "", 0, 100, int64(time.Hour))
	f.Add("::1 ", " /ca.pem", "/crl\u2028acl_file /x", "/d", "mosquitto\tx", -1, 19, int64(time.Minute))
	known := map[string]bool{
		"per_listener_settings": true, "allow_anonymous": true, "acl_file": true, "max_packet_size": true, "set_tcp_nodelay": true, "max_queued_messages": true, "max_queued_bytes": true,
		"persistence": true, "persistence_location": true, "persistent_client_expiration": true, "user": true, "log_dest": true,
		"connection_messages": true, "log_timestamp": true, "listener": true, "protocol": true,
		"cafile": true, "certfile": true, "keyfile": true, "crlfile": true, "require_certificate": true,
		"use_identity_as_username": true, "tls_version": true, "ciphers": true, invalidDirective: true,
	}
	f.Fuzz(func(t *testing.T, bind, ca, crl, dir, user string, port, maxPacket int, expiry int64) {
		c := Conf{Bind: bind, Port: port, CAFile: ca, CertFile: "/s.pem", KeyFile: "/s.key", CRLFile: crl,
			ACLFile: "/acl", PersistenceDir: dir, User: user, MaxPacketSize: maxPacket, SessionExpiry: time.Duration(expiry)}
		out := RenderConf(c)
		seen := make(map[string]bool)
		for _, line := range strings.Split(string(out), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			key, _, _ := strings.Cut(line, " ")
			if key == "log_type" {
				continue
			}
			if !known[key] || seen[key] {
				t.Fatalf("line %q is unknown or repeated in:\n%s", line, out)
			}
			seen[key] = true
		}
		if valid := c.Validate() == nil; valid == seen[invalidDirective] {
			t.Fatalf("Validate() == nil is %v but the invalid directive present is %v", valid, seen[invalidDirective])
		}
	})
}

// FuzzRenderACL checks that only identities certs.ParseIdentity accepts get a user block and
// that every line is one RenderACL means to write.
func FuzzRenderACL(f *testing.F) {
	f.Add("operator:alice", "signer:s1\ntopic readwrite #", "cam-a")
	f.Add("viewer:relay", "bootstrap:cam-a", "operator:")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		out := RenderACL([]string{a, b, c})
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case line == "", strings.HasPrefix(line, "# "), strings.HasPrefix(line, "pattern "):
			case strings.HasPrefix(line, "user "):
				if _, _, err := certs.ParseIdentity(strings.TrimPrefix(line, "user ")); err != nil {
					t.Fatalf("user block for a bad identity: %q", line)
				}
			case strings.HasPrefix(line, "topic "):
				if f := strings.Fields(line); len(f) != 3 {
					t.Fatalf("malformed topic line %q", line)
				}
			default:
				t.Fatalf("unexpected line %q in:\n%s", line, out)
			}
		}
	})
}
