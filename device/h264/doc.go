// Package h264 reads H.264 (ITU-T H.264 | ISO/IEC 14496-10) Annex B byte streams as they come
// out of a camera encoder: it splits the stream into access units, parses the sequence
// parameter set far enough to name the profile and the picture size, and caches the current
// group of pictures so that a viewer joining late can start decoding at once.
//
// Everything here works on bytes that came from outside the agent (an encoder process, a
// file), so every input is size-capped, parsing is strict, and each parser has a fuzz target.
// A malformed stream yields errors, never a panic or unbounded memory.
//
// The package never decodes pictures, never touches the network, never starts processes and
// never logs; it is pure byte handling used by device/camera and, through the types it
// defines, by the WebRTC layer.
package h264
