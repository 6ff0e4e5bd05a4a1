package mqtt

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is; the wrapping error says which topic,
// field or connection was involved.
var (
	// ErrInvalidConfig reports a Config that New refuses; the error is a *ConfigError naming
	// the field.
	ErrInvalidConfig = errors.New("mqtt: invalid config")
	// ErrNotConnected is returned by Publish when there is no connection to the broker at the
	// moment of the call. Nothing was sent.
	ErrNotConnected = errors.New("mqtt: not connected")
	// ErrConnectionLost is returned by Publish when the connection ended before the broker
	// acknowledged a QoS 1 message. The message may or may not have been delivered; the
	// caller may publish it again (receivers are idempotent).
	ErrConnectionLost = errors.New("mqtt: connection lost before the broker acknowledged the message")
	// ErrClosed is returned by WaitConnected and Run once Run has returned.
	ErrClosed = errors.New("mqtt: client closed")
	// ErrAlreadyRunning is returned by Run when Run is already running on the Client.
	ErrAlreadyRunning = errors.New("mqtt: Run is already running")
	// ErrSubscribeRefused reports a subscription the broker refused (SUBACK return code 0x80),
	// typically because the ACL does not allow the filter.
	ErrSubscribeRefused = errors.New("mqtt: subscription refused by the broker")
	// ErrIdentityMismatch reports a client certificate whose identity (Subject CN) is not the
	// configured client ID; the client does not connect with it.
	ErrIdentityMismatch = errors.New("mqtt: client certificate identity differs from the client id")
	// ErrInvalidTopic reports a topic name that cannot be published to (empty, wildcard, NUL,
	// invalid UTF-8 or longer than 65535 bytes).
	ErrInvalidTopic = errors.New("mqtt: invalid topic")
	// ErrInvalidQoS reports a QoS other than 0 or 1. The fleet does not use QoS 2.
	ErrInvalidQoS = errors.New("mqtt: invalid qos")
)

// ConfigError reports a Config field that New refuses. It matches ErrInvalidConfig.
type ConfigError struct {
	// Field is the name of the Config field, e.g. "BrokerURL" or "Subscriptions[1].Filter".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("mqtt: invalid config: %s: %s", e.Field, e.Reason)
}

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }
