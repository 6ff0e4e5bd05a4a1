package certs

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"
)

// A key set's broker floor retires every broker certificate issued before it: a client that
// took the set refuses, in the handshake, a broker presenting the old certificate (whoever
// stole its key), and still connects to the broker given a new one.
func TestAKeySetRetiresBrokerCertificatesIssuedBeforeItsFloor(t *testing.T) {
	ca := mustCA(t)
	pool, _ := NewPool(EncodeCertPEM(ca.Cert))
	now := time.Now()
	server := func(at time.Time) *tls.Certificate {
		k, _ := GenerateKey()
		c, err := ca.Issue(IssueRequest{Role: RoleServer, Name: "broker", PublicKey: k.Public(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Now: at})
		if err != nil {
			t.Fatal(err)
		}
		tc, _ := TLSCertificate(c, k)
		return tc
	}
	stolen, replaced := server(now.Add(-time.Hour)), server(now)
	listen := func(cert *tls.Certificate) string {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLSConfig(pool, cert))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		return ln.Addr().String()
	}
	oldBroker, newBroker := listen(stolen), listen(replaced)
	ckey, _ := GenerateKey()
	cc, _ := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", PublicKey: ckey.Public(), Now: now})
	ctls, _ := TLSCertificate(cc, ckey)
	var floor BrokerFloor
	conf := ClientTLSConfig(pool, "127.0.0.1", NewHolder(ctls))
	conf.VerifyConnection = floor.VerifyConnection
	dial := func(addr string) error {
		c, err := tls.Dial("tcp", addr, conf)
		if err == nil {
			c.Close()
		}
		return err
	}

	// No floor yet: both certificates chain to the fleet CA.
	if err := dial(oldBroker); err != nil {
		t.Fatalf("before the floor: %v", err)
	}
	root, _ := NewSigningKey()
	k, _ := NewSigningKey()
	ks := KeySet{Version: 2, CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}, BrokerNotBefore: replaced.Leaf.NotBefore.Unix()}
	signed, err := SignKeySet(root, ks)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AcceptKeySet(root.Public().Key, signed, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.BrokerNotBefore != ks.BrokerNotBefore {
		t.Fatalf("the floor did not survive signing: %d", got.BrokerNotBefore)
	}
	if !floor.Set(got) {
		t.Error("Set did not report that the broker of the last handshake is now retired")
	}
	if err := dial(oldBroker); err == nil || !errors.Is(err, ErrRetiredBroker) {
		t.Fatalf("the retired broker certificate: %v, want ErrRetiredBroker", err)
	}
	if err := got.CheckBroker(stolen.Leaf); !errors.Is(err, ErrRetiredBroker) {
		t.Errorf("CheckBroker(stolen) = %v", err)
	}
	if err := dial(newBroker); err != nil {
		t.Fatalf("the replacement broker certificate: %v", err)
	}
	if floor.Set(got) {
		t.Error("Set reports the replacement broker retired")
	}
	if err := got.CheckBroker(replaced.Leaf); err != nil {
		t.Errorf("CheckBroker(replaced) = %v", err)
	}
	// A set without a floor retires nothing again.
	floor.Set(&KeySet{Version: 3})
	if err := dial(oldBroker); err != nil {
		t.Fatalf("a set without a floor: %v", err)
	}
	var none *KeySet
	if err := none.CheckBroker(stolen.Leaf); err != nil {
		t.Errorf("nil set: %v", err)
	}
}

func TestAKeySetWithANegativeBrokerFloorIsMalformed(t *testing.T) {
	root, _ := NewSigningKey()
	k, _ := NewSigningKey()
	_, err := SignKeySet(root, KeySet{Version: 1, CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}, BrokerNotBefore: -1})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

// A key set without a floor is the same bytes as before the field existed, so devices that
// do not know the field still take it.
func TestAKeySetWithoutAFloorDoesNotNameIt(t *testing.T) {
	root, _ := NewSigningKey()
	k, _ := NewSigningKey()
	b, err := SignKeySet(root, KeySet{Version: 1, CommandKeys: []PublicKey{k.Public()}, GrantKeys: []PublicKey{k.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	var s signed
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	body, _ := base64.RawURLEncoding.DecodeString(s.Body)
	if bytes.Contains(body, []byte("broker_not_before")) {
		t.Fatalf("body names the floor: %s", body)
	}
}
