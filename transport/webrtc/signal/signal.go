package signal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/camagent/camagent/internal/strictjson"

	"github.com/camagent/camagent/internal/shape"
)

// Version is the version of the message format, the "v" field of every message. Version 2
// added the session key and the sealed answer.
const Version = 2

// Size caps. A message over MaxMessageSize is refused before it is parsed.
const (
	// MaxMessageSize caps a whole encoded message.
	MaxMessageSize = 32 << 10
	// MaxSDPSize caps the SDP of an Offer or an Answer. A browser's offer for one video
	// track is 3–6 KiB.
	MaxSDPSize = 16 << 10
	// MaxGrantSize caps an Offer's signed grant. It equals certs.MaxGrantSize.
	MaxGrantSize = 4 << 10
	// MaxICEServers caps an Offer's ICE servers.
	MaxICEServers = 4
	// MaxURLsPerServer caps the URLs of one ICE server.
	MaxURLsPerServer = 4
	// MaxURLSize caps one ICE server URL.
	MaxURLSize = 256
	// MaxUsernameSize and MaxCredentialSize cap a TURN server's username and credential.
	MaxUsernameSize   = 256
	MaxCredentialSize = 256
	// MaxCandidateSize caps the candidate line of a Candidate; real ones are under 200 bytes.
	MaxCandidateSize = 1024
	// maxMidSize caps a candidate's sdpMid, maxUfragSize its usernameFragment.
	maxMidSize   = 32
	maxUfragSize = 256
	// maxMLineIndex bounds a candidate's sdpMLineIndex: no offer we answer has more media
	// sections than this.
	maxMLineIndex = 63
)

// Type names a kind of message, the "type" field of every message.
type Type string

// Message types.
const (
	TypeOffer     Type = "offer"     // viewer → camera
	TypeAnswer    Type = "answer"    // camera → viewer, sealed (SealedAnswer)
	TypeCandidate Type = "candidate" // both ways (trickle ICE)
	TypeBye       Type = "bye"       // both ways: the session ended
	TypeRefusal   Type = "refusal"   // camera → viewer: the offer was refused
)

// ByeReason says why a session ended.
type ByeReason string

// Bye reasons: a fixed list, so a Bye can never carry free text (P1).
const (
	ByeHangup   ByeReason = "hangup"   // the viewer or the camera's owner ended it
	ByeExpired  ByeReason = "expired"  // the viewer's grant expired
	ByeRevoked  ByeReason = "revoked"  // a credential rotation raised the grant epoch (S7)
	ByePrivacy  ByeReason = "privacy"  // the camera entered privacy mode
	ByeFailed   ByeReason = "failed"   // ICE or DTLS failed, or the viewer vanished
	ByeShutdown ByeReason = "shutdown" // the agent is stopping
)

var byeReasons = map[ByeReason]bool{
	ByeHangup: true, ByeExpired: true, ByeRevoked: true, ByePrivacy: true, ByeFailed: true, ByeShutdown: true,
}

// Valid reports whether r is one of the ByeReason constants.
func (r ByeReason) Valid() bool { return byeReasons[r] }

// RefusalReason says why an offer was refused.
type RefusalReason string

// Refusal reasons: a fixed list.
const (
	RefuseGrant    RefusalReason = "grant"     // no valid grant for this device, scope and epoch
	RefuseLimit    RefusalReason = "limit"     // the camera serves its maximum of viewers
	RefusePrivacy  RefusalReason = "privacy"   // the camera is in privacy mode
	RefuseBusy     RefusalReason = "busy"      // the camera cannot stream now (no video yet, stopping)
	RefuseBadOffer RefusalReason = "bad_offer" // the offer is malformed or has nothing the camera can send
)

var refusalReasons = map[RefusalReason]bool{
	RefuseGrant: true, RefuseLimit: true, RefusePrivacy: true, RefuseBusy: true, RefuseBadOffer: true,
}

// Valid reports whether r is one of the RefusalReason constants.
func (r RefusalReason) Valid() bool { return refusalReasons[r] }

// Message is implemented by the five message types.
type Message interface {
	// MessageType returns the message's Type.
	MessageType() Type
	// SessionID returns the session the message belongs to.
	SessionID() string
	// Validate checks every field's shape and size.
	Validate() error
}

var (
	_ Message = Offer{}
	_ Message = SealedAnswer{}
	_ Message = Candidate{}
	_ Message = Bye{}
	_ Message = Refusal{}
)

// sessionRe is the shape of a session id: random bytes in lower-case hex.
var sessionRe = shape.New(`^[0-9a-f]*$`, 16, 64)

// NewSession returns a fresh random session id: 16 bytes from crypto/rand in lower-case hex.
func NewSession() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ValidSession reports whether s has the shape of a session id: 16 to 64 lower-case hex
// digits.
func ValidSession(s string) bool { return sessionRe.MatchString(s) }

// keyRe is the shape of a session key: at least 128 random bits in lower-case hex.
var keyRe = shape.New(`^[0-9a-f]*$`, 32, 64)

// NewKey returns a fresh session key: 16 bytes from crypto/rand in lower-case hex.
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// ValidKey reports whether k has the shape of a session key: 32 to 64 lower-case hex digits.
func ValidKey(k string) bool { return keyRe.MatchString(k) }

// Offer asks a camera for a live stream.
type Offer struct {
	// V is Version.
	V int `json:"v"`
	// Session is the viewer's random session id (NewSession); every later message of the
	// session carries it. It is not secret: the camera's messages carry it on
	// dev/<id>/up/signal, which every viewer relay reads.
	Session string `json:"session"`
	// Key is the session's secret (NewKey), known to the viewer and the camera only: the
	// viewer's later Candidates and its Bye must carry it, and the camera never sends it.
	// Without it, any viewer relay that saw a session id could end or feed the session.
	Key string `json:"key"`
	// AnswerKey is the public half of the viewer's AnswerKey for this session (32 bytes,
	// X25519; base64 in JSON): the camera seals its answer to it (SealedAnswer), so that the
	// camera's addresses and ICE credentials in it are read by this viewer only, not by the
	// other viewer relays, which read dev/+/up/signal, nor by the broker.
	AnswerKey []byte `json:"answer_key"`
	// SDP is the viewer's offer, at most MaxSDPSize bytes. It must offer to receive H.264
	// video with packetization-mode=1.
	SDP string `json:"sdp"`
	// Grant is the signed viewer grant (certs.SignGrant), 1 to MaxGrantSize bytes; base64 in
	// JSON. The camera checks it before it makes anything for the session.
	Grant []byte `json:"grant"`
	// ICEServers are STUN and TURN servers the camera may use for this session, such as a
	// TURN relay with short-lived credentials for a viewer behind symmetric NAT. At most
	// MaxICEServers; nil for none.
	ICEServers []ICEServer `json:"ice_servers,omitempty"`
}

// ICEServer is a STUN or TURN server, as in the WebRTC RTCIceServer dictionary.
type ICEServer struct {
	// URLs are 1 to MaxURLsPerServer stun:, turn: or turns: URLs (RFC 7064, RFC 7065).
	URLs []string `json:"urls"`
	// Username and Credential authenticate to a TURN server; both are required for turn:
	// and turns: URLs. Credential is secret: String and LogValue leave it out.
	Username   string `json:"username,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// Answer is the camera's answer to an Offer, in the clear. It never travels so: the camera
// seals it to the offer's AnswerKey (Seal) and sends the SealedAnswer, which the viewer opens
// (AnswerKey.Open).
type Answer struct {
	V       int
	Session string
	// SDP is the camera's answer, with its ICE candidates, at most MaxSDPSize bytes.
	SDP string
}

// SealedAnswer is the message that carries an Answer: its session in the clear, for routing,
// and the answer sealed to the offer's AnswerKey (an anonymous NaCl box: X25519,
// XSalsa20-Poly1305), which only that viewer can open.
type SealedAnswer struct {
	V       int    `json:"v"`
	Session string `json:"session"`
	// Sealed is the session id, a line feed and the SDP, sealed; base64 in JSON.
	Sealed []byte `json:"sealed"`
}

// Candidate carries one trickled ICE candidate.
type Candidate struct {
	V       int    `json:"v"`
	Session string `json:"session"`
	// Key is the session's Offer.Key on a viewer's candidate, which the camera drops without
	// it; empty on the camera's.
	Key       string       `json:"key,omitempty"`
	Candidate ICECandidate `json:"candidate"`
}

// ICECandidate is the JSON form of the WebRTC RTCIceCandidateInit dictionary, field for field
// what pion's webrtc.ICECandidateInit and a browser's candidate.toJSON() produce.
type ICECandidate struct {
	// Candidate is the candidate line ("candidate:…", RFC 8839 §5.1), at most
	// MaxCandidateSize bytes; empty marks the end of candidates.
	Candidate string `json:"candidate"`
	// SDPMid and SDPMLineIndex name the media section; nil when not given.
	SDPMid        *string `json:"sdpMid,omitempty"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex,omitempty"`
	// UsernameFragment is the ICE ufrag the candidate belongs to; nil when not given.
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// Bye ends a session. Either side may send it; the camera sends it when it ends a session by
// itself (grant expiry, rotation, privacy mode, failure, shutdown).
type Bye struct {
	V       int    `json:"v"`
	Session string `json:"session"`
	// Key is the session's Offer.Key on a viewer's Bye, which the camera ignores without it;
	// empty on the camera's.
	Key    string    `json:"key,omitempty"`
	Reason ByeReason `json:"reason"`
}

// Refusal answers an Offer the camera will not serve.
type Refusal struct {
	V       int           `json:"v"`
	Session string        `json:"session"`
	Reason  RefusalReason `json:"reason"`
}

// MessageType returns TypeOffer.
func (Offer) MessageType() Type { return TypeOffer }

// MessageType returns TypeAnswer.
func (SealedAnswer) MessageType() Type { return TypeAnswer }

// MessageType returns TypeCandidate.
func (Candidate) MessageType() Type { return TypeCandidate }

// MessageType returns TypeBye.
func (Bye) MessageType() Type { return TypeBye }

// MessageType returns TypeRefusal.
func (Refusal) MessageType() Type { return TypeRefusal }

// SessionID returns o.Session.
func (o Offer) SessionID() string { return o.Session }

// SessionID returns a.Session.
func (a SealedAnswer) SessionID() string { return a.Session }

// SessionID returns c.Session.
func (c Candidate) SessionID() string { return c.Session }

// SessionID returns b.Session.
func (b Bye) SessionID() string { return b.Session }

// SessionID returns r.Session.
func (r Refusal) SessionID() string { return r.Session }

// Validate checks the version, the session id and key, the SDP, the grant's size and the ICE
// servers.
func (o Offer) Validate() error {
	if err := checkHeader(TypeOffer, o.V, o.Session); err != nil {
		return err
	}
	if err := checkKey(TypeOffer, o.Key, true); err != nil {
		return err
	}
	if err := checkAnswerKey("offer answer key", o.AnswerKey); err != nil {
		return err
	}
	if err := checkSDP(TypeOffer, o.SDP); err != nil {
		return err
	}
	switch {
	case len(o.Grant) == 0:
		return fmt.Errorf("%w: offer has no grant", ErrMalformed)
	case len(o.Grant) > MaxGrantSize:
		return fmt.Errorf("%w: offer grant of %d bytes exceeds %d", ErrTooLarge, len(o.Grant), MaxGrantSize)
	}
	if len(o.ICEServers) > MaxICEServers {
		return fmt.Errorf("%w: offer has %d ICE servers, at most %d", ErrTooLarge, len(o.ICEServers), MaxICEServers)
	}
	for i, s := range o.ICEServers {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("offer ICE server %d: %w", i, err)
		}
	}
	return nil
}

// Validate checks the URLs and, for TURN, that a username and a credential are present. The
// errors name the field, never the credential.
// iceURLRe is the grammar of RFC 7064 and RFC 7065 URIs, with the host limited to a DNS name
// or an IP address (no percent-encoding or sub-delimiters): scheme ":" host [":" port]
// ["?transport=" udp|tcp]. Anything looser reaches pion's URI parser, which loops forever on
// some inputs (pion/stun v4.0.1 ParseURI on "stun:[::1]&3478"): an offer could hang the camera.
var iceURLRe = regexp.MustCompile(`^(?:stun|turn|turns):(\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z](?:[0-9A-Za-z.-]*[0-9A-Za-z])?)(?::([0-9]+))?(?:\?transport=(?:udp|tcp))?$`)

// validICEURL reports whether u is a STUN or TURN URI in iceURLRe's grammar with a real IPv6
// literal, if any, and a port in 1..65535.
func validICEURL(u string) bool {
	m := iceURLRe.FindStringSubmatch(u)
	if m == nil {
		return false
	}
	if len(m[1]) > 255 || len(m[2]) > 5 {
		return false
	}
	if h := m[1]; strings.HasPrefix(h, "[") {
		if ip, err := netip.ParseAddr(h[1 : len(h)-1]); err != nil || !ip.Is6() {
			return false
		}
	}
	if m[2] != "" {
		if p, err := strconv.Atoi(m[2]); err != nil || p < 1 || p > 65535 {
			return false
		}
	}
	return true
}

func (s ICEServer) Validate() error {
	if len(s.URLs) == 0 {
		return fmt.Errorf("%w: ICE server without URLs", ErrMalformed)
	}
	if len(s.URLs) > MaxURLsPerServer {
		return fmt.Errorf("%w: ICE server with %d URLs, at most %d", ErrTooLarge, len(s.URLs), MaxURLsPerServer)
	}
	turn := false
	for _, u := range s.URLs {
		if len(u) > MaxURLSize {
			return fmt.Errorf("%w: ICE server URL of %d bytes exceeds %d", ErrTooLarge, len(u), MaxURLSize)
		}
		if !printable(u) || strings.ContainsAny(u, " /#@") {
			return fmt.Errorf("%w: ICE server URL %q", ErrMalformed, u)
		}
		scheme, rest, _ := strings.Cut(u, ":")
		switch scheme {
		case "stun":
			if strings.Contains(rest, "?") {
				return fmt.Errorf("%w: stun URL %q with a query", ErrMalformed, u)
			}
		case "turn", "turns":
			turn = true
		default:
			return fmt.Errorf("%w: ICE server URL %q has a scheme other than stun, turn and turns", ErrMalformed, u)
		}
		if rest == "" || strings.HasPrefix(rest, "?") {
			return fmt.Errorf("%w: ICE server URL %q has no host", ErrMalformed, u)
		}
		if !validICEURL(u) {
			return fmt.Errorf("%w: ICE server URL %q is not scheme:host[:port][?transport=udp|tcp]", ErrMalformed, u)
		}
	}
	switch {
	case len(s.Username) > MaxUsernameSize:
		return fmt.Errorf("%w: ICE server username of %d bytes exceeds %d", ErrTooLarge, len(s.Username), MaxUsernameSize)
	case len(s.Credential) > MaxCredentialSize:
		return fmt.Errorf("%w: ICE server credential of %d bytes exceeds %d", ErrTooLarge, len(s.Credential), MaxCredentialSize)
	case !printable(s.Username):
		return fmt.Errorf("%w: ICE server username is not printable ASCII", ErrMalformed)
	case !printable(s.Credential):
		return fmt.Errorf("%w: ICE server credential is not printable ASCII", ErrMalformed)
	case turn && (s.Username == "" || s.Credential == ""):
		return fmt.Errorf("%w: TURN server without username and credential", ErrMalformed)
	}
	return nil
}

// Validate checks the version, the session id and the SDP.
func (a Answer) Validate() error {
	if err := checkHeader(TypeAnswer, a.V, a.Session); err != nil {
		return err
	}
	return checkSDP(TypeAnswer, a.SDP)
}

// Validate checks the version, the session id and the sealed answer's size.
func (a SealedAnswer) Validate() error {
	if err := checkHeader(TypeAnswer, a.V, a.Session); err != nil {
		return err
	}
	switch {
	case len(a.Sealed) > maxSealedSize:
		return fmt.Errorf("%w: sealed answer of %d bytes exceeds %d", ErrTooLarge, len(a.Sealed), maxSealedSize)
	case len(a.Sealed) < minSealedSize:
		return fmt.Errorf("%w: sealed answer of %d bytes, at least %d", ErrMalformed, len(a.Sealed), minSealedSize)
	}
	return nil
}

// Validate checks the version, the session id, the key's shape if there is one, and the
// candidate's fields.
func (c Candidate) Validate() error {
	if err := checkHeader(TypeCandidate, c.V, c.Session); err != nil {
		return err
	}
	if err := checkKey(TypeCandidate, c.Key, false); err != nil {
		return err
	}
	return c.Candidate.Validate()
}

// Validate checks the candidate line's size and shape and the optional fields.
func (c ICECandidate) Validate() error {
	if len(c.Candidate) > MaxCandidateSize {
		return fmt.Errorf("%w: candidate of %d bytes exceeds %d", ErrTooLarge, len(c.Candidate), MaxCandidateSize)
	}
	if c.Candidate != "" && (!strings.HasPrefix(c.Candidate, "candidate:") || !printable(c.Candidate)) {
		return fmt.Errorf("%w: candidate line is not a printable \"candidate:\" line", ErrMalformed)
	}
	if c.SDPMid != nil && (len(*c.SDPMid) > maxMidSize || !printable(*c.SDPMid)) {
		return fmt.Errorf("%w: candidate sdpMid", ErrMalformed)
	}
	if c.SDPMLineIndex != nil && *c.SDPMLineIndex > maxMLineIndex {
		return fmt.Errorf("%w: candidate sdpMLineIndex %d", ErrMalformed, *c.SDPMLineIndex)
	}
	if c.UsernameFragment != nil && (len(*c.UsernameFragment) > maxUfragSize || !printable(*c.UsernameFragment)) {
		return fmt.Errorf("%w: candidate usernameFragment", ErrMalformed)
	}
	return nil
}

// Validate checks the version, the session id, the key's shape if there is one, and the
// reason.
func (b Bye) Validate() error {
	if err := checkHeader(TypeBye, b.V, b.Session); err != nil {
		return err
	}
	if err := checkKey(TypeBye, b.Key, false); err != nil {
		return err
	}
	if !b.Reason.Valid() {
		return fmt.Errorf("%w: bye reason %q", ErrMalformed, b.Reason)
	}
	return nil
}

// Validate checks the version, the session id and the reason.
func (r Refusal) Validate() error {
	if err := checkHeader(TypeRefusal, r.V, r.Session); err != nil {
		return err
	}
	if !r.Reason.Valid() {
		return fmt.Errorf("%w: refusal reason %q", ErrMalformed, r.Reason)
	}
	return nil
}

func checkHeader(t Type, v int, session string) error {
	if v != Version {
		return fmt.Errorf("%w: %s version %d, want %d", ErrMalformed, t, v, Version)
	}
	if !ValidSession(session) {
		// The id is random, not secret; but quote it only when it is short and printable.
		if len(session) <= 64 && printable(session) {
			return fmt.Errorf("%w: %s session id %q", ErrMalformed, t, session)
		}
		return fmt.Errorf("%w: %s session id", ErrMalformed, t)
	}
	return nil
}

// checkKey checks a session key's shape; an empty one passes unless required. The errors
// never quote the key.
func checkKey(t Type, key string, required bool) error {
	switch {
	case key == "" && required:
		return fmt.Errorf("%w: %s has no session key", ErrMalformed, t)
	case key != "" && !ValidKey(key):
		return fmt.Errorf("%w: %s session key is not 32 to 64 lower-case hex digits", ErrMalformed, t)
	}
	return nil
}

func checkSDP(t Type, sdp string) error {
	switch {
	case len(sdp) > MaxSDPSize:
		return fmt.Errorf("%w: %s SDP of %d bytes exceeds %d", ErrTooLarge, t, len(sdp), MaxSDPSize)
	case !strings.HasPrefix(sdp, "v=0\r\n") && !strings.HasPrefix(sdp, "v=0\n"):
		return fmt.Errorf("%w: %s SDP does not start with v=0", ErrMalformed, t)
	case !utf8.ValidString(sdp) || strings.ContainsRune(sdp, 0):
		return fmt.Errorf("%w: %s SDP is not text", ErrMalformed, t)
	}
	return nil
}

// printable reports whether s is printable ASCII (space to tilde).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Wire forms: the message's fields with the type beside them. The plain types have no methods,
// so encoding/json uses their fields rather than recursing into MarshalJSON.
type (
	plainOffer     Offer
	plainAnswer    SealedAnswer
	plainCandidate Candidate
	plainBye       Bye
	plainRefusal   Refusal

	wireOffer struct {
		Type Type `json:"type"`
		plainOffer
	}
	wireAnswer struct {
		Type Type `json:"type"`
		plainAnswer
	}
	wireCandidate struct {
		Type Type `json:"type"`
		plainCandidate
	}
	wireBye struct {
		Type Type `json:"type"`
		plainBye
	}
	wireRefusal struct {
		Type Type `json:"type"`
		plainRefusal
	}
)

// MarshalJSON encodes the offer with its type. It does not validate; Encode does.
func (o Offer) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireOffer{TypeOffer, plainOffer(o)})
}

// MarshalJSON encodes the sealed answer with its type.
func (a SealedAnswer) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireAnswer{TypeAnswer, plainAnswer(a)})
}

// MarshalJSON encodes the candidate with its type.
func (c Candidate) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireCandidate{TypeCandidate, plainCandidate(c)})
}

// MarshalJSON encodes the bye with its type.
func (b Bye) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireBye{TypeBye, plainBye(b)})
}

// MarshalJSON encodes the refusal with its type.
func (r Refusal) MarshalJSON() ([]byte, error) {
	return json.Marshal(wireRefusal{TypeRefusal, plainRefusal(r)})
}

// Encode validates m and encodes it as JSON, refusing a result over MaxMessageSize.
func Encode(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("signal: encode %s: %w", m.MessageType(), err)
	}
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %s message of %d bytes exceeds %d", ErrTooLarge, m.MessageType(), len(b), MaxMessageSize)
	}
	return b, nil
}

// Decode decodes any message: it reads the type, then decodes strictly as that type and
// validates. The result is one of Offer, SealedAnswer, Candidate, Bye and Refusal (values, not
// pointers).
func Decode(b []byte) (Message, error) {
	if err := checkSize(b); err != nil {
		return nil, err
	}
	// Only the type is read leniently here, to choose the strict decoder below.
	var peek struct {
		Type Type `json:"type"`
	}
	if err := json.Unmarshal(b, &peek); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch peek.Type {
	case TypeOffer:
		return DecodeOffer(b)
	case TypeAnswer:
		return DecodeSealedAnswer(b)
	case TypeCandidate:
		return DecodeCandidate(b)
	case TypeBye:
		return DecodeBye(b)
	case TypeRefusal:
		return DecodeRefusal(b)
	}
	if len(peek.Type) <= 16 && printable(string(peek.Type)) {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, peek.Type)
	}
	return nil, ErrUnknownType
}

// DecodeOffer decodes and validates an Offer.
func DecodeOffer(b []byte) (Offer, error) {
	var w wireOffer
	if err := decodeStrict(b, TypeOffer, &w, &w.Type); err != nil {
		return Offer{}, err
	}
	o := Offer(w.plainOffer)
	if err := o.Validate(); err != nil {
		return Offer{}, err
	}
	return o, nil
}

// DecodeSealedAnswer decodes and validates a SealedAnswer; AnswerKey.Open opens it.
func DecodeSealedAnswer(b []byte) (SealedAnswer, error) {
	var w wireAnswer
	if err := decodeStrict(b, TypeAnswer, &w, &w.Type); err != nil {
		return SealedAnswer{}, err
	}
	a := SealedAnswer(w.plainAnswer)
	if err := a.Validate(); err != nil {
		return SealedAnswer{}, err
	}
	return a, nil
}

// DecodeCandidate decodes and validates a Candidate.
func DecodeCandidate(b []byte) (Candidate, error) {
	var w wireCandidate
	if err := decodeStrict(b, TypeCandidate, &w, &w.Type); err != nil {
		return Candidate{}, err
	}
	c := Candidate(w.plainCandidate)
	if err := c.Validate(); err != nil {
		return Candidate{}, err
	}
	return c, nil
}

// DecodeBye decodes and validates a Bye.
func DecodeBye(b []byte) (Bye, error) {
	var w wireBye
	if err := decodeStrict(b, TypeBye, &w, &w.Type); err != nil {
		return Bye{}, err
	}
	m := Bye(w.plainBye)
	if err := m.Validate(); err != nil {
		return Bye{}, err
	}
	return m, nil
}

// DecodeRefusal decodes and validates a Refusal.
func DecodeRefusal(b []byte) (Refusal, error) {
	var w wireRefusal
	if err := decodeStrict(b, TypeRefusal, &w, &w.Type); err != nil {
		return Refusal{}, err
	}
	m := Refusal(w.plainRefusal)
	if err := m.Validate(); err != nil {
		return Refusal{}, err
	}
	return m, nil
}

func checkSize(b []byte) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: message of %d bytes exceeds %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	return nil
}

// decodeStrict decodes b strictly into w and checks that its type, read into *got, is want.
func decodeStrict(b []byte, want Type, w any, got *Type) error {
	if err := checkSize(b); err != nil {
		return err
	}
	if err := strictjson.Unmarshal(b, w); err != nil {
		// encoding/json errors quote at most a field name or a JSON type, never a value.
		return fmt.Errorf("%w: %s: %v", ErrMalformed, want, err)
	}
	if *got != want {
		return fmt.Errorf("%w: type %q is not %q", ErrMalformed, truncate(string(*got)), want)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 16 || !printable(s) {
		return "…"
	}
	return s
}

// String describes the offer without its key, SDP, grant or credentials.
func (o Offer) String() string {
	return fmt.Sprintf("offer{session %s, sdp %d bytes, grant %d bytes, %d ICE servers}", o.Session, len(o.SDP), len(o.Grant), len(o.ICEServers))
}

// LogValue is String's structured form.
func (o Offer) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", string(TypeOffer)),
		slog.String("session", o.Session),
		slog.Int("sdp_bytes", len(o.SDP)),
		slog.Int("grant_bytes", len(o.Grant)),
		slog.Int("ice_servers", len(o.ICEServers)),
	)
}

// String describes the server without its credential.
func (s ICEServer) String() string {
	cred := ""
	if s.Credential != "" {
		cred = ", credential redacted"
	}
	return fmt.Sprintf("ice-server{%s%s}", strings.Join(s.URLs, " "), cred)
}

// LogValue is String's structured form.
func (s ICEServer) LogValue() slog.Value {
	return slog.GroupValue(slog.Any("urls", s.URLs), slog.Bool("credential", s.Credential != ""))
}

// String describes the sealed answer by its size.
func (a SealedAnswer) String() string {
	return fmt.Sprintf("answer{session %s, sealed %d bytes}", a.Session, len(a.Sealed))
}

// LogValue is String's structured form.
func (a SealedAnswer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("type", string(TypeAnswer)), slog.String("session", a.Session), slog.Int("sealed_bytes", len(a.Sealed)))
}

// String describes the answer without its SDP, which holds network addresses (P2b).
func (a Answer) String() string {
	return fmt.Sprintf("answer{session %s, sdp %d bytes}", a.Session, len(a.SDP))
}

// LogValue is String's structured form.
func (a Answer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("type", string(TypeAnswer)), slog.String("session", a.Session), slog.Int("sdp_bytes", len(a.SDP)))
}

// String describes the candidate without its address (P2b).
func (c Candidate) String() string {
	return fmt.Sprintf("candidate{session %s, %d bytes}", c.Session, len(c.Candidate.Candidate))
}

// LogValue is String's structured form.
func (c Candidate) LogValue() slog.Value {
	return slog.GroupValue(slog.String("type", string(TypeCandidate)), slog.String("session", c.Session), slog.Int("candidate_bytes", len(c.Candidate.Candidate)))
}

// String describes the bye without its key.
func (b Bye) String() string {
	return fmt.Sprintf("bye{session %s, reason %s}", b.Session, b.Reason)
}

// LogValue is String's structured form.
func (b Bye) LogValue() slog.Value {
	return slog.GroupValue(slog.String("type", string(TypeBye)), slog.String("session", b.Session), slog.String("reason", string(b.Reason)))
}
