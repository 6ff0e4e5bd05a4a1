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
// ICE candidates are UDP only (a TURN server may be reached over TCP or TLS; what it relays is
// still UDP). The camera uses the STUN and TURN servers of Config.ICEServers plus those of
// each offer (a viewer behind symmetric NAT sends its TURN relay with short-lived
// credentials). With Config.RelayOnly the camera gathers relayed candidates only, so media
// always leaves through a TURN server and the answer carries no address of the camera's own
// (the related addresses of its candidates are zeroed); an offer for which no TURN server is
// known is refused with ErrNoTURNServer, and one whose TURN servers gave no relayed candidate
// with ErrNoRelay, instead of an answer the viewer could never connect to. SessionStats.Relayed
// tells whether a session runs through a relay. Config.LoopbackOnly confines all of it,
// TURN servers included, to 127.0.0.1.
//
// The camera does not trickle: the answer holds all its candidates. A viewer may trickle its
// own (AddCandidate); each session takes at most MaxRemoteCandidates of them, at
// CandidateRate per second after a burst of CandidateBurst, and drops the rest, counting them
// in SessionStats.CandidatesDropped and returning a *DroppedCandidateError.
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
//   - in relay-only mode, let a viewer learn a network address of the camera: only relayed
//     candidates are gathered, and their related addresses are zeroed in the answer (P2b).
//     The TURN servers the camera allocates on see its address, as any TURN server sees its
//     clients': with Config.OwnICEServersOnly those are the camera's own only, not ones an
//     offer names;
//   - block the source: the Source's callback only appends to bounded queues.
//
// The signaling message types live in the subpackage signal, which does not import pion.
package webrtc
