// Package certs holds the fleet's cryptography and its formats: the fleet CA and the
// certificates it issues, device keys and CSRs, the TLS configurations both ends of the MQTT
// link use, the root-signed key set, and signed command envelopes.
//
// It never touches the network and never logs. Private keys never appear in an error string
// or a String method.
package certs
