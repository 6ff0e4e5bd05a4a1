// Package relay is camview's signaling relay: one MQTT session, as the viewer relay identity
// viewer:<name>, that carries the WebRTC signaling of many viewer sessions to and from cameras
// (docs/protocol.md, "Live video signaling").
//
// Offers, candidates and byes go to dev/<id>/down/signal; answers, refusals, candidates and
// byes come back on dev/<id>/up/signal, which the relay subscribes to for every device and
// routes by session id. A message is accepted for a session only from the device the session
// was offered to. The relay keeps each session's key (the viewer's candidates and bye carry it)
// and answer key (the camera's answer comes sealed to it, and the relay opens it). Everything
// is published at QoS 0 and never retained, on a clean session, so no broker keeps signaling for
// a party that is offline (P2b).
//
// A relay also reads the fleet's key set, retained on fleet/keyset after a breach that replaced
// the signing keys, and takes it only when the fleet's root signed it (the root key of its viewer
// bundle, DialIdentity, or of the fleet directory, DialFleetKeySets) and it is newer than the one
// it holds, so that camview serve checks grants with the keys in force without a restart or a
// new bundle.
//
// Every relay refuses, in the TLS handshake, a broker whose certificate the key set it holds
// retired (certs.KeySet.BrokerNotBefore, certs.BrokerFloor): after a breach that reached the
// broker's key, whoever holds the old one cannot pose as the broker. A relay that learns such a
// set while connected to a retired broker drops the connection and connects again.
//
// What it must never do: log or put into an error an SDP, a candidate, a grant, a session key
// or an answer key (they carry network addresses and secrets, P2b); mint or check grants (a relay only forwards what a
// viewer holds, S9); block the MQTT client's delivery goroutine.
package relay
