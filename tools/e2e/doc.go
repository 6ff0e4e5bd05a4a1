// Package e2e holds camagent's end-to-end tests: real brokers (Mosquitto and the embedded
// one), real TLS, real keys, the real agent and the real fleet tools, all on loopback.
package e2e
