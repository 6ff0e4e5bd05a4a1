// Package cli is camview's command line: `camview serve` (the web page and its WHEP endpoint,
// in front of a viewer relay), `camview record` (one camera's live video to an H.264 file,
// with figures) and `camview enroll` (the relay's own identity). It parses arguments, calls the relay, receiver, whep and web packages and
// prints results; it never exits the process (main does).
//
// Watching a camera, step by step:
//
//	fleetctl grant --dir fleet --device cam-0001 --url http://127.0.0.1:8889/   # prints the page URL
//	camview serve --fleet fleet                                                  # then open that URL
//
//	fleetctl grant --dir fleet --device cam-0001 > grant.txt
//	camview record --fleet fleet --device cam-0001 --grant-file grant.txt --seconds 10 --out cam.h264
//
// A relay away from the operator's machine gets an identity of its own rather than the fleet
// directory (`camview enroll`, then serve and record take --identity DIR): its own key, and
// the certificate, fleet CA and broker URL of the bundle `fleetctl viewer` signed for it.
//
// camview holds no grant-signing key: it relays the grants viewers bring, and only the camera
// decides (S9). It connects as the viewer relay identity viewer:<name>, whose ACL allows
// signaling only. What it must never do: print or log a grant, an SDP, a candidate or a TURN
// credential (P2b).
package cli
