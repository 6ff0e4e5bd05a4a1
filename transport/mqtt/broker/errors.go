package broker

import "errors"

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrStarted is returned by Start on a broker that was already started.
	ErrStarted = errors.New("broker: already started")
	// ErrClosed is returned by Start on a broker that was closed. A Broker runs once; make a
	// new one with the same Config to run again.
	ErrClosed = errors.New("broker: closed")
	// ErrRevoked is why a client whose certificate serial Config.Revoked reports is refused.
	ErrRevoked = errors.New("broker: certificate revoked")
	// ErrClientID is why a client whose MQTT client ID is not its certificate identity is
	// refused.
	ErrClientID = errors.New("broker: client id is not the certificate identity")
	// ErrWillDenied is why a client whose will message names a topic it may not publish to,
	// or is signaling that is retained or above QoS 0, is refused.
	ErrWillDenied = errors.New("broker: will topic not allowed")
	// ErrTooManySessions is why a client that would open one more session than
	// Config.MaxSessionsPerIdentity allows its identity is refused.
	ErrTooManySessions = errors.New("broker: the identity holds the most sessions it may")
	// ErrNoPeerCertificate is why a connection without a verified client certificate is
	// refused. It cannot happen with a Config.TLS that passes New.
	ErrNoPeerCertificate = errors.New("broker: no verified client certificate")
)
