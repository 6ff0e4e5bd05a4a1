// Package privacy is the home of camagent's privacy building blocks (issue 5, promises P1–P4
// and S10 in SECURITY-BAR.md). It holds no code itself; each concern is its own package:
//
//   - seal: the 0600 device secret, HKDF-derived per-purpose keys, XChaCha20-Poly1305 sealing
//     of personal settings at rest (P3), the per-device network tag, and the wipe that makes
//     sealed data unreadable on factory reset (S10);
//   - onboard: the strict parser of the setup payload a phone app hands a new camera (S8);
//   - egress: the guard on the publish path that refuses any outbound payload carrying a
//     sensitive value in a common encoding (P2), and the slog handler that redacts the same
//     values from logs (P4).
//
// # Threat model
//
// The 2019 leak this agent is built against was a cloud-side copy of data that never needed to
// leave the homes it came from: Wi-Fi network names, camera nicknames, owners' emails. The
// defence is to keep those values on the device and to make leaking them hard by construction:
//
//   - Every outbound message is a typed schema (P1, agent/wire); the egress guard is the second
//     line, catching a value that reaches a payload by mistake (a field added carelessly, an
//     error string carried into a reply, a value base64-encoded inside a blob). It fails
//     closed: a payload it doubts is not sent.
//   - A thief who copies the state directory of a running camera gets the device secret and
//     can open the sealed settings: sealing at rest does not protect against someone who can
//     read files as the agent's user. It protects backups, images of the SD card taken after a
//     reset (crypto-shredding: the secret is gone), and mistakes such as a settings file copied
//     into a bug report.
//   - Logs are assumed to leave the device (a support bundle, a serial console, journald
//     forwarding) and so are redacted like payloads.
//
// What these packages must never do: log, wrap into an error, or print a sensitive value,
// a passphrase or the device secret — not even in a refusal that says a value was found.
package privacy
