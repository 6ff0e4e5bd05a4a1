// Package webrtc streams the camera's live H.264 video to viewers over WebRTC, on
// github.com/pion/webrtc/v4.
//
// A Streamer reads one camera.Source (Run) and fans its access units out to every viewer. A
// viewer arrives as a signal.Offer, relayed by the agent from MQTT; Offer checks the viewer's
// grant through the caller's GrantChecker before it makes anything, enforces the viewer limit,
// and answers with a complete SDP (non-trickle: the answer carries the camera's candidates).
// Each viewer gets its own PeerConnection, made from one shared pion API and one DTLS
// certificate, a bounded queue of access units, and one writer goroutine that owns the
// session. A viewer starts at once from the latest keyframe: the Streamer keeps the current
// group of pictures (h264.GOPCache) and sends it, with its original timestamps, before the
// live frames. A viewer that cannot keep up loses frames up to the next keyframe, and these
// losses are counted (Stats). It never holds up the camera or the other viewers (R8).
// Picture loss indications from viewers become keyframe requests to the source.
//
// Sessions end when the viewer leaves or its connection fails, when its grant expires, on
// Close and CloseAll (the agent calls CloseAll when a rotation raises the grant epoch and when
// privacy mode starts), and when Run's context ends; every goroutine a session starts is
// awaited, and Config.OnEnd reports each end so the agent can send a signal.Bye.
//
// What it must never do:
//   - send media to anyone who has not presented a valid grant: the GrantChecker runs before a
//     PeerConnection exists, and media flows only as DTLS-SRTP to the peer that completed the
//     handshake with the fingerprint in its offer (SECURITY-BAR S9);
//   - open a listening socket other than the ICE ports of live sessions (S1): no mDNS
//     responder, no ICE-TCP, no shared UDP mux; offers with data channels are refused;
//   - receive media: offers to send video to the camera are refused;
//   - log SDP, candidates, grants or TURN credentials: logs carry session ids, reasons and
//     counts (P2b, P4);
//   - block the source: the Source's callback only appends to bounded queues.
//
// The signaling message types live in the subpackage signal, which does not import pion.
package webrtc
