// Package broker is the fleet's embedded MQTT broker, built on mochi-mqtt, for demos
// (`fleetctl broker`), QA benches and integration tests. It enforces the same contract as the
// Mosquitto deployment rendered by transport/mqtt/mosquitto (docs/protocol.md):
//
//   - mutual TLS only: a client must present a certificate that chains to the fleet CA, is
//     valid now and is not revoked (S3, S5), and its connection is cut when that certificate
//     or its CA expires, so a certificate's lifetime bounds its sessions too;
//   - the client's identity is its certificate CN, never the MQTT username, and its MQTT
//     client ID must equal it (S3; CVE-2021-28372 is the reason);
//   - every publish, subscription and delivery is checked with acl.Allowed, and a will message
//     is checked when the client connects; signaling (dev/<id>/<dir>/signal) is refused when
//     retained or above QoS 0, so the broker never keeps it (docs/protocol.md, P2b);
//   - sessions, subscriptions, queued QoS 1/2 messages and retained messages survive a restart
//     when Config.DataDir is set (R3);
//   - a persistent session ends, with its subscriptions and queued messages, once its client
//     has stayed away for Config.SessionExpiry (Mosquitto's persistent_client_expiration), so
//     the cameras a fleet loses over the years do not pile up in the broker.
//
// The broker must never let a client act under another identity, never deliver a message the
// ACL refuses, never log a payload (packets mochi logs are reduced to type, topic and size),
// and never leave a goroutine of its own running after Close. It has no inline client:
// nothing inside the process publishes around the ACL.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"go.etcd.io/bbolt"

	"github.com/camagent/camagent/internal/atomicfile"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMaxPacketSize caps an MQTT packet, in bytes, as Mosquitto's rendered
	// configuration does.
	DefaultMaxPacketSize = 262144
	// DefaultConnectTimeout is how long a new connection has for its TLS handshake and CONNECT.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultSessionExpiry is how long a persistent session outlives its connection. It is
	// the rendered Mosquitto configuration's default too (mosquitto.DefaultSessionExpiry).
	// A device away longer loses only what was queued for it: it subscribes again on every
	// connect and converges from the retained desired state (docs/protocol.md).
	DefaultSessionExpiry = 30 * 24 * time.Hour

	// DefaultMaxSessionsPerIdentity caps the sessions, connected or kept, of one operator,
	// signer, viewer or bootstrap identity. A fleet needs a handful per identity: each
	// fleetctl command that runs (a clean session, gone when it ends), each fleetctl serve
	// instance (a persistent session per instance name, kept 30 days after the instance
	// stops, so renamed or retired instances count for a while), each camview relay, a
	// bootstrap identity's one. 64 leaves room for dozens of commands at once beside several
	// signer instances, and bounds what a stolen certificate can make the broker keep (each
	// persistent session holds its subscriptions and a queue).
	DefaultMaxSessionsPerIdentity = 64

	// DefaultPublishFloodCut is how long a client may go on publishing over its limit before
	// the broker disconnects it (Config.PublishFloodCut).
	DefaultPublishFloodCut = 30 * time.Second

	// minConnectRate is the smallest positive Config.MaxConnectRate: one connection an hour.
	minConnectRate = 1.0 / 3600
	// minPublishRate is the smallest positive PublishLimit.Rate: one message an hour.
	minPublishRate = 1.0 / 3600
)

// Default publish limits, applied by New to a zero PublishLimit.
var (
	// DefaultDevicePublishLimit is a device's or a bootstrap identity's: a burst of 1,000, then
	// 50 a second. A device publishes a few messages per rotation, a reply per command, its
	// state when it changes, telemetry every few minutes, and an answer, refusal or bye per
	// viewer session (it never trickles candidates of its own: protocol.md). A camera may be
	// configured for up to 1,000 viewers (webrtc.MaxMaxViewers), all of whom may ask at once
	// after a relay restarts, and a relay sends offers at up to 200 a second (its own limit):
	// the burst answers them all, the rate a steady stream of joiners. It still caps what a
	// stolen camera certificate delivers to the readers of the fleet's up topics at 50
	// messages (at most 400 KiB, or 1.6 MiB of signaling) a second, and PublishFloodCut ends a
	// flood that lasts.
	DefaultDevicePublishLimit = PublishLimit{Rate: 50, Burst: 1000}
	// DefaultViewerPublishLimit is a viewer relay's: a burst of 2,000, then 200 a second. A
	// relay publishes, for each of its viewers' sessions, an offer, up to 64 trickled
	// candidates (the most a device takes per session) and a bye, on behalf of all its
	// viewers and all their cameras: the burst is 30 sessions set up at once with the most
	// candidates a device takes (a browser gathers some 5 to 20), the rate 3 such sessions a
	// second, sustained.
	DefaultViewerPublishLimit = PublishLimit{Rate: 200, Burst: 2000}
)

// listenerID is the one listener's id; mochi stores it with each persisted session.
const listenerID = "camagent-mqtts"

// dbFile is the bbolt database inside Config.DataDir.
const dbFile = "broker.db"

// Config configures a Broker. New applies the defaults and validates it.
type Config struct {
	// Addr is the TCP listen address, e.g. "127.0.0.1:8883". Port 0 picks a free port; Addr
	// then tells which. Required.
	Addr string
	// TLS is the server side of mutual TLS, normally certs.ServerTLSConfig. It must require
	// and verify client certificates (tls.RequireAndVerifyClientCert with ClientCAs set); nil
	// is an error. The broker uses a clone and never modifies it; the clone gives no session
	// tickets (SessionTicketsDisabled).
	TLS *tls.Config
	// SyncWrites makes every persisted change wait for fsync. Off by default: like Mosquitto
	// (which saves its database every autosave_interval), the embedded broker then survives a
	// crash of its own process without loss, but a power cut of its host may lose the last
	// messages; every write costs a few milliseconds of disk latency otherwise.
	SyncWrites bool
	// DataDir keeps sessions, subscriptions, retained and in-flight messages (a bbolt database,
	// mode 0600 in a 0700 directory made if needed). Empty keeps them in memory only.
	DataDir string
	// Revoked, if set, reports certificate serials to refuse at CONNECT. It is called once per
	// connection attempt, from the connection's goroutine, and must be safe for concurrent use.
	// Nil refuses none.
	Revoked func(serial *big.Int) bool
	// MaxPacketSize caps an incoming MQTT packet, in bytes; a client that sends a larger one is
	// disconnected. Zero means DefaultMaxPacketSize.
	MaxPacketSize int
	// ConnectTimeout bounds the TLS handshake plus the CONNECT packet of a new connection.
	// With MaxConnectRate, it bounds the wait for the ClientHello, and then again, from the
	// connection's turn, the rest of the handshake and the CONNECT packet. Zero means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxConnectRate, if positive, is the budget of new connections per second: once its TLS
	// ClientHello has arrived, a connection waits for its turn before the broker answers, for
	// at most half of ConnectTimeout, and is closed unanswered if its turn would come later
	// (the client backs off and retries). This spreads the reconnection storm after a restart
	// or a network cut over time, at a rate the broker's host can take. The budget is smooth
	// (a burst of one): no second sees more than MaxConnectRate handshakes go on, plus one.
	// It is shared fairly between sources (IPv4 addresses, IPv6 /56s): when the queue is
	// full, a connection from a source that weighs less takes the last queued turn of the
	// source that weighs the most, if that weighs at least six more (a source weighs its
	// turns of the last 30 to 60 s that did not end in an accepted CONNECT, and its turns
	// queued beyond eight); and sockets that have not sent their ClientHello, which take no
	// turn, are capped in number and in the bytes each may send, the excess closed in a like
	// way. One host can so not starve the cameras of turns; a sender with so many addresses
	// that each wastes fewer than six turns a minute can. A queued connection whose client has
	// left by the time its turn comes (it closed or reset the socket, as a client whose
	// connect timeout ended does before it dials again) does not spend the turn: the broker
	// closes it without a handshake and the connections queued after it move up (on Linux,
	// macOS, the BSDs and Solaris, which let it look at the socket without reading; elsewhere
	// it spends the turn and its handshake fails). It weighs as a turn wasted all the same, and
	// SkippedGone counts it. Zero means no limit.
	MaxConnectRate float64
	// SessionExpiry is how long a persistent session (MQTT 3.1.1 CleanSession false; an MQTT
	// 5 client's own interval is capped at it) outlives its client's connection. Then the
	// session ends with its subscriptions and queued messages, in the store too. It counts
	// from when the connection ended, across restarts. Whole seconds; zero means
	// DefaultSessionExpiry.
	SessionExpiry time.Duration
	// Logger receives connection refusals, ACL denials (identity and topic, never payloads) and
	// mochi's own messages. Nil discards them.
	Logger *slog.Logger
	// OnPublish, if set, observes every publish the ACL accepted, will messages included, after
	// it was handed to subscribers. It runs on the publishing client's goroutine, so it must
	// not block, and must copy payload to keep it.
	OnPublish func(clientID, topic string, payload []byte, retained bool)
	// Now, if set, is the clock certificate validity is checked against, in the TLS handshake
	// and again at CONNECT, and that tells how long a connection has left before its
	// certificate chain expires and the broker cuts it (the wait itself runs on the real
	// clock). The publish limits refill by it too. Nil means TLS.Time if that is set, else
	// time.Now.
	Now func() time.Time
	// MaxSessionsPerIdentity caps the sessions one identity of a role other than device
	// (operator, signer, viewer, bootstrap) holds at once, connected or persistent and not yet
	// expired; the "~suffix" of a client id (certs.ClientIDAllowed) is what lets such an
	// identity hold several. A CONNECT that would open one more is refused with CONNACK
	// "server unavailable" (0x03; MQTT 5 "quota exceeded", 0x97). A client connecting again
	// under the client id of a session the broker keeps (a reconnection, a take-over) is
	// never refused. A session stops counting when it ends: its clean connection closes, or
	// it expires (SessionExpiry). A device holds one session at most, its client id being its
	// identity. Zero means DefaultMaxSessionsPerIdentity; negative means no cap.
	MaxSessionsPerIdentity int
	// DevicePublishLimit is the token bucket of each device and bootstrap identity: a publish
	// over it is acknowledged and dropped (never retained nor delivered), counted
	// (PublishesDropped) and logged once per episode. The bucket belongs to the identity:
	// every connection of it shares it, whatever the "~suffix" of its client id, and a
	// reconnection, clean or not, carries on with it. The zero value means
	// DefaultDevicePublishLimit.
	DevicePublishLimit PublishLimit
	// ViewerPublishLimit is the same for each viewer relay identity (relays sharing one
	// identity share it: give each relay a name of its own). Operators and signers
	// have none: an operator's fleet-wide command or a signer's answers are one message per
	// device, thousands within seconds. The zero value means DefaultViewerPublishLimit.
	ViewerPublishLimit PublishLimit
	// PublishFloodCut disconnects a client still publishing over its limit this long after
	// the first message it had dropped (its episode ends once 5 s pass without a drop). No
	// camagent client ever exceeds the defaults, so such a client is broken or its
	// certificate stolen: cutting it stops the broker reading its flood, and as its identity's
	// bucket survives the reconnection, coming back, under any client id, gains it nothing.
	// Zero means
	// DefaultPublishFloodCut; negative means never.
	PublishFloodCut time.Duration
}

// Broker is an embedded MQTT 3.1.1/5 broker over mutual TLS. Start it once; Close it once
// (more calls are harmless). Its methods are safe for concurrent use.
type Broker struct {
	cfg Config
	tls *tls.Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	srv     *mqtt.Server
	ln      *listener

	closeOnce sync.Once

	sessions sessionCap      // MaxSessionsPerIdentity; a max below 1: no cap
	buckets  identityBuckets // the publish buckets, by identity
	dropped  atomic.Uint64   // publishes dropped over their client's limit
	cut      atomic.Uint64   // clients disconnected for publishing over their limit
}

// New validates cfg, applies its defaults and returns a broker that is not yet listening.
func New(cfg Config) (*Broker, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("broker: Config.Addr is required")
	}
	if cfg.TLS == nil {
		return nil, fmt.Errorf("broker: Config.TLS is required")
	}
	if cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, fmt.Errorf("broker: Config.TLS.ClientAuth must be tls.RequireAndVerifyClientCert, is %v", cfg.TLS.ClientAuth)
	}
	if cfg.TLS.ClientCAs == nil {
		return nil, fmt.Errorf("broker: Config.TLS.ClientCAs is required: the fleet CA")
	}
	if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		return nil, fmt.Errorf("broker: Config.TLS has no server certificate")
	}
	if cfg.TLS.GetConfigForClient != nil {
		// A per-client config could drop the client-certificate requirement checked above.
		return nil, fmt.Errorf("broker: Config.TLS.GetConfigForClient is not supported")
	}
	if cfg.TLS.MinVersion != 0 && cfg.TLS.MinVersion < tls.VersionTLS12 {
		return nil, fmt.Errorf("broker: Config.TLS.MinVersion must be TLS 1.2 or later")
	}
	if cfg.MaxPacketSize < 0 || int64(cfg.MaxPacketSize) > math.MaxUint32 {
		return nil, fmt.Errorf("broker: Config.MaxPacketSize %d is out of range", cfg.MaxPacketSize)
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.ConnectTimeout < 0 {
		return nil, fmt.Errorf("broker: Config.ConnectTimeout %v is negative", cfg.ConnectTimeout)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxConnectRate < 0 || math.IsNaN(cfg.MaxConnectRate) || math.IsInf(cfg.MaxConnectRate, 0) {
		return nil, fmt.Errorf("broker: Config.MaxConnectRate %v is not a rate", cfg.MaxConnectRate)
	}
	if cfg.MaxConnectRate > 0 && cfg.MaxConnectRate < minConnectRate {
		// Below it the interval between turns overflows a time.Duration, which would admit
		// everything at once.
		return nil, fmt.Errorf("broker: Config.MaxConnectRate %v: at least %v connections a second (one an hour)", cfg.MaxConnectRate, minConnectRate)
	}
	if cfg.SessionExpiry == 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.SessionExpiry < time.Second || cfg.SessionExpiry%time.Second != 0 || cfg.SessionExpiry/time.Second >= math.MaxUint32 {
		return nil, fmt.Errorf("broker: Config.SessionExpiry %v must be whole seconds, at least 1s and under 2^32 s", cfg.SessionExpiry)
	}
	if cfg.MaxSessionsPerIdentity == 0 {
		cfg.MaxSessionsPerIdentity = DefaultMaxSessionsPerIdentity
	}
	for _, l := range []struct {
		name string
		l    *PublishLimit
		def  PublishLimit
	}{
		{"DevicePublishLimit", &cfg.DevicePublishLimit, DefaultDevicePublishLimit},
		{"ViewerPublishLimit", &cfg.ViewerPublishLimit, DefaultViewerPublishLimit},
	} {
		if *l.l == (PublishLimit{}) {
			*l.l = l.def
		}
		if math.IsNaN(l.l.Rate) || math.IsInf(l.l.Rate, 0) || (l.l.Rate >= 0 && l.l.Rate < minPublishRate) {
			return nil, fmt.Errorf("broker: Config.%s.Rate %v: at least %v messages a second (one an hour), or negative for no limit", l.name, l.l.Rate, minPublishRate)
		}
		if l.l.Rate > 0 && l.l.Burst < 1 {
			return nil, fmt.Errorf("broker: Config.%s.Burst %d must be at least 1", l.name, l.l.Burst)
		}
	}
	if cfg.PublishFloodCut == 0 {
		cfg.PublishFloodCut = DefaultPublishFloodCut
	}
	if cfg.Now == nil {
		cfg.Now = cfg.TLS.Time
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = slog.New(redactHandler{cfg.Logger.Handler()})
	}
	conf := cfg.TLS.Clone()
	if conf.MinVersion == 0 {
		conf.MinVersion = tls.VersionTLS12
	}
	conf.Time = cfg.Now
	// No session tickets: every connection makes a full handshake with a certificate the
	// broker checks (camagent's clients never resume; Mosquitto is configured the same way,
	// mosquitto.RenderOpenSSLConf).
	conf.SessionTicketsDisabled = true
	b := &Broker{cfg: cfg, tls: conf, log: logger}
	b.sessions.max = cfg.MaxSessionsPerIdentity
	return b, nil
}

// Start binds Config.Addr, loads persisted state from Config.DataDir and starts serving. The
// broker is accepting connections when Start returns nil. On error nothing is left running.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return ErrStarted
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(b.cfg.MaxPacketSize)
	// mochi drops retained and queued messages older than a day by default; Mosquitto keeps
	// them, and a device's retained state or a command queued for a device that is off for
	// a weekend must survive (R2, R3). MQTT 5 message expiry still applies.
	caps.MaximumMessageExpiryInterval = 0
	// The fleet uses QoS 0 and 1 only (transport/mqtt refuses 2). mochi keeps an inbound
	// QoS 2 flow under the client's packet id in the same table as the server's deliveries,
	// where it can overwrite one (upstream #545); at most QoS 1 that flow never exists.
	caps.MaximumQos = 1
	// mochi's default never ends a session. With it, mochi ends the session of a client away
	// for longer, with its subscriptions and queued messages (camagent patch 10).
	caps.MaximumSessionExpiryInterval = uint32(b.cfg.SessionExpiry / time.Second)
	// No topic aliases (MQTT 5): mochi stores an alias's topic before any ACL check, and its
	// default of 65535 would let any client pin that many topics of up to 64 KiB. No fleet
	// client uses them; a PUBLISH with one is refused with "topic alias invalid".
	caps.TopicAliasMaximum = 0
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       b.log,
		// $SYS topics are readable by no one (see acl), so there is no point refreshing them;
		// the huge interval also keeps mochi's ticker from writing to the store while it
		// closes.
		SysTopicResendInterval: math.MaxInt32,
	})
	if err := srv.AddHook(&hook{b: b, srv: srv}, nil); err != nil {
		return fmt.Errorf("broker: add acl hook: %w", err)
	}
	if b.cfg.DataDir != "" {
		if err := atomicfile.EnsurePrivateDir(b.cfg.DataDir); err != nil {
			return fmt.Errorf("broker: data dir: %w", err)
		}
		err := srv.AddHook(boltStore{new(bolt.Hook)}, &bolt.Options{
			Path: filepath.Join(b.cfg.DataDir, dbFile),
			// The free-page list is not written at each commit but rebuilt when the store
			// opens (a scan of its pages, as etcd runs bbolt), and kept as a map: a breach
			// commits a few transactions per rotation, each of which wrote the whole list.
			Options: &bbolt.Options{Timeout: time.Second, NoSync: !b.cfg.SyncWrites, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
		})
		if err != nil {
			srv.Close()
			return fmt.Errorf("broker: open %s: %w", filepath.Join(b.cfg.DataDir, dbFile), err)
		}
	}
	ln := newListener(listenerID, b.cfg.Addr, b.tls, b.cfg.ConnectTimeout, b.cfg.MaxConnectRate, b.log)
	if err := srv.AddListener(ln); err != nil {
		srv.Close()
		return fmt.Errorf("broker: listen on %s: %w", b.cfg.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.srv, b.ln, b.started = srv, ln, true
	return nil
}

// Addr returns the host:port the broker is bound to, or "" before Start.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln == nil || b.ln.ln == nil {
		return ""
	}
	return b.ln.Address()
}

// Throttled returns how many new connections were closed unanswered because the connection
// budget (Config.MaxConnectRate) had no turn for them in time, or because a connection from a
// source holding fewer turns took theirs.
func (b *Broker) Throttled() uint64 {
	if ln := b.listener(); ln != nil {
		return ln.throttled.Load()
	}
	return 0
}

// TakenTurns returns how many turns of the connection budget (Config.MaxConnectRate) were
// taken from a queued connection of a source that weighed more (see Config.MaxConnectRate),
// its connection closed unanswered and counted in Throttled too.
func (b *Broker) TakenTurns() uint64 {
	if ln := b.listener(); ln != nil {
		return ln.taken.Load()
	}
	return 0
}

// RefusedEarly returns how many connections the connection budget (Config.MaxConnectRate)
// closed before their TLS ClientHello arrived, because the room for such connections was full:
// the oldest of the source holding the most, old ones of sources holding more than the
// newcomer's or of its own, or new ones.
func (b *Broker) RefusedEarly() uint64 {
	if ln := b.listener(); ln != nil {
		return ln.refusedEarly.Load()
	}
	return 0
}

// SkippedGone returns how many queued connections the connection budget (Config.MaxConnectRate)
// found gone when their turn came (their client had closed or reset the socket, as one whose
// connect timeout ended does before it dials again) and closed without a handshake, passing
// the turn to the connections queued after them. Each weighs as a turn wasted by its source.
// It stays 0 where the broker cannot look at a socket without reading it (other than Linux,
// macOS, the BSDs and Solaris).
func (b *Broker) SkippedGone() uint64 {
	if ln := b.listener(); ln != nil {
		return ln.skippedGone.Load()
	}
	return 0
}

// PeakAdmitted returns the most connections admitted in any one second of the clock since
// Start, counted by the time of their turn in the budget (without Config.MaxConnectRate, by
// their arrival): with MaxConnectRate N, at most N+1. A handshake starts at its turn, or a
// little later on a busy machine; connections completed can bunch above the budget when
// handshakes the broker started within it finish together.
func (b *Broker) PeakAdmitted() int {
	if ln := b.listener(); ln != nil {
		return ln.admitted.peak()
	}
	return 0
}

// Sessions returns how many sessions the broker keeps: its connected clients and the
// persistent sessions of clients that are away and have not yet expired (Config.SessionExpiry).
// It is 0 before Start.
func (b *Broker) Sessions() int {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	if srv == nil {
		return 0
	}
	return srv.Clients.Len()
}

// PublishesDropped returns how many publishes the broker acknowledged and dropped because their
// client was over its publish limit (Config.DevicePublishLimit, Config.ViewerPublishLimit).
func (b *Broker) PublishesDropped() uint64 { return b.dropped.Load() }

// FloodCuts returns how many connections the broker cut for publishing over their limit for
// longer than Config.PublishFloodCut.
func (b *Broker) FloodCuts() uint64 { return b.cut.Load() }

// SessionsRefused returns how many connections the broker refused because their identity held
// Config.MaxSessionsPerIdentity sessions already.
func (b *Broker) SessionsRefused() uint64 { return b.sessions.refused.Load() }

// listener returns the broker's listener; nil before Start.
func (b *Broker) listener() *listener {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ln
}

// URL returns "mqtts://host:port" for Addr, the form paho takes.
func (b *Broker) URL() string {
	addr := b.Addr()
	if addr == "" {
		return ""
	}
	return "mqtts://" + addr
}

// DisconnectSerial cuts every live connection whose client certificate has serial and returns
// how many it cut. It does not stop the same certificate from connecting again: make
// Config.Revoked report the serial first.
func (b *Broker) DisconnectSerial(serial *big.Int) int {
	b.mu.Lock()
	ln := b.ln
	b.mu.Unlock()
	if ln == nil || serial == nil {
		return 0
	}
	n := ln.disconnectSerial(serial)
	if n > 0 {
		b.log.Info("broker: disconnected clients by certificate serial", "serial", serial.Text(16), "count", n)
	}
	return n
}

// Close stops the broker: it stops listening, disconnects every client, waits for every
// connection goroutine, and flushes and closes the store. Persistent sessions stay in the
// store. Close is idempotent and may be called before Start; it returns nil.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		srv := b.srv
		b.mu.Unlock()
		if srv != nil {
			// mochi closes the listener (which waits for its goroutines), waits for the
			// clients it attached, then stops the hooks, closing the store last.
			_ = srv.Close() // it never fails; the store's close error is logged by mochi.
		}
	})
	return nil
}

// Run starts the broker, serves until ctx is done, then closes it. It returns Start's error,
// or Close's.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	return b.Close()
}

// verifiedLeaf returns the client certificate crypto/tls verified on conn, or nil.
func verifiedLeaf(conn *tls.Conn) *x509.Certificate {
	st := conn.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}
