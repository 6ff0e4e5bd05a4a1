package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/acl"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// hook is where the broker's rules meet mochi: admission at CONNECT and the ACL on every
// publish, subscription and delivery.
//
// mochi's Hooks allow a connection or a topic if any hook allows it; the bolt storage hook
// provides neither, so this hook decides alone.
type hook struct {
	mqtt.HookBase
	b   *Broker
	srv *mqtt.Server
}

var _ mqtt.Hook = (*hook)(nil)

// ID names the hook in mochi's logs.
func (h *hook) ID() string { return "camagent-acl" }

// Provides lists the events the hook handles.
func (h *hook) Provides(event byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnPacketRead,
		mqtt.OnACLCheck,
		mqtt.OnPublish,
		mqtt.OnPublished,
		mqtt.OnWillSent,
		mqtt.OnDisconnect,
		mqtt.OnClientExpired,
		mqtt.OnPacketSent,
	}, []byte{event})
}

// OnPacketSent credits a device's publish bucket with one message for each command or
// signaling message delivered to it, not retained: a device answers those (a reply per
// command, an answer or refusal per offer), so an operator pinging a camera back to back, or
// many viewers at once, never make it run out. The credit comes only from what operators
// (commands, signed) and viewer relays (offers, within their own limit) publish to it: a
// device cannot send itself a message (its ACL lets it publish under its up topics only),
// retained messages, which it could have sent again by subscribing again, earn nothing, and
// nor do the signer's answers, which a stolen bootstrap or device certificate could otherwise
// turn into requests at the signer's own pace.
func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Retain {
		return
	}
	c, ok := cl.Net.Conn.(*clientConn)
	if !ok {
		return
	}
	bk := c.rate.Load()
	if bk == nil {
		return
	}
	if _, dir, leaf, ok := topic.Parse(pk.TopicName); ok && dir == topic.Down && (leaf == topic.LeafCmd || leaf == topic.LeafSignal) {
		bk.credit()
	}
}

// OnConnect admits or refuses a client once its CONNECT packet is read. A refused client gets
// CONNACK "not authorized" (0x05 in MQTT 3.1.1, 0x87 in MQTT 5) and is disconnected; one whose
// identity holds Config.MaxSessionsPerIdentity sessions already gets "server unavailable"
// (0x03; MQTT 5 "quota exceeded", 0x97), which tells it to try again later. An admitted
// device, bootstrap identity or viewer gets its client id's publish bucket.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	identity, err := h.b.admit(cl, pk)
	if err != nil {
		h.b.log.Warn("broker: connection refused",
			"client_id", clip(cl.ID), "remote", cl.Net.Remote, "reason", err.Error())
		code := packets.ErrNotAuthorized
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.Err3NotAuthorized
		}
		if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
			h.b.log.Debug("broker: send refusal", "remote", cl.Net.Remote, "error", err)
		}
		return code
	}
	role, _, _ := certs.ParseIdentity(identity) // admit parsed it
	if role != certs.RoleDevice && h.b.sessions.max > 0 {
		if n, ok := h.b.sessions.admit(h.srv, identity, cl); !ok {
			h.b.log.Warn("broker: connection refused: the identity holds the most sessions it may",
				"identity", identity, "client_id", clip(cl.ID), "remote", cl.Net.Remote,
				"sessions", n, "cap", h.b.sessions.max, "reason", ErrTooManySessions.Error())
			code := packets.ErrQuotaExceeded
			if cl.Properties.ProtocolVersion < 5 {
				code = packets.Err3ServerUnavailable
			}
			if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
				h.b.log.Debug("broker: send refusal", "remote", cl.Net.Remote, "error", err)
			}
			return code
		}
	}
	if c, ok := cl.Net.Conn.(*clientConn); ok && c.rate.Load() == nil {
		if limit := h.b.publishLimit(role); !limit.off() {
			c.limited = identity
			c.rate.Store(h.b.buckets.acquire(identity, limit, h.b.cfg.Now()))
		}
	}
	// What mochi stores and shows as the username is the certificate identity, never what
	// the client sent (Mosquitto's use_identity_as_username).
	cl.Properties.Username = []byte(identity)
	h.b.log.Info("broker: client connected", "identity", identity, "remote", cl.Net.Remote,
		"clean", cl.Properties.Clean, "protocol", cl.Properties.ProtocolVersion)
	return nil
}

// OnConnectAuthenticate lets through a client that OnConnect admitted. mochi refuses every
// client no hook authenticates; this checks again that the client ID, the username OnConnect
// set and the certificate identity agree.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	conn := tlsConn(cl)
	if conn == nil {
		return false
	}
	leaf := verifiedLeaf(conn)
	ok := leaf != nil && certs.ClientIDAllowed(certs.CertIdentity(leaf), cl.ID) && string(cl.Properties.Username) == certs.CertIdentity(leaf)
	if c, isCC := cl.Net.Conn.(*clientConn); ok && isCC {
		c.accepted.Store(true)
	}
	return ok
}

// OnPacketRead caps the session expiry interval an MQTT 5 client sets in its DISCONNECT
// (MQTT 5.0 section 3.14.2.2.2) at Config.SessionExpiry, as mochi caps the one of its CONNECT.
// mochi takes the DISCONNECT's as it is, so without this any client could keep its session,
// with everything queued for it, for 2^32-1 seconds.
func (h *hook) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect && pk.Properties.SessionExpiryIntervalFlag {
		pk.Properties.SessionExpiryInterval = min(pk.Properties.SessionExpiryInterval, uint32(h.b.cfg.SessionExpiry/time.Second))
	}
	return pk, nil
}

// admit checks a connecting client and returns its identity.
func (b *Broker) admit(cl *mqtt.Client, pk packets.Packet) (string, error) {
	// mochi keeps the net.Conn the listener handed it; ours always wrap a *tls.Conn.
	conn := tlsConn(cl)
	if conn == nil {
		return "", fmt.Errorf("%w: connection is %T", ErrNoPeerCertificate, cl.Net.Conn)
	}
	leaf := verifiedLeaf(conn)
	if leaf == nil {
		return "", ErrNoPeerCertificate
	}
	// crypto/tls verified the chain, the clientAuth EKU and the validity at Config.Now; doing
	// it again keeps the promise even for a Config.TLS with its own VerifyPeerCertificate.
	identity, err := certs.VerifyClient(leaf, b.tls.ClientCAs, b.cfg.Now())
	if err != nil {
		return "", err
	}
	if _, _, err := certs.ParseIdentity(identity); err != nil {
		return "", err
	}
	if !certs.ClientIDAllowed(identity, cl.ID) {
		return "", fmt.Errorf("%w: client id %q, certificate %q", ErrClientID, clip(cl.ID), identity)
	}
	if b.cfg.Revoked != nil && b.cfg.Revoked(leaf.SerialNumber) {
		return "", fmt.Errorf("%w: %s serial %s", ErrRevoked, identity, leaf.SerialNumber.Text(16))
	}
	if pk.Connect.WillFlag && !acl.Allowed(identity, pk.Connect.WillTopic, true) {
		return "", fmt.Errorf("%w: %s may not publish to %q", ErrWillDenied, identity, clip(pk.Connect.WillTopic))
	}
	if pk.Connect.WillFlag && kept(pk.Connect.WillTopic, pk.Connect.WillQos, pk.Connect.WillRetain) {
		return "", fmt.Errorf("%w: %s: signaling will with qos %d, retain %v", ErrWillDenied, identity, pk.Connect.WillQos, pk.Connect.WillRetain)
	}
	return identity, nil
}

// OnACLCheck decides a publish (write) on topic, a subscription (!write) to the filter topic,
// or the delivery of a message on topic (!write, called by mochi for each subscriber).
//
// The client's identity is its client ID without any "~session" suffix
// (certs.ClientIDAllowed): OnConnect refuses any other client ID, and sessions restored from
// the store were admitted the same way before.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		if acl.Allowed(certs.ClientIDIdentity(cl.ID), topic, true) {
			return true
		}
		if cl.Properties.ProtocolVersion >= 5 && topic != "" {
			// MQTT 5 can say no: mochi answers PUBACK/PUBREC 0x87 (or drops a QoS 0 message).
			h.denied(cl, "publish", topic)
			return false
		}
		// MQTT 3.1.1 has no negative acknowledgement, and for QoS 1 and 2 mochi would
		// disconnect the client, which then resends the same message after reconnecting,
		// forever. So the decision moves to OnPublish, which acknowledges and drops the
		// message as Mosquitto does. An MQTT 5 publish by topic alias only (empty topic)
		// goes the same way, since mochi resolves the alias after this check.
		return true
	}
	if acl.Allowed(certs.ClientIDIdentity(cl.ID), topic, false) {
		return true
	}
	h.denied(cl, "subscribe or receive", topic)
	return false
}

// OnPublish is the last word on a publish, with the topic resolved from any alias: one the
// ACL refuses is acknowledged, then neither retained nor delivered.
//
// A signaling message that the broker would keep (retained, or QoS 1, which queues it in an
// offline subscriber's session) is refused the same way: signaling is QoS 0 and never
// retained (docs/protocol.md, "Topics"; P2b), and a viewer relay that could write
// "dev/+/down/signal" with either would make the broker keep any number of messages, under
// made-up device ids, or fill a device's session queue until its commands no longer fit.
//
// A message from a device or a bootstrap identity larger than its topic's cap (upPayloadCap)
// is refused the same way: no reader takes it, and a stolen camera certificate must not fill
// a signer's queue while the signer is away with messages of the packet size.
//
// So is, first of all, a message from a device, bootstrap identity or viewer relay over its
// connection's publish limit (Config.DevicePublishLimit, Config.ViewerPublishLimit). That
// check costs a lock of the connection's own bucket and a reading of the clock; operators and
// signers, who have no bucket, skip it.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if c, ok := cl.Net.Conn.(*clientConn); ok {
		if bk := c.rate.Load(); bk != nil && !h.withinLimit(cl, c, bk) {
			return pk, packets.CodeSuccessIgnore
		}
	}
	if limit := upPayloadCap(pk.TopicName); limit > 0 && len(pk.Payload) > limit {
		h.b.log.Info("broker: publish over its topic's size refused", "identity", cl.ID, "topic", clip(pk.TopicName), "bytes", len(pk.Payload), "cap", limit)
		return pk, packets.CodeSuccessIgnore
	}
	if acl.Allowed(certs.ClientIDIdentity(cl.ID), pk.TopicName, true) && !kept(pk.TopicName, pk.FixedHeader.Qos, pk.FixedHeader.Retain) {
		return pk, nil
	}
	h.denied(cl, "publish", pk.TopicName)
	// Beware: mochi goes on to deliver a packet whose hook returned any error other than
	// these two (or a Code, for MQTT 5 QoS > 0). CodeSuccessIgnore acknowledges and drops.
	return pk, packets.CodeSuccessIgnore
}

// OnPublished hands each delivered publish to Config.OnPublish.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if pk.Ignore || h.b.cfg.OnPublish == nil {
		return
	}
	h.b.cfg.OnPublish(cl.ID, pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
}

// OnWillSent hands each published will message to Config.OnPublish.
func (h *hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if h.b.cfg.OnPublish == nil {
		return
	}
	h.b.cfg.OnPublish(cl.ID, pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
}

// OnDisconnect runs when a connection ends, under the lock of its session. A clean session
// ends with it: it stops counting against its identity's cap at once. The connection gives back
// its share of its identity's publish bucket, which the last one parks until it has refilled.
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && !cl.IsTakenOver() {
		h.b.sessions.forget(cl)
	}
	if c, ok := cl.Net.Conn.(*clientConn); ok && c.rate.Load() != nil && c.released.CompareAndSwap(false, true) {
		h.b.buckets.release(c.limited, h.b.cfg.Now())
	}
}

// OnClientExpired logs a persistent session that ended because its client stayed away for
// Config.SessionExpiry: an operator looking for a camera that went quiet finds when.
func (h *hook) OnClientExpired(cl *mqtt.Client) {
	h.b.sessions.forget(cl)
	h.b.log.Info("broker: session expired", "client_id", clip(cl.ID),
		"away_since", time.Unix(cl.StopTime(), 0).UTC().Format(time.RFC3339), "expiry", h.b.cfg.SessionExpiry.String())
}

// The largest messages the readers of the devices' up topics take: agent/wire.MaxMessageSize
// for the fleet tools (state, replies, requests, telemetry, claims) and
// transport/webrtc/signal.MaxMessageSize for viewer relays (the broker's tests check both).
const (
	MaxDeviceMessage    = 8 << 10
	MaxSignalingMessage = 32 << 10
)

// upPayloadCap returns the cap on a message's payload on topic, a device's or a bootstrap
// identity's up topic; 0 for any other topic, which the ACL lets only operators, signers and
// viewer relays publish to.
func upPayloadCap(name string) int {
	if _, dir, leaf, ok := topic.Parse(name); ok && dir == topic.Up {
		if leaf == topic.LeafSignal {
			return MaxSignalingMessage
		}
		return MaxDeviceMessage
	}
	if _, dir, _, ok := topic.ParseBoot(name); ok && dir == topic.Up {
		return MaxDeviceMessage
	}
	return 0
}

// kept reports whether a message on topic with qos and retain is signaling
// (dev/<id>/<dir>/signal) that the broker would keep: retained, or queued for an offline
// subscriber.
func kept(name string, qos byte, retain bool) bool {
	if !retain && qos == 0 {
		return false
	}
	levels := strings.Split(name, "/")
	return len(levels) == 4 && levels[0] == "dev" && levels[3] == topic.LeafSignal
}

// withinLimit spends a token of bk, the bucket of cl on c, for one publish and reports whether
// there was one. It logs an episode over the limit when it starts and when it ends, never per
// message, and cuts a client still over its limit Config.PublishFloodCut after its episode
// started.
//
// The cut closes the connection, as a network failure would: mochi then publishes the client's
// will, as MQTT 5 says of any end but the client's own DISCONNECT 0x00 (section 3.1.2.5; mochi's own
// DisconnectClient would end the session as if the client had said goodbye).
func (h *hook) withinLimit(cl *mqtt.Client, c *clientConn, bk *bucket) bool {
	v := bk.take(h.b.cfg.Now())
	if v.ended {
		h.b.log.Info("broker: client back within its publish limit", "identity", cl.ID,
			"dropped", v.endedN, "over_for", v.endedFor.Round(time.Millisecond).String())
	}
	if !v.drop {
		return true
	}
	h.b.dropped.Add(1)
	if v.started {
		h.b.log.Warn("broker: client over its publish limit; dropping its messages until it slows down",
			"identity", cl.ID, "remote", cl.Net.Remote, "rate_per_s", bk.rate, "burst", bk.burst)
	}
	if cut := h.b.cfg.PublishFloodCut; cut > 0 && v.over >= cut && c.cut.CompareAndSwap(false, true) {
		h.b.cut.Add(1)
		level := slog.LevelWarn
		if bk.markCutLogged() {
			level = slog.LevelDebug // cut again after reconnecting within the same episode
		}
		h.b.log.Log(context.Background(), level, "broker: client disconnected: over its publish limit for too long",
			"identity", cl.ID, "remote", cl.Net.Remote, "over_for", v.over.Round(time.Millisecond).String(),
			"dropped", v.dropped, "rate_per_s", bk.rate, "burst", bk.burst)
		if cl.Properties.ProtocolVersion >= 5 {
			// Best effort: the connection closes right behind it. MQTT 3.1.1 has no
			// DISCONNECT from the server. A client that reads nothing must not hold this
			// goroutine: mochi's write has no deadline of its own when keepalive is 0.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_ = cl.WritePacket(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
				ReasonCode:  packets.ErrMessageRateTooHigh.Code,
				Properties:  packets.Properties{ReasonString: packets.ErrMessageRateTooHigh.Reason},
			})
		}
		// mochi goes on reading what it has buffered; cut says the rest is dropped unlogged.
		_ = c.Close()
	}
	return false
}

func (h *hook) denied(cl *mqtt.Client, what, topic string) {
	h.b.log.Info("broker: acl denied", "identity", cl.ID, "action", what, "topic", clip(topic))
}

// clip shortens a client-chosen string for a log line or an error.
func clip(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
