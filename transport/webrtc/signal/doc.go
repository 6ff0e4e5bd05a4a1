// Package signal defines the WebRTC signaling messages a viewer and a camera exchange over the
// fleet's MQTT channel (dev/<id>/down/signal and dev/<id>/up/signal): an Offer with the
// viewer's grant, the camera's Answer or Refusal, trickled ICE Candidates both ways, and Bye.
//
// Every message is JSON with a version, a type and a session id:
//
//	{"type":"offer","v":2,"session":"<32 hex>","key":"<32 hex>","answer_key":"<base64>","sdp":"v=0…","grant":"<base64>","ice_servers":[…]}
//
// The session id is public (the camera's messages carry it where every viewer relay reads
// them); the key is the session's secret, sent by the viewer in its offer, and again in its
// candidates and its bye, and never by the camera. The camera's answer carries its network
// addresses; it travels as a SealedAnswer, sealed (Seal) to the offer's answer key, the public
// half of an AnswerKey the viewer made for the session, so that only that viewer opens it
// (AnswerKey.Open): not the other viewer relays, which read every answer, nor the broker.
//
// Messages come from outside the device, so decoding is strict (one JSON object, no unknown
// fields, no trailing data, through internal/strictjson), every field is size-capped and
// shape-checked by Validate, and each decoder has a fuzz target (SECURITY-BAR S8). The package
// depends on nothing but the standard library, golang.org/x/crypto/nacl/box and
// internal/strictjson, so the MQTT side, the agent and camview can use it without pulling in
// pion.
//
// What it must never do: log, touch the network, or let a secret out. The session key, the
// grant and TURN credentials an Offer carries, and the network addresses inside SDP and candidates (P2b), are
// left out of every String and LogValue here; callers log those, never the raw messages.
// Signaling messages are never retained and never queued for an offline party: that is the
// publisher's duty (QoS 0 or 1 without retain, on a clean session), stated here because the
// addresses they carry must not outlive the call.
package signal
