package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/camagent/camagent/certs"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMaxPayload is the inbound payload cap: 64 KiB.
	DefaultMaxPayload = 64 << 10
	// DefaultQueueLength is how many inbound messages may wait for the Handler.
	DefaultQueueLength = 1024
	// DefaultKeepAlive is the MQTT keepalive interval.
	DefaultKeepAlive = 30 * time.Second
	// DefaultConnectTimeout bounds one connection attempt (TCP, TLS and CONNACK).
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMinBackoff is the reconnect backoff ceiling of the first retry.
	DefaultMinBackoff = time.Second
	// DefaultMaxBackoff caps the reconnect backoff ceiling.
	DefaultMaxBackoff = 5 * time.Minute
)

// disconnectQuiesce is how long a clean disconnect waits for the DISCONNECT packet to be
// written before the connection is closed anyway.
const disconnectQuiesce = 250 * time.Millisecond

// Config configures a Client. The zero value of every optional field selects the default
// named in its comment; New validates the rest and reports the first bad field.
type Config struct {
	// BrokerURL is the broker to connect to: "mqtts://host:port"; "ssl://" and "tls://" are
	// accepted as synonyms. The port defaults to 8883. Plaintext schemes (tcp://, mqtt://,
	// ws://, ...) are refused: the fleet speaks MQTT over mutual TLS only (S3). Required.
	BrokerURL string

	// FallbackBrokerURLs are other addresses, each given as BrokerURL is, tried in turn after
	// an attempt fails: BrokerURL, then each of these, then BrokerURL again. Once a
	// connection through one is up the client stays on it until an attempt there fails. A
	// TLS ServerName left empty is taken from the address dialled. For a device whose records
	// disagree on the broker's address (a storage fault where no signature covers it): only
	// a broker whose certificate chains to the pinned CA ever takes the connection. May be
	// empty.
	FallbackBrokerURLs []string

	// ClientID is the MQTT client identifier. It must equal the identity (Subject CN) of the
	// client certificate; the client checks this before each connection attempt and refuses to
	// connect otherwise (ErrIdentityMismatch). Required.
	ClientID string

	// TLS is the TLS configuration, normally certs.ClientTLSConfig. It must pin the fleet CA
	// (RootCAs; the system roots are never used), must not set InsecureSkipVerify, and must
	// supply a client certificate (GetClientCertificate or Certificates). New clones it; the
	// GetClientCertificate callback is called on every handshake, so a certificate swapped
	// into a certs.Holder is presented from the next connection on. A ServerName left empty is
	// taken from BrokerURL; a MinVersion below TLS 1.2 is raised to TLS 1.2; nil CipherSuites
	// become certs.CipherSuites. ClientSessionCache is replaced (see OnSessionTicket): session
	// resumption would skip the client certificate, so every connection makes a full
	// handshake. Required.
	TLS *tls.Config

	// CleanSession asks the broker to discard the session on every connect. Devices use false
	// (a persistent session), so the broker keeps their subscriptions and queues QoS 1
	// messages while they are offline.
	CleanSession bool

	// Subscriptions are subscribed before the connection counts as up, on every connection
	// but a reconnection made on request (Client.Reconnect, an inbox overflow) to a session
	// the broker kept, which still holds them.
	// Filters use MQTT wildcards; QoS must be 0 or 1. A filter the broker refuses makes the
	// attempt fail (ErrSubscribeRefused) and is retried with backoff. May be empty.
	Subscriptions []Subscription

	// Handler is called for every inbound message, from one goroutine, in arrival order,
	// never on paho's goroutines. The message is acknowledged to the broker after Handler
	// returns; if ctx was cancelled meanwhile (Run is stopping) it is not, and the broker
	// redelivers it on the next connection. Handler may therefore see a message more than
	// once and must be idempotent. A slow Handler delays later messages but never the MQTT
	// connection itself. Payload must not be retained after Handler returns unless copied.
	// Required when Subscriptions is not empty; otherwise nil acknowledges and discards.
	Handler func(ctx context.Context, m Message)

	// MaxPayload caps inbound payloads, in bytes. A larger message is not given to Handler:
	// it is counted (Stats.OversizeDropped), logged with its topic and size only, and
	// acknowledged so that the broker does not redeliver it. Zero means DefaultMaxPayload.
	MaxPayload int

	// QueueLength is how many inbound messages may wait for Handler. When the queue is full,
	// further messages of that connection are left unacknowledged and counted
	// (Stats.QueueDropped); once Handler has caught up the client reconnects, so that the
	// broker redelivers them in order. Zero means DefaultQueueLength.
	QueueLength int

	// KeepAlive is the MQTT keepalive interval, in whole seconds (at least 1s). A dead link
	// is noticed within KeepAlive + ConnectTimeout. A connection that stayed up for at least
	// KeepAlive resets the reconnect backoff. Zero means DefaultKeepAlive.
	KeepAlive time.Duration

	// ConnectTimeout bounds one connection attempt (TCP connect, TLS handshake, CONNACK), the
	// wait for a PINGRESP, and one socket write. Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration

	// MinBackoff and MaxBackoff shape the reconnect backoff: exponential with full jitter
	// (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). Before
	// retry number n (counting from 0 since the last connection that stayed up for
	// KeepAlive) the client sleeps a uniformly random duration in
	// [0, min(MaxBackoff, MinBackoff·2ⁿ, max(MinBackoff, out))), where out is how long it has
	// been retrying since then: attempts that fail at once do not push the window ahead of the
	// outage. The first connection attempt of Run, and the one after Reconnect, do not wait.
	//
	// The defaults, 1s and 5min, are sized for a fleet of millions (R4): a device whose
	// link blips is back within about a second, one cut off for 10 s within about 10 s more,
	// while a fleet that lost its broker for long reaches the 5-minute ceiling and then
	// arrives spread evenly over five minutes — about 3,300 connections per second per
	// million devices — instead of all at once. Zero means the default; MaxBackoff must not be below MinBackoff.
	MinBackoff, MaxBackoff time.Duration

	// Rand returns a uniformly distributed number in [0, 1) for the backoff jitter. Nil means
	// math/rand/v2.Float64. Tests set it to make delays predictable.
	Rand func() float64

	// Clock tells the time and makes the backoff timers. Nil means the system clock. Tests
	// set a fake clock to test the backoff without sleeping.
	Clock Clock

	// Logger receives connection events and dropped-message reports; never payloads. Nil
	// discards them.
	Logger *slog.Logger

	// OnConnect, if set, is called on a goroutine of its own each time a connection is up and
	// its subscriptions are confirmed; Publish works from it. Its ctx is cancelled when that
	// connection ends, and ConnectedBroker(ctx) says which address it was made to. Run waits
	// for it before returning.
	OnConnect func(ctx context.Context)

	// OnConnectError, if set, is called on Run's goroutine with the reason of every failed
	// connection attempt (TLS errors such as a certificate not yet valid because the clock is
	// behind, refused CONNACKs, refused subscriptions). It must return quickly.
	OnConnectError func(err error)

	// LocalAddr is the local address every connection is made from. The zero value lets the
	// system choose, as devices should. It is for simulations (fleetsim gives each simulated
	// camera its own loopback address, so that a broker sees a fleet of hosts rather than one)
	// and for multi-homed hosts that must leave through one interface. It must be a unicast
	// address of this host, of the broker's family: an IPv4 LocalAddr cannot reach an IPv6
	// broker, which the kernel reports when the connection is attempted.
	LocalAddr netip.Addr

	// OnSessionTicket, if set, is called on the connection's reading goroutine each time the
	// broker hands the client a TLS 1.3 session ticket. The client keeps none and never
	// resumes a session; it only offers to take tickets, so that a broker making them shows
	// itself. camagent's brokers make none as deployed: a broker that does (Mosquitto run
	// without the openssl.cnf of fleetctl mosquitto-config) spends about a third of every
	// handshake on them. It must return quickly. Nil means the client does not offer to take
	// tickets and ignores any it is sent.
	OnSessionTicket func()

	// Will, if set, is sent with every CONNECT (MQTT 3.1.1 section 3.1.2.5): the broker
	// publishes it when that connection ends without the client's DISCONNECT (a crash, a
	// kill, a network cut, the broker closing it) and discards it when the client ends it
	// (Run's return, Reconnect). Nil means none.
	Will *Will
}

// Will is a message the broker publishes on a client's behalf when its connection ends
// without a DISCONNECT.
type Will struct {
	// Topic is a topic name: no wildcards.
	Topic string
	// Payload is the message, at most Config.MaxPayload bytes.
	Payload []byte
	// QoS is 0 or 1.
	QoS byte
	// Retained makes the broker keep it as the topic's retained message.
	Retained bool
}

// Subscription is one topic filter to subscribe to.
type Subscription struct {
	// Filter is an MQTT topic filter; "+" and "#" wildcards are allowed as whole levels.
	Filter string
	// QoS is the maximum QoS to receive with: 0 or 1.
	QoS byte
	// Optional makes the broker's refusal of this filter a warning in the log rather than a
	// failed connection: the session goes on without it. For what a client can do without,
	// on brokers whose ACL may predate the filter.
	Optional bool
}

// Message is one inbound message.
type Message struct {
	// Topic is the topic name it was published to.
	Topic string
	// Payload is the message body, at most Config.MaxPayload bytes.
	Payload []byte
	// Retained is set for a retained message sent when the subscription was made.
	Retained bool
	// Duplicate is set when the broker says this may be a redelivery. Redeliveries can also
	// arrive with Duplicate unset (after a reconnect, for messages whose acknowledgement was
	// lost), so handlers must be idempotent whatever it says.
	Duplicate bool
}

// Clock is the source of time for the backoff.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives once, after d has elapsed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// brokerSchemes are the URL schemes meaning MQTT over TLS.
var brokerSchemes = map[string]bool{"mqtts": true, "ssl": true, "tls": true}

// address is one address of the broker.
type address struct {
	given string   // as configured: what ConnectedBroker returns
	url   *url.URL // scheme://host:port, the port defaulted
	// tls is the TLS configuration to dial it with: ServerName is this address's host
	// unless the configuration named one.
	tls *tls.Config
}

// withDefaults validates cfg and returns it with defaults applied and its TLS configuration
// cloned, and the broker's addresses, BrokerURL first, each reduced to scheme://host:port.
// It is the only place defaults are applied.
func withDefaults(cfg Config) (Config, []address, error) {
	bad := func(field, format string, args ...any) (Config, []address, error) {
		return Config{}, nil, &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}

	// BrokerURL and FallbackBrokerURLs.
	urls := make([]*url.URL, 0, 1+len(cfg.FallbackBrokerURLs))
	for i, s := range append([]string{cfg.BrokerURL}, cfg.FallbackBrokerURLs...) {
		field := "BrokerURL"
		if i > 0 {
			field = fmt.Sprintf("FallbackBrokerURLs[%d]", i-1)
		}
		u, reason := parseBrokerURL(s)
		if reason != "" {
			return bad(field, "%s", reason)
		}
		urls = append(urls, u)
	}
	cfg.FallbackBrokerURLs = slices.Clone(cfg.FallbackBrokerURLs)
	u := urls[0]

	// ClientID.
	if cfg.ClientID == "" {
		return bad("ClientID", "required")
	}
	if len(cfg.ClientID) > 65535 || !utf8.ValidString(cfg.ClientID) || strings.ContainsRune(cfg.ClientID, 0) {
		return bad("ClientID", "must be valid UTF-8 without NUL, at most 65535 bytes")
	}

	// TLS.
	if cfg.TLS == nil {
		return bad("TLS", "required (certs.ClientTLSConfig)")
	}
	if cfg.TLS.InsecureSkipVerify {
		return bad("TLS", "InsecureSkipVerify is set; the broker certificate must be verified")
	}
	if cfg.TLS.RootCAs == nil {
		return bad("TLS", "RootCAs is nil; the fleet CA must be pinned, the system roots are never used")
	}
	if cfg.TLS.GetClientCertificate == nil && len(cfg.TLS.Certificates) == 0 {
		return bad("TLS", "no client certificate (set GetClientCertificate, e.g. certs.Holder)")
	}
	tlsCfg := cfg.TLS.Clone()
	nameFromURL := tlsCfg.ServerName == ""
	if nameFromURL {
		tlsCfg.ServerName = u.Hostname()
	}
	if tlsCfg.MinVersion < tls.VersionTLS12 {
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	if tlsCfg.CipherSuites == nil {
		tlsCfg.CipherSuites = certs.CipherSuites()
	}
	// A resumed TLS session presents no certificate: the broker would keep seeing the one
	// of the first handshake, and a swapped certificate would never be used. Every
	// connection makes a full handshake.
	tlsCfg.ClientSessionCache = nil
	if cfg.OnSessionTicket != nil {
		tlsCfg.ClientSessionCache = ticketReporter(cfg.OnSessionTicket)
	}

	// Subscriptions and Handler.
	seen := make(map[string]bool, len(cfg.Subscriptions))
	for i, s := range cfg.Subscriptions {
		field := fmt.Sprintf("Subscriptions[%d]", i)
		if err := validFilter(s.Filter); err != "" {
			return bad(field+".Filter", "%q: %s", s.Filter, err)
		}
		if s.QoS > 1 {
			return bad(field+".QoS", "%d; the fleet uses QoS 0 and 1 only", s.QoS)
		}
		if seen[s.Filter] {
			return bad(field+".Filter", "%q is listed twice", s.Filter)
		}
		seen[s.Filter] = true
	}
	cfg.Subscriptions = append([]Subscription(nil), cfg.Subscriptions...)
	if cfg.Handler == nil {
		if len(cfg.Subscriptions) > 0 {
			return bad("Handler", "required when there are subscriptions")
		}
		cfg.Handler = func(context.Context, Message) {}
	}

	// Sizes and durations.
	switch {
	case cfg.MaxPayload < 0:
		return bad("MaxPayload", "negative")
	case cfg.MaxPayload == 0:
		cfg.MaxPayload = DefaultMaxPayload
	}

	// Will.
	if w := cfg.Will; w != nil {
		if err := validTopic(w.Topic); err != nil {
			return bad("Will.Topic", "%v", err)
		}
		if w.QoS > 1 {
			return bad("Will.QoS", "%d; the fleet uses QoS 0 and 1 only", w.QoS)
		}
		if len(w.Payload) > cfg.MaxPayload {
			return bad("Will.Payload", "%d bytes, over MaxPayload %d", len(w.Payload), cfg.MaxPayload)
		}
		cfg.Will = &Will{Topic: w.Topic, Payload: bytes.Clone(w.Payload), QoS: w.QoS, Retained: w.Retained}
	}
	switch {
	case cfg.QueueLength < 0:
		return bad("QueueLength", "negative")
	case cfg.QueueLength == 0:
		cfg.QueueLength = DefaultQueueLength
	}
	switch {
	case cfg.KeepAlive == 0:
		cfg.KeepAlive = DefaultKeepAlive
	case cfg.KeepAlive < time.Second || cfg.KeepAlive%time.Second != 0 || cfg.KeepAlive > 65535*time.Second:
		// paho keeps whole seconds: 500ms would silently become 0, which disables keepalive.
		return bad("KeepAlive", "%v; must be whole seconds between 1s and 65535s", cfg.KeepAlive)
	}
	switch {
	case cfg.ConnectTimeout < 0:
		return bad("ConnectTimeout", "negative")
	case cfg.ConnectTimeout == 0:
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	switch {
	case cfg.MinBackoff < 0:
		return bad("MinBackoff", "negative")
	case cfg.MinBackoff == 0:
		cfg.MinBackoff = DefaultMinBackoff
	}
	switch {
	case cfg.MaxBackoff < 0:
		return bad("MaxBackoff", "negative")
	case cfg.MaxBackoff == 0:
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return bad("MaxBackoff", "%v is below MinBackoff %v", cfg.MaxBackoff, cfg.MinBackoff)
	}

	// LocalAddr.
	if err := CheckLocalAddr(cfg.LocalAddr); err != nil {
		return Config{}, nil, err
	}

	// Injected dependencies.
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.TLS = tlsCfg
	brokers := make([]address, len(urls))
	for i, u := range urls {
		brokers[i] = address{given: cfg.BrokerURL, url: u, tls: tlsCfg}
		if i > 0 {
			brokers[i].given = cfg.FallbackBrokerURLs[i-1]
			if nameFromURL && u.Hostname() != tlsCfg.ServerName {
				brokers[i].tls = tlsCfg.Clone()
				brokers[i].tls.ServerName = u.Hostname()
			}
		}
	}
	return cfg, brokers, nil
}

// CheckBrokerURL reports whether New would take s as Config.BrokerURL, and if not, why.
func CheckBrokerURL(s string) error {
	if _, reason := parseBrokerURL(s); reason != "" {
		return &ConfigError{Field: "BrokerURL", Reason: reason}
	}
	return nil
}

// CheckLocalAddr reports whether New would take a as Config.LocalAddr, and if not, why. The
// zero Addr is taken (the system chooses); so is any unicast address, whether or not this
// host has it, which only the connection attempt can tell.
func CheckLocalAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return nil
	case a.IsUnspecified():
		// Binding 0.0.0.0 is the system's choice in disguise: ask for it with the zero Addr.
		return &ConfigError{Field: "LocalAddr", Reason: fmt.Sprintf("%s is unspecified; leave LocalAddr zero for the system's choice", a)}
	case a.IsMulticast():
		return &ConfigError{Field: "LocalAddr", Reason: fmt.Sprintf("%s is a multicast address; a connection is made from a unicast one", a)}
	}
	return nil
}

// parseBrokerURL checks a broker address and reduces it to scheme://host:port; it returns
// what is wrong, or "".
func parseBrokerURL(s string) (*url.URL, string) {
	if s == "" {
		return nil, "required"
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err.Error()
	}
	scheme := strings.ToLower(u.Scheme)
	if !brokerSchemes[scheme] {
		return nil, fmt.Sprintf("scheme %q is not MQTT over TLS; use mqtts://host:port", u.Scheme)
	}
	if u.User != nil {
		return nil, "must not carry credentials; the client authenticates with its certificate"
	}
	host := u.Hostname()
	if host == "" {
		return nil, "no host"
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostName(host) {
		return nil, fmt.Sprintf("host %q is neither an IP address nor a DNS name (letters, digits, '-', '.'; punycode for others)", host)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, "must be scheme://host:port with no path, query or fragment"
	}
	port := u.Port()
	if port == "" {
		port = "8883"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Sprintf("port %q is not between 1 and 65535", port)
	}
	return &url.URL{Scheme: scheme, Host: net.JoinHostPort(u.Hostname(), port)}, ""
}

// validHostName reports whether h is made of what DNS names are (RFC 1123, with '_' as some
// internal names have), at most 253 bytes.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
		default:
			return false
		}
	}
	return true
}

// validFilter checks an MQTT topic filter (MQTT 3.1.1 §4.7); it returns what is wrong, or "".
func validFilter(f string) string {
	if f == "" {
		return "empty"
	}
	if len(f) > 65535 || !utf8.ValidString(f) || strings.ContainsRune(f, 0) {
		return "must be valid UTF-8 without NUL, at most 65535 bytes"
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return `"#" must be the last level`
		case l != "#" && strings.Contains(l, "#"):
			return `"#" must be a whole level`
		case l != "+" && strings.Contains(l, "+"):
			return `"+" must be a whole level`
		}
	}
	return ""
}

// validTopic checks a topic name to publish to (MQTT 3.1.1 §4.7.3).
func validTopic(t string) error {
	if t == "" || len(t) > 65535 || !utf8.ValidString(t) || strings.ContainsAny(t, "+#\x00") {
		return fmt.Errorf("%w %q", ErrInvalidTopic, t)
	}
	return nil
}

// ticketReporter is a tls.ClientSessionCache that keeps nothing: it reports each session
// ticket it is given and never offers one back, so no connection resumes a session.
type ticketReporter func()

func (ticketReporter) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

func (r ticketReporter) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		r()
	}
}
