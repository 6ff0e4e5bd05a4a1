package webrtc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	pion "github.com/pion/webrtc/v4"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Everything that configures pion lives here: the SettingEngine, the API per H.264 profile,
// the DTLS certificate, ICE servers and the logger bridge.

// h264PayloadType is the payload type the camera registers for H.264. An answer uses the
// viewer's payload type for the matching codec, so this one never appears on the wire.
const h264PayloadType = 102

// ICE timeouts: a viewer that stops answering consent checks is disconnected after
// iceDisconnected and its session ends (ByeFailed) after iceFailed.
const (
	iceDisconnected = 5 * time.Second
	iceFailed       = 10 * time.Second
	iceKeepalive    = 2 * time.Second
)

// certRenewBefore is how long before its expiry the DTLS certificate is replaced. pion makes
// certificates valid for a month and refuses to start a PeerConnection with an expired one.
const certRenewBefore = 7 * 24 * time.Hour

// h264Capability is the codec the camera sends: H.264 in non-interleaved mode (RFC 6184 §6.3,
// the only mode browsers use), at the source's profile, with NACK, PLI and FIR feedback.
func h264Capability(profileLevelID string) pion.RTPCodecCapability {
	return pion.RTPCodecCapability{
		MimeType:    pion.MimeTypeH264,
		ClockRate:   90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profileLevelID,
		RTCPFeedback: []pion.RTCPFeedback{
			{Type: pion.TypeRTCPFBNACK},
			{Type: pion.TypeRTCPFBNACK, Parameter: "pli"},
			{Type: pion.TypeRTCPFBCCM, Parameter: "fir"},
		},
	}
}

// newSettingEngine returns the SettingEngine every PeerConnection shares.
func newSettingEngine(cfg Config, lf logging.LoggerFactory) (pion.SettingEngine, error) {
	var se pion.SettingEngine
	se.LoggerFactory = lf
	// pion's default mDNS mode (query only) binds UDP port 5353 for every PeerConnection: a
	// listening socket that is not an ICE port (S1). Viewers' .local candidates are ignored.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	// UDP only: ICE-TCP would need a listening TCP socket.
	se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4, pion.NetworkTypeUDP6})
	if cfg.UDPPortMin != 0 {
		if err := se.SetEphemeralUDPPortRange(cfg.UDPPortMin, cfg.UDPPortMax); err != nil {
			return se, fmt.Errorf("webrtc: UDP port range: %w", err)
		}
	}
	if cfg.LoopbackOnly {
		// pion skips loopback interfaces unless told otherwise. The filters below choose the
		// addresses host candidates and TURN client sockets bind to, and the remote
		// candidates accepted; pion applies none of them to the TURN server's address or to
		// the relayed address it allocates, so relaying through a loopback TURN server
		// (checkLoopbackServer) works, with relayed candidates on 127.0.0.1.
		se.SetIncludeLoopbackCandidate(true)
		se.SetNetworkTypes([]pion.NetworkType{pion.NetworkTypeUDP4})
		se.SetInterfaceFilter(isLoopbackInterface)
		se.SetIPFilter(isLoopback4)
		se.SetRemoteIPFilter(isLoopback4)
	}
	return se, nil
}

func isLoopbackInterface(name string) bool {
	iface, err := net.InterfaceByName(name)
	return err == nil && iface.Flags&net.FlagLoopback != 0
}

func isLoopback4(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil }

// apiCache holds the pion API for the source's current profile. An API carries a
// MediaEngine, which names one profile-level-id; a source whose profile changes (an encoder
// restarted with other settings) gets a new API for later offers.
type apiCache struct {
	mu             sync.Mutex
	profileLevelID string
	api            *pion.API
}

func (s *Streamer) apiFor(profileLevelID string) (*pion.API, error) {
	c := &s.apis
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api != nil && c.profileLevelID == profileLevelID {
		return c.api, nil
	}
	me := &pion.MediaEngine{}
	codec := pion.RTPCodecParameters{RTPCodecCapability: h264Capability(profileLevelID), PayloadType: h264PayloadType}
	if err := me.RegisterCodec(codec, pion.RTPCodecTypeVideo); err != nil {
		return nil, fmt.Errorf("webrtc: register H.264 %s: %w", profileLevelID, err)
	}
	reg := &interceptor.Registry{}
	// The NACK responder keeps the last NACKBuffer packets of each stream and resends those
	// a viewer reports lost. It works only while someone reads the sender's RTCP
	// (session.readRTCP), as do the sender reports below.
	responder, err := nack.NewResponderInterceptor(
		nack.ResponderSize(uint16(s.cfg.NACKBuffer)),
		nack.WithResponderLoggerFactory(s.pionLog),
	)
	if err != nil {
		return nil, fmt.Errorf("webrtc: NACK responder: %w", err)
	}
	reg.Add(responder)
	// RTCP sender reports (RFC 3550 §6.4.1) let the viewer map RTP time to wall-clock time.
	sr, err := report.NewSenderInterceptor(report.WithSenderLoggerFactory(s.pionLog))
	if err != nil {
		return nil, fmt.Errorf("webrtc: sender reports: %w", err)
	}
	reg.Add(sr)
	c.api = pion.NewAPI(pion.WithMediaEngine(me), pion.WithInterceptorRegistry(reg), pion.WithSettingEngine(s.settings))
	c.profileLevelID = profileLevelID
	return c.api, nil
}

// certificate returns the DTLS certificate every PeerConnection presents. It is made once,
// in New, and replaced only when it nears its expiry. It is judged by the wall clock, not
// Config.Clock, because that is what pion checks it against.
func (s *Streamer) certificate() (pion.Certificate, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if s.cert != nil && time.Until(s.cert.Expires()) > certRenewBefore {
		return *s.cert, nil
	}
	// ECDSA P-256: what browsers make by default, and cheap to sign with on a Pi.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pion.Certificate{}, fmt.Errorf("webrtc: DTLS key: %w", err)
	}
	cert, err := pion.GenerateCertificate(key)
	if err != nil {
		return pion.Certificate{}, fmt.Errorf("webrtc: DTLS certificate: %w", err)
	}
	if s.cert != nil {
		s.log.Info("webrtc: renewed the DTLS certificate", "expires", cert.Expires())
	}
	s.cert = cert
	return *cert, nil
}

// iceServers returns the pion ICE servers for one session, the camera's own then the
// offer's (unless Config.OwnICEServersOnly), and how many turn: and turns: URLs they have.
func (s *Streamer) iceServers(fromOffer []signal.ICEServer) (servers []pion.ICEServer, turnURLs int, err error) {
	if s.cfg.OwnICEServersOnly {
		fromOffer = nil
	}
	all := make([]pion.ICEServer, 0, len(s.cfg.ICEServers)+len(fromOffer))
	for _, srv := range append(append([]signal.ICEServer(nil), s.cfg.ICEServers...), fromOffer...) {
		if s.cfg.LoopbackOnly {
			if err := checkLoopbackServer(srv); err != nil {
				return nil, 0, err
			}
		}
		all = append(all, pion.ICEServer{
			URLs:           append([]string(nil), srv.URLs...),
			Username:       srv.Username,
			Credential:     srv.Credential,
			CredentialType: pion.ICECredentialTypePassword,
		})
	}
	return all, turnURLCount(s.cfg.ICEServers) + turnURLCount(fromOffer), nil
}

// turnURLCount counts the turn: and turns: URLs of servers (RFC 7065 §3).
func turnURLCount(servers []signal.ICEServer) int {
	n := 0
	for _, srv := range servers {
		for _, u := range srv.URLs {
			if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
				n++
			}
		}
	}
	return n
}

// checkLoopbackServer refuses an ICE server that is not on loopback. Its errors are wrapped
// by the caller.
func checkLoopbackServer(srv signal.ICEServer) error {
	for _, u := range srv.URLs {
		uri, err := stun.ParseURI(u)
		if err != nil {
			return fmt.Errorf("ICE server URL %q: %w", u, err)
		}
		ip := net.ParseIP(uri.Host)
		if uri.Host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("ICE server %q is not on loopback (Config.LoopbackOnly)", uri.Host)
		}
	}
	return nil
}

// setProfileLevelID rewrites the profile-level-id of every H.264 format of the video
// sections of an SDP to profileLevelID.
//
// pion answers with the viewer's own fmtp line for the codec it matched, and it matches H.264
// on profile_idc and the constraint byte only (RFC 6184 §8.2.2 lets the level differ). The
// answer is the camera's statement of what it sends, so it names the source's real
// profile-level-id. pion refuses a modified SDP in SetLocalDescription, so this is applied to
// the copy sent to the viewer; pion's own copy is used for nothing once the session is
// negotiated, since the camera never renegotiates.
func setProfileLevelID(sdp, profileLevelID string) string {
	lines := strings.SplitAfter(sdp, "\n")
	// Pass 1: the H.264 payload types of each video section, by section start.
	h264PTs := map[int]map[string]bool{}
	section, video := -1, false
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(t, "m=") {
			section, video = i, strings.HasPrefix(t, "m=video ")
			continue
		}
		if !video {
			continue
		}
		if rest, ok := strings.CutPrefix(t, "a=rtpmap:"); ok {
			pt, enc, _ := strings.Cut(rest, " ")
			if name, _, _ := strings.Cut(enc, "/"); strings.EqualFold(name, "H264") {
				if h264PTs[section] == nil {
					h264PTs[section] = map[string]bool{}
				}
				h264PTs[section][pt] = true
			}
		}
	}
	// Pass 2: rewrite their fmtp lines.
	section = -1
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(t, "m=") {
			section = i
			continue
		}
		rest, ok := strings.CutPrefix(t, "a=fmtp:")
		if !ok {
			continue
		}
		pt, params, _ := strings.Cut(rest, " ")
		if !h264PTs[section][pt] {
			continue
		}
		ps := strings.Split(params, ";")
		for j, p := range ps {
			if k, _, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "profile-level-id") {
				ps[j] = "profile-level-id=" + profileLevelID
			}
		}
		lines[i] = "a=fmtp:" + pt + " " + strings.Join(ps, ";") + l[len(t):]
	}
	return strings.Join(lines, "")
}

// zeroRelatedAddresses rewrites the related address and port (RFC 8839 §5.1 "raddr" and
// "rport") of every candidate line of an SDP to 0.0.0.0 and 0, as browsers do. pion fills a
// relayed candidate's related address with the local address of its socket to the TURN
// server, which over TCP or TLS is the camera's own LAN address; relay-only mode promises the
// viewer never learns it. Like setProfileLevelID, it is applied to the copy sent to the
// viewer: the related address plays no part in connectivity checks (RFC 8445 §5.1.1.2 keeps
// it for diagnostics).
func zeroRelatedAddresses(sdp string) string {
	lines := strings.SplitAfter(sdp, "\n")
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if !strings.HasPrefix(t, "a=candidate:") {
			continue
		}
		fields := strings.Split(t, " ")
		for j := 0; j+1 < len(fields); j++ {
			switch fields[j] {
			case "raddr":
				fields[j+1] = "0.0.0.0"
				j++
			case "rport":
				fields[j+1] = "0"
				j++
			}
		}
		lines[i] = strings.Join(fields, " ") + l[len(t):]
	}
	return strings.Join(lines, "")
}

// pionLogger bridges pion's loggers to slog. pion's errors become warnings and its warnings
// debug lines, with anything that looks like an IP address masked (P2b); its info, debug and
// trace output, full of candidates, is dropped.
type pionLogger struct{ log *slog.Logger }

var (
	_ logging.LoggerFactory = pionLogger{}
	_ logging.LeveledLogger = pionLogger{}
)

// NewLogger returns a logger for one pion scope.
func (l pionLogger) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{l.log.With("pion", scope)}
}

func (pionLogger) Trace(string)          {}
func (pionLogger) Tracef(string, ...any) {}
func (pionLogger) Debug(string)          {}
func (pionLogger) Debugf(string, ...any) {}
func (pionLogger) Info(string)           {}
func (pionLogger) Infof(string, ...any)  {}

func (l pionLogger) Warn(msg string) { l.log.Debug("webrtc: pion: " + maskAddrs(msg)) }

func (l pionLogger) Warnf(format string, args ...any) { l.Warn(fmt.Sprintf(format, args...)) }

func (l pionLogger) Error(msg string) { l.log.Warn("webrtc: pion: " + maskAddrs(msg)) }

func (l pionLogger) Errorf(format string, args ...any) { l.Error(fmt.Sprintf(format, args...)) }

// addrRe matches IPv6 addresses that end in an embedded IPv4 address (RFC 4291 §2.5.5, tried
// first so that no octet is left behind), IPv4 addresses, and runs of hex groups joined by two
// or more colons (IPv6 addresses, and harmlessly some times of day).
var addrRe = regexp.MustCompile(`(?:[0-9A-Fa-f]{0,4}:){2,6}\d{1,3}(?:\.\d{1,3}){3}\b|\b\d{1,3}(?:\.\d{1,3}){3}\b|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}`)

func maskAddrs(s string) string { return addrRe.ReplaceAllString(s, "<addr>") }

// maskedError is an error of pion's with the network addresses in its message masked
// (maskAddrs). pion quotes a candidate line it cannot parse whole, in AddICECandidate and in
// SetRemoteDescription, and the errors the Streamer returns reach the caller's logs (P2b, P4).
type maskedError struct{ err error }

func (e maskedError) Error() string { return maskAddrs(e.err.Error()) }

// Unwrap returns pion's error, so errors.Is still finds pion's sentinels.
func (e maskedError) Unwrap() error { return e.err }

// masked wraps a pion error whose message may quote the viewer's SDP or candidates.
func masked(err error) error {
	if err == nil {
		return nil
	}
	return maskedError{err}
}
