package certs

import "errors"

// Sentinel errors. Callers match them with errors.Is; the wrapping error says which field or
// value was wrong.
var (
	// ErrBadIdentity reports an identity (certificate CN, device id) that does not match the
	// pattern of its role.
	ErrBadIdentity = errors.New("certs: bad identity")
	// ErrBadSignature reports a signature that does not verify under the named key.
	ErrBadSignature = errors.New("certs: bad signature")
	// ErrUnknownKey reports a key id that the verifier does not trust.
	ErrUnknownKey = errors.New("certs: unknown key id")
	// ErrMalformed reports bytes that do not parse as the expected format.
	ErrMalformed = errors.New("certs: malformed")
	// ErrTooLarge reports an input over its size cap.
	ErrTooLarge = errors.New("certs: too large")
	// ErrExpired reports a command, grant or certificate used after its expiry.
	ErrExpired = errors.New("certs: expired")
	// ErrNotYetValid reports a command, grant or certificate used before it is valid.
	ErrNotYetValid = errors.New("certs: not yet valid")
	// ErrWrongTarget reports a command addressed to another device.
	ErrWrongTarget = errors.New("certs: wrong target")
	// ErrReplay reports a command whose sequence is not above the high-water mark.
	ErrReplay = errors.New("certs: replayed sequence")
	// ErrKeyMismatch reports a certificate whose public key is not the expected one.
	ErrKeyMismatch = errors.New("certs: key mismatch")
	// ErrRetiredBroker reports a broker certificate issued before the key set's
	// BrokerNotBefore: the fleet replaced that broker's key.
	ErrRetiredBroker = errors.New("certs: broker certificate retired by the key set")
	// ErrNotNewer reports a key set whose version is not above the one already trusted.
	ErrNotNewer = errors.New("certs: key set not newer")
)
