// Package camera provides the device's video sources: things that produce H.264 access units
// in real time, with timestamps, for the WebRTC layer to packetise and fan out.
//
// A Source is run by one goroutine (the fan-out) with a callback that receives each Frame.
// Two sources exist: FileSource loops an Annex B file at a fixed frame rate (for development,
// tests and demo devices), and ExecSource runs a camera encoder process such as rpicam-vid or
// ffmpeg and reads Annex B from its standard output, restarting it with backoff when it
// exits or hangs (sends no picture for a while). The fake for tests of consumers is in
// package cameratest.
//
// The package never touches the network: no sockets, no uploads. Media leaves the device only
// through the WebRTC layer, as DTLS-SRTP to a viewer holding a valid grant (SECURITY-BAR S9).
// ExecSource runs exactly the argv it was configured with, never through a shell, and never
// any command received from outside.
package camera
