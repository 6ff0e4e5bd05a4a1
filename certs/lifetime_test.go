package certs

import (
	"errors"
	"math"
	"strconv"
	"testing"
	"time"
)

// A lifetime cap must hold for every pair of times, including those whose difference in
// nanoseconds overflows an int64 (time.Duration): a grant or command that lasts centuries is
// refused however its times are chosen.
func TestLifetimeCapsHoldForHugeLifetimes(t *testing.T) {
	k, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	iat := t0.Unix()
	for _, tc := range []struct {
		name     string
		iat, exp int64
	}{
		// 18446744074 s is just over 2^64 ns: times 1e9 it wraps to a third of a second.
		{"a lifetime that wraps to under a second is refused", iat, iat + 18446744074},
		// 9223372037 s is just over 2^63 ns: times 1e9 it wraps to a negative duration.
		{"a lifetime that wraps negative is refused", iat, iat + 9223372037},
		// The difference itself overflows int64.
		{"times whose difference overflows are refused", math.MinInt64 + 1, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := Grant{Device: "cam-0001", Epoch: 1, Scope: ScopeView, Subject: "viewer-1", IssuedAt: tc.iat, ExpiresAt: tc.exp}
			if _, err := SignGrant(k, g); !errors.Is(err, ErrMalformed) {
				t.Errorf("SignGrant of a %d s grant = %v, want ErrMalformed", uint64(tc.exp-tc.iat), err)
			}
			c := Command{Type: "ping", Target: "cam-0001", Seq: 1, IssuedAt: tc.iat, ExpiresAt: tc.exp}
			if _, err := SignCommand(k, c); !errors.Is(err, ErrMalformed) {
				t.Errorf("SignCommand of a %d s command = %v, want ErrMalformed", uint64(tc.exp-tc.iat), err)
			}
		})
	}
	t.Run("a grant signed with a huge lifetime is refused when opened", func(t *testing.T) {
		// What a signer without the check would send: the device must refuse it itself.
		g := Grant{Device: "cam-0001", Epoch: 1, Scope: ScopeView, Subject: "viewer-1", IssuedAt: iat, ExpiresAt: iat + 18446744074}
		body := []byte(`{"device":"cam-0001","epoch":1,"scope":"view","sub":"viewer-1","iat":` +
			strconv.FormatInt(g.IssuedAt, 10) + `,"exp":` + strconv.FormatInt(g.ExpiresAt, 10) + `}`)
		b, err := seal(k, domainGrant, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := OpenGrant(NewVerifier(k.Public()), b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("OpenGrant = %v, want ErrMalformed", err)
		}
	})
	t.Run("the longest allowed lifetimes are still accepted", func(t *testing.T) {
		g := Grant{Device: "cam-0001", Epoch: 1, Scope: ScopeView, Subject: "viewer-1", IssuedAt: iat, ExpiresAt: iat + int64(MaxGrantLifetime/time.Second)}
		if _, err := SignGrant(k, g); err != nil {
			t.Errorf("SignGrant = %v", err)
		}
		c := Command{Type: "ping", Target: "cam-0001", Seq: 1, IssuedAt: iat, ExpiresAt: iat + int64(MaxCommandLifetime/time.Second)}
		if _, err := SignCommand(k, c); err != nil {
			t.Errorf("SignCommand = %v", err)
		}
	})
}
