package certs

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func mustCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("test fleet", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestIssueDeviceCertificateFromCSR(t *testing.T) {
	ca := mustCA(t)
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := NewCSR(key, "cam-0001")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", CSR: csr, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if got := CertIdentity(c); got != "cam-0001" {
		t.Errorf("identity %q", got)
	}
	if !c.NotBefore.Equal(t0.Add(-Backdate).Truncate(time.Second)) {
		t.Errorf("NotBefore %v, want backdated by %v", c.NotBefore, Backdate)
	}
	if c.NotAfter.Sub(t0) != DefaultDeviceValidity {
		t.Errorf("validity %v, want %v", c.NotAfter.Sub(t0), DefaultDeviceValidity)
	}
	if !SamePublicKey(c, key) {
		t.Error("certificate does not carry the CSR's key")
	}
	pool, err := NewPool(EncodeCertPEM(ca.Cert))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := VerifyClient(c, pool, t0); err != nil || id != "cam-0001" {
		t.Fatalf("VerifyClient = %q, %v", id, err)
	}
	if _, err := VerifyClient(c, pool, t0.Add(-time.Hour)); !errors.Is(err, ErrNotYetValid) {
		t.Errorf("before NotBefore: %v, want ErrNotYetValid", err)
	}
	if _, err := VerifyClient(c, pool, t0.Add(DefaultDeviceValidity+time.Second)); !errors.Is(err, ErrExpired) {
		t.Errorf("after NotAfter: %v, want ErrExpired", err)
	}
	other := mustCA(t)
	otherPool, _ := NewPool(EncodeCertPEM(other.Cert))
	if _, err := VerifyClient(c, otherPool, t0); err == nil {
		t.Error("a certificate from another CA verified")
	}
}

func TestIssueRefusesCSRForAnotherIdentity(t *testing.T) {
	ca := mustCA(t)
	key, _ := GenerateKey()
	csrPEM, _ := NewCSR(key, "cam-0002")
	csr, _ := ParseCSR(csrPEM)
	if _, err := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", CSR: csr, Now: t0}); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("err = %v, want ErrBadIdentity", err)
	}
}

func TestIdentities(t *testing.T) {
	for _, tc := range []struct {
		in   string
		role Role
		ok   bool
	}{
		{"cam-0001", RoleDevice, true},
		{"operator:alice", RoleOperator, true},
		{"signer:s1", RoleSigner, true},
		{"viewer:web", RoleViewer, true},
		{"bootstrap:cam-0001", RoleBootstrap, true},
		{"Cam-0001", "", false},
		{"ca", "", false},
		{"operator:", "", false},
		{"server:x", "", false},
		{"device:cam-1", "", false},
		{"root:x", "", false},
		{"cam/0001", "", false},
		{"cam+#", "", false},
		{"bootstrap:operator:x", "", false},
	} {
		role, _, err := ParseIdentity(tc.in)
		if (err == nil) != tc.ok || role != tc.role {
			t.Errorf("ParseIdentity(%q) = %q, %v; want %q ok=%v", tc.in, role, err, tc.role, tc.ok)
		}
	}
}

func TestServerCertificateAndTLSHandshake(t *testing.T) {
	ca := mustCA(t)
	now := time.Now()
	skey, _ := GenerateKey()
	sc, err := ca.Issue(IssueRequest{Role: RoleServer, Name: "broker", PublicKey: skey.Public(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	stls, err := TLSCertificate(sc, skey)
	if err != nil {
		t.Fatal(err)
	}
	ckey, _ := GenerateKey()
	cc, _ := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", PublicKey: ckey.Public(), Now: now})
	ctls, _ := TLSCertificate(cc, ckey)
	pool, _ := NewPool(EncodeCertPEM(ca.Cert))

	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLSConfig(pool, stls))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- "handshake: " + err.Error()
			return
		}
		got <- CertIdentity(tc.ConnectionState().PeerCertificates[0])
	}()
	h := NewHolder(ctls)
	conn, err := tls.Dial("tcp", ln.Addr().String(), ClientTLSConfig(pool, "127.0.0.1", h))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if id := <-got; id != "cam-0001" {
		t.Fatalf("server saw %q", id)
	}
}

func TestHolderWithoutCertificateFailsHandshake(t *testing.T) {
	var h Holder
	if _, err := h.GetClientCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("err = %v", err)
	}
	if _, err := h.GetCertificate(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("err = %v", err)
	}
}

// A server whose certificate comes from a Holder presents the one set last to each new
// connection: a broker renews its certificate without a restart.
func TestAServerHolderPresentsItsNewCertificate(t *testing.T) {
	ca := mustCA(t)
	now := time.Now()
	pool, _ := NewPool(EncodeCertPEM(ca.Cert))
	server := func() *tls.Certificate {
		k, _ := GenerateKey()
		c, err := ca.Issue(IssueRequest{Role: RoleServer, Name: "broker", PublicKey: k.Public(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		tc, _ := TLSCertificate(c, k)
		return tc
	}
	first, second := server(), server()
	h := NewHolder(first)
	conf := ServerTLSConfig(pool, first)
	conf.Certificates, conf.GetCertificate = nil, h.GetCertificate
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
	ckey, _ := GenerateKey()
	cc, _ := ca.Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", PublicKey: ckey.Public(), Now: now})
	ctls, _ := TLSCertificate(cc, ckey)
	presented := func() *tls.Certificate {
		conn, err := tls.Dial("tcp", ln.Addr().String(), ClientTLSConfig(pool, "127.0.0.1", NewHolder(ctls)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		leaf := conn.ConnectionState().PeerCertificates[0]
		if leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
			return first
		}
		return second
	}
	if presented() != first {
		t.Fatal("the first certificate was not presented")
	}
	h.Set(second)
	if presented() != second {
		t.Fatal("the new certificate was not presented to a new connection")
	}
}

func TestKeyFilesAre0600AndRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "device.key")
	k, _ := GenerateKey()
	if err := WriteKeyFile(p, k); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	k2, err := LoadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := mustCA(t).Issue(IssueRequest{Role: RoleDevice, Name: "cam-0001", PublicKey: k.Public(), Now: t0})
	if !SamePublicKey(c, k2) {
		t.Fatal("reloaded key differs")
	}
	os.Chmod(p, 0o644)
	if _, err := LoadKeyFile(p); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("world-readable key loaded: %v", err)
	}
}

func TestSigningKeyNeverPrintsItself(t *testing.T) {
	k, _ := NewSigningKey()
	pem, _ := MarshalSigningKeyPEM(k)
	k2, err := ParseSigningKeyPEM(pem)
	if err != nil || k2.ID() != k.ID() {
		t.Fatalf("round trip: %v", err)
	}
	if s := k.String(); !strings.Contains(s, k.ID()) || len(s) > 40 {
		t.Fatalf("String() = %q", s)
	}
}

func TestClientIDAllowed(t *testing.T) {
	for _, tc := range []struct {
		identity, clientID string
		ok                 bool
	}{
		{"cam-0001", "cam-0001", true},
		{"cam-0001", "cam-0001~1", false},
		{"cam-0001", "cam-0002", false},
		{"operator:admin", "operator:admin", true},
		{"operator:admin", "operator:admin~3f2a9c1b", true},
		{"operator:admin", "operator:admin~", false},
		{"operator:admin", "operator:admin~X", false},
		{"operator:admin", "operator:bob~1", false},
		{"operator:admin", "cam-0001", false},
		{"signer:default", "signer:default~s1", true},
	} {
		if got := ClientIDAllowed(tc.identity, tc.clientID); got != tc.ok {
			t.Errorf("ClientIDAllowed(%q, %q) = %v, want %v", tc.identity, tc.clientID, got, tc.ok)
		}
	}
}

func TestClientIDParts(t *testing.T) {
	for _, c := range []struct{ id, identity, session string }{
		{"signer:default~0a1b2c3d", "signer:default", "0a1b2c3d"},
		{"operator:admin~x", "operator:admin", "x"},
		{"cam-0001", "cam-0001", "cam-0001"},
	} {
		if got := ClientIDIdentity(c.id); got != c.identity {
			t.Errorf("ClientIDIdentity(%q) = %q, want %q", c.id, got, c.identity)
		}
		if got := ClientIDSession(c.id); got != c.session {
			t.Errorf("ClientIDSession(%q) = %q, want %q", c.id, got, c.session)
		}
	}
}

// A broker URL never carries a credential into an error message, and one with a user or
// password is refused: the client certificate is the only credential.
func TestBrokerHostNeverQuotesAPassword(t *testing.T) {
	for _, u := range []string{
		"mqtts://user:s3cret-pass@broker.example:8883",
		"mqtts://user:s3cret-pass@broker.example:88%zz",
		"mqtts://:s3cret-pass@[::1:8883",
	} {
		_, err := BrokerHost(u)
		if err == nil || !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), "s3cret-pass") {
			t.Errorf("BrokerHost(%q) = %v: want ErrMalformed without the password", u, err)
		}
	}
	if h, err := BrokerHost("mqtts://broker.example:8883"); err != nil || h != "broker.example" {
		t.Errorf("BrokerHost of a good URL = %q, %v", h, err)
	}
}
