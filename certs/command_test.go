package certs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustSign(t testing.TB, k *SigningKey, c Command) []byte {
	t.Helper()
	b, err := SignCommand(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ping(target string, seq uint64, iat time.Time) Command {
	return Command{Type: "ping", Target: target, Seq: seq, IssuedAt: iat.Unix(), ExpiresAt: iat.Add(5 * time.Minute).Unix()}
}

func TestCommandChecks(t *testing.T) {
	k, _ := NewSigningKey()
	other, _ := NewSigningKey()
	v := NewVerifier(k.Public())
	now := t0
	good := mustSign(t, k, ping("cam-0001", 10, now))

	tamper := func(b []byte) []byte {
		var s signed
		json.Unmarshal(b, &s)
		body, _ := base64.RawURLEncoding.DecodeString(s.Body)
		body = []byte(strings.Replace(string(body), `"seq":10`, `"seq":99`, 1))
		s.Body = base64.RawURLEncoding.EncodeToString(body)
		out, _ := json.Marshal(s)
		return out
	}
	unsigned := func(b []byte) []byte {
		var s signed
		json.Unmarshal(b, &s)
		s.Sig = ""
		out, _ := json.Marshal(s)
		return out
	}
	for _, tc := range []struct {
		name string
		env  []byte
		hwm  uint64
		now  time.Time
		want error
	}{
		{"a valid command for this device is accepted", good, 9, now, nil},
		{"a fleet-wide command is accepted", mustSign(t, k, ping(TargetFleet, 11, now)), 9, now, nil},
		{"a command signed by an unknown key is refused", mustSign(t, other, ping("cam-0001", 10, now)), 0, now, ErrUnknownKey},
		{"a tampered body is refused", tamper(good), 0, now, ErrBadSignature},
		{"an unsigned envelope is refused", unsigned(good), 0, now, ErrMalformed},
		{"a command for another device is refused", mustSign(t, k, ping("cam-0002", 10, now)), 0, now, ErrWrongTarget},
		{"a replayed sequence is refused", good, 10, now, ErrReplay},
		{"an older sequence is refused", good, 11, now, ErrReplay},
		{"an expired command is refused", good, 0, now.Add(5*time.Minute + ClockSkew + time.Second), ErrExpired},
		{"an expired command within the skew is accepted", good, 0, now.Add(5*time.Minute + ClockSkew - time.Second), nil},
		{"a command from the future is refused", good, 0, now.Add(-ClockSkew - time.Second), ErrNotYetValid},
		{"an oversized envelope is refused", append(good, make([]byte, MaxEnvelopeSize)...), 0, now, ErrTooLarge},
		{"garbage is refused", []byte("{not json"), 0, now, ErrMalformed},
		{"trailing data is refused", append(append([]byte{}, good...), []byte(" {}")...), 0, now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := OpenCommand(v, tc.env)
			if err == nil {
				err = CheckCommand(c, "cam-0001", tc.now, tc.hwm)
			}
			if tc.want == nil && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignCommandRefusesInvalidCommands(t *testing.T) {
	k, _ := NewSigningKey()
	for _, c := range []Command{
		{Type: "Ping", Target: "cam-0001", Seq: 1, IssuedAt: 1, ExpiresAt: 2},
		{Type: "ping", Target: "cam 1", Seq: 1, IssuedAt: 1, ExpiresAt: 2},
		{Type: "ping", Target: "cam-0001", Seq: 0, IssuedAt: 1, ExpiresAt: 2},
		{Type: "ping", Target: "cam-0001", Seq: 1, IssuedAt: 2, ExpiresAt: 2},
		{Type: "ping", Target: "cam-0001", Seq: 1, IssuedAt: 1, ExpiresAt: 1 + 25*3600},
	} {
		if _, err := SignCommand(k, c); !errors.Is(err, ErrMalformed) {
			t.Errorf("SignCommand(%+v) = %v, want ErrMalformed", c, err)
		}
	}
}

func TestSignatureDomainsAreSeparate(t *testing.T) {
	root, _ := NewSigningKey()
	cmdKey, _ := NewSigningKey()
	ks := KeySet{Version: 1, IssuedAt: t0.Unix(), CommandKeys: []PublicKey{cmdKey.Public()}, GrantKeys: []PublicKey{cmdKey.Public()}}
	signedKS, err := SignKeySet(root, ks)
	if err != nil {
		t.Fatal(err)
	}
	// A key set signed by the root is not a command, even for a verifier that trusts the root.
	if _, _, err := OpenCommand(NewVerifier(root.Public()), signedKS); err == nil {
		t.Fatal("a key set opened as a command")
	}
}

func TestKeySetAcceptance(t *testing.T) {
	root, _ := NewSigningKey()
	impostor, _ := NewSigningKey()
	k1, _ := NewSigningKey()
	k2, _ := NewSigningKey()
	rootPub := root.Public().Key
	v1, _ := SignKeySet(root, KeySet{Version: 1, CommandKeys: []PublicKey{k1.Public()}, GrantKeys: []PublicKey{k1.Public()}})
	v2, _ := SignKeySet(root, KeySet{Version: 2, CommandKeys: []PublicKey{k2.Public()}, GrantKeys: []PublicKey{k2.Public()}})
	forged, _ := SignKeySet(impostor, KeySet{Version: 3, CommandKeys: []PublicKey{k2.Public()}, GrantKeys: []PublicKey{k2.Public()}})

	ks, err := AcceptKeySet(rootPub, v1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcceptKeySet(rootPub, v1, ks.Version); !errors.Is(err, ErrNotNewer) {
		t.Errorf("same version: %v, want ErrNotNewer", err)
	}
	if _, err := AcceptKeySet(rootPub, forged, 1); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("not signed by root: %v, want ErrUnknownKey", err)
	}
	ks2, err := AcceptKeySet(rootPub, v2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AcceptKeySet(rootPub, v1, ks2.Version); !errors.Is(err, ErrNotNewer) {
		t.Errorf("older version: %v, want ErrNotNewer", err)
	}
	// After the rotation, a command signed by the dropped key is refused.
	old := mustSign(t, k1, ping("cam-0001", 5, t0))
	if _, _, err := OpenCommand(ks2.CommandVerifier(), old); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("dropped key: %v, want ErrUnknownKey", err)
	}
	if _, _, err := OpenCommand(ks2.CommandVerifier(), mustSign(t, k2, ping("cam-0001", 5, t0))); err != nil {
		t.Errorf("new key refused: %v", err)
	}
}

func TestKeySetRejectsKeyWithWrongID(t *testing.T) {
	root, _ := NewSigningKey()
	k, _ := NewSigningKey()
	pk := k.Public()
	pk.ID = "k-0000000000000000"
	if _, err := SignKeySet(root, KeySet{Version: 1, CommandKeys: []PublicKey{pk}, GrantKeys: []PublicKey{k.Public()}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
}
