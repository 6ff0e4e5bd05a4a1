// Package agent is the camera-side daemon: it loads the device's identity, keeps one mutually
// authenticated MQTT session to the fleet, verifies and executes signed commands, and publishes
// only typed, non-personal messages.
//
// It wires the other packages together: certs for keys and signatures, transport/mqtt for the
// broker session, agent/state for what survives a restart. It never opens a listening socket
// and never logs a key, token or payload.
package agent
