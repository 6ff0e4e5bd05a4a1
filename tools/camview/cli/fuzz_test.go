package cli_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/camview/cli"
)

// FuzzParseICEServer checks what ParseICEServer promises for any --ice-server value: no
// panic; a result that validates and keeps the username and credential out of its URL; errors that match
// ErrBadICEServer and never quote the credential.
func FuzzParseICEServer(f *testing.F) {
	for _, s := range []string{
		"stun:127.0.0.1:3478",
		"stun:stun.example.net",
		"stun:127.0.0.1:3478?transport=udp",
		"turn:127.0.0.1:3478?user=alice&credential=s3cret",
		"turn:127.0.0.1:3478?transport=udp&user=alice&credential=s3cret",
		"turns:turn.example.net:5349?transport=tcp&user=a&credential=b",
		"turn:127.0.0.1:3478?user=alice",
		"turn:127.0.0.1:3478?user=a&user=b&credential=c",
		"turn:127.0.0.1:3478?user=a&credential=%zz",
		"turn:a@b:1?user=a&credential=c",
		"http://example.net",
		"turn:?user=a&credential=s3cret",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := cli.ParseICEServer(v)
		cred := ""
		if _, query, ok := strings.Cut(v, "?"); ok {
			if q, perr := url.ParseQuery(query); perr == nil {
				cred = q.Get("credential")
			}
		}
		if err != nil {
			if !errors.Is(err, cli.ErrBadICEServer) {
				t.Fatalf("error %v does not match ErrBadICEServer", err)
			}
			// The credential may stand in the error for other reasons: in the URL before the
			// query, which is no secret ("turn:0000?credential=0000"), or in the error's own
			// words ("dent" in "credential"). It is quoted only if the error for the same
			// value with another credential of the same length does not hold it.
			if cred != "" && strings.Contains(err.Error(), cred) {
				_, err2 := cli.ParseICEServer(withOtherCredential(v, cred))
				if err2 == nil || !strings.Contains(err2.Error(), cred) {
					t.Fatalf("error %q quotes the credential (with another: %v)", err, err2)
				}
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("result does not validate: %v", err)
		}
		// The URL is what came before the query, with the transport only: never the
		// username or the credential.
		base, _, _ := strings.Cut(v, "?")
		if len(s.URLs) != 1 || (s.URLs[0] != base && !strings.HasPrefix(s.URLs[0], base+"?transport=")) {
			t.Fatalf("URL %q is not %q with at most a transport", s.URLs, base)
		}
	})
}

// withOtherCredential returns v with the value of every credential= parameter replaced by
// len(cred) copies of a letter cred does not hold (of Q, Z, K, X, J: the last if it holds all).
func withOtherCredential(v, cred string) string {
	var other string
	for _, other = range []string{"Q", "Z", "K", "X", "J"} {
		if !strings.Contains(cred, other) {
			break
		}
	}
	base, query, _ := strings.Cut(v, "?")
	pairs := strings.Split(query, "&")
	for i, p := range pairs {
		k, _, ok := strings.Cut(p, "=")
		if key, err := url.QueryUnescape(k); ok && err == nil && key == "credential" {
			pairs[i] = k + "=" + strings.Repeat(other, len(cred))
		}
	}
	return base + "?" + strings.Join(pairs, "&")
}
