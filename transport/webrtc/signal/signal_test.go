package signal_test

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

const (
	session = "0123456789abcdef0123456789abcdef"
	key     = "fedcba9876543210fedcba9876543210"
	// answerKey is an X25519 public key (the base point) in its JSON form.
	answerKey = "CQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	sdp       = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
)

func ptr[T any](v T) *T { return &v }

func validOffer() signal.Offer {
	return signal.Offer{
		V: signal.Version, Session: session, Key: key, AnswerKey: signal.NewAnswerKey().Public(), SDP: sdp, Grant: []byte("signed-grant-bytes"),
		ICEServers: []signal.ICEServer{
			{URLs: []string{"stun:127.0.0.1:3478"}},
			{URLs: []string{"turn:127.0.0.1:3478?transport=udp", "turns:turn.example.com"}, Username: "1700000000:viewer", Credential: "s3cret-turn-credential"},
		},
	}
}

func TestMaxGrantSizeMatchesCerts(t *testing.T) {
	if signal.MaxGrantSize != certs.MaxGrantSize {
		t.Fatalf("signal.MaxGrantSize = %d, certs.MaxGrantSize = %d", signal.MaxGrantSize, certs.MaxGrantSize)
	}
}

func TestNewSessionIsValidAndFresh(t *testing.T) {
	a, b := signal.NewSession(), signal.NewSession()
	if !signal.ValidSession(a) || !signal.ValidSession(b) || a == b || len(a) != 32 {
		t.Fatalf("NewSession gave %q and %q", a, b)
	}
}

func TestNewKeyIsValidAndFresh(t *testing.T) {
	a, b := signal.NewKey(), signal.NewKey()
	if !signal.ValidKey(a) || !signal.ValidKey(b) || a == b || len(a) != 32 {
		t.Fatalf("NewKey gave %q and %q", a, b)
	}
	if signal.ValidKey(a[:31]) || signal.ValidKey(strings.ToUpper(a)) {
		t.Fatal("ValidKey takes a key of the wrong shape")
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := []signal.Message{
		validOffer(),
		signal.Offer{V: signal.Version, Session: session, Key: key, AnswerKey: signal.NewAnswerKey().Public(), SDP: sdp, Grant: []byte{1}},
		sealed(t, signal.NewAnswerKey()),
		signal.Candidate{V: signal.Version, Session: session, Candidate: signal.ICECandidate{
			Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr(uint16(0)), UsernameFragment: ptr("abcd"),
		}},
		signal.Candidate{V: signal.Version, Session: session, Key: key}, // the viewer's end of candidates
		signal.Bye{V: signal.Version, Session: session, Reason: signal.ByeExpired},
		signal.Bye{V: signal.Version, Session: session, Key: key, Reason: signal.ByeHangup},
		signal.Refusal{V: signal.Version, Session: session, Reason: signal.RefuseLimit},
	}
	for _, m := range msgs {
		t.Run(string(m.MessageType()), func(t *testing.T) {
			b, err := signal.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"type":"`+string(m.MessageType())+`"`) {
				t.Fatalf("encoding %s lacks its type", b)
			}
			got, err := signal.Decode(b)
			if err != nil {
				t.Fatalf("Decode(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %#v\nwant %#v", got, m)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"an empty input", ``, signal.ErrMalformed},
		{"a JSON array", `[]`, signal.ErrMalformed},
		{"an unknown type", `{"type":"hello","v":1}`, signal.ErrUnknownType},
		{"a message without type", `{"v":2,"session":"` + session + `"}`, signal.ErrUnknownType},
		{"an unknown field", `{"type":"bye","v":2,"session":"` + session + `","reason":"hangup","x":1}`, signal.ErrMalformed},
		{"trailing data", `{"type":"bye","v":2,"session":"` + session + `","reason":"hangup"} {}`, signal.ErrMalformed},
		{"a wrong version", `{"type":"bye","v":1,"session":"` + session + `","reason":"hangup"}`, signal.ErrMalformed},
		{"a missing version", `{"type":"bye","session":"` + session + `","reason":"hangup"}`, signal.ErrMalformed},
		{"an upper-case session", `{"type":"bye","v":2,"session":"` + strings.ToUpper(session) + `","reason":"hangup"}`, signal.ErrMalformed},
		{"a short session", `{"type":"bye","v":2,"session":"abc","reason":"hangup"}`, signal.ErrMalformed},
		{"a free-text bye reason", `{"type":"bye","v":2,"session":"` + session + `","reason":"my cat"}`, signal.ErrMalformed},
		{"a free-text refusal reason", `{"type":"refusal","v":2,"session":"` + session + `","reason":"nope"}`, signal.ErrMalformed},
		{"an offer without grant", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key + `","answer_key":"` + answerKey + `","sdp":"v=0\n"}`, signal.ErrMalformed},
		{"an offer whose grant is not base64", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key + `","answer_key":"` + answerKey + `","sdp":"v=0\n","grant":"!!"}`, signal.ErrMalformed},
		{"an offer whose SDP is not SDP", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key + `","answer_key":"` + answerKey + `","sdp":"hello","grant":"AQ=="}`, signal.ErrMalformed},
		{"an offer without session key", `{"type":"offer","v":2,"session":"` + session + `","answer_key":"` + answerKey + `","sdp":"v=0\n","grant":"AQ=="}`, signal.ErrMalformed},
		{"an offer without answer key", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key + `","sdp":"v=0\n","grant":"AQ=="}`, signal.ErrMalformed},
		{"an offer with a short answer key", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key + `","answer_key":"AAAA","sdp":"v=0\n","grant":"AQ=="}`, signal.ErrMalformed},
		{"an offer with a low-order answer key", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key + `","answer_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","sdp":"v=0\n","grant":"AQ=="}`, signal.ErrMalformed},
		{"an answer in the clear", `{"type":"answer","v":2,"session":"` + session + `","sdp":"v=0\n"}`, signal.ErrMalformed},
		{"an answer sealed in too few bytes", `{"type":"answer","v":2,"session":"` + session + `","sealed":"AAAA"}`, signal.ErrMalformed},
		{"an offer with a short session key", `{"type":"offer","v":2,"session":"` + session + `","key":"` + key[:31] + `","answer_key":"` + answerKey + `","sdp":"v=0\n","grant":"AQ=="}`, signal.ErrMalformed},
		{"an offer with an upper-case session key", `{"type":"offer","v":2,"session":"` + session + `","key":"` + strings.ToUpper(key) + `","answer_key":"` + answerKey + `","sdp":"v=0\n","grant":"AQ=="}`, signal.ErrMalformed},
		{"a bye with a session key of the wrong shape", `{"type":"bye","v":2,"session":"` + session + `","key":"xyz","reason":"hangup"}`, signal.ErrMalformed},
		{"a candidate with a session key of the wrong shape", `{"type":"candidate","v":2,"session":"` + session + `","key":"` + key + `0g","candidate":{"candidate":""}}`, signal.ErrMalformed},
		{"an answer with a NUL in its SDP", `{"type":"answer","v":2,"session":"` + session + `","sdp":"v=0\n\u0000"}`, signal.ErrMalformed},
		{"a candidate that is not a candidate line", `{"type":"candidate","v":2,"session":"` + session + `","candidate":{"candidate":"rm -rf"}}`, signal.ErrMalformed},
		{"a candidate with a huge mline index", `{"type":"candidate","v":2,"session":"` + session + `","candidate":{"candidate":"","sdpMLineIndex":9999}}`, signal.ErrMalformed},
		{"a duplicate-typed message", `{"type":"bye","type":"offer","v":2,"session":"` + session + `","reason":"hangup"}`, signal.ErrMalformed},
		{"an oversized message", `{"type":"bye","v":2,"session":"` + session + `","reason":"hangup","pad":"` + strings.Repeat("x", signal.MaxMessageSize) + `"}`, signal.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			m, err := signal.Decode([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, %v; want %v", m, err, tt.want)
			}
		})
	}
}

func TestTypedDecodersRefuseOtherTypes(t *testing.T) {
	b, err := signal.Encode(signal.Bye{V: signal.Version, Session: session, Reason: signal.ByeHangup})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signal.DecodeRefusal(b); !errors.Is(err, signal.ErrMalformed) {
		t.Fatalf("DecodeRefusal(bye) = %v, want ErrMalformed", err)
	}
	if _, err := signal.DecodeOffer(b); !errors.Is(err, signal.ErrMalformed) {
		t.Fatalf("DecodeOffer(bye) = %v, want ErrMalformed", err)
	}
}

func TestOfferValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*signal.Offer)
		want   error
	}{
		{"accepts a full offer", func(*signal.Offer) {}, nil},
		{"refuses an SDP over the cap", func(o *signal.Offer) { o.SDP = sdp + strings.Repeat("a=x\r\n", signal.MaxSDPSize/5) }, signal.ErrTooLarge},
		{"refuses a grant over the cap", func(o *signal.Offer) { o.Grant = make([]byte, signal.MaxGrantSize+1) }, signal.ErrTooLarge},
		{"refuses too many ICE servers", func(o *signal.Offer) {
			o.ICEServers = make([]signal.ICEServer, signal.MaxICEServers+1)
			for i := range o.ICEServers {
				o.ICEServers[i] = signal.ICEServer{URLs: []string{"stun:127.0.0.1"}}
			}
		}, signal.ErrTooLarge},
		{"refuses an http URL", func(o *signal.Offer) { o.ICEServers[0].URLs = []string{"http://example.com"} }, signal.ErrMalformed},
		{"refuses a stun URL with a path", func(o *signal.Offer) { o.ICEServers[0].URLs = []string{"stun://example.com"} }, signal.ErrMalformed},
		{"refuses a URL without host", func(o *signal.Offer) { o.ICEServers[0].URLs = []string{"turn:?transport=udp"} }, signal.ErrMalformed},
		{"refuses a server without URLs", func(o *signal.Offer) { o.ICEServers[0].URLs = nil }, signal.ErrMalformed},
		{"refuses too many URLs", func(o *signal.Offer) {
			o.ICEServers[0].URLs = []string{"stun:a", "stun:b", "stun:c", "stun:d", "stun:e"}
		}, signal.ErrTooLarge},
		{"refuses a URL over the cap", func(o *signal.Offer) {
			o.ICEServers[0].URLs = []string{"stun:" + strings.Repeat("a", signal.MaxURLSize)}
		}, signal.ErrTooLarge},
		{"refuses TURN without credential", func(o *signal.Offer) { o.ICEServers[1].Credential = "" }, signal.ErrMalformed},
		{"refuses a credential with control characters", func(o *signal.Offer) { o.ICEServers[1].Credential = "a\nb" }, signal.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validOffer()
			tt.change(&o)
			err := o.Validate()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q carries the credential", err)
			}
		})
	}
}

func TestStringsLeaveSecretsAndAddressesOut(t *testing.T) {
	o := validOffer()
	o.SDP = sdp + "a=candidate:1 1 udp 1 192.0.2.7 5000 typ host\r\n"
	a := signal.Answer{V: signal.Version, Session: session, SDP: o.SDP}
	sa, err := signal.Seal(a, signal.NewAnswerKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	c := signal.Candidate{V: signal.Version, Session: session, Key: key, Candidate: signal.ICECandidate{Candidate: "candidate:1 1 udp 1 192.0.2.7 5000 typ host"}}
	b := signal.Bye{V: signal.Version, Session: session, Key: key, Reason: signal.ByeHangup}
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	log.Info("m", "offer", o, "answer", a, "sealed", sa, "candidate", c, "bye", b, "server", o.ICEServers[1])
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprint(a), fmt.Sprint(sa), fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprint(b), fmt.Sprintf("%+v", b), fmt.Sprint(o.ICEServers[1]), logged.String()} {
		for _, secret := range []string{"s3cret", "signed-grant", "192.0.2.7", key} {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows %q", s, secret)
			}
		}
	}
}

func TestReasonsAreAFixedList(t *testing.T) {
	for _, r := range []signal.RefusalReason{"grant", "limit", "privacy", "busy", "bad_offer"} {
		if !r.Valid() {
			t.Errorf("refusal reason %q not valid", r)
		}
	}
	if signal.RefusalReason("other").Valid() || signal.ByeReason("").Valid() {
		t.Error("an unlisted reason is valid")
	}
}

func TestICEServerURLsFollowTheirGrammar(t *testing.T) {
	ok := []string{"stun:127.0.0.1", "stun:stun.example.net:3478", "stun:[::1]:3478", "turn:10.0.0.1:3478?transport=udp",
		"turns:turn.example.net:5349?transport=tcp", "turn:a"}
	bad := []string{
		"stun:[::1]&3478", // loops pion/stun v4.0.1's ParseURI forever
		"stun:[::1", "stun:[127.0.0.1]:3478", "stun:host:0", "stun:host:65536", "stun:host:", "stun:-host",
		"stun:ho%20st", "stun:host:3478:1", "turn:host?transport=sctp", "turn:host?transport=udp&x=1", "turn:host:3478?",
		"stun:host;x", "turn:host!",
	}
	for _, u := range ok {
		s := signal.ICEServer{URLs: []string{u}, Username: "u", Credential: "c"}
		if err := s.Validate(); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for _, u := range bad {
		s := signal.ICEServer{URLs: []string{u}, Username: "u", Credential: "c"}
		if err := s.Validate(); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

// sealed returns an answer for session sealed to k.
func sealed(t *testing.T, k *signal.AnswerKey) signal.SealedAnswer {
	t.Helper()
	sa, err := signal.Seal(signal.Answer{V: signal.Version, Session: session, SDP: sdp}, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// The camera's answer carries its addresses and ICE credentials (P2b); it travels on
// dev/<id>/up/signal, which every viewer relay reads, through the broker. Sealed to the
// offer's answer key, it opens for that viewer only, unaltered, for the session it names.
func TestASealedAnswerOpensForItsViewerOnly(t *testing.T) {
	k := signal.NewAnswerKey()
	sa := sealed(t, k)
	if strings.Contains(string(sa.Sealed), "v=0") {
		t.Fatal("the sealed answer holds its SDP in the clear")
	}
	b, err := signal.Encode(sa)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "127.0.0.1") {
		t.Fatalf("the answer message shows an address: %s", b)
	}
	m, err := signal.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	a, err := k.Open(m.(signal.SealedAnswer))
	if err != nil || a.SDP != sdp || a.Session != session || a.V != signal.Version {
		t.Fatalf("Open = %+v, %v", a, err)
	}

	if _, err := signal.NewAnswerKey().Open(sa); !errors.Is(err, signal.ErrMalformed) {
		t.Errorf("another key opened it: %v", err)
	}
	tampered := sa
	tampered.Sealed = append([]byte(nil), sa.Sealed...)
	tampered.Sealed[len(tampered.Sealed)-1] ^= 1
	if _, err := k.Open(tampered); !errors.Is(err, signal.ErrMalformed) {
		t.Errorf("an altered answer opened: %v", err)
	}
	moved := sa
	moved.Session = strings.Repeat("ab", 16) // the viewer's other session
	if _, err := k.Open(moved); !errors.Is(err, signal.ErrMalformed) || !strings.Contains(err.Error(), "another session") {
		t.Errorf("an answer moved to another session opened: %v", err)
	}
	if _, err := signal.Seal(signal.Answer{V: signal.Version, Session: session, SDP: sdp}, make([]byte, 31)); !errors.Is(err, signal.ErrMalformed) {
		t.Errorf("Seal to a 31-byte key: %v", err)
	}
	// Sealed to a low-order point, the box's shared secret is all zeros: anyone could open it.
	for _, low := range [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...)} {
		if _, err := signal.Seal(signal.Answer{V: signal.Version, Session: session, SDP: sdp}, low); !errors.Is(err, signal.ErrMalformed) {
			t.Errorf("Seal to the low-order point %x: %v", low[:1], err)
		}
	}
	if _, err := signal.Seal(signal.Answer{V: signal.Version, Session: session, SDP: "hello"}, k.Public()); !errors.Is(err, signal.ErrMalformed) {
		t.Errorf("Seal of an answer that is not SDP: %v", err)
	}
}

// The largest answer a camera may send still fits a message once sealed.
func TestTheLargestSealedAnswerFitsAMessage(t *testing.T) {
	big := sdp + strings.Repeat("a", signal.MaxSDPSize-len(sdp))
	sa, err := signal.Seal(signal.Answer{V: signal.Version, Session: strings.Repeat("f", 64), SDP: big}, signal.NewAnswerKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signal.Encode(sa); err != nil {
		t.Fatalf("a sealed answer of the largest SDP does not encode: %v", err)
	}
}
