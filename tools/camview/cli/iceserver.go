package cli

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/pion/stun/v4"

	"github.com/camagent/camagent/transport/webrtc/signal"
)

// ErrBadICEServer reports an --ice-server value ParseICEServer refuses.
var ErrBadICEServer = errors.New("bad ICE server")

// ParseICEServer parses an --ice-server value: a stun: URL (RFC 7064), or a turn: or turns:
// URL (RFC 7065) whose query may name the transport and must carry the TURN username and
// credential as user= and credential=, which are taken out of the URL:
//
//	stun:stun.example.net:3478
//	turn:turn.example.net:3478?transport=udp&user=alice&credential=s3cret
//
// The result passes signal.ICEServer.Validate. Errors never quote the value: it may hold a
// credential.
func ParseICEServer(v string) (signal.ICEServer, error) {
	if len(v) > signal.MaxURLSize+signal.MaxUsernameSize+signal.MaxCredentialSize+32 {
		return signal.ICEServer{}, fmt.Errorf("%w: %d bytes", ErrBadICEServer, len(v))
	}
	base, query, _ := strings.Cut(v, "?")
	scheme, _, _ := strings.Cut(base, ":")
	if strings.Contains(base, "@") {
		// user:credential@host: the errors below would quote the URL, credential and all.
		return signal.ICEServer{}, fmt.Errorf("%w: %s URL: no user before an @; give the TURN username and credential as user= and credential=", ErrBadICEServer, plain(scheme, "the"))
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return signal.ICEServer{}, fmt.Errorf("%w: %s URL: malformed query", ErrBadICEServer, plain(scheme, "the"))
	}
	var s signal.ICEServer
	var transport string
	// In key order, so the same value always gets the same error.
	for _, k := range slices.Sorted(maps.Keys(q)) {
		vs := q[k]
		if len(vs) != 1 {
			return signal.ICEServer{}, fmt.Errorf("%w: %s URL: %s given %d times", ErrBadICEServer, plain(scheme, "the"), plain(k, "a parameter"), len(vs))
		}
		switch k {
		case "user":
			s.Username = vs[0]
		case "credential":
			s.Credential = vs[0]
		case "transport":
			if vs[0] != "udp" && vs[0] != "tcp" {
				return signal.ICEServer{}, fmt.Errorf("%w: transport must be udp or tcp", ErrBadICEServer)
			}
			transport = vs[0]
		default:
			return signal.ICEServer{}, fmt.Errorf("%w: %s URL: unknown parameter %s (want transport, user, credential)", ErrBadICEServer, plain(scheme, "the"), plain(k, "a parameter"))
		}
	}
	u := base
	if transport != "" {
		u += "?transport=" + transport
	}
	s.URLs = []string{u}
	switch scheme {
	case "stun":
		if query != "" {
			return signal.ICEServer{}, fmt.Errorf("%w: a stun URL takes no parameters", ErrBadICEServer)
		}
	case "turn", "turns":
		if s.Username == "" || s.Credential == "" {
			return signal.ICEServer{}, fmt.Errorf("%w: a %s URL needs user= and credential=", ErrBadICEServer, scheme)
		}
	default:
		return signal.ICEServer{}, fmt.Errorf("%w: want a stun:, turn: or turns: URL", ErrBadICEServer)
	}
	// signal's checks name fields and sizes; the URL they may quote holds no credential now.
	if err := s.Validate(); err != nil {
		return signal.ICEServer{}, fmt.Errorf("%w: %w", ErrBadICEServer, err)
	}
	if _, err := stun.ParseURI(u); err != nil {
		return signal.ICEServer{}, fmt.Errorf("%w: %s URL: %w", ErrBadICEServer, scheme, err)
	}
	return s, nil
}

// plain returns s when it is a short lower-case word, else otherwise: errors quote only
// what cannot be a secret.
func plain(s, otherwise string) string {
	if len(s) > 0 && len(s) <= 16 && strings.IndexFunc(s, func(r rune) bool { return r < 'a' || r > 'z' }) < 0 {
		return s
	}
	return otherwise
}
