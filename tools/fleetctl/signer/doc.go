// Package signer is the fleet's certificate signer, run by `fleetctl serve`: it answers the
// certificate requests devices send during a credential rotation (rotation issue, items 3–6),
// records every certificate in the fleet's registry, revokes the ones a rotation replaced,
// writes the CRL Mosquitto needs, and paces a rollout.
//
// # Protocol
//
// A device publishes a wire.CertRequest on dev/<id>/up/csr (or, when its certificate expired
// or was revoked, with its bootstrap identity on boot/<id>/up/csr). The broker's ACL lets only
// device <id> (or bootstrap:<id>) publish there, so the topic names the requester. The signer:
//
//   - for kind "request": issues a certificate for the CSR's key with the fleet CA only if the
//     CSR names exactly <id>, and, on the bootstrap path, only if the registry knows <id> (it was
//     enrolled); records it; and answers wire.CertResponse{ReqID, Cert} with QoS 1 on
//     dev/<id>/down/cert (boot/<id>/down/cert). Anything else is answered with an error code
//     and logged. A retried request (same ReqID, same key) gets the certificate issued the first
//     time, not a new one;
//   - for kind "confirm" (the device is connected with its new certificate): revokes every
//     earlier unrevoked device certificate of <id> — the one replaced and those issued for
//     abandoned attempts — and records the confirmation. A confirmation of a certificate that was
//     not issued to <id>, or was already revoked, changes nothing, so late and duplicated
//     confirmations are harmless (R2). Confirmations through the bootstrap identity are ignored:
//     that identity may ask for a certificate, never revoke one.
//
// # Scaling out
//
// Several signers share the load through the MQTT shared subscriptions
// $share/signers/dev/+/up/csr and $share/signers/boot/+/up/csr: the broker hands each request
// to one of them. Signers on one fleet directory share the registry (its file lock makes each
// decision and its record atomic), the rollout state and the CRL, so three instances behave as
// one. The message handler only queues a request; decisions are made in batches, one registry
// transaction and one fsync per batch, and answers are published by a pool of goroutines.
//
// A request is acknowledged to the broker once queued, so a signer that crashes loses the
// requests it had queued; the device asks again after its request timeout, with the same ReqID,
// and gets the same certificate if one had been issued. A device that reconnects while it
// waits asks again at once; a signer holding the request for a place drops the copy.
//
// # Rollout controls
//
// Like AWS IoT Jobs, a rollout can be paced and aborted. Config.MaxRate caps new certificates
// per minute with a token bucket fed by the registry, so every signer of the fleet shares the
// budget; a request beyond it is answered wire.ErrCodeRateLimited and the device retries
// after the hint the answer carries (wire.CertResponse RetryAfter, to a device that asked in
// wire.CertVersion; see pace) or else after its backoff. Config.AbortRatio stops the rollout when, among at least Config.AbortMin
// certificates issued within Config.AbortWindow (and since the last resume), the share not
// confirmed within Config.ConfirmTimeout exceeds it: the signer logs it at error level,
// persists the aborted state in the fleet directory, and refuses every new certificate until
// `fleetctl rollout resume` (Resume).
//
// # Revocation and brokers
//
// The embedded broker consults the registry at every CONNECT (registry.Registry.Revoked) and
// `fleetctl broker` cuts live sessions of newly revoked serials within about a second
// (EnforceRevocations). Mosquitto only knows revocations through its crlfile, which the signer
// rewrites after every revocation (WriteCRL) — but Mosquitto 2.0 reads the crlfile only when it
// starts: SIGHUP reloads its certificates and ACL, not the CRL. After revocations that must take
// effect on Mosquitto, restart it. Revocation is by serial (old and new certificates share the
// device's name), and short device-certificate lifetimes bound what a missed revocation costs.
//
// What it must never do: issue a certificate for an identity other than the topic's device,
// issue through the bootstrap path for a device that was never enrolled, record or log a
// private key or device token (only token hashes, S6), or hand out a certificate that is not
// durably recorded.
package signer
