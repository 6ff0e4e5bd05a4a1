// Package receiver is camview's WebRTC receiver: a pion PeerConnection that asks one camera
// for its live H.264 video through a relay (tools/camview/relay), as a browser would, and
// turns the RTP it receives into access units (RFC 6184), an Annex B byte stream and
// statistics: time to first frame, frames, keyframes, bytes, packets, loss, picture size.
//
// It offers H.264 constrained baseline, baseline and main in packetization mode 1 with the
// RTCP feedback a browser offers (NACK, PLI, FIR), and pion's default interceptors, so NACK
// retransmissions and keyframe requests work as with a browser. The offer is sent once ICE
// gathering has completed (no trickle); candidates the camera trickles are added as they come.
//
// What it must never do: log an SDP, a candidate or a grant (P2b); bind mDNS (port 5353) or
// any socket but its ICE ports; with Options.LoopbackOnly, send a packet anywhere but
// 127.0.0.1.
package receiver
