package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
)

// cipherSuites are the TLS 1.2 suites we accept: ECDHE key exchange with AEAD only (S3).
// TLS 1.3 suites are all AEAD and are not configurable in crypto/tls.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
}

// CipherSuites returns a copy of the TLS 1.2 suites the fleet allows.
func CipherSuites() []uint16 { return append([]uint16(nil), cipherSuites...) }

// NewPool returns a pool holding only the fleet CA certificates in caPEM. Verification never
// uses the system roots (S3).
func NewPool(caPEM []byte) (*x509.CertPool, error) {
	cs, err := ParseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: fleet ca: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cs {
		if !c.IsCA {
			return nil, fmt.Errorf("certs: fleet ca bundle holds non-CA certificate %q", c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// ErrNoCertificate is returned by Holder.GetClientCertificate before a certificate is set.
var ErrNoCertificate = errors.New("certs: no client certificate loaded")

// Holder serves the current client certificate to TLS handshakes and lets the rotation code
// swap it atomically: handshakes already under way keep the one they started with, every
// later handshake gets the new one. The zero Holder holds nothing. It is safe for concurrent use.
type Holder struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewHolder returns a Holder serving cert.
func NewHolder(cert *tls.Certificate) *Holder {
	h := new(Holder)
	h.Set(cert)
	return h
}

// Set replaces the certificate served from now on. A nil cert makes handshakes fail.
func (h *Holder) Set(cert *tls.Certificate) { h.cur.Store(cert) }

// Get returns the certificate currently served, or nil.
func (h *Holder) Get() *tls.Certificate { return h.cur.Load() }

// GetCertificate is a tls.Config.GetCertificate callback, for a server whose certificate is
// renewed while it runs; crypto/tls calls it once per handshake.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := h.cur.Load()
	if c == nil {
		return nil, ErrNoCertificate
	}
	return c, nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate callback; crypto/tls calls it once
// per handshake.
func (h *Holder) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := h.cur.Load()
	if c == nil {
		return nil, ErrNoCertificate
	}
	return c, nil
}

// BrokerFloor refuses, in TLS handshakes, broker certificates the key set in force retired
// (KeySet.BrokerNotBefore). A client sets it from every key set it accepts; handshakes already
// under way keep the floor they started with. The zero BrokerFloor retires none. It is safe for
// concurrent use.
type BrokerFloor struct {
	notBefore atomic.Int64
	last      atomic.Pointer[x509.Certificate]
}

// Set makes the floor that of ks (nil or zero: none) and reports whether the broker
// certificate of the last handshake it accepted is now retired: the connection made with it
// should be closed and made again.
func (f *BrokerFloor) Set(ks *KeySet) (lastRetired bool) {
	var nb int64
	if ks != nil {
		nb = ks.BrokerNotBefore
	}
	f.notBefore.Store(nb)
	last := f.last.Load()
	return last != nil && checkBrokerFloor(nb, last) != nil
}

// Last returns the broker certificate of the last handshake the floor accepted; nil before one.
func (f *BrokerFloor) Last() *x509.Certificate { return f.last.Load() }

// NotBefore returns the floor in Unix seconds; 0 when none.
func (f *BrokerFloor) NotBefore() int64 { return f.notBefore.Load() }

// VerifyConnection is a tls.Config.VerifyConnection callback: after crypto/tls verified the
// chain, it refuses a broker certificate issued before the floor and otherwise remembers it
// as the last one accepted.
func (f *BrokerFloor) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("certs: broker presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if err := checkBrokerFloor(f.notBefore.Load(), leaf); err != nil {
		return err
	}
	f.last.Store(leaf)
	return nil
}

// TLSCertificate pairs a parsed certificate (and optional intermediates) with its private key.
func TLSCertificate(leaf *x509.Certificate, key crypto.Signer) (*tls.Certificate, error) {
	if !SamePublicKey(leaf, key) {
		return nil, fmt.Errorf("certs: certificate %q: %w", leaf.Subject.CommonName, ErrKeyMismatch)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ClientTLSConfig is the TLS configuration of an MQTT client: the broker must present a
// certificate for serverName that chains to pool; the client certificate comes from h.
func ClientTLSConfig(pool *x509.CertPool, serverName string, h *Holder) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		CipherSuites:         CipherSuites(),
		RootCAs:              pool,
		ServerName:           serverName,
		GetClientCertificate: h.GetClientCertificate,
	}
}

// ServerTLSConfig is the TLS configuration of a broker: it presents cert and requires a client
// certificate that chains to pool with the clientAuth EKU. It gives no session tickets, so
// every connection makes a full handshake with a certificate the broker checks.
func ServerTLSConfig(pool *x509.CertPool, cert *tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS12,
		CipherSuites:           CipherSuites(),
		Certificates:           []tls.Certificate{*cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              pool,
		SessionTicketsDisabled: true,
	}
}
