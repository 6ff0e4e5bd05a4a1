package certs

import (
	"errors"
	"testing"
	"time"
)

func TestGrantChecks(t *testing.T) {
	k, _ := NewSigningKey()
	other, _ := NewSigningKey()
	v := NewVerifier(k.Public())
	g := Grant{Device: "cam-0001", Epoch: 3, Scope: ScopeView, Subject: "viewer-1", IssuedAt: t0.Unix(), ExpiresAt: t0.Add(time.Hour).Unix()}
	good, err := SignGrant(k, g)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := SignGrant(other, g)
	for _, tc := range []struct {
		name   string
		b      []byte
		device string
		epoch  uint64
		now    time.Time
		want   error
	}{
		{"a current grant is honoured", good, "cam-0001", 3, t0, nil},
		{"a grant from an older epoch is refused after a rotation", good, "cam-0001", 4, t0, ErrOldEpoch},
		{"another device's grant is refused", good, "cam-0002", 3, t0, ErrWrongTarget},
		{"an expired grant is refused", good, "cam-0001", 3, t0.Add(time.Hour + ClockSkew + time.Second), ErrExpired},
		{"a grant signed by an untrusted key is refused", forged, "cam-0001", 3, t0, ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OpenGrant(v, tc.b)
			if err == nil {
				err = CheckGrant(got, tc.device, tc.epoch, ScopeView, tc.now)
			}
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDesiredRoundTripAndDomain(t *testing.T) {
	k, _ := NewSigningKey()
	b, err := SignDesired(k, Desired{Target: TargetFleet, Version: 5, Epoch: 2, Incident: "INC-2019-12", IssuedAt: t0.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenDesired(NewVerifier(k.Public()), b)
	if err != nil || d.Epoch != 2 || d.Incident != "INC-2019-12" {
		t.Fatalf("%+v, %v", d, err)
	}
	if _, _, err := OpenCommand(NewVerifier(k.Public()), b); err == nil {
		t.Fatal("desired state opened as a command")
	}
	if _, err := SignDesired(k, Desired{Target: "*", Version: 1, Incident: "a b"}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("free-text incident: %v", err)
	}
}

func FuzzOpenGrant(f *testing.F) {
	k := fuzzKey()
	g, _ := SignGrant(k, Grant{Device: "cam-0001", Epoch: 1, Scope: ScopeView, Subject: "v", IssuedAt: 1, ExpiresAt: 100})
	f.Add(g)
	v := NewVerifier(k.Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		exp, uerr := GrantExpiryUnverified(b)
		if g, err := OpenGrant(v, b); err == nil {
			_ = CheckGrant(g, "cam-0001", 1, ScopeView, t0)
			// What a verified grant states, the unverified reading states too.
			if uerr != nil || !exp.Equal(g.Expiry()) {
				t.Fatalf("GrantExpiryUnverified = %v, %v; the verified grant expires %v", exp, uerr, g.Expiry())
			}
		}
	})
}

// GrantExpiryUnverified reads the expiry of a grant signed by any key, and refuses what is
// not a grant.
func TestGrantExpiryUnverified(t *testing.T) {
	k := fuzzKey()
	g, err := SignGrant(k, Grant{Device: "cam-0001", Epoch: 1, Scope: ScopeView, Subject: "v", IssuedAt: 1000, ExpiresAt: 4600})
	if err != nil {
		t.Fatal(err)
	}
	if exp, err := GrantExpiryUnverified(g); err != nil || !exp.Equal(time.Unix(4600, 0)) {
		t.Fatalf("GrantExpiryUnverified = %v, %v; want %v", exp, err, time.Unix(4600, 0))
	}
	d, _ := SignDesired(k, Desired{Target: "cam-0001", Version: 1, Epoch: 1})
	for _, b := range [][]byte{nil, []byte("{}"), []byte("not json"), d, make([]byte, MaxGrantSize+1)} {
		if _, err := GrantExpiryUnverified(b); err == nil {
			t.Errorf("GrantExpiryUnverified(%.20q) took it", b)
		}
	}
}

func FuzzOpenDesired(f *testing.F) {
	k := fuzzKey()
	d, _ := SignDesired(k, Desired{Target: "cam-0001", Version: 1, Epoch: 1})
	f.Add(d)
	v := NewVerifier(k.Public())
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = OpenDesired(v, b)
	})
}
