// Package mosquitto renders the configuration and the ACL file that make a Mosquitto 2.0
// broker carry the fleet's traffic with the same rules as the embedded broker: mutual TLS only
// (S3 in SECURITY-BAR.md), the certificate CN as the username, and the access rules of
// transport/mqtt/acl.
//
// It only produces bytes; it never writes files, starts processes or reads the environment.
// It must never emit a line it was not asked for: a value that could break out of its line
// (a line break or another control character) is not copied into the output, and the rendered
// file then holds a directive that makes Mosquitto refuse to start (see RenderConf).
package mosquitto

import (
	"bytes"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/acl"
)

// DefaultPort is the IANA port of MQTT over TLS.
const DefaultPort = 8883

// DefaultMaxPacketSize caps an MQTT packet, in bytes, when Conf.MaxPacketSize is zero. It is
// the embedded broker's default too.
const DefaultMaxPacketSize = 262144

// DefaultSessionExpiry is how long Mosquitto keeps the persistent session of a client that is
// away (persistent_client_expiration) when Conf.SessionExpiry is zero: the embedded broker's
// default too.
const DefaultSessionExpiry = 30 * 24 * time.Hour

// Ciphers are the OpenSSL names of the TLS 1.2 suites the fleet allows: ECDHE key exchange and
// AEAD only, the same set as certs.CipherSuites. TLS 1.3 suites are all AEAD with ephemeral
// key exchange, so Mosquitto's defaults for them are kept.
var Ciphers = []string{
	"ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305",
	"ECDHE-RSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-RSA-CHACHA20-POLY1305",
}

// Conf is what RenderConf needs. Paths are written as given; Mosquitto resolves relative paths
// against its working directory, so absolute paths are best.
type Conf struct {
	// Bind is the address the TLS listener binds to, e.g. "127.0.0.1" or "::1". Empty means
	// every interface.
	Bind string
	// Port is the listener's TCP port. Zero means DefaultPort.
	Port int
	// CAFile is the fleet CA bundle (PEM). Client certificates must chain to it. Required.
	CAFile string
	// CertFile and KeyFile are the broker's server certificate and key (PEM). Required.
	CertFile string
	KeyFile  string
	// CRLFile is an optional PEM certificate revocation list of the fleet CA. Empty means none.
	CRLFile string
	// ACLFile is the path of the file RenderACL produced. Required.
	ACLFile string
	// PersistenceDir is the directory of mosquitto.db, which keeps sessions, subscriptions,
	// queued QoS 1/2 messages and retained messages across restarts. Mosquitto saves it on
	// SIGTERM (and every 30 minutes); SIGKILL loses what changed since. Required.
	PersistenceDir string
	// User is the account Mosquitto switches to when started as root. Empty leaves the line
	// out, and Mosquitto then uses "mosquitto". "root" keeps root (test benches only).
	User string
	// MaxPacketSize caps a packet, in bytes. Zero means DefaultMaxPacketSize.
	MaxPacketSize int
	// LogDest is where Mosquitto logs: "stderr" or "stdout". Empty means "stderr".
	LogDest string
	// SessionExpiry is how long a persistent session outlives its client's connection
	// (persistent_client_expiration): then Mosquitto drops it with its subscriptions and
	// queued messages. Mosquitto counts it in hours at the finest, so it must be whole hours.
	// Zero means DefaultSessionExpiry.
	SessionExpiry time.Duration
}

// Validate reports the first field of c that RenderConf cannot render faithfully, naming it.
func (c Conf) Validate() error {
	required := []struct{ name, v string }{
		{"CAFile", c.CAFile}, {"CertFile", c.CertFile}, {"KeyFile", c.KeyFile},
		{"ACLFile", c.ACLFile}, {"PersistenceDir", c.PersistenceDir},
	}
	for _, f := range required {
		if f.v == "" {
			return fmt.Errorf("mosquitto: Conf.%s is required", f.name)
		}
	}
	for _, f := range c.fields() {
		if !safeValue(f.v) {
			return fmt.Errorf("mosquitto: Conf.%s holds a line break or control character", f.name)
		}
		if f.v != strings.TrimSpace(f.v) {
			// Mosquitto trims values, so the path it would open is not the one given.
			return fmt.Errorf("mosquitto: Conf.%s starts or ends with white space", f.name)
		}
	}
	if strings.ContainsAny(c.Bind, " \t") {
		return fmt.Errorf("mosquitto: Conf.Bind %q is not an address", c.Bind)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("mosquitto: Conf.Port %d is out of range", c.Port)
	}
	if c.MaxPacketSize != 0 && (c.MaxPacketSize < 20 || c.MaxPacketSize > 268435455) {
		return fmt.Errorf("mosquitto: Conf.MaxPacketSize %d must be 20 to 268435455 bytes", c.MaxPacketSize)
	}
	if c.LogDest != "" && c.LogDest != "stderr" && c.LogDest != "stdout" {
		return fmt.Errorf("mosquitto: Conf.LogDest %q must be stderr or stdout", c.LogDest)
	}
	if c.SessionExpiry < 0 || c.SessionExpiry%time.Hour != 0 || c.SessionExpiry/time.Hour > 1<<20 {
		return fmt.Errorf("mosquitto: Conf.SessionExpiry %v must be whole hours (Mosquitto counts no finer), at most 2^20 h", c.SessionExpiry)
	}
	if strings.ContainsAny(c.User, " \t") {
		return fmt.Errorf("mosquitto: Conf.User %q holds white space", c.User)
	}
	return nil
}

type field struct{ name, v string }

func (c Conf) fields() []field {
	return []field{
		{"Bind", c.Bind}, {"CAFile", c.CAFile}, {"CertFile", c.CertFile}, {"KeyFile", c.KeyFile},
		{"CRLFile", c.CRLFile}, {"ACLFile", c.ACLFile}, {"PersistenceDir", c.PersistenceDir},
		{"User", c.User}, {"LogDest", c.LogDest},
	}
}

// safeValue reports whether v can sit at the end of a configuration line without starting
// another one.
func safeValue(v string) bool {
	return !strings.ContainsFunc(v, unicode.IsControl) && !strings.ContainsAny(v, "\u2028\u2029\u0085")
}

// invalidDirective is not a Mosquitto option: Mosquitto refuses to start on it, which is what
// RenderConf wants when it was given a value it cannot render.
const invalidDirective = "camagent_invalid_configuration"

// RenderConf renders a mosquitto.conf for c. Global options come first, then one TLS listener
// that requires a client certificate chaining to CAFile and uses its CN as the username
// (use_identity_as_username), TLS 1.2 or later with the ECDHE+AEAD Ciphers, no anonymous
// access and no listener without TLS.
//
// RenderConf does not fail: call Validate first. When c is invalid the output carries the
// reason in a comment and an unknown directive, so that Mosquitto refuses to start rather than
// run with a configuration nobody asked for.
func RenderConf(c Conf) []byte {
	var b bytes.Buffer
	b.WriteString("# Mosquitto 2.0 configuration for the camagent fleet.\n")
	b.WriteString("# Rendered by github.com/camagent/camagent/transport/mqtt/mosquitto: change the Go code,\n")
	b.WriteString("# not this file. See docs/protocol.md for the topics and the ACL.\n\n")
	if err := c.Validate(); err != nil {
		fmt.Fprintf(&b, "# %s\n%s\n", sanitizeComment(err.Error()), invalidDirective)
		return b.Bytes()
	}
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	maxPacket := c.MaxPacketSize
	if maxPacket == 0 {
		maxPacket = DefaultMaxPacketSize
	}
	expiry := c.SessionExpiry
	if expiry == 0 {
		expiry = DefaultSessionExpiry
	}
	logDest := c.LogDest
	if logDest == "" {
		logDest = "stderr"
	}

	b.WriteString("# Global settings. One ACL for every listener.\n")
	b.WriteString("per_listener_settings false\n")
	b.WriteString("allow_anonymous false\n")
	fmt.Fprintf(&b, "acl_file %s\n", c.ACLFile)
	fmt.Fprintf(&b, "max_packet_size %d\n", maxPacket)
	// Without TCP_NODELAY, small QoS 1 exchanges wait on Nagle and delayed ACKs (about 40 ms
	// per round trip on Linux).
	b.WriteString("set_tcp_nodelay true\n")
	// A breach campaign queues one request per device for the signers; Mosquitto's default
	// of 1000 queued messages per client would drop most of a large fleet's.
	b.WriteString("max_queued_messages 100000\n")
	// And in bytes: Mosquitto cannot cap a topic's message size, so a stolen camera
	// certificate could otherwise queue 100000 messages of max_packet_size for an absent
	// signer. 256 MiB holds a breach's requests (about 1.6 KiB each) for over 150000 devices;
	// beyond it Mosquitto drops, and the devices ask again.
	b.WriteString("max_queued_bytes 268435456\n")
	b.WriteString("\n# Sessions, queued QoS 1 messages and retained messages survive a restart (R3).\n")
	b.WriteString("persistence true\n")
	fmt.Fprintf(&b, "persistence_location %s\n", c.PersistenceDir)
	b.WriteString("# The session of a client away this long ends with its subscriptions and queued messages, so\n")
	b.WriteString("# the cameras a fleet loses do not pile up here; one that comes back subscribes again and\n")
	b.WriteString("# converges from the retained desired state.\n")
	fmt.Fprintf(&b, "persistent_client_expiration %dh\n", expiry/time.Hour)
	if c.User != "" {
		fmt.Fprintf(&b, "\n# Account to run as when started as root.\nuser %s\n", c.User)
	}
	b.WriteString("\n# Logs carry client ids and addresses, never payloads.\n")
	fmt.Fprintf(&b, "log_dest %s\n", logDest)
	b.WriteString("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	b.WriteString("connection_messages true\nlog_timestamp true\n")

	b.WriteString("\n# The only listener: MQTT over mutual TLS (S3).\n")
	if c.Bind != "" {
		fmt.Fprintf(&b, "listener %d %s\n", port, c.Bind)
	} else {
		fmt.Fprintf(&b, "listener %d\n", port)
	}
	b.WriteString("protocol mqtt\n")
	fmt.Fprintf(&b, "cafile %s\n", c.CAFile)
	fmt.Fprintf(&b, "certfile %s\n", c.CertFile)
	fmt.Fprintf(&b, "keyfile %s\n", c.KeyFile)
	if c.CRLFile != "" {
		fmt.Fprintf(&b, "crlfile %s\n", c.CRLFile)
	}
	b.WriteString("# A client must present a certificate of the fleet CA; its CN is the username the ACL\n")
	b.WriteString("# sees. Mosquitto does not check that the client id equals it (the embedded broker does).\n")
	b.WriteString("require_certificate true\n")
	b.WriteString("use_identity_as_username true\n")
	b.WriteString("# TLS 1.2 at least; for TLS 1.2, ECDHE key exchange with AEAD ciphers only.\n")
	b.WriteString("tls_version tlsv1.2\n")
	fmt.Fprintf(&b, "ciphers %s\n", strings.Join(Ciphers, ":"))
	b.WriteString("# Run Mosquitto with OPENSSL_CONF set to the " + OpenSSLConfFile + " written beside this file: it turns\n")
	b.WriteString("# TLS 1.3 session tickets off, which no fleet client uses and which cost about a third of\n")
	b.WriteString("# every handshake.\n")
	return b.Bytes()
}

// OpenSSLConfFile is the name fleetctl mosquitto-config gives RenderOpenSSLConf's output,
// beside mosquitto.conf.
const OpenSSLConfFile = "openssl.cnf"

// RenderOpenSSLConf renders the OpenSSL configuration Mosquitto must run with, through the
// OPENSSL_CONF environment variable (Mosquitto has no setting for what it sets). It replaces
// the system's openssl.cnf for Mosquitto's process alone.
//
// It turns off TLS 1.3 session tickets. OpenSSL sends two after every handshake, each the
// encrypted session with the client's certificate in it, and making them costs about a third
// of Mosquitto's CPU in a mutual-auth handshake (0.99 ms of it with them, 0.69 ms without,
// on the machine of docs/benchmarks.md). No client of the fleet resumes a session: camagent's
// MQTT client makes a full handshake on every connection (transport/mqtt.Config.TLS), so the
// broker checks each certificate it is shown against its CRL, and the tickets went unused.
func RenderOpenSSLConf() []byte {
	return []byte(`# OpenSSL configuration for the camagent fleet's Mosquitto. Run Mosquitto with
# OPENSSL_CONF set to this file's path: it then replaces the system's openssl.cnf for
# Mosquitto alone. Rendered by github.com/camagent/camagent/transport/mqtt/mosquitto.
#
# No TLS 1.3 session tickets: OpenSSL makes two after every handshake (about a third of the
# broker's CPU in one), and no client of the fleet resumes a session; every connection makes
# a full handshake, checked against the CRL. Where the system's openssl.cnf sets more (a
# crypto policy, a FIPS provider), add the NumTickets line to its system_default section
# instead of using this file.
openssl_conf = camagent_openssl_init

[camagent_openssl_init]
ssl_conf = camagent_ssl

[camagent_ssl]
system_default = camagent_tls

[camagent_tls]
NumTickets = 0
`)
}

func sanitizeComment(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\u0085' {
			return ' '
		}
		return r
	}, s)
}

// RenderACL renders a Mosquitto acl_file carrying the rules of transport/mqtt/acl.
//
// Device rules become "pattern" lines in which %u is the username, i.e. the certificate CN,
// which for a device is its id. Mosquitto has no roles, so every other identity that must be
// able to connect (operators, signers, viewer relays, bootstrap identities) needs its own
// "user" block: list them in nonDeviceIdentities. An identity that certs.ParseIdentity refuses
// is left out with a comment giving its position (the value itself is never echoed), as is a
// device identity, which the patterns already serve; an identity listed twice gets one block.
//
// Mosquitto applies "pattern" lines to every user. For an operator that adds nothing, since
// its own rules cover "dev/#" and "fleet/#". For the other roles each user block starts with
// "deny" lines for "fleet/down/#" and "dev/<identity>/#" (a device-id level that can never be
// a real device, since it holds a colon), which Mosquitto applies before any grant. The result
// grants exactly what acl.Allowed grants on every topic whose device-id level is a valid device
// id, and is stricter on the meaningless topics whose id level is a non-device identity.
func RenderACL(nonDeviceIdentities []string) []byte {
	var b bytes.Buffer
	b.WriteString("# Mosquitto 2.0 acl_file for the camagent fleet.\n")
	b.WriteString("# Rendered by github.com/camagent/camagent/transport/mqtt/mosquitto from the rules of\n")
	b.WriteString("# transport/mqtt/acl: change the Go code, not this file. %u is the certificate CN\n")
	b.WriteString("# (use_identity_as_username). Anything not granted here is denied.\n\n")

	b.WriteString("# Devices: the CN is the device id. Mosquitto applies patterns to every user and warns\n")
	b.WriteString("# that fleet/down/# has no %u; the user blocks below deny it to all but operators.\n")
	for _, r := range acl.RulesFor(certs.RoleDevice) {
		fmt.Fprintf(&b, "pattern %s %s\n", r.Access, r.Pattern)
	}

	seen := make(map[string]bool)
	for i, id := range nonDeviceIdentities {
		role, name, err := certs.ParseIdentity(id)
		if err != nil {
			fmt.Fprintf(&b, "\n# identity #%d is not a valid client identity and was left out\n", i)
			continue
		}
		if role == certs.RoleDevice {
			fmt.Fprintf(&b, "\n# identity #%d is a device, served by the patterns above\n", i)
			continue
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		fmt.Fprintf(&b, "\nuser %s\n", id)
		if role != certs.RoleOperator {
			b.WriteString("topic deny fleet/down/#\n")
			fmt.Fprintf(&b, "topic deny dev/%s/#\n", id)
		}
		for _, r := range acl.RulesFor(role) {
			fmt.Fprintf(&b, "topic %s %s\n", r.Access, r.Expand(name))
		}
	}
	return b.Bytes()
}
