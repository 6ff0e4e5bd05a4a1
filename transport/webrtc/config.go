package webrtc

import (
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/h264"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Defaults and bounds of Config's fields.
const (
	DefaultMaxViewers     = 16
	MaxMaxViewers         = 1000
	DefaultQueueLength    = 64
	MaxQueueLength        = 4096
	DefaultNACKBuffer     = 256
	MaxNACKBuffer         = 32768
	DefaultGatherTimeout  = 5 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	// DefaultKeyframeInterval is the least time between two keyframe requests passed to the
	// source, however many viewers ask.
	DefaultKeyframeInterval = 500 * time.Millisecond
)

// Config configures a Streamer.
type Config struct {
	// Source is the camera. Required. The Streamer calls its Run once, from Streamer.Run.
	Source camera.Source

	// MaxViewers caps concurrent sessions, including offers being answered. Zero means
	// DefaultMaxViewers; at most MaxMaxViewers.
	MaxViewers int
	// QueueLength is each viewer's queue, in access units. A viewer whose queue is full drops
	// frames up to the next keyframe. Zero means DefaultQueueLength (about two seconds at
	// 30 fps); at most MaxQueueLength.
	QueueLength int
	// NACKBuffer is how many sent RTP packets each viewer keeps for retransmission on NACK
	// (RFC 4585 §6.2.1); a power of two. Zero means DefaultNACKBuffer (about one second of a
	// 2 Mb/s stream); at most MaxNACKBuffer.
	NACKBuffer int
	// GOPBytes is the budget of the cached group of pictures new viewers start from. Zero
	// means h264.DefaultGOPBytes.
	GOPBytes int

	// ICEServers are STUN and TURN servers the camera itself uses for every session, added
	// to those of each offer. Nil means none: the camera then offers only host candidates
	// (and relayed ones through the viewer's TURN servers). TURN credentials here are
	// secret: they are never logged.
	ICEServers []signal.ICEServer
	// RelayOnly sets the ICE transport policy "relay" (W3C WebRTC 1.0,
	// RTCIceTransportPolicy): the camera gathers and offers only relayed candidates (RFC 8445
	// §5.1.1.2), from the TURN servers of ICEServers and of each offer, so its own addresses
	// never reach a viewer and its media always leaves through a TURN relay. An offer for
	// which no TURN server is known is refused with ErrNoTURNServer, and one for which no
	// TURN server gave a relayed candidate within GatherTimeout with ErrNoRelay, rather than
	// answered with no candidates. False means every candidate type (host, server-reflexive,
	// relayed).
	RelayOnly bool
	// OwnICEServersOnly makes the camera use ICEServers alone and ignore the servers offers
	// name. A TURN server the camera allocates on sees the camera's network address; with
	// RelayOnly it is the one party outside the camera's network that does, so a deployment
	// that must keep that address from whoever holds a viewer identity sets this and runs its
	// own TURN servers. False means each offer's servers are used too.
	OwnICEServersOnly bool
	// LoopbackOnly confines ICE to 127.0.0.1 over UDP: only loopback candidates are gathered
	// and accepted, and every ICE server must be on loopback. For tests and demos on hosts
	// that may send traffic to loopback only. With RelayOnly, the loopback TURN server's
	// relayed candidates (on 127.0.0.1 when it relays there) are the only ones.
	LoopbackOnly bool
	// UDPPortMin and UDPPortMax bound the UDP ports ICE binds for host candidates, for a
	// firewall that opens a range. Both zero means any ephemeral port. The sockets that talk
	// to TURN servers take any ephemeral port: they exchange packets with the server only.
	UDPPortMin, UDPPortMax uint16

	// GatherTimeout bounds how long Offer waits for ICE gathering before it answers with the
	// candidates found so far. Zero means DefaultGatherTimeout.
	GatherTimeout time.Duration
	// ConnectTimeout ends a session whose viewer has not connected this long after the
	// answer. Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// KeyframeInterval is the least time between keyframe requests passed to the source.
	// Zero means DefaultKeyframeInterval.
	KeyframeInterval time.Duration

	// OnEnd, if not nil, is called once for every session that was answered, after its
	// PeerConnection is closed, with the reason it ended; the agent sends a signal.Bye
	// there. It runs on the session's own goroutine; Close, CloseAll and Run return only
	// after it has returned for the sessions they end. It may call the Streamer's methods.
	OnEnd func(session string, reason signal.ByeReason)

	// Logger receives session starts and ends (session id, reason, counts; never SDP,
	// addresses or grants) and pion's warnings. Nil means no logging.
	Logger *slog.Logger
	// Clock times grant expiry, the connect timeout and keyframe request pacing. Nil means
	// the system clock.
	Clock clock.Clock
}

// withDefaults checks cfg and returns it with defaults applied. Errors name the field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Source == nil {
		return cfg, errors.New("webrtc: Config.Source is nil")
	}
	ints := []struct {
		name       string
		v          *int
		def, limit int
	}{
		{"MaxViewers", &cfg.MaxViewers, DefaultMaxViewers, MaxMaxViewers},
		{"QueueLength", &cfg.QueueLength, DefaultQueueLength, MaxQueueLength},
		{"NACKBuffer", &cfg.NACKBuffer, DefaultNACKBuffer, MaxNACKBuffer},
		{"GOPBytes", &cfg.GOPBytes, h264.DefaultGOPBytes, 1 << 30},
	}
	for _, f := range ints {
		switch {
		case *f.v == 0:
			*f.v = f.def
		case *f.v < 0 || *f.v > f.limit:
			return cfg, fmt.Errorf("webrtc: Config.%s %d out of range 1..%d (or 0 for %d)", f.name, *f.v, f.limit, f.def)
		}
	}
	if bits.OnesCount(uint(cfg.NACKBuffer)) != 1 {
		return cfg, fmt.Errorf("webrtc: Config.NACKBuffer %d is not a power of two", cfg.NACKBuffer)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"GatherTimeout", &cfg.GatherTimeout, DefaultGatherTimeout},
		{"ConnectTimeout", &cfg.ConnectTimeout, DefaultConnectTimeout},
		{"KeyframeInterval", &cfg.KeyframeInterval, DefaultKeyframeInterval},
	}
	for _, f := range durations {
		switch {
		case *f.v == 0:
			*f.v = f.def
		case *f.v < 0:
			return cfg, fmt.Errorf("webrtc: Config.%s %v is negative", f.name, *f.v)
		}
	}
	if (cfg.UDPPortMin == 0) != (cfg.UDPPortMax == 0) || cfg.UDPPortMin > cfg.UDPPortMax {
		return cfg, fmt.Errorf("webrtc: Config.UDPPortMin..UDPPortMax %d..%d is not a range (or both 0)", cfg.UDPPortMin, cfg.UDPPortMax)
	}
	if len(cfg.ICEServers) > signal.MaxICEServers {
		return cfg, fmt.Errorf("webrtc: Config.ICEServers has %d servers, at most %d", len(cfg.ICEServers), signal.MaxICEServers)
	}
	for i, s := range cfg.ICEServers {
		if err := s.Validate(); err != nil {
			return cfg, fmt.Errorf("webrtc: Config.ICEServers[%d]: %w", i, err)
		}
		if cfg.LoopbackOnly {
			if err := checkLoopbackServer(s); err != nil {
				return cfg, fmt.Errorf("webrtc: Config.ICEServers[%d]: %w", i, err)
			}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	return cfg, nil
}

// Grant is what a GrantChecker learned from a valid grant.
type Grant struct {
	// Expiry is when the session must end. A zero or past Expiry refuses the offer.
	Expiry time.Time
}

// GrantChecker verifies the signed grant bytes of an offer: signed by a trusted grant key,
// for this device, for scope view, not from an epoch below the device's, not expired. It
// returns an error to refuse; a *RefusalError (for example with signal.RefusePrivacy) is
// passed through as it is, any other error refuses with signal.RefuseGrant. Offer calls it
// once per offer, before anything else is made for the session.
type GrantChecker func(grant []byte) (Grant, error)

// GrantFromCerts turns a grant verified with certs.CheckGrant into a Grant. The session may
// last until ClockSkew after the grant's expiry, as long as CheckGrant would still accept the
// grant.
func GrantFromCerts(g *certs.Grant) Grant {
	return Grant{Expiry: g.Expiry().Add(certs.ClockSkew)}
}
